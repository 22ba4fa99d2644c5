"""The control API: ``emu.control`` as JSON over HTTP on a separate loopback port.

``softap-sim ctl`` (:mod:`softap_sim.ctl`), scripts and test harnesses in other
languages steer a running emulator through it; Python code can call ``emu.control``
directly. Every handler is thin: parse the request, call :class:`Control`, serialise
(the shared parsing and scrubbed replies are in :mod:`softap_sim.control_http`).

Routes (all under ``/v1``; request bodies are JSON objects, ``Content-Type:
application/json``; an empty body counts as ``{}``)::

    GET    /v1/state                  snapshot (state, LED, heap, credentials redacted ...)
    GET    /v1/heap                   the heap figures plus the allocation table
    POST   /v1/button      {"hold_s": 3}                       -> snapshot
    POST   /v1/power       {"action": "cycle" | "off" | "on"}  -> snapshot
    POST   /v1/listen      {}                                  -> snapshot
    POST   /v1/wifi/lost   {}  the station loses its network   -> snapshot
    PUT    /v1/app-ram     {"bytes": 53248}                    -> snapshot
    PUT    /v1/gate        {"bytes": 22016, "mode": "refuse"}  -> snapshot
    GET    /v1/radio                  the simulated networks and the scan packs
    PUT    /v1/radio       {"pack": "unicode"} | {"networks": [...]} -> snapshot
    GET    /v1/faults                 the active faults
    POST   /v1/faults      one fault spec (firmware_model.faults) -> the fault, 201
    DELETE /v1/faults/{id}            -> snapshot (404 for an unknown id)
    DELETE /v1/faults                 -> snapshot
    GET    /v1/transcript?since=N     the transcript records after sequence number N
    POST   /v1/reset       {}  factory state, into listening   -> snapshot
    GET    /v1/events                 the last events published and received
    POST   /v1/events      {"name": "heartbeat", "data": "ok"} publish now -> the event, 201
    GET    /v1/stream                 server-sent events: snapshot, state, event (control_stream)
    GET    /v1/health                 200 {"status": "ok", ...}; 503 once an emulator failed
    GET    /v1/openapi.json           this API as OpenAPI 3.1 (softap_sim.control_openapi)
    GET    /v1/devices                every device of the registry (softap_sim.registry)
    GET    /v1/devices/{id}           one of them
    *      /v1/devices/{id}/<route>   any device route above, for that device
    GET    /ui                        the dashboard (softap_sim/ui/; not in the OpenAPI document)

A fleet's API (``create_app(None, registry)``) has no device of its own: name one with
``/v1/devices/{id}/...``; its ``POST /v1/reset`` resets every device.

State-changing routes answer with the snapshot taken after the emulator carried the
change out (listeners opened or closed). Every error is JSON ``{"error": code,
"message": text}``: 400 for malformed input, 409 when the device's state does not accept
the event (the message names the state), 404 for unknown routes and fault ids, 405, 413,
415. Nothing returned or logged contains a Wi-Fi password or a claim code.

The API has no authentication: it binds to loopback by default and warns otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Self

from aiohttp import web

from firmware_model import GateMode, InvalidTransition
from firmware_model.scan_packs import PACKS
from softap_sim import __version__, control_stream
from softap_sim.control import ControlError, NotFoundError
from softap_sim.control_http import (
    EMULATOR,
    MAX_BODY_BYTES,
    ApiError,
    _body,
    _control,
    _error,
    _mask_record,
    _reply,
    _require,
    _settled,
    _string,
    _target,
    _type_name,
    mask_set_request,
)
from softap_sim.errors import LifecycleError
from softap_sim.http_log import ProtocolLogger
from softap_sim.net import is_loopback
from softap_sim.registry import REGISTRY, DeviceRegistry
from softap_sim.registry import ROUTES as REGISTRY_ROUTES

if TYPE_CHECKING:
    from softap_sim.emulator import DeviceEmulator

log = logging.getLogger(__name__)


# -- handlers ------------------------------------------------------------------------
async def get_state(request: web.Request) -> web.Response:
    return _reply(request, _control(request).snapshot())


async def get_heap(request: web.Request) -> web.Response:
    control = _control(request)
    return _reply(request, {**control.snapshot()["heap"], "table": control.heap_table()})


async def post_button(request: web.Request) -> web.Response:
    body = await _body(request, {"hold_s"})
    _control(request).press_button(body.get("hold_s", 3.0))
    return await _settled(request)


async def post_power(request: web.Request) -> web.Response:
    actions = ("cycle", "off", "on")
    body = await _body(request, {"action"})
    action = _string(_require(body, "action", f"one of {list(actions)}"), "action", actions)
    _control(request).power(action)
    return await _settled(request)


async def post_listen(request: web.Request) -> web.Response:
    await _body(request, ())
    _control(request).listen()
    return await _settled(request)


async def post_reset(request: web.Request) -> web.Response:
    """One device back to the factory state; on a fleet's ``/v1/reset``, every device."""
    await _body(request, ())
    emu = _target(request)
    if emu is not None or "device" in request.match_info:
        _control(request).reset()
        return await _settled(request)
    emulators = request.app[REGISTRY].emulators()
    for one in emulators:
        one.control.reset()
    await asyncio.gather(*(one.settle() for one in emulators))
    return _reply(request, {"reset": len(emulators)})


