"""Server-sent events (cloud-api.md §6.5): the caller's devices, one device, public events."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from softap_sim.cloud import validate
from softap_sim.cloud.events import EventStream, close_event_streams
from softap_sim.cloud.handlers.common import BACKEND_KEY, backend_of, begin

log = logging.getLogger(__name__)

#: how often an idle SSE stream checks whether its client went away
SSE_POLL_S = 0.5
#: an idle stream gets a ``:ok`` comment this often, as from the real cloud: particle-cli
#: (3.40) reconnects after 13 s without data and loses the events of the gap
SSE_KEEPALIVE_S = 9.0
MAX_PREFIX_LENGTH = 256


def _prefix(request: web.Request) -> str | None:
    prefix = request.match_info.get("prefix")
    return None if prefix is None else validate.text(prefix, "prefix", max_length=MAX_PREFIX_LENGTH)


async def get_events(request: web.Request) -> web.StreamResponse:
    """``/v1/devices/events[/{prefix}]``: every event of the caller's devices."""
    backend, _body, principal = await begin(request)
    prefix = _prefix(request)
    _device, admin = await backend.stream_target(principal, None)
    return await _serve(request, EventStream(principal, admin, prefix=prefix, now=backend.now))


async def get_public_events(request: web.Request) -> web.StreamResponse:
    """``/v1/events/{prefix}``: public events of any device plus the caller's own."""
    backend, _body, principal = await begin(request)
    prefix = _prefix(request)
    _device, admin = await backend.stream_target(principal, None)
    return await _serve(
        request, EventStream(principal, admin, prefix=prefix, public=True, now=backend.now)
    )


async def get_device_events(request: web.Request) -> web.StreamResponse:
    """``/v1/devices/{id}/events[/{prefix}]``: one visible device's events."""
    backend, _body, principal = await begin(request)
    prefix = _prefix(request)
    device = validate.device_ref(request.match_info["device"])
    device_id, admin = await backend.stream_target(principal, device)
    stream = EventStream(principal, admin, device_id=device_id, prefix=prefix, now=backend.now)
    return await _serve(request, stream)


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _serve(request: web.Request, stream: EventStream) -> web.StreamResponse:
    backend = backend_of(request)
    response = web.StreamResponse(headers={"Cache-Control": "no-cache"})
    response.content_type = "text/event-stream"
    await response.prepare(request)
    backend.subscribers.add(stream)
    try:
        await response.write(b":ok\n\n")
        loop = asyncio.get_running_loop()
        last_write = loop.time()
        while True:
            try:
                frame = await asyncio.wait_for(stream.queue.get(), SSE_POLL_S)
            except TimeoutError:
                if _client_gone(request):
                    break
                if stream.expired():
                    stream.close()  # the end marker follows in the queue
                elif loop.time() - last_write >= SSE_KEEPALIVE_S:
                    await response.write(b":ok\n\n")
                    last_write = loop.time()
                continue
            if frame is None:
                break
            await response.write(frame)
            last_write = loop.time()
    except ConnectionError:
        log.debug("cloud: event stream client went away")
    finally:
        backend.subscribers.discard(stream)
        stream.closed = True
    return response


async def on_shutdown(app: web.Application) -> None:
    """``app.on_shutdown`` hook: without it an open SSE stream holds server close
    until aiohttp's shutdown timeout (60 s)."""
    close_event_streams(app[BACKEND_KEY].subscribers)
