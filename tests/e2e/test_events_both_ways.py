"""Events both ways over the real device protocol (issue 13 part 3).

The scenario's ``[app.events]`` are published (periodically, or on demand through the
control API) and reach the cloud's SSE streams; ``[[app.subscriptions]]`` make the device
subscribe, and an event published through ``POST /v1/devices/events`` (or by another
device of the same owner) reaches it: the control API's event log and the transcript
show it. Claim codes never appear in either.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from firmware_model import DeviceKey, DeviceState, ManualClock, RadioEnvironment
from firmware_model.app import UserApp, default_app
from softap_sim import DeviceEmulator, SimConfig
from softap_sim.control import ControlError
from softap_sim.errors import LifecycleError
from tests.cloud.test_link_device import HOME, join
from tests.linked import World as LinkedWorld
from tests.linked import linked_cloud

WAIT_S = 10.0


def app_with_events() -> UserApp:
    app = UserApp.from_mapping(
        {
            "events": {
                "heartbeat": {"data": "beat", "period_s": 30},
                "doorbell": {"data": "ring", "private": False, "ttl": 120},
            },
            "subscriptions": [{"prefix": "lights"}, {"prefix": "weather", "scope": "all_devices"}],
        }
    )
    base = default_app()
    base.events, base.subscriptions = app.events, app.subscriptions
    return base


class World(LinkedWorld):
    async def wait_event(self, name: str, direction: str) -> dict[str, Any]:
        async with asyncio.timeout(WAIT_S):
            while True:
                for record in self.emu.events:
                    if record["name"] == name and record["direction"] == direction:
                        return record
                await self.emu.settle()
                await asyncio.sleep(0)  # let the link's reader task run (not a timed wait)


@pytest_asyncio.fixture
async def world(device_key: DeviceKey) -> AsyncIterator[World]:
    async with linked_cloud() as cloud, aiohttp.ClientSession() as http:
        config = cloud.device_config(device_key, app=app_with_events())
        async with DeviceEmulator(
            config, clock=ManualClock(), before_power_on=cloud.register
        ) as emu:
            token = await cloud.developer_token(http)
            device_id = emu.device.dct.identity.device_id_hex.lower()
            w = World(cloud.service, emu, cloud.events, http, token, device_id)
            with pytest.raises(LifecycleError, match="not connected"):
                emu.control.publish({"name": "doorbell"})
            await join(emu)
            await emu.wait_for_state(DeviceState.ONLINE)
            assert cloud.service.device_server is not None
            await cloud.service.device_server.wait_ready(device_id)
            status, body = await w.rest("POST", "/v1/devices", json={"id": device_id})
            assert status == 200, body
            yield w
            emu.check()


@pytest.mark.asyncio
async def test_periodic_and_on_demand_publishes_reach_the_cloud(world: World) -> None:
    w = world
    first = await w.events.wait("heartbeat", "beat")  # right after connecting
    assert first["coreid"] == w.device_id
    await w.emu.advance(30.0)
    await w.events.wait("heartbeat", "beat", count=2)
    published = w.emu.control.publish({"name": "doorbell"})
    assert published == {"name": "doorbell", "data": "ring", "private": False, "ttl": 120}
    bell = await w.events.wait("doorbell", "ring")
    assert bell["private"] is False
    assert bell["ttl"] == 120
    w.emu.control.publish({"name": "custom/thing", "data": "x" * 622})
    await w.events.wait("custom/thing")
    with pytest.raises(ControlError, match="622"):
        w.emu.control.publish({"name": "big", "data": "x" * 623})
    with pytest.raises(ControlError, match="1-63"):
        w.emu.control.publish({"name": "n" * 64})
    names = [r["name"] for r in w.emu.control.events() if r["direction"] == "out"]
    assert names.count("heartbeat") == 2
    # the claim code event is in the log and the transcript, masked
    records = [r for r in w.emu.control.transcript() if r["type"] == "event"]
    assert any(r["name"] == "doorbell" and r["direction"] == "out" for r in records)
    w.emu.check()


@pytest.mark.asyncio
async def test_rest_publish_reaches_a_subscribed_device(world: World) -> None:
    w = world
    status, body = await w.rest(
        "POST", "/v1/devices/events", data={"name": "lights/kitchen", "data": "on"}
    )
    assert (status, body) == (200, {"ok": True})
    record = await w.wait_event("lights/kitchen", "in")
    assert record["data"] == "on"
    assert record["handled"] is True
    assert record["private"] is True
    transcript = [r for r in w.emu.control.transcript() if r["type"] == "event"]
    assert any(r["name"] == "lights/kitchen" and r["direction"] == "in" for r in transcript)
    # the SSE side saw the API's own event too, from coreid "api"
    api = await w.events.wait("lights/kitchen")
    assert api["coreid"] == "api"
    # not subscribed: not sent to the device at all
    await w.rest("POST", "/v1/devices/events", data={"name": "garage", "data": "open"})
    await w.rest("POST", "/v1/devices/events", data={"name": "lights/hall", "data": "1"})
    await w.wait_event("lights/hall", "in")  # sent after "garage": order proves its absence
    assert not any(r["name"] == "garage" for r in w.emu.events)


@pytest.mark.asyncio
async def test_rest_publish_validates(world: World) -> None:
    w = world
    for data, message in (
        ({}, "name"),
        ({"name": "x" * 64}, "longer than 63"),
        ({"name": "a\u0000b"}, "printable"),
        ({"name": "ok", "data": "\u00e9" * 400}, "622 bytes"),
        ({"name": "ok", "private": "maybe"}, "private"),
        ({"name": "ok", "ttl": "-1"}, "ttl"),
        ({"name": "ok", "ttl": "99999999999999999999999"}, "ttl"),
    ):
        status, body = await w.rest("POST", "/v1/devices/events", data=data)
        assert status == 400, (data, body)
        assert message in body["error_description"], (data, body)


@pytest.mark.asyncio
async def test_scenario_events_parse_and_reject() -> None:
    with pytest.raises(ValueError, match="period_s"):
        UserApp.from_mapping({"events": {"x": {"period_s": 0.5}}})
    with pytest.raises(ValueError, match="scope"):
        UserApp.from_mapping({"subscriptions": [{"prefix": "a", "scope": "everyone"}]})
    with pytest.raises(ValueError, match="unknown key"):
        UserApp.from_mapping({"events": {"x": {"colour": "red"}}})
    app = UserApp.from_mapping({"subscriptions": [{"prefix": "lights"}]})
    assert app.subscribed("lights/on")
    assert not app.subscribed("light")
    assert json.loads(app.describe()) == {"f": [], "v": {}}


@pytest.mark.asyncio
async def test_an_event_from_another_device_of_the_owner_reaches_it(world: World) -> None:
    """Device B (same owner) publishes ``lights/porch``; device A, subscribed, gets it."""
    from tests.conftest import seeded_key

    w = world
    assert w.service.device_server is not None
    other_app = default_app()
    parsed = UserApp.from_mapping(
        {"events": {"lights/porch": {"data": "on"}}, "subscriptions": [{"prefix": "lights"}]}
    )
    other_app.events, other_app.subscriptions = parsed.events, parsed.subscriptions
    config = SimConfig(
        radio=RadioEnvironment.from_list([HOME]),
        key=seeded_key(7),
        cloud_endpoint=("127.0.0.1", w.service.device_server.port),
        server_public_key_pem=w.service.server_public_key_pem,
        app=other_app,
    )

    async def register(e: DeviceEmulator) -> None:
        await w.service.register_device(
            e.device.dct.identity.device_id_hex, e.device.key.public_key_pem.decode()
        )

    async with DeviceEmulator(config, clock=ManualClock(), before_power_on=register) as other:
        await join(other)
        await other.wait_for_state(DeviceState.ONLINE)
        other_id = other.device.dct.identity.device_id_hex.lower()
        await w.service.device_server.wait_ready(other_id)
        status, body = await w.rest("POST", "/v1/devices", json={"id": other_id})
        assert status == 200, body
        other.control.publish({"name": "lights/porch"})
        record = await w.wait_event("lights/porch", "in")
        assert (record["data"], record["handled"]) == ("on", True)
        # a device does not get its own events back, though it subscribes to "lights"
        await w.rest("POST", "/v1/devices/events", data={"name": "lights/hall", "data": "1"})
        await w.wait_event("lights/hall", "in")
        async with asyncio.timeout(WAIT_S):
            while not any(r["name"] == "lights/hall" for r in other.events):
                await other.settle()
                await asyncio.sleep(0)
        assert not any(r["direction"] == "in" for r in other.events if r["name"] == "lights/porch")
        other.check()


async def _ctl(url: str, *argv: str) -> tuple[int, str, str]:
    import contextlib
    import io

    from softap_sim import ctl

    out, err = io.StringIO(), io.StringIO()

    def run() -> int:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            return ctl.main(["--control", url, *argv])

    code = await asyncio.to_thread(run)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.asyncio
async def test_ctl_publish_and_the_public_event_stream(world: World) -> None:
    """``ctl publish`` sends a public event; ``GET /v1/events`` (public SSE) carries it."""
    from softap_sim.control_api import start_control_api

    w = world
    assert w.service.server is not None
    async with (
        await start_control_api(w.emu, "127.0.0.1", 0) as control,
        w.http.get(
            w.service.server.url + "/v1/events/doorbell",
            headers={"Authorization": f"Bearer {w.token}"},
        ) as stream,
    ):
        assert stream.status == 200
        assert await stream.content.readline() == b":ok\n"  # the stream is open
        code, out, err = await _ctl(control.url, "publish", "doorbell", "ding", "--public")
        assert code == 0, err
        assert out.strip() == "published public event doorbell (ttl 120 s)"
        async with asyncio.timeout(WAIT_S):
            while True:
                line = (await stream.content.readline()).decode()
                if line.startswith("data:"):
                    event = json.loads(line[5:])
                    break
        assert (event["data"], event["coreid"]) == ("ding", w.device_id)
        code, out, _ = await _ctl(control.url, "events")
        assert code == 0
        assert "-> doorbell  'ding'" in out
        code, _, err = await _ctl(control.url, "publish", "x" * 64)
        assert code == 1
        assert "1-63" in err