async def get_health(request: web.Request) -> web.Response:
    """Liveness for supervisors (Docker HEALTHCHECK, CI): 503 once an emulator failed."""
    emulators = request.app[REGISTRY].emulators()
    own = request.app.get(EMULATOR)
    if own is not None and own not in emulators:
        emulators.append(own)
    states: dict[str, int] = {}
    failed = 0
    for emu in emulators:
        if emu.failed:
            failed += 1
        try:
            state = emu.device.state.value
        except LifecycleError:
            state = "stopped"
        states[state] = states.get(state, 0) + 1
    body = {
        "status": "failing" if failed else "ok",
        "version": __version__,
        "devices": len(emulators),
        "failed": failed,
        "states": dict(sorted(states.items())),
    }
    return _reply(request, body, status=503 if failed else 200)


async def get_openapi(request: web.Request) -> web.Response:
    from softap_sim.control_openapi import openapi_document

    return _reply(request, openapi_document(DEVICE_ROUTES, API_ROUTES))


async def get_events(request: web.Request) -> web.Response:
    return _reply(request, _control(request).events())


async def post_event(request: web.Request) -> web.Response:
    body = await _body(request, {"name", "data", "private", "ttl"})
    try:
        published = _control(request).publish(body)
    except LifecycleError as err:
        raise ApiError(409, "not_connected", str(err)) from None
    return _reply(request, published, status=201)


async def post_wifi_lost(request: web.Request) -> web.Response:
    await _body(request, ())
    _control(request).wifi_lost()
    return await _settled(request)


async def put_app_ram(request: web.Request) -> web.Response:
    body = await _body(request, {"bytes"})
    _control(request).set_app_ram(_require(body, "bytes", "the application's RAM use"))
    return await _settled(request)


async def put_gate(request: web.Request) -> web.Response:
    body = await _body(request, {"bytes", "mode"})
    if not body:
        raise ControlError("give 'bytes' (the gate, in bytes) and/or 'mode' (appears|refuse)")
    # checked before anything is set, so a bad mode leaves the gate size unchanged too
    mode = body.get("mode")
    if "mode" in body:
        mode = _string(mode, "mode", [m.value for m in GateMode])
    if "bytes" in body and body["bytes"] is None:
        raise ControlError("'bytes' must be an integer >= 0, got None")
    _control(request).set_gate(nbytes=body.get("bytes"), mode=mode)
    return await _settled(request)


async def get_radio(request: web.Request) -> web.Response:
    return _reply(
        request,
        {
            "networks": _control(request).snapshot()["radio"],
            "packs": {name: desc for name, (desc, _) in sorted(PACKS.items())},
        },
    )


async def put_radio(request: web.Request) -> web.Response:
    body = await _body(request, {"pack", "networks"})
    pack, networks = body.get("pack"), body.get("networks")
    if "pack" in body:
        pack = _string(pack, "pack", PACKS)
    if "networks" in body:
        if not isinstance(networks, list):
            raise ControlError(
                f"'networks' must be an array of objects, got {_type_name(networks)}"
            )
        for i, item in enumerate(networks):
            if not isinstance(item, dict):
                raise ControlError(f"network #{i + 1} must be an object, got {_type_name(item)}")
    _control(request).set_radio(networks=networks, pack=pack)
    return await _settled(request)


