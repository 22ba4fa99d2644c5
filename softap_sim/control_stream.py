"""The control API's live stream and dashboard: ``GET /v1/stream`` and ``GET /ui``.

``GET /v1/stream`` (one device: ``softap-sim run``'s, or ``/v1/devices/{id}/stream``; a
fleet's ``/v1/stream``: every device) is a server-sent event stream
(``text/event-stream``) for the dashboard (:mod:`softap_sim.ui`) and anything else that
wants to watch a device without polling. Frames, each ``data`` one JSON object::

    event: snapshot   one per device first, and again after its stored DCT changed
                      (claimed, claim code, networks): Control.snapshot() for one device,
                      a summary (id, ssid, state, led, claimed, firmware, networks, heap)
                      on a fleet's stream
    event: state      {"device_id", "state", "old", "cause", "led": Led.to_json(), "t"}
    event: event      an event record of the cloud link (claim codes masked) + "device_id"
    event: dropped    the client fell too far behind; the stream ends (EventSource
                      reconnects and gets fresh snapshots)
    :ok               a comment when nothing was sent for ``keepalive_s``

The emulator's callbacks only format a frame and ``put_nowait`` it on the client's
bounded queue: a slow client is dropped (its callbacks removed at once), never waited
for. When the client goes away, the callbacks are removed too. A request that does not
``Accept: text/event-stream`` gets what the stream would open with as one JSON reply.

``GET /ui`` serves the static files of :mod:`softap_sim.ui` (no build step, no CDN).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

from aiohttp import web

from firmware_model.events import StateChanged
from softap_sim.control_http import ApiError, _dumps, _emu, _reply, _secrets, _target
from softap_sim.errors import LifecycleError
from softap_sim.registry import REGISTRY

if TYPE_CHECKING:
    from softap_sim.emulator import DeviceEmulator

log = logging.getLogger(__name__)

#: frames a client may be behind (plus one per device it watches) before it is dropped
STREAM_QUEUE = 1024
#: an idle stream gets a ``:ok`` comment this often (the cloud's SSE_KEEPALIVE_S)
STREAM_KEEPALIVE_S = 9.0
#: how often an idle stream checks whether its client went away
STREAM_POLL_S = 0.5
KEEPALIVE = b":ok\n\n"


@dataclass(frozen=True, slots=True)
class StreamSettings:
    keepalive_s: float = STREAM_KEEPALIVE_S
    poll_s: float = STREAM_POLL_S
    queue: int = STREAM_QUEUE


#: per-app overrides (tests make the intervals short); default :class:`StreamSettings()`
STREAM_SETTINGS: web.AppKey[StreamSettings] = web.AppKey("stream_settings", StreamSettings)


def frame(event: str, data: Any, secrets: list[str]) -> bytes:
    """One SSE frame; ``_dumps`` scrubs every secret the device holds."""
    return f"event: {event}\ndata: {_dumps(data, secrets).rstrip()}\n\n".encode()


def summary(emu: DeviceEmulator) -> dict[str, Any] | None:
    """A fleet card's data (no secrets); ``None`` before the emulator first started."""
    try:
        dev = emu.device
    except LifecycleError:
        return None
    return {
        "id": dev.dct.identity.device_id_hex,
        "ssid": dev.dct.identity.ssid,
        "state": dev.state.value,
        "led": dev.led.to_json(),
        "claimed": dev.dct.claimed,
        "firmware": dev.era.value,
        "networks": [
            {"ssid": c.ssid.decode("utf-8", "replace"), "security": c.security}
            for c in dev.dct.credentials
        ],
        "heap": {"free_bytes": dev.heap.free_bytes, "gate_bytes": dev.heap.gate_bytes},
    }


def _opening(emu: DeviceEmulator, full: bool) -> dict[str, Any] | None:
    if not full:
        return summary(emu)
    try:
        return emu.control.snapshot()
    except LifecycleError:
        return None


