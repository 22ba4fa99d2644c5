"""The control API over HTTP (``softap_sim.control_api``) and ``softap-sim ctl``.

Every route, bad input for every mutating route (400/415 with a JSON error that says
what is wrong, and the device unchanged), 409 for events the state does not accept,
404/405 as JSON, real effects on the device's ports, and no secret in any reply or log.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import io
import json
import logging
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric import padding

from firmware_model import DeviceKey
from softap_sim import DeviceEmulator, SimConfig, argtypes
from softap_sim import ctl as ctl_mod
from softap_sim.control_api import ControlServer, mask_set_request, start_control_api
from softap_sim.ctl import commands as ctl_commands
from tests.wire import tcp_exchange

CLAIM_CODE = "CC-" + "q7" * 20 + "-claim"
WIFI_PASSWORD = "wifi-pw-correct-horse"
RADIO_PASSWORD = "radio-pw-battery-staple"
_NO_BODY = object()


@dataclass
class Api:
    emu: DeviceEmulator
    server: ControlServer
    session: aiohttp.ClientSession

    async def call(
        self,
        method: str,
        path: str,
        body: Any = _NO_BODY,
        *,
        data: bytes | io.BytesIO | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        kwargs: dict[str, Any] = {}
        if body is not _NO_BODY:
            kwargs["json"] = body
        if data is not None:
            kwargs["data"] = data
        if headers is not None:
            kwargs["headers"] = headers
        async with self.session.request(method, self.server.url + path, **kwargs) as resp:
            assert resp.content_type == "application/json", await resp.text()
            return resp.status, await resp.json()

    async def ok(self, method: str, path: str, body: Any = _NO_BODY, status: int = 200) -> Any:
        got, payload = await self.call(method, path, body)
        assert got == status, payload
        return payload

    async def state(self) -> dict[str, Any]:
        snap: dict[str, Any] = await self.ok("GET", "/v1/state")
        return snap


def assert_error(payload: Any, code: str, *fragments: str) -> None:
    assert isinstance(payload, dict)
    assert payload["error"] == code, payload
    assert isinstance(payload["message"], str)
    for fragment in fragments:
        assert fragment in payload["message"], payload


@pytest_asyncio.fixture
async def api(device_key: DeviceKey) -> AsyncIterator[Api]:
    async with DeviceEmulator(SimConfig(key=device_key)) as emu:
        server = await start_control_api(emu)
        try:
            async with aiohttp.ClientSession() as session:
                yield Api(emu, server, session)
        finally:
            await server.close()
        emu.check()


def frame(name: str, body: bytes = b"") -> bytes:
    return name.encode() + b"\n" + str(len(body)).encode() + b"\n\n" + body


def encrypt(key: DeviceKey, plaintext: bytes) -> str:
    return key._key.public_key().encrypt(plaintext, padding.PKCS1v15()).hex()


async def refused(addr: tuple[str, int]) -> bool:
    try:
        _, writer = await asyncio.open_connection(*addr)
    except ConnectionRefusedError:
        return True
    writer.close()
    return False


# -- the server ----------------------------------------------------------------------
@pytest.mark.asyncio
async def test_server_port_url_and_idempotent_close(device_key: DeviceKey) -> None:
    async with DeviceEmulator(SimConfig(key=device_key)) as emu:
        server = await start_control_api(emu)
        assert server.host == "127.0.0.1"
        assert server.port > 0
        assert server.url == f"http://127.0.0.1:{server.port}"
        await server.close()
        await server.close()
        assert await refused((server.host, server.port))


@pytest.mark.asyncio
async def test_port_in_use_is_one_clear_error(device_key: DeviceKey) -> None:
    async with (
        DeviceEmulator(SimConfig(key=device_key)) as emu,
        await start_control_api(emu) as first,
    ):
        with pytest.raises(OSError) as exc:
            await start_control_api(emu, port=first.port)
        assert exc.value.errno == errno.EADDRINUSE


@pytest.mark.asyncio
async def test_non_loopback_host_warns(
    device_key: DeviceKey, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="softap_sim.control_api")
    async with DeviceEmulator(SimConfig(key=device_key)) as emu:
        async with await start_control_api(emu) as _:
            assert "not on loopback" not in caplog.text
        async with await start_control_api(emu, host="0.0.0.0") as server:
            assert server.port > 0
            assert "not on loopback" in caplog.text
            assert "no authentication" in caplog.text


# -- reading -------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_get_state(api: Api) -> None:
    snap = await api.state()
    assert snap["state"] == "listening"
    assert snap["led"]["text"] == "blinking dark blue"
    assert snap["ports"] == {"tcp": api.emu.tcp_address[1], "http": api.emu.http_address[1]}
    assert snap["access_point"]["tcp_listening"] is True
    assert snap["heap"]["free_bytes"] == api.emu.device.heap.free_bytes
    assert snap["credentials"] == []
    assert snap["claim_code_set"] is False
    assert snap["faults"] == []
    assert snap == api.emu.control.snapshot()


@pytest.mark.asyncio
async def test_get_heap(api: Api) -> None:
    heap = await api.ok("GET", "/v1/heap")
    assert heap["free_bytes"] == api.emu.device.heap.free_bytes
    assert heap["gate_bytes"] == api.emu.device.heap.gate_bytes
    assert heap["table"] == api.emu.control.heap_table()
    assert sum(row["bytes"] for row in heap["table"]) == sum(heap["allocated"].values())
    assert {"name", "bytes", "component", "source"} <= set(heap["table"][0])


@pytest.mark.asyncio
async def test_transcript_since(api: Api) -> None:
    reply = await tcp_exchange(api.emu.tcp_address, frame("device-id"))
    assert reply.startswith(b"\n\n{")
    records = await api.ok("GET", "/v1/transcript")
    assert [r["type"] for r in records[:2]] == ["state", "state"]  # power on, booted
    [exchange] = [r for r in records if r["type"] == "exchange"]
    assert exchange["command"] == "device-id"
    assert exchange["transport"] == "tcp"
    assert exchange["reply"] == reply.decode("latin-1")
    seqs = [r["seq"] for r in records]
    assert seqs == sorted(seqs)
    assert await api.ok("GET", f"/v1/transcript?since={exchange['seq']}") == []
    assert await api.ok("GET", f"/v1/transcript?since={exchange['seq'] - 1}") == [exchange]


# -- acting --------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_power_off_on_cycle(api: Api) -> None:
    tcp = api.emu.tcp_address
    snap = await api.ok("POST", "/v1/power", {"action": "off"})
    assert snap["state"] == "off"
    assert snap["led"]["text"] == "off"
    assert snap["access_point"] is None
    assert await refused(tcp)  # the snapshot is taken after the listeners closed
    snap = await api.ok("POST", "/v1/power", {"action": "on"})
    assert snap["state"] == "listening"
    assert snap["access_point"] is not None
    assert (await tcp_exchange(tcp, frame("version"))).startswith(b"\n\n{")
    snap = await api.ok("POST", "/v1/power", {"action": "cycle"})
    assert snap["state"] == "listening"
    assert api.emu.tcp_address == tcp
    causes = [r["cause"] for r in await api.ok("GET", "/v1/transcript") if r["type"] == "state"]
    assert "PowerOff" in causes
    assert "PowerCycle" in causes


@pytest.mark.asyncio
async def test_button_and_listen(api: Api) -> None:
    snap = await api.ok("POST", "/v1/button", {"hold_s": 3})
    assert snap["state"] == "listening"
    snap = await api.ok("POST", "/v1/button")  # no body: the default 3 s hold
    assert snap["state"] == "listening"
    snap = await api.ok("POST", "/v1/listen", {})
    assert snap["state"] == "listening"
    assert snap["access_point"] is not None


@pytest.mark.asyncio
async def test_button_hold_10s_clears_stored_networks(api: Api) -> None:
    key = api.emu.device.key
    body = '{"idx":0,"ssid":"guest","sec":4194310,"ch":6,"pwd":"%s"}' % encrypt(
        key, WIFI_PASSWORD.encode()
    )
    assert await tcp_exchange(api.emu.tcp_address, frame("configure-ap", body.encode())) == (
        b'\n\n{"r":0}'
    )
    creds = (await api.state())["credentials"]
    assert creds == [
        {
            "ssid": "guest",
            "security": 4194310,
            "channel": 6,
            "password": "<redacted>",
            "enterprise": False,
        }
    ]
    snap = await api.ok("POST", "/v1/button", {"hold_s": 10.5})
    assert snap["state"] == "listening"
    assert snap["credentials"] == []


@pytest.mark.asyncio
async def test_app_ram_and_gate(api: Api) -> None:
    snap = await api.ok("PUT", "/v1/app-ram", {"bytes": 53248})
    assert snap["heap"]["app_ram_bytes"] == 53248
    assert api.emu.device.heap.app_ram_bytes == 53248
    snap = await api.ok("PUT", "/v1/gate", {"bytes": 30000})
    assert (snap["heap"]["gate_bytes"], snap["heap"]["gate_mode"]) == (30000, "appears")
    snap = await api.ok("PUT", "/v1/gate", {"mode": "refuse"})
    assert (snap["heap"]["gate_bytes"], snap["heap"]["gate_mode"]) == (30000, "refuse")
    snap = await api.ok("PUT", "/v1/gate", {"bytes": 22016, "mode": "appears"})
    assert (snap["heap"]["gate_bytes"], snap["heap"]["gate_mode"]) == (22016, "appears")


@pytest.mark.asyncio
async def test_app_ram_above_the_gate_fails_it_after_power_cycle(api: Api) -> None:
    heap = (await api.state())["heap"]
    above = heap["heap_after_boot_bytes"] - heap["gate_bytes"] + 1
    snap = await api.ok("PUT", "/v1/app-ram", {"bytes": above})
    assert snap["listening_health"]["gate_passed"] is True  # checked on the next entry
    await api.ok("POST", "/v1/power", {"action": "cycle"})
    snap = await api.ok("POST", "/v1/listen", {})
    assert snap["state"] == "listening"
    assert snap["listening_health"]["gate_passed"] is False
    assert snap["listening_health"]["free_at_trigger_bytes"] < heap["gate_bytes"]
    assert snap["access_point"]["below_memory_gate"] is True


@pytest.mark.asyncio
async def test_gate_refuse_mode_keeps_the_ap_down(api: Api) -> None:
    await api.ok("PUT", "/v1/gate", {"mode": "refuse"})
    await api.ok("PUT", "/v1/app-ram", {"bytes": 45000})  # 16,440 B free < 22,016 B
    snap = await api.ok("POST", "/v1/power", {"action": "cycle"})
    assert snap["state"] == "listening"  # the LED blinks blue ...
    assert snap["listening_health"]["refused"] is True
    assert snap["access_point"] is None  # ... but there is no AP
    assert await refused(api.emu.tcp_address)


@pytest.mark.asyncio
async def test_radio_get_and_put(api: Api) -> None:
    radio = await api.ok("GET", "/v1/radio")
    assert radio["networks"] == (await api.state())["radio"]
    assert {"default", "unicode", "empty", "large"} <= set(radio["packs"])
    snap = await api.ok("PUT", "/v1/radio", {"pack": "unicode"})
    assert snap["radio"][0]["ssid"] == "x" * 32
    reply = await tcp_exchange(api.emu.tcp_address, frame("scan-ap"))
    assert "Café-Net".encode() in reply  # the device now scans the new environment
    networks = [{"ssid": "Lab", "security": "wpa2_aes", "password": RADIO_PASSWORD, "ch": 1}]
    status, payload = await api.call("PUT", "/v1/radio", {"networks": networks})
    assert status == 400  # 'ch' is not a network field
    assert_error(payload, "invalid_request", "unknown key", "ch")
    networks[0]["channel"] = networks[0].pop("ch")
    snap = await api.ok("PUT", "/v1/radio", {"networks": networks})
    assert [(n["ssid"], n["channel"], n["has_password"]) for n in snap["radio"]] == [
        ("Lab", 1, True)
    ]
    assert (await api.ok("GET", "/v1/radio"))["networks"] == snap["radio"]
    snap = await api.ok("PUT", "/v1/radio", {"pack": "empty"})
    assert snap["radio"] == []
    assert await tcp_exchange(api.emu.tcp_address, frame("scan-ap")) == b'\n\n{"scans":[]}'


@pytest.mark.asyncio
async def test_faults_crud(api: Api) -> None:
    assert await api.ok("GET", "/v1/faults") == []
    first = await api.ok(
        "POST", "/v1/faults", {"kind": "latency", "delay_ms": 5, "times": 2}, status=201
    )
    assert first == {
        "id": 1,
        "kind": "latency",
        "command": "*",
        "transport": "*",
        "skip": 0,
        "times": 2,
        "seen": 0,
        "applied": 0,
        "delay_ms": 5.0,
    }
    second = await api.ok("POST", "/v1/faults", {"kind": "reset", "command": "scan-ap"}, 201)
    assert second["id"] == 2
    assert [f["id"] for f in await api.ok("GET", "/v1/faults")] == [1, 2]
    snap = await api.ok("DELETE", "/v1/faults/1")
    assert [f["id"] for f in snap["faults"]] == [2]
    status, payload = await api.call("DELETE", "/v1/faults/1")
    assert status == 404
    assert_error(payload, "not_found", "no fault with id 1", "[2]")
    snap = await api.ok("DELETE", "/v1/faults")
    assert snap["faults"] == []
    assert await api.ok("GET", "/v1/faults") == []


@pytest.mark.asyncio
async def test_no_reply_fault_silences_only_its_command(api: Api) -> None:
    fault = await api.ok(
        "POST",
        "/v1/faults",
        {"kind": "no-reply", "command": "version", "transport": "tcp"},
        status=201,
    )
    reader, writer = await asyncio.open_connection(*api.emu.tcp_address)
    try:
        writer.write(frame("version"))
        await writer.drain()
        with pytest.raises(TimeoutError):  # an assertion window, not synchronisation
            await asyncio.wait_for(reader.read(1), 0.3)
        assert not reader.at_eof()
        assert not writer.is_closing()
        reply = await tcp_exchange(api.emu.tcp_address, frame("device-id"))
        assert reply.startswith(b'\n\n{"id":"')
    finally:
        writer.close()
    [listed] = await api.ok("GET", "/v1/faults")
    assert (listed["id"], listed["applied"]) == (fault["id"], 1)
    await api.ok("DELETE", f"/v1/faults/{fault['id']}")
    assert (await tcp_exchange(api.emu.tcp_address, frame("version"))).startswith(b"\n\n{")


# -- errors --------------------------------------------------------------------------
BAD_REQUESTS = [
    ("POST", "/v1/button", {"hold_s": "x"}, "invalid_request", "'hold_s'"),
    ("POST", "/v1/button", {"hold_s": -1}, "invalid_request", "non-negative"),
    ("POST", "/v1/button", {"hold_s": True}, "invalid_request", "'hold_s'"),
    ("POST", "/v1/button", {"hold": 3}, "unknown_field", "['hold']"),
    ("POST", "/v1/power", {"action": "explode"}, "invalid_request", "'action' must be one of"),
    ("POST", "/v1/power", {"action": ["off"]}, "invalid_request", "'action'"),
    ("POST", "/v1/power", {"action": None}, "invalid_request", "'action'"),
    ("POST", "/v1/power", {}, "invalid_request", "missing 'action'"),
    ("POST", "/v1/power", {"action": "off", "force": True}, "unknown_field", "force"),
    ("POST", "/v1/listen", {"now": True}, "unknown_field", "now"),
    ("PUT", "/v1/app-ram", {"bytes": -1}, "invalid_request", "'bytes' must be an integer >= 0"),
    ("PUT", "/v1/app-ram", {"bytes": "52k"}, "invalid_request", "'bytes'"),
    ("PUT", "/v1/app-ram", {"bytes": 1.5}, "invalid_request", "'bytes'"),
    ("PUT", "/v1/app-ram", {"bytes": 10**9}, "invalid_request", "exceeds the heap after boot"),
    ("PUT", "/v1/app-ram", {}, "invalid_request", "missing 'bytes'"),
    ("PUT", "/v1/app-ram", {"size": 5}, "unknown_field", "size"),
    ("PUT", "/v1/gate", {"bytes": 30000, "mode": "maybe"}, "invalid_request", "'mode'"),
    ("PUT", "/v1/gate", {"bytes": -5, "mode": "refuse"}, "invalid_request", "'bytes'"),
    ("PUT", "/v1/gate", {"bytes": None}, "invalid_request", "'bytes'"),
    ("PUT", "/v1/gate", {}, "invalid_request", "'bytes'"),
    ("PUT", "/v1/radio", {"pack": "nope"}, "invalid_request", "'pack' must be one of"),
    ("PUT", "/v1/radio", {"pack": ["unicode"]}, "invalid_request", "'pack'"),
    ("PUT", "/v1/radio", {"pack": "unicode", "networks": []}, "invalid_request", "exactly one"),
    ("PUT", "/v1/radio", {}, "invalid_request", "exactly one"),
    ("PUT", "/v1/radio", {"networks": {"ssid": "x"}}, "invalid_request", "array"),
    ("PUT", "/v1/radio", {"networks": [42]}, "invalid_request", "network #1 must be an object"),
    ("PUT", "/v1/radio", {"networks": [{"ssid": 5}]}, "invalid_request", "'ssid'"),
    ("POST", "/v1/faults", {"kind": "gremlins"}, "invalid_request", "'kind' must be one of"),
    ("POST", "/v1/faults", {}, "invalid_request", "'kind'"),
    ("POST", "/v1/faults", {"kind": "reset", "colour": 1}, "invalid_request", "colour"),
    ("POST", "/v1/faults", {"kind": "reset", "skip": "x"}, "invalid_request", "'skip'"),
    ("POST", "/v1/faults", {"kind": "reset", "command": "reboot"}, "invalid_request", "'command'"),
    ("POST", "/v1/faults", {"kind": "latency"}, "invalid_request", "delay_ms"),
    ("POST", "/v1/faults", {"kind": "join"}, "invalid_request", "'outcome'"),
]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("method", "path", "body", "code", "fragment"),
    BAD_REQUESTS,
    ids=[f"{m} {p} {json.dumps(b)}" for m, p, b, _, _ in BAD_REQUESTS],
)
async def test_bad_input_is_400_and_changes_nothing(
    api: Api, method: str, path: str, body: Any, code: str, fragment: str
) -> None:
    before = await api.state()
    status, payload = await api.call(method, path, body)
    assert status == 400
    assert_error(payload, code, fragment)
    assert await api.state() == before


MUTATING = [
    ("POST", "/v1/button"),
    ("POST", "/v1/power"),
    ("POST", "/v1/listen"),
    ("PUT", "/v1/app-ram"),
    ("PUT", "/v1/gate"),
    ("PUT", "/v1/radio"),
    ("POST", "/v1/faults"),
]
JSON = {"Content-Type": "application/json"}
BAD_BODIES = [
    pytest.param(b'{"action": "off"', JSON, 400, "invalid_json", "not valid JSON", id="truncated"),
    pytest.param(b"action=off", JSON, 400, "invalid_json", "not valid JSON", id="form-as-json"),
    pytest.param(b'["off"]', JSON, 400, "invalid_body", "got an array", id="array"),
    pytest.param(b'"off"', JSON, 400, "invalid_body", "got a string", id="string"),
    pytest.param(b"null", JSON, 400, "invalid_body", "got null", id="null"),
    pytest.param(b'{"hold_s": NaN}', JSON, 400, "invalid_json", "NaN", id="nan"),
    pytest.param(b'{"a": "\xff"}', JSON, 400, "invalid_json", "UTF-8", id="not-utf8"),
    pytest.param(
        b'{"action": "off"}',
        {"Content-Type": "text/plain"},
        415,
        "unsupported_media_type",
        "application/json",
        id="text-plain",
    ),
    pytest.param(
        b'{"action": "off"}',
        {"Content-Type": "application/x-www-form-urlencoded"},
        415,
        "unsupported_media_type",
        "application/json",
        id="form",
    ),
]


@pytest.mark.asyncio
@pytest.mark.parametrize(("method", "path"), MUTATING, ids=[f"{m} {p}" for m, p in MUTATING])
@pytest.mark.parametrize(("data", "headers", "status", "code", "fragment"), BAD_BODIES)
async def test_malformed_bodies_are_rejected_and_change_nothing(
    api: Api,
    method: str,
    path: str,
    data: bytes,
    headers: dict[str, str],
    status: int,
    code: str,
    fragment: str,
) -> None:
    before = await api.state()
    got, payload = await api.call(method, path, data=data, headers=headers)
    assert got == status
    assert_error(payload, code, fragment)
    assert await api.state() == before


@pytest.mark.asyncio
async def test_oversized_body_is_413_json(api: Api) -> None:
    before = await api.state()
    big = b'{"pack": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    status, payload = await api.call("PUT", "/v1/radio", data=io.BytesIO(big), headers=JSON)
    assert status == 413
    assert_error(payload, "payload_too_large", "too large")
    assert await api.state() == before


@pytest.mark.asyncio
@pytest.mark.parametrize("query", ["since=-1", "since=abc", "since=1.5", "from=3"])
async def test_bad_transcript_query(api: Api, query: str) -> None:
    status, payload = await api.call("GET", f"/v1/transcript?{query}")
    assert status == 400
    assert payload["error"] in ("invalid_request", "unknown_field")
    assert "since" in payload["message"]


@pytest.mark.asyncio
async def test_events_the_state_does_not_accept_are_409(api: Api) -> None:
    await api.ok("POST", "/v1/power", {"action": "off"})
    before = await api.state()
    for method, path, body in [
        ("POST", "/v1/listen", {}),
        ("POST", "/v1/button", {"hold_s": 3}),
        ("POST", "/v1/power", {"action": "off"}),
        ("POST", "/v1/power", {"action": "cycle"}),
    ]:
        status, payload = await api.call(method, path, body)
        assert status == 409, (path, body)
        assert_error(payload, "invalid_transition", "not accepted in state 'off'")
        assert payload["state"] == "off"
        assert await api.state() == before
    await api.ok("POST", "/v1/power", {"action": "on"})
    status, payload = await api.call("POST", "/v1/power", {"action": "on"})
    assert status == 409
    assert_error(payload, "invalid_transition", "'listening'")


@pytest.mark.asyncio
async def test_unknown_routes_and_methods_are_json(api: Api) -> None:
    status, payload = await api.call("GET", "/v1/nope")
    assert status == 404
    assert_error(payload, "not_found", "GET /v1/nope", "GET /v1/state")
    status, payload = await api.call("GET", "/")
    assert status == 404
    status, payload = await api.call("DELETE", "/v1/faults/abc")
    assert status == 404
    assert_error(payload, "not_found")
    status, payload = await api.call("DELETE", "/v1/faults/999")
    assert status == 404
    assert_error(payload, "not_found", "no fault with id 999")
    async with api.session.patch(api.server.url + "/v1/state", json={}) as resp:
        assert resp.status == 405
        assert "GET" in resp.headers["Allow"]
        assert_error(await resp.json(), "method_not_allowed", "PATCH", "/v1/state", "GET")
    status, payload = await api.call("GET", "/v1/button")
    assert status == 405
    assert_error(payload, "method_not_allowed", "POST")


# -- secrets -------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_no_password_or_claim_code_in_any_reply_or_log(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    networks = [{"ssid": "guest", "security": "wpa2_mixed", "password": RADIO_PASSWORD}]
    await api.ok("PUT", "/v1/radio", {"networks": networks})
    key = api.emu.device.key
    body = '{"idx":0,"ssid":"guest","sec":4194310,"ch":6,"pwd":"%s"}' % encrypt(
        key, WIFI_PASSWORD.encode()
    )
    assert (await tcp_exchange(api.emu.tcp_address, frame("configure-ap", body.encode()))) == (
        b'\n\n{"r":0}'
    )
    set_body = json.dumps({"k": "cc", "v": CLAIM_CODE}).encode()
    assert await tcp_exchange(api.emu.tcp_address, frame("set", set_body)) == b'\n\n{"r":0}'
    assert api.emu.device.dct.claim_code == CLAIM_CODE.encode()
    snap = await api.state()
    assert snap["claim_code_set"] is True
    assert snap["credentials"][0]["password"] == "<redacted>"
    texts = []
    for path in ("/v1/state", "/v1/heap", "/v1/radio", "/v1/faults", "/v1/transcript"):
        async with api.session.get(api.server.url + path) as resp:
            assert resp.status == 200
            texts.append(await resp.text())
    status, payload = await api.call("PUT", "/v1/radio", {"pack": CLAIM_CODE})
    assert status == 400
    texts.append(json.dumps(payload))
    [set_record] = [
        r for r in json.loads(texts[-2]) if r.get("command") == "set"
    ]  # the transcript still shows the framing, masked
    assert set_record["request"].endswith('"v": "' + "*" * len(CLAIM_CODE) + '"}')
    for secret in (CLAIM_CODE, WIFI_PASSWORD, RADIO_PASSWORD):
        for text in [*texts, caplog.text]:
            assert secret not in text


@pytest.mark.asyncio
async def test_claim_code_with_escaped_quote_is_masked(api: Api) -> None:
    # the transcript's own mask stops at the escaped quote; the API masks the rest
    set_body = b'{"k":"cc","v":"abc\\"def-secret-part"}'
    assert await tcp_exchange(api.emu.tcp_address, frame("set", set_body)) == b'\n\n{"r":0}'
    text = json.dumps(await api.ok("GET", "/v1/transcript"))
    assert "def-secret-part" not in text
    assert "abc" not in text


@pytest.mark.parametrize(
    ("request_text", "masked"),
    [
        ('{"k":"cc","v":"abcd"}', '{"k":"cc","v":"****"}'),
        ('{"v" : "abcd","k":"cc"}', '{"v" : "****","k":"cc"}'),
        ('{"k":"cc","v":"ab\\"cd"}', '{"k":"cc","v":"******"}'),
        ('{"k":"cc","v":"**"cd"}', '{"k":"cc","v":"**"***}'),
        ('{"k":"cc","v":12345}', '{"k":"cc","v":*****}'),
        # a body jsmn cannot parse is masked whole (structure kept)
        ('set\n10\n\n{"v":"ab', 'set\n10\n\n{"*":"**'),
        ('{k:"cc",v:"unquoted-key"}', '{k:"cc",v:"************"}'),
        ('{"k":"cc"}', '{"k":"cc"}'),
    ],
)
def test_mask_set_request(request_text: str, masked: str) -> None:
    assert mask_set_request(request_text) == masked
    assert len(mask_set_request(request_text)) == len(request_text)


# -- softap-sim ctl ------------------------------------------------------------------
async def run_ctl(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``softap-sim ctl ARGV`` in a thread (urllib blocks; the server runs on this loop)."""
    code = await asyncio.to_thread(ctl_mod.main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.asyncio
async def test_ctl_state_human_and_json(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    url = api.server.url
    code, out, _ = await run_ctl(capsys, "--control", url, "state")
    assert code == 0
    assert "state        listening  (LED blinking dark blue)" in out
    assert api.emu.ssid in out
    assert f"AP           up: TCP :{api.emu.tcp_address[1]} listening" in out
    code, out, _ = await run_ctl(capsys, "state", "--json", "--control", url)
    assert code == 0
    assert json.loads(out) == await api.state()


@pytest.mark.asyncio
async def test_ctl_control_url_from_environment(
    api: Api, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOFTAP_SIM_CONTROL", api.server.url + "/")
    code, out, _ = await run_ctl(capsys, "heap")
    assert code == 0
    assert "softap object" in out


@pytest.mark.asyncio
async def test_ctl_actions(api: Api, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    c = ("--control", api.server.url)
    assert (await run_ctl(capsys, *c, "power", "off"))[:2] == (
        0,
        "state: off (LED off); access point down\n",
    )
    code, _, err = await run_ctl(capsys, *c, "listen")
    assert code == 1
    assert "ListenRequested is not accepted in state 'off'" in err
    code, out, _ = await run_ctl(capsys, *c, "power", "on")
    assert (code, out) == (0, "state: listening (LED blinking dark blue); access point up\n")
    assert (await run_ctl(capsys, *c, "button", "--hold", "3"))[0] == 0
    assert (await run_ctl(capsys, *c, "listen"))[0] == 0

    code, out, _ = await run_ctl(capsys, *c, "app-ram", "52k")
    assert code == 0
    assert "app RAM 53,248 B" in out
    assert api.emu.device.heap.app_ram_bytes == 53248
    assert (await run_ctl(capsys, *c, "app-ram", "0x1000"))[0] == 0
    assert api.emu.device.heap.app_ram_bytes == 4096

    code, out, _ = await run_ctl(capsys, *c, "gate", "--bytes", "21k", "--mode", "refuse")
    assert (code, out) == (0, "gate 21,504 B, mode refuse\n")
    code, out, _ = await run_ctl(capsys, *c, "gate")
    assert (code, out) == (0, "gate 21,504 B, mode refuse\n")

    code, out, _ = await run_ctl(capsys, *c, "radio", "--pack", "large")
    assert (code, out) == (0, "radio: 60 network(s) in range\n")
    networks = tmp_path / "networks.toml"
    networks.write_text(
        '[[network]]\nssid = "Lab"\nsecurity = "wpa2_aes"\npassword = "pw-12345678"\n'
        'channel = 3\n\n[[network]]\nssid = "Open"\nsecurity = "open"\n',
        encoding="utf-8",
    )
    code, out, _ = await run_ctl(capsys, *c, "radio", "--file", str(networks))
    assert (code, out) == (0, "radio: 2 network(s) in range\n")
    assert [ap.ssid for ap in api.emu.device.radio.access_points] == [b"Lab", b"Open"]
    code, out, _ = await run_ctl(capsys, *c, "radio")
    assert code == 0
    assert "'Lab'" in out
    assert "packs: " in out
    assert "pw-12345678" not in out
    networks.write_text('[[network]]\nssid = "Lab"\nchannel = "three"\n', encoding="utf-8")
    code, _, err = await run_ctl(capsys, *c, "radio", "--file", str(networks))
    assert code == 1
    assert f"networks file {networks}: " in err
    assert "'channel' must be an integer" in err


@pytest.mark.asyncio
async def test_ctl_faults(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    c = ("--control", api.server.url)
    code, out, _ = await run_ctl(
        capsys,
        *c,
        "fault",
        "add",
        "no-reply",
        "--command",
        "version",
        "--transport",
        "tcp",
        "--skip",
        "1",
        "--times",
        "2",
    )
    assert code == 0
    assert out.startswith("added fault #1 no-reply on version/tcp")
    code, out, _ = await run_ctl(
        capsys, *c, "fault", "add", "latency", "--delay-ms", "20", "--jitter-ms", "2.5"
    )
    assert code == 0
    assert "delay_ms=20.0 jitter_ms=2.5" in out
    faults = api.emu.control.faults()
    assert [(f["kind"], f["skip"], f["times"]) for f in faults] == [
        ("no-reply", 1, 2),
        ("latency", 0, None),
    ]
    code, out, _ = await run_ctl(capsys, *c, "fault", "list")
    assert code == 0
    assert out.splitlines()[0].startswith("#1 no-reply on version/tcp")
    code, out, _ = await run_ctl(capsys, *c, "fault", "list", "--json")
    assert json.loads(out) == faults
    code, out, _ = await run_ctl(capsys, *c, "fault", "rm", "1")
    assert (code, out) == (0, "removed fault #1\n")
    code, _, err = await run_ctl(capsys, *c, "fault", "rm", "1")
    assert code == 1
    assert "no fault with id 1" in err
    code, _, err = await run_ctl(capsys, *c, "fault", "add", "gremlins")
    assert code == 1
    assert err.startswith("softap-sim ctl: error: 'kind' must be one of")
    assert len(err.splitlines()) == 1
    assert (await run_ctl(capsys, *c, "fault", "clear"))[:2] == (0, "all faults cleared\n")
    assert api.emu.control.faults() == []
    code, out, _ = await run_ctl(capsys, *c, "fault", "list")
    assert (code, out) == (0, "no active faults\n")


@pytest.mark.asyncio
async def test_ctl_transcript(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    c = ("--control", api.server.url)
    await tcp_exchange(api.emu.tcp_address, frame("device-id"))
    code, out, _ = await run_ctl(capsys, *c, "transcript")
    assert code == 0
    records = [json.loads(line) for line in out.splitlines()]
    assert records == await api.ok("GET", "/v1/transcript")
    last = records[-1]["seq"]
    code, out, _ = await run_ctl(capsys, *c, "transcript", "--since", str(last))
    assert (code, out) == (0, "")


@pytest.mark.asyncio
async def test_ctl_transcript_follow_until_ctrl_c(
    api: Api, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ctl_mod.build_parser().parse_args(
        ["ctl", "--control", api.server.url, "transcript", "--follow"]
    )
    loop = asyncio.get_running_loop()
    polls: list[float] = []

    def fake_sleep(seconds: float) -> None:
        polls.append(seconds)
        if len(polls) == 1:  # new traffic between two polls
            asyncio.run_coroutine_threadsafe(
                tcp_exchange(api.emu.tcp_address, frame("version")), loop
            ).result(5)
        else:
            raise KeyboardInterrupt

    code = await asyncio.to_thread(ctl_commands.transcript, args, fake_sleep)
    assert code == 0
    assert polls == [ctl_mod.FOLLOW_INTERVAL_S] * 2
    out = capsys.readouterr().out
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))  # no repeats
    assert records[-1]["command"] == "version"


@pytest.mark.asyncio
async def test_ctl_unreachable_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        url = f"http://127.0.0.1:{port}"
        code, out, err = await run_ctl(capsys, "--control", url, "state")
    assert (code, out) == (1, "")
    assert err == (
        f"softap-sim ctl: error: cannot reach the control API at {url}: is `softap-sim run` "
        "running? (its banner prints the control URL)\n"
    )


def test_ctl_bad_control_url(capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl_mod.main(["--control", "localhost:5610", "state"]) == 1
    assert capsys.readouterr().err == (
        "softap-sim ctl: error: bad control URL 'localhost:5610': use http://HOST:PORT, "
        "e.g. http://127.0.0.1:5610\n"
    )


def test_ctl_parse_size() -> None:
    assert argtypes.parse_size("53248") == 53248
    assert argtypes.parse_size("52k") == 53248
    assert argtypes.parse_size("52K") == 53248
    assert argtypes.parse_size("52KiB") == 53248
    assert argtypes.parse_size("0xd000") == 53248
    assert argtypes.parse_size("21.5k") == 22016
    assert argtypes.parse_size("1 MB") == 1024 * 1024
    for bad in ("", "k", "-1", "1.5x", "twelve"):
        with pytest.raises(argparse.ArgumentTypeError):
            argtypes.parse_size(bad)


def test_ctl_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl_mod.main([]) == 2  # no action: help on stderr
    assert "ACTION" in capsys.readouterr().err
    assert ctl_mod.main(["fault"]) == 2
    for argv in (
        ["app-ram", "lots"],
        ["power", "explode"],
        ["radio", "--pack", "a", "--file", "b"],
    ):
        with pytest.raises(SystemExit) as exc:
            ctl_mod.main(argv)
        assert exc.value.code == 2


@pytest.mark.asyncio
async def test_ctl_wires_into_a_host_parser(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    """The contract cli.py relies on: ``add_parser(sub)`` then ``args.ctl_func(args)``."""
    parser = argparse.ArgumentParser(prog="softap-sim")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("run")
    ctl_mod.add_parser(sub)
    # no ctl option may overwrite the host's "command" dest (fault add --command did)
    for argv in (["fault", "add", "reset", "--command", "scan-ap"], ["transcript", "--since", "1"]):
        assert parser.parse_args(["ctl", *argv]).command == "ctl"
    args = parser.parse_args(["ctl", "--control", api.server.url, "power", "cycle"])
    assert args.command == "ctl"
    code = await asyncio.to_thread(args.ctl_func, args)
    assert code == 0
    assert capsys.readouterr().out.startswith("state: listening")


async def run_cli(*argv: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "softap_sim",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.asyncio
async def test_softap_sim_ctl_subprocess(api: Api) -> None:
    """``python -m softap_sim ctl ...`` through cli.py, as a user runs it."""
    code, out, err = await run_cli(
        "ctl",
        "--control",
        api.server.url,
        "fault",
        "add",
        "reset",
        "--command",
        "scan-ap",
        "--times",
        "1",
    )
    assert (code, err) == (0, "")
    assert out.startswith("added fault #1 reset on scan-ap/*")
    assert [f["kind"] for f in api.emu.control.faults()] == ["reset"]
    code, out, err = await run_cli("ctl", "--control", api.server.url, "power", "explode")
    assert code == 2
    assert "invalid choice" in err
    code, out, err = await run_cli("ctl", "--control", api.server.url, "app-ram", "999999")
    assert (code, out) == (1, "")
    assert err == "softap-sim ctl: error: 'bytes' (999999) exceeds the heap after boot (61440)\n"