async def get_faults(request: web.Request) -> web.Response:
    return _reply(request, _control(request).faults())


async def post_fault(request: web.Request) -> web.Response:
    body = await _body(request, None)  # Fault.from_mapping names unknown fields itself
    return _reply(request, _control(request).add_fault(body), status=201)


async def delete_fault(request: web.Request) -> web.Response:
    control = _control(request)
    fault_id = int(request.match_info["id"])
    if not any(f["id"] == fault_id for f in control.faults()):
        known = [f["id"] for f in control.faults()]
        raise ApiError(404, "not_found", f"no fault with id {fault_id}; active ids: {known}")
    control.remove_fault(fault_id)
    return await _settled(request)


async def delete_faults(request: web.Request) -> web.Response:
    _control(request).clear_faults()
    return await _settled(request)


async def get_transcript(request: web.Request) -> web.Response:
    unknown = sorted(set(request.query) - {"since"})
    if unknown:
        raise ApiError(
            400, "unknown_field", f"unknown query parameter(s) {unknown}; allowed: ['since']"
        )
    text = request.query.get("since", "0")
    try:
        since = int(text)
    except ValueError:
        raise ControlError(f"'since' must be an integer >= 0, got {text!r}") from None
    records = [_mask_record(r) for r in _control(request).transcript(since)]
    return _reply(request, records)


_ID_PATTERN = r":\d+"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: routes about one device: (method, path below the device, handler); each is served at
#: ``/v1<path>`` (the API's own device) and ``/v1/devices/{device}<path>`` (any device)
DEVICE_ROUTES: tuple[tuple[str, str, Handler], ...] = (
    ("GET", "/state", get_state),
    ("GET", "/heap", get_heap),
    ("POST", "/button", post_button),
    ("POST", "/power", post_power),
    ("POST", "/listen", post_listen),
    ("POST", "/wifi/lost", post_wifi_lost),
    ("POST", "/reset", post_reset),
    ("PUT", "/app-ram", put_app_ram),
    ("PUT", "/gate", put_gate),
    ("GET", "/radio", get_radio),
    ("PUT", "/radio", put_radio),
    ("GET", "/faults", get_faults),
    ("POST", "/faults", post_fault),
    ("DELETE", "/faults", delete_faults),
    ("DELETE", "/faults/{id" + _ID_PATTERN + "}", delete_fault),
    ("GET", "/transcript", get_transcript),
    ("GET", "/events", get_events),
    ("POST", "/events", post_event),
    ("GET", "/stream", control_stream.get_stream),
)
#: routes about the API itself and its device list
API_ROUTES: tuple[tuple[str, str, Handler], ...] = (
    ("GET", "/v1/health", get_health),
    ("GET", "/v1/openapi.json", get_openapi),
    *REGISTRY_ROUTES,  # GET /v1/devices, GET /v1/devices/{id}
)
_DEVICE_PATTERN = r":[0-9A-Fa-f]{24}"

#: the one route table
ROUTES: tuple[tuple[str, str, Handler], ...] = (
    *((method, "/v1" + path, handler) for method, path, handler in DEVICE_ROUTES),
    *API_ROUTES,
    *(
        (method, "/v1/devices/{device" + _DEVICE_PATTERN + "}" + path, handler)
        for method, path, handler in DEVICE_ROUTES
    ),
    ("GET", "/ui", control_stream.get_ui),  # static files: HTML, not JSON, so not in API_ROUTES
    ("GET", "/ui/{name}", control_stream.get_ui),
)

