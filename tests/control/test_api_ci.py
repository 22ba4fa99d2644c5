"""The control API for CI (issue 12 item 6): health, factory reset, OpenAPI, fleets.

* ``GET /v1/health``: 200 ``ok``; 503 ``failing`` once an emulator failed internally.
* ``POST /v1/reset``: back to the factory state (networks, claim code, claimed flag,
  faults, app RAM, gate, radio), into listening mode; on a fleet, every device.
* ``GET /v1/openapi.json`` documents every route, and every documented example body is
  accepted by its route (so the document cannot drift from the code).
* A fleet's API serves each device at ``/v1/devices/{id}/...``; the bare ``/v1/state``
  says to name a device.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from firmware_model import DeviceIdentity, DeviceState, Secret, WifiCredential
from firmware_model import security as sec
from softap_sim import DeviceEmulator, SimConfig
from softap_sim import ctl as ctl_mod
from softap_sim.control_api import API_ROUTES, DEVICE_ROUTES, ControlServer, start_control_api
from softap_sim.control_openapi import API_DOCS, DEVICE_DOCS, _clean
from softap_sim.registry import DeviceRegistry
from tests.wire import tcp_exchange


@dataclass
class Api:
    server: ControlServer
    session: aiohttp.ClientSession

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        kwargs: dict[str, Any] = {} if body is None else {"json": body}
        async with self.session.request(method, self.server.url + path, **kwargs) as resp:
            assert resp.content_type == "application/json", await resp.text()
            return resp.status, await resp.json()


@pytest_asyncio.fixture
async def single(emulator: DeviceEmulator) -> AsyncIterator[Api]:
    async with (
        await start_control_api(emulator, "127.0.0.1", 0) as server,
        aiohttp.ClientSession() as session,
    ):
        yield Api(server, session)


@pytest_asyncio.fixture
async def fleet(spec_config: SimConfig) -> AsyncIterator[tuple[Api, list[DeviceEmulator]]]:
    configs = [
        replace(spec_config, identity=DeviceIdentity(bytes([i]) * 12, "ABCDE" + "FGH"[i - 1]))
        for i in (1, 2, 3)
    ]
    emulators = [DeviceEmulator(c) for c in configs]
    registry = DeviceRegistry()
    for emu in emulators:
        await emu.start()
        registry.add(emu)
    try:
        async with (
            await start_control_api(None, "127.0.0.1", 0, registry=registry) as server,
            aiohttp.ClientSession() as session,
        ):
            yield Api(server, session), emulators
    finally:
        for emu in emulators:
            emu.check()
            await emu.close()


def _dirty(emu: DeviceEmulator) -> None:
    """Everything a test run leaves behind on a device."""
    dev = emu.device
    ap = dev.radio.access_points[0]
    dev.dct.credentials.add(WifiCredential(ap.ssid, Secret(b"pw-12345678"), sec.WPA2_AES_PSK, 6))
    dev.dct.set_claim_code(b"claim-code-left-over")
    dev.dct.claimed = True
    emu.control.add_fault({"kind": "latency", "delay_ms": 10})
    emu.control.set_app_ram(40_000)
    emu.control.set_gate(nbytes=1000, mode="refuse")
    emu.control.set_radio(pack="empty")


def _assert_factory(emu: DeviceEmulator, config: SimConfig) -> None:
    dev = emu.device
    assert dev.state is DeviceState.LISTENING
    assert emu.ap_up
    assert len(dev.dct.credentials) == 0
    assert dev.dct.claim_code == b""
    assert dev.dct.claimed is False
    assert dev.faults.to_json() == []
    assert dev.heap.app_ram_bytes == config.app_ram_bytes
    assert (dev.heap.gate_bytes, dev.heap.gate_mode) == (config.gate_bytes, config.gate_mode)
    assert dev.radio is config.radio


@pytest.mark.asyncio
async def test_health(single: Api, emulator: DeviceEmulator) -> None:
    status, body = await single.call("GET", "/v1/health")
    assert status == 200
    assert body["status"] == "ok"
    assert body["devices"] == 1
    assert body["states"] == {"listening": 1}
    emulator._record_error(RuntimeError("a bug"))
    status, body = await single.call("GET", "/v1/health")
    assert (status, body["status"], body["failed"]) == (503, "failing", 1)
    emulator._errors.clear()


@pytest.mark.asyncio
async def test_reset_back_to_factory(single: Api, emulator: DeviceEmulator) -> None:
    identity = emulator.device.dct.identity
    key_pem = emulator.device.key.public_key_pem
    _dirty(emulator)
    emulator.control.press_button(0.5)  # leave listening mode: it joins the stored network
    await emulator.settle()
    assert emulator.device.state is not DeviceState.LISTENING
    status, body = await single.call("POST", "/v1/reset", {})
    assert status == 200, body
    assert body["state"] == "listening"
    assert body["claimed"] is False
    assert body["credentials"] == []
    _assert_factory(emulator, emulator.config)
    # the identity and the key are the factory's and stay
    assert emulator.device.dct.identity == identity
    assert emulator.device.key.public_key_pem == key_pem
    reply = await tcp_exchange(emulator.tcp_address, b"device-id\n0\n\n")
    assert json.loads(reply.split(b"\n\n", 1)[1])["c"] == "0"


@pytest.mark.asyncio
async def test_reset_persists(spec_config: SimConfig, tmp_path: Any) -> None:
    config = replace(spec_config, state_dir=tmp_path)
    async with DeviceEmulator(config) as emu:
        _dirty(emu)
        emu._persist()
        emu.control.reset()
        await emu.settle()
    async with DeviceEmulator(config) as emu:  # the state on disk is the factory's too
        assert len(emu.device.dct.credentials) == 0
        assert emu.device.dct.claimed is False
        assert emu.device.state is DeviceState.LISTENING


def test_every_route_is_documented() -> None:
    assert {(m, _clean(p)) for m, p, _ in DEVICE_ROUTES} == set(DEVICE_DOCS)
    assert {(m, _clean(p)) for m, p, _ in API_ROUTES} == set(API_DOCS)


@pytest.mark.asyncio
async def test_openapi_document_matches_the_routes(single: Api) -> None:
    status, doc = await single.call("GET", "/v1/openapi.json")
    assert status == 200
    assert doc["openapi"] == "3.1.0"
    assert "Content-Type: application/json" in doc["info"]["description"]
    served = set()
    for method, path, _ in DEVICE_ROUTES:
        served.add((method.lower(), "/v1" + _clean(path)))
        served.add((method.lower(), "/v1/devices/{device}" + _clean(path)))
    for method, path, _ in API_ROUTES:
        served.add((method.lower(), _clean(path)))
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert documented == served
    for path, ops in doc["paths"].items():
        for op in ops.values():
            assert op["summary"]
            assert op["responses"]
            names = {p["name"] for p in op.get("parameters", [])}
            assert names == set(re.findall(r"{(\w+)}", path))


@pytest.mark.asyncio
async def test_documented_examples_are_accepted(single: Api, emulator: DeviceEmulator) -> None:
    """Every example body of the document, sent to its route, is taken (2xx or a 409)."""
    _, doc = await single.call("GET", "/v1/openapi.json")
    device = emulator.device.dct.identity.device_id_hex
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if "{id}" in path:
                continue  # a fault id / device id route: covered by the fault tests
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            example = body.get("example")
            if method != "get" and example is None:
                example = {}
            url = path.replace("{device}", device)
            status, reply = await single.call(method.upper(), url, example)
            assert status in (200, 201, 409), (method, url, example, reply)
            await emulator.settle()


@pytest.mark.asyncio
async def test_fleet_routes_by_device(fleet: tuple[Api, list[DeviceEmulator]]) -> None:
    api, emulators = fleet
    ids = [e.device.dct.identity.device_id_hex for e in emulators]
    status, body = await api.call("GET", "/v1/state")
    assert status == 404
    assert body["error"] == "device_required"
    assert "/v1/devices/{id}/state" in body["message"]
    status, devices = await api.call("GET", "/v1/devices")
    assert [d["id"] for d in devices] == ids
    for _emu, device_id in zip(emulators, ids, strict=True):
        status, snap = await api.call("GET", f"/v1/devices/{device_id.lower()}/state")
        assert (status, snap["device_id"]) == (200, device_id)
    # a change reaches that device only
    status, snap = await api.call("POST", f"/v1/devices/{ids[1]}/faults", {"kind": "reset"})
    assert status == 201
    assert [len(e.device.faults.to_json()) for e in emulators] == [0, 1, 0]
    status, body = await api.call("GET", "/v1/devices/" + "0" * 24 + "/state")
    assert (status, body["error"]) == (404, "not_found")
    status, body = await api.call("GET", "/v1/devices/not-an-id/state")
    assert status == 404
    status, health = await api.call("GET", "/v1/health")
    assert (status, health["devices"], health["states"]) == (200, 3, {"listening": 3})


@pytest.mark.asyncio
async def test_fleet_reset_resets_every_device(fleet: tuple[Api, list[DeviceEmulator]]) -> None:
    api, emulators = fleet
    for emu in emulators:
        _dirty(emu)
    device = emulators[0].device.dct.identity.device_id_hex
    status, snap = await api.call("POST", f"/v1/devices/{device}/reset", {})
    assert (status, snap["device_id"]) == (200, device)
    _assert_factory(emulators[0], emulators[0].config)
    assert emulators[1].device.dct.claimed is True
    status, body = await api.call("POST", "/v1/reset", {})
    assert (status, body) == (200, {"reset": 3})
    for emu in emulators:
        _assert_factory(emu, emu.config)
    await asyncio.gather(*(e.settle() for e in emulators))


async def _ctl(url: str, *argv: str) -> tuple[int, str, str]:
    """``softap-sim ctl`` in a thread (it blocks; the API runs on this loop)."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()

    def run() -> int:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            return ctl_mod.main(["--control", url, *argv])

    code = await asyncio.to_thread(run)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.asyncio
