"""``GET /v1/stream``: the control API's server-sent events (softap_sim.control_stream).

A snapshot first, then ``state`` frames as the device changes (SETUP pressed through the
control API), ``event`` records, keepalive comments; the emulator's callbacks are removed
when the client goes away or falls behind (and the emulator never waits for a client);
a fleet's stream names every device; an unknown device is the API's usual JSON 404.
Every wait is on a frame or an event, with a timeout; nothing sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from firmware_model import DeviceIdentity, Secret, WifiCredential
from firmware_model import security as sec
from softap_sim import DeviceEmulator, SimConfig
from softap_sim.control_api import create_app, start_control_api
from softap_sim.control_stream import STREAM_SETTINGS, STREAMS, StreamClient, StreamSettings
from softap_sim.registry import DeviceRegistry

WAIT_S = 5.0
SSE = {"Accept": "text/event-stream"}
WIFI_PASSWORD = "stream-pw-correct-horse"
SUMMARY_KEYS = {"id", "ssid", "state", "led", "claimed", "firmware", "networks", "heap"}

Frame = tuple[str, Any]


async def next_frame(resp: aiohttp.ClientResponse, *, comments: bool = False) -> Frame:
    """The next SSE frame: (event, parsed data), or ("comment", text) when asked for."""
    event: str | None = None
    data: list[str] = []
    while True:
        raw = await asyncio.wait_for(resp.content.readline(), WAIT_S)
        if not raw:
            raise EOFError("the stream ended")
        line = raw.decode("utf-8").rstrip("\n")
        if not line:
            if event is not None or data:
                return event or "message", json.loads("\n".join(data))
        elif line.startswith(":"):
            if comments and event is None and not data:
                return "comment", line[1:]
        elif line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data.append(line.removeprefix("data: "))


async def frames_until(resp: aiohttp.ClientResponse, wanted: str) -> list[Frame]:
    """Frames up to and including the first ``wanted`` one."""
    got: list[Frame] = []
    while not got or got[-1][0] != wanted:
        got.append(await next_frame(resp))
    return got


def hooks(emu: DeviceEmulator) -> tuple[int, int, int]:
    return len(emu.on_state_change), len(emu.on_event), len(emu.on_dct_change)


async def client_for(app: aiohttp.web.Application) -> TestClient[Any, Any]:
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    return client


@pytest_asyncio.fixture
async def api(emulator: DeviceEmulator) -> AsyncIterator[TestClient[Any, Any]]:
    """``softap-sim run``'s API; idle streams check for a gone client every 10 ms."""
    app = create_app(emulator)
    app[STREAM_SETTINGS] = StreamSettings(poll_s=0.01)
    client = await client_for(app)
    yield client
    await client.close()


@pytest_asyncio.fixture
async def fleet(
    spec_config: SimConfig,
) -> AsyncIterator[tuple[TestClient[Any, Any], list[DeviceEmulator]]]:
    configs = [
        replace(spec_config, identity=DeviceIdentity(bytes([i]) * 12, "ABCDE" + "FGH"[i - 1]))
        for i in (1, 2, 3)
    ]
    emulators = [DeviceEmulator(c) for c in configs]
    registry = DeviceRegistry()
    for emu in emulators:
        await emu.start()
        registry.add(emu)
    client = await client_for(create_app(None, registry))
    try:
        yield client, emulators
    finally:
        await client.close()
        for emu in emulators:
            emu.check()
            await emu.close()


def device_id(emu: DeviceEmulator) -> str:
    return emu.device.dct.identity.device_id_hex


def store_cafe(emu: DeviceEmulator) -> None:
    """A stored network in range, so a SETUP tap leaves listening mode to join it."""
    emu.device.dct.credentials.add(WifiCredential(b"Cafe", Secret(b""), sec.OPEN, 11))


@pytest.mark.asyncio
async def test_snapshot_then_state_on_setup_press(
    api: TestClient[Any, Any], emulator: DeviceEmulator
) -> None:
    store_cafe(emulator)
    async with api.get("/v1/stream", headers=SSE) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/event-stream"
        assert resp.headers["Cache-Control"] == "no-cache"
        assert await next_frame(resp, comments=True) == ("comment", "ok")
        event, snap = await next_frame(resp)
        assert event == "snapshot"
        assert snap == json.loads(json.dumps(emulator.control.snapshot()))
        assert snap["state"] == "listening"
        assert snap["led"] == {
            "colour": "dark blue",
            "pattern": "blinking",
            "text": "blinking dark blue",
        }
        before = snap["state"]
        async with api.post("/v1/button", json={"hold_s": 0.5}) as reply:
            assert reply.status == 200, await reply.text()
            after = await reply.json()
        assert after["state"] != before
        states = [data for event, data in await frames_until(resp, "state")]
        first = states[-1]
        assert first["device_id"] == device_id(emulator)
        assert first["old"] == before
        assert (first["state"], first["cause"]) == ("joining", "SetupButton")
        assert first["led"] == {"colour": "green", "pattern": "blinking", "text": "blinking green"}
        while first["state"] != after["state"]:  # the rest of the chain, up to the reply's
            event, first = await next_frame(resp)
            assert event == "state"
        assert first["led"] == after["led"]