_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def _route_list() -> str:
    rows = [(m, "/v1" + p) for m, p, _ in DEVICE_ROUTES] + [(m, p) for m, p, _ in API_ROUTES]
    rows.append(("*", "/v1/devices/{device}/<any route above>"))
    return ", ".join(f"{method} {path.replace(_ID_PATTERN, '')}" for method, path in rows)


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure, aiohttp's own 404/405 included, into a JSON error."""
    headers: dict[str, str] | None = None
    try:
        response = await handler(request)
    except ApiError as err:
        api = err
    except NotFoundError as err:
        api = ApiError(404, "not_found", str(err))
    except ControlError as err:
        api = ApiError(400, "invalid_request", str(err))
    except InvalidTransition as err:
        api = ApiError(409, "invalid_transition", str(err), state=err.state.value)
    except LifecycleError as err:
        api = ApiError(503, "unavailable", str(err))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = exc.reason
        if isinstance(exc, web.HTTPNotFound):
            message = f"no such route {request.method} {request.path}; routes: {_route_list()}"
        elif isinstance(exc, web.HTTPMethodNotAllowed):
            allowed = sorted(exc.allowed_methods)
            message = f"method {request.method} is not allowed on {request.path}; use {allowed}"
            headers = {"Allow": ", ".join(allowed)}
        elif isinstance(exc, web.HTTPRequestEntityTooLarge):
            message = f"the request body is too large (limit {MAX_BODY_BYTES} bytes)"
        api = ApiError(exc.status, _CODES.get(exc.status, "http_error"), message)
    except Exception:
        log.exception("control API: %s %s failed", request.method, request.path)
        api = ApiError(500, "internal", "the emulator failed internally; see its log")
    else:
        log.info("control %s %s -> %d", request.method, request.path, response.status)
        return response
    log.info("control %s %s -> %d %s", request.method, request.path, api.status, api.code)
    return _error(request, api, headers)


def create_app(
    emu: DeviceEmulator | None, registry: DeviceRegistry | None = None
) -> web.Application:
    """The aiohttp application serving ``emu.control`` (see the module docstring).

    ``emu=None`` with a ``registry``: a fleet's API, every device under
    ``/v1/devices/{id}/...`` and ``/v1/reset`` resetting them all.
    """
    if emu is None and registry is None:
        raise ValueError("give the emulator, or the registry of a fleet")
    app = web.Application(middlewares=[_json_errors], client_max_size=MAX_BODY_BYTES)
    if emu is not None:
        app[EMULATOR] = emu
    if registry is None:
        assert emu is not None
        registry = DeviceRegistry.of(emu)
    app[REGISTRY] = registry
    app.router.add_routes([web.route(method, path, handler) for method, path, handler in ROUTES])
    control_stream.install(app)
    return app


# -- the server ----------------------------------------------------------------------
class ControlServer:
    """A running control API; ``url`` is what ``softap-sim ctl --control`` takes."""

    def __init__(self, runner: web.AppRunner, host: str, port: int) -> None:
        self._runner: web.AppRunner | None = runner
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def close(self) -> None:
        """Stop serving and release the port. Idempotent."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def _bind(host: str, port: int) -> socket.socket:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    if not infos:  # pragma: no cover - getaddrinfo raises instead
        raise OSError(f"cannot resolve {host!r}")
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
    except OSError:
        sock.close()
        raise
    return sock


async def start_control_api(
    emu: DeviceEmulator | None,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    registry: DeviceRegistry | None = None,
) -> ControlServer:
    """Serve ``emu.control`` on ``host:port`` (0 picks a free port).

    Raises :class:`OSError` (``errno`` set, e.g. ``EADDRINUSE``) if the address cannot be
    bound; the CLI turns it into a one-line message.
    """
    if not is_loopback(host):
        log.warning(
            "the control API listens on %s, not on loopback: anyone who can reach it can "
            "steer the device and read its state (it has no authentication)",
            host or "all interfaces",
        )
    sock = await _bind(host, port)
    runner = web.AppRunner(
        create_app(emu, registry),
        access_log=None,
        shutdown_timeout=1.0,
        logger=ProtocolLogger(logging.getLogger("softap_sim.control_api.http")),
    )
    try:
        await runner.setup()
        site = web.SockSite(runner, sock)
        await site.start()
    except BaseException:
        sock.close()
        await runner.cleanup()
        raise
    bound_host, bound_port = sock.getsockname()[:2]
    server = ControlServer(runner, bound_host, bound_port)
    log.info("control API on %s", server.url)
    return server


__all__ = [
    "API_ROUTES",
    "DEVICE_ROUTES",
    "EMULATOR",
    "ROUTES",
    "ApiError",
    "ControlServer",
    "create_app",
    "mask_set_request",
    "start_control_api",
]
