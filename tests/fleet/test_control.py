"""A fleet's control API and DNS-SD records (issue 12 item 6).

``softap-sim fleet`` starts the control API for all its devices (``/v1/devices/{id}/...``)
and, with ``--advertise``, one advertiser per device on a shared responder, so ``ctl``,
``discover`` and the dashboard reach fleet devices as they reach ``softap-sim run``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import aiohttp
import pytest

from softap_sim import discover
from softap_sim.cli import build_parser
from softap_sim.fleet import Fleet
from softap_sim.fleet.cli import _close_all, _start_control
from softap_sim.keypool import KeyPool
from softap_sim.protocol.dnssd import LISTENING_TYPE
from tests.transports.test_mdns import FakePublisher


def fleet_args(*extra: str) -> argparse.Namespace:
    return build_parser().parse_args(["fleet", "--count", "3", "--control-port", "0", *extra])


@pytest.mark.asyncio
async def test_fleet_control_api_and_advertising(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pool = KeyPool(tmp_path / "pool")
    pool.fill(3)
    fake = FakePublisher()
    async with Fleet(3, key_pool=pool, tcp_port=0, http_port=0) as fleet:
        control, advertising = await _start_control(
            fleet_args("--advertise"), fleet, responder=fake
        )
        try:
            assert control is not None
            ids = [d.device_id for d in fleet.devices]
            async with aiohttp.ClientSession() as session:
                for device_id in ids:
                    async with session.post(
                        f"{control.url}/v1/devices/{device_id}/button", json={"hold_s": 0.5}
                    ) as resp:
                        assert resp.status == 200
                        assert (await resp.json())["device_id"] == device_id
            for adv in advertising:
                await adv.settle()
            published = [name for op, name, _ in fake.calls if op == "publish"]
            assert sorted(published) == sorted(f"{i}.{LISTENING_TYPE}" for i in ids)
            assert {txt["control"] for _, _, txt in fake.calls} == {control.url}
            # discover's fallback lists the fleet from its control API
            rc = await asyncio.to_thread(
                discover.main, ["--timeout", "0", "--control", control.url, "--json"]
            )
            out = capsys.readouterr()
            assert rc == 0, out.err
            assert [d["id"] for d in json.loads(out.out)["devices"]] == ids
        finally:
            await _close_all(control, advertising)
        withdrawn = [name for op, name, _ in fake.calls if op == "withdraw"]
        assert len(withdrawn) == 3


@pytest.mark.asyncio
async def test_fleet_without_control(tmp_path: Path) -> None:
    pool = KeyPool(tmp_path / "pool")
    pool.fill(1)
    async with Fleet(1, key_pool=pool, tcp_port=0, http_port=0) as fleet:
        control, advertising = await _start_control(fleet_args("--no-control"), fleet)
        assert control is None
        assert advertising == []