@pytest.mark.asyncio
async def test_event_records_are_streamed(
    api: TestClient[Any, Any], emulator: DeviceEmulator
) -> None:
    """What the cloud link hands the emulator's ``on_event`` callbacks reaches the client."""
    record = {"t": 1.5, "direction": "out", "name": "heartbeat", "data": "ok", "private": True}
    async with api.get("/v1/stream", headers=SSE) as resp:
        assert (await next_frame(resp))[0] == "snapshot"
        for callback in list(emulator.on_event):  # as CloudSessions._record_event does
            callback(record)
        event, data = await next_frame(resp)
        assert event == "event"
        assert data == {**record, "device_id": device_id(emulator)}


@pytest.mark.asyncio
async def test_idle_stream_gets_keepalive_comments(emulator: DeviceEmulator) -> None:
    app = create_app(emulator)
    app[STREAM_SETTINGS] = StreamSettings(keepalive_s=0.0, poll_s=0.01)
    client = await client_for(app)
    try:
        async with client.get("/v1/stream", headers=SSE) as resp:
            assert await next_frame(resp, comments=True) == ("comment", "ok")
            assert (await next_frame(resp, comments=True))[0] == "snapshot"
            # nothing happens on the device: the next thing sent is a keepalive
            assert await next_frame(resp, comments=True) == ("comment", "ok")
            assert await next_frame(resp, comments=True) == ("comment", "ok")
    finally:
        await client.close()


@pytest.mark.asyncio
async def test_callbacks_are_removed_when_the_client_goes_away(
    api: TestClient[Any, Any], emulator: DeviceEmulator
) -> None:
    baseline = hooks(emulator)
    resp = await api.get("/v1/stream", headers=SSE)
    assert (await next_frame(resp))[0] == "snapshot"
    assert hooks(emulator) == tuple(n + 1 for n in baseline)
    (stream,) = api.app[STREAMS]
    resp.close()  # drops the connection
    await asyncio.wait_for(stream.closed.wait(), WAIT_S)
    assert hooks(emulator) == baseline
    assert api.app[STREAMS] == set()
    emulator.control.press_button(3.0)  # no callback of the gone client runs
    await emulator.settle()


@pytest.mark.asyncio
async def test_a_slow_client_is_dropped_and_never_blocks_the_emulator(
    emulator: DeviceEmulator,
) -> None:
    app = create_app(emulator)
    app[STREAM_SETTINGS] = StreamSettings(queue=1, poll_s=0.01)  # room for 2 frames
    client = await client_for(app)
    baseline = hooks(emulator)
    try:
        async with client.get("/v1/stream", headers=SSE) as resp:
            assert (await next_frame(resp))[0] == "snapshot"
            (stream,) = app[STREAMS]
            for _ in range(10):  # synchronous: the writer gets no turn in between
                emulator.control.power("cycle")
                if stream.dropped:
                    break
            assert stream.dropped
            assert hooks(emulator) == baseline  # removed at once, not when the writer runs
            frames = await frames_until(resp, "dropped")
            assert "frames behind" in frames[-1][1]["reason"]
            with pytest.raises(EOFError):
                await next_frame(resp)
        await asyncio.wait_for(stream.closed.wait(), WAIT_S)
        await emulator.settle()
    finally:
        await client.close()


@pytest.mark.asyncio
async def test_stream_client_queue_is_bounded(emulator: DeviceEmulator) -> None:
    baseline = hooks(emulator)
    stream = StreamClient(maxsize=3)
    opening = stream.subscribe(emulator, full=False)
    assert opening is not None
    assert opening.startswith(b"event: snapshot\ndata: {")
    for n in range(10):
        stream.send(b"event: x\ndata: %d\n\n" % n)
    assert stream.dropped
    assert stream.queue.qsize() == 3
    assert hooks(emulator) == baseline
    stream.close()
    assert stream.closed.is_set()