async def test_ctl_device_option_on_a_fleet(fleet: tuple[Api, list[DeviceEmulator]]) -> None:
    api, emulators = fleet
    url = api.server.url
    device = emulators[2].device.dct.identity.device_id_hex
    code, out, _ = await _ctl(url, "devices")
    assert code == 0
    assert len(out.splitlines()) == 3
    code, out, _ = await _ctl(url, "--device", device, "fault", "add", "reset")
    assert code == 0
    assert [len(e.device.faults.to_json()) for e in emulators] == [0, 0, 1]
    code, out, _ = await _ctl(url, "state", "--device", device.lower(), "--json")
    assert code == 0
    assert json.loads(out)["device_id"] == device
    code, _, err = await _ctl(url, "state")  # a fleet: which device?
    assert code == 1
    assert "name one" in err
    code, _, err = await _ctl(url, "--device", "nope", "state")
    assert code == 1
    assert "24 hex digits" in err
    code, out, _ = await _ctl(url, "health")
    assert (code, out.strip()) == (0, "ok: 3 devices (3 listening)")
    code, out, _ = await _ctl(url, "reset")
    assert (code, out.strip()) == (0, "reset 3 devices to the factory state")
    assert emulators[2].device.faults.to_json() == []


@pytest.mark.asyncio
async def test_ctl_health_fails_when_the_emulator_failed(
    single: Api, emulator: DeviceEmulator
) -> None:
    emulator._record_error(RuntimeError("a bug"))
    code, out, _ = await _ctl(single.server.url, "health")
    emulator._errors.clear()
    assert code == 1
    assert out.startswith("failing: 1 devices")


@pytest.mark.asyncio
async def test_ctl_wifi_lost_and_reset(single: Api, emulator: DeviceEmulator) -> None:
    code, _, err = await _ctl(single.server.url, "wifi-lost")
    assert code == 1  # listening: the station is not associated
    assert "not accepted in state 'listening'" in err
    emulator.device.dct.set_claim_code(b"left-over-claim")
    code, out, _ = await _ctl(single.server.url, "reset")
    assert code == 0
    assert out.startswith("state: listening")
    assert emulator.device.dct.claim_code == b""