class StreamClient:
    """One stream's subscriptions and bounded queue of frames."""

    def __init__(self, maxsize: int) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize)
        self.dropped = False
        #: why the stream was ended from this side (the ``dropped`` frame says it)
        self.reason = ""
        #: set once every callback is removed (the stream ended)
        self.closed = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._unsubscribe: list[Callable[[], None]] = []

    def subscribe(self, emu: DeviceEmulator, *, full: bool) -> bytes | None:
        """Watch ``emu``; returns its opening snapshot frame (``None`` if never started)."""
        opening = _opening(emu, full)
        if opening is None:
            return None
        device_id = emu.device.dct.identity.device_id_hex

        def on_state(change: StateChanged, t: float) -> None:
            data = {
                "device_id": device_id,
                "state": change.new,
                "old": change.old,
                "cause": change.cause,
                "led": change.led.to_json(),
                "t": round(t, 3),
            }
            self.send(frame("state", data, _secrets(emu)))

        def on_event(record: dict[str, Any]) -> None:
            self.send(frame("event", {**record, "device_id": device_id}, _secrets(emu)))

        def on_dct() -> None:
            data = _opening(emu, full)
            if data is not None:
                self.send(frame("snapshot", data, _secrets(emu)))

        emu.on_state_change.append(on_state)
        emu.on_event.append(on_event)
        emu.on_dct_change.append(on_dct)
        self._unsubscribe += [
            _remover(emu.on_state_change, on_state),
            _remover(emu.on_event, on_event),
            _remover(emu.on_dct_change, on_dct),
        ]
        return frame("snapshot", opening, _secrets(emu))

    def send(self, data: bytes) -> None:
        """Queue a frame without waiting; drop the client when its queue is full."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not self._loop:  # an emulator on another thread's loop
            self._loop.call_soon_threadsafe(self._put, data)
        else:
            self._put(data)

    def _put(self, data: bytes) -> None:
        if self.dropped:
            return
        try:
            self.queue.put_nowait(data)
        except asyncio.QueueFull:
            self.dropped = True
            self.reason = f"more than {self.queue.maxsize} frames behind"
            self.unsubscribe()
            log.warning("control API: a stream client fell behind; dropped it")

    def unsubscribe(self) -> None:
        while self._unsubscribe:
            self._unsubscribe.pop()()

    def close(self) -> None:
        self.unsubscribe()
        self.closed.set()


def _remover(hooks: list[Any], callback: object) -> Callable[[], None]:
    def remove() -> None:
        if callback in hooks:
            hooks.remove(callback)

    return remove


#: the streams an app serves (tests wait on their ``closed``; shutdown ends them)
STREAMS: web.AppKey[set[StreamClient]] = web.AppKey("streams")


def install(app: web.Application) -> None:
    """Prepare ``app`` (from ``control_api.create_app``) to serve streams."""
    app[STREAMS] = set()
    app.on_shutdown.append(_on_shutdown)


async def _on_shutdown(app: web.Application) -> None:
    """Without it an open stream holds the server's close until its shutdown timeout."""
    clients: set[StreamClient] = app[STREAMS]
    for client in list(clients):
        client.dropped, client.reason = True, "the control API shuts down"
        client.unsubscribe()
        with contextlib.suppress(asyncio.QueueFull):  # full: it sees ``dropped`` next
            client.queue.put_nowait(b"")


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def get_stream(request: web.Request) -> web.StreamResponse:
    """``GET /v1/stream`` (see the module docstring)."""
    unknown = sorted(request.query)
    if unknown:
        raise ApiError(400, "unknown_field", f"unknown query parameter(s) {unknown}; allowed: []")
    emu = _target(request)
    if emu is None and "device" in request.match_info:
        emu = _emu(request)  # raises the usual 404
    targets = [emu] if emu is not None else request.app[REGISTRY].emulators()
    full = emu is not None
    if "text/event-stream" not in request.headers.get("Accept", ""):
        if emu is not None:
            return _reply(request, emu.control.snapshot())
        return _reply(request, [s for s in map(summary, targets) if s is not None])
    settings = request.app.get(STREAM_SETTINGS) or StreamSettings()
    response = web.StreamResponse(headers={"Cache-Control": "no-cache"})
    response.content_type = "text/event-stream"
    await response.prepare(request)
    client = StreamClient(settings.queue + len(targets))
    streams = request.app[STREAMS]
    streams.add(client)
    try:
        opening = [client.subscribe(one, full=full) for one in targets]
        await response.write(KEEPALIVE + b"".join(f for f in opening if f is not None))
        await _pump(request, response, client, settings)
    except ConnectionError:
        log.debug("control API: a stream client went away")
    finally:
        client.close()
        streams.discard(client)
    return response


async def _pump(
    request: web.Request,
    response: web.StreamResponse,
    client: StreamClient,
    settings: StreamSettings,
) -> None:
    loop = asyncio.get_running_loop()
    last_write = loop.time()
    while True:
        try:
            data = await asyncio.wait_for(client.queue.get(), settings.poll_s)
        except TimeoutError:
            if _client_gone(request):
                return
            if loop.time() - last_write >= settings.keepalive_s:
                await response.write(KEEPALIVE)
                last_write = loop.time()
            continue
        if client.dropped:
            reason = json.dumps({"reason": client.reason}).encode()
            await response.write(b"event: dropped\ndata: " + reason + b"\n\n")
            return
        await response.write(data)
        last_write = loop.time()


# -- the dashboard's files -----------------------------------------------------------
#: suffix -> content type of the files the dashboard ships
UI_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
#: name -> content type: the files of ``softap_sim/ui`` (package data); nothing else is served
UI_FILES = {
    entry.name: UI_TYPES[suffix]
    for entry in (resources.files("softap_sim") / "ui").iterdir()
    if (suffix := "." + entry.name.rpartition(".")[2]) in UI_TYPES and entry.is_file()
}


async def get_ui(request: web.Request) -> web.Response:
    """``GET /ui`` (index.html) and ``GET /ui/{name}`` for the files of ``UI_FILES``."""
    name = request.match_info.get("name", "index.html")
    if name not in UI_FILES:
        raise ApiError(404, "not_found", f"no file {name[:64]!r} in /ui; files: {sorted(UI_FILES)}")
    text = (resources.files("softap_sim") / "ui" / name).read_text("utf-8")
    return web.Response(
        text=text,
        content_type=UI_FILES[name],
        charset="utf-8",
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )


__all__ = [
    "STREAMS",
    "STREAM_SETTINGS",
    "UI_FILES",
    "StreamClient",
    "StreamSettings",
    "get_stream",
    "get_ui",
    "install",
    "summary",
]