@pytest.mark.asyncio
async def test_shutdown_ends_open_streams(emulator: DeviceEmulator) -> None:
    """Closing the server tells an open stream so (else it would hold the close 1 s)."""
    baseline = hooks(emulator)
    server = await start_control_api(emulator, "127.0.0.1", 0)
    async with (
        aiohttp.ClientSession() as session,
        session.get(server.url + "/v1/stream", headers=SSE) as resp,
    ):
        assert (await next_frame(resp))[0] == "snapshot"
        closing = asyncio.create_task(server.close())
        event, data = await next_frame(resp)
        assert (event, data) == ("dropped", {"reason": "the control API shuts down"})
        await asyncio.wait_for(closing, WAIT_S)
    assert hooks(emulator) == baseline


@pytest.mark.asyncio
async def test_fleet_stream_names_every_device(
    fleet: tuple[TestClient[Any, Any], list[DeviceEmulator]],
) -> None:
    client, emulators = fleet
    ids = [device_id(e) for e in emulators]
    async with client.get("/v1/stream", headers=SSE) as resp:
        snaps = [await next_frame(resp) for _ in ids]
        assert [event for event, _ in snaps] == ["snapshot"] * 3
        assert [data["id"] for _, data in snaps] == ids
        for _, data in snaps:
            assert set(data) == SUMMARY_KEYS
            assert (data["state"], data["claimed"]) == ("listening", False)
            assert set(data["heap"]) == {"free_bytes", "gate_bytes"}
        store_cafe(emulators[1])
        async with client.post(f"/v1/devices/{ids[1]}/button", json={"hold_s": 0.5}) as reply:
            assert reply.status == 200, await reply.text()
        _, state = (await frames_until(resp, "state"))[-1]
        assert (state["device_id"], state["old"], state["state"]) == (
            ids[1],
            "listening",
            "joining",
        )
    # one device of the fleet: its full snapshot
    async with client.get(f"/v1/devices/{ids[2].lower()}/stream", headers=SSE) as resp:
        event, snap = await next_frame(resp)
        assert (event, snap["device_id"]) == ("snapshot", ids[2])
        assert "credentials" in snap


@pytest.mark.asyncio
async def test_stored_networks_changes_resend_the_snapshot_without_passwords(
    fleet: tuple[TestClient[Any, Any], list[DeviceEmulator]],
) -> None:
    client, emulators = fleet
    emu = emulators[0]
    async with client.get("/v1/stream", headers=SSE) as resp:
        for _ in emulators:
            await next_frame(resp)
        ssid = emu.device.radio.access_points[0].ssid
        cred = WifiCredential(ssid, Secret(WIFI_PASSWORD.encode()), sec.WPA2_AES_PSK, 6)
        emu.device.dct.credentials.add(cred)
        for callback in list(emu.on_dct_change):  # as the emulator does after a DCT write
            callback()
        raw = await asyncio.wait_for(resp.content.readuntil(b"\n\n"), WAIT_S)
    assert WIFI_PASSWORD.encode() not in raw
    event, data = raw.decode().split("\n")[:2]
    assert event == "event: snapshot"
    snap = json.loads(data.removeprefix("data: "))
    assert snap["id"] == device_id(emu)
    assert snap["networks"] == [{"ssid": ssid.decode(), "security": cred.security}]


@pytest.mark.asyncio
async def test_without_accept_event_stream_the_opening_is_json(
    api: TestClient[Any, Any],
    emulator: DeviceEmulator,
    fleet: tuple[TestClient[Any, Any], list[DeviceEmulator]],
) -> None:
    async with api.get("/v1/stream") as resp:
        assert (resp.status, resp.content_type) == (200, "application/json")
        assert (await resp.json())["device_id"] == device_id(emulator)
    client, emulators = fleet
    async with client.get("/v1/stream") as resp:
        assert [d["id"] for d in await resp.json()] == [device_id(e) for e in emulators]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/v1/devices/" + "0" * 24 + "/stream", 404, "not_found"),
        ("/v1/devices/not-a-device/stream", 404, "not_found"),
        ("/v1/devices/" + "f" * 25 + "/stream", 404, "not_found"),
        ("/v1/stream?since=3", 400, "unknown_field"),
    ],
)
async def test_hostile_stream_requests_get_json_errors(
    fleet: tuple[TestClient[Any, Any], list[DeviceEmulator]], path: str, status: int, code: str
) -> None:
    client, emulators = fleet
    baseline = [hooks(e) for e in emulators]
    async with client.get(path, headers=SSE) as resp:
        assert (resp.status, resp.content_type) == (status, "application/json")
        body = await resp.json()
        assert body["error"] == code
        assert isinstance(body["message"], str)
    assert [hooks(e) for e in emulators] == baseline
