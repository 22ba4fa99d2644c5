"""The control API described as OpenAPI 3.1, served at ``GET /v1/openapi.json``.

Built from the route table itself (:data:`softap_sim.control_api.DEVICE_ROUTES` and
``API_ROUTES``) plus the descriptions below, so a route cannot exist undocumented:
:func:`openapi_document` raises for a route without an entry, and the test suite sends
every documented example to its route.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from softap_sim import __version__

Route = tuple[str, str, Callable[..., Awaitable[Any]]]


@dataclass(frozen=True)
class Doc:
    summary: str
    #: JSON schema of the request body (``None``: no body)
    body: dict[str, Any] | None = None
    #: an example request body (sent by the tests)
    example: dict[str, Any] | None = None
    #: what the 200 (or 201) reply is
    reply: str = "the device snapshot after the change was carried out"
    status: int = 200
    errors: tuple[int, ...] = field(default=(400,))


def _obj(**props: Any) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "properties": props}


_INT = {"type": "integer", "minimum": 0}

#: per device route (method, path below the device)
DEVICE_DOCS: dict[tuple[str, str], Doc] = {
    ("GET", "/state"): Doc(
        "The device snapshot: state, LED, access point, ports, heap, stored networks "
        "(passwords redacted), claim status, cloud link, faults, radio",
        reply="the snapshot",
        errors=(),
    ),
    ("GET", "/heap"): Doc(
        "Free heap against the listening-mode gate, with the allocation table",
        reply="the heap figures and 'table'",
        errors=(),
    ),
    ("POST", "/button"): Doc(
        "Press the SETUP button for hold_s seconds (tap < 3 s leaves listening mode, "
        "3 s enters it, 10 s in listening mode clears the stored networks)",
        _obj(hold_s={"type": "number", "minimum": 0, "default": 3}),
        {"hold_s": 3},
        errors=(400, 409),
    ),
    ("POST", "/power"): Doc(
        "Power the device off, on, or cycle it (a reset)",
        {**_obj(action={"enum": ["cycle", "off", "on"]}), "required": ["action"]},
        {"action": "cycle"},
        errors=(400, 409),
    ),
    ("POST", "/listen"): Doc(
        "Enter listening mode (as SETUP held 3 s)", _obj(), {}, errors=(400, 409)
    ),
    ("POST", "/wifi/lost"): Doc(
        "The station loses its Wi-Fi network: blinking green, the cloud session ends, "
        "the device joins again",
        _obj(),
        {},
        errors=(400, 409),
    ),
    ("POST", "/reset"): Doc(
        "Back to the factory state (no networks, no claim code, not claimed; faults, "
        "app RAM, gate and radio as configured), then power on into listening mode. "
        "On a fleet's own /v1/reset: every device",
        _obj(),
        {},
    ),
    ("PUT", "/app-ram"): Doc(
        "The application's RAM use in bytes (checked at the next listening-mode entry)",
        {**_obj(bytes=_INT), "required": ["bytes"]},
        {"bytes": 0},
    ),
    ("PUT", "/gate"): Doc(
        "The free-heap gate for listening mode and what happens below it",
        _obj(bytes=_INT, mode={"enum": ["appears", "refuse"]}),
        {"bytes": 22016, "mode": "appears"},
    ),
    ("GET", "/radio"): Doc(
        "The simulated access points and the available scan packs",
        reply="{'networks': [...], 'packs': {name: description}}",
        errors=(),
    ),
    ("PUT", "/radio"): Doc(
        "Replace the simulated access points (a pack or a list); the device loses its "
        "Wi-Fi if the network it joined is gone",
        _obj(pack={"type": "string"}, networks={"type": "array", "items": {"type": "object"}}),
        {"pack": "unicode"},
    ),
    ("GET", "/faults"): Doc("The active faults", reply="an array of faults", errors=()),
    ("POST", "/faults"): Doc(
        "Add a fault (kind and its parameters: see 'softap-sim ctl fault add --help')",
        {
            "type": "object",
            "required": ["kind"],
            "properties": {
                "kind": {"type": "string"},
                "command": {"type": "string"},
                "transport": {"enum": ["tcp", "http", "*"]},
                "times": _INT,
                "skip": _INT,
            },
        },
        {"kind": "latency", "command": "scan-ap", "delay_ms": 1500},
        reply="the fault with its id",
        status=201,
    ),
    ("DELETE", "/faults"): Doc("Remove every fault", errors=()),
    ("DELETE", "/faults/{id}"): Doc("Remove one fault", errors=(404,)),
    ("GET", "/events"): Doc(
        "The last events the device published and received over the cloud link "
        "(claim codes masked; 'handled': an app subscription matched)",
        reply="an array of events",
        errors=(),
    ),
    ("POST", "/events"): Doc(
        "Publish an event now: one of the scenario's [app.events] by name (its data, "
        "private and ttl unless given) or any name; 409 unless connected to the cloud",
        {
            **_obj(
                name={"type": "string", "maxLength": 63},
                data={"type": "string"},
                private={"type": "boolean", "default": True},
                ttl={"type": "integer", "minimum": 0, "default": 60},
            ),
            "required": ["name"],
        },
        {"name": "heartbeat", "data": "ok"},
        reply="the event published",
        status=201,
        errors=(400, 409),
    ),
    ("GET", "/stream"): Doc(
        "Live updates as server-sent events when sent 'Accept: text/event-stream': a "
        "'snapshot' per device (again after its stored networks or claim change; on a "
        "fleet's /v1/stream a summary of every device), 'state' (state and LED) on every "
        "change, 'event' (cloud link events, claim codes masked), ':ok' keepalives; "
        "'dropped' ends a stream that fell behind. Without that Accept: the opening "
        "snapshot(s) as JSON",
        reply="text/event-stream, or the snapshot (an array of summaries on a fleet)",
        errors=(404,),
    ),
    ("GET", "/transcript"): Doc(
        "Transcript records after sequence number 'since' (claim codes masked)",
        reply="an array of records",
    ),
}

API_DOCS: dict[tuple[str, str], Doc] = {
    ("GET", "/v1/health"): Doc(
        "Liveness: 200 with status 'ok', 503 with 'failing' once an emulator failed "
        "internally (its log has the traceback)",
        reply="{'status', 'version', 'devices', 'failed', 'states'}",
        errors=(503,),
    ),
    ("GET", "/v1/openapi.json"): Doc("This document", reply="OpenAPI 3.1", errors=()),
    ("GET", "/v1/devices"): Doc(
        "Every device of this process (no secrets)", reply="an array of devices", errors=()
    ),
    ("GET", "/v1/devices/{id}"): Doc("One device", reply="a device", errors=(404,)),
}

_ERRORS = {
    400: "malformed input (unknown field, wrong type)",
    404: "unknown device, fault or route",
    409: "the device's state does not accept the event (the message names the state)",
    415: "a body without 'Content-Type: application/json'",
    503: "failing / not started",
}


def _clean(path: str) -> str:
    """``{id:\\d+}`` -> ``{id}`` (aiohttp's patterns are not OpenAPI's)."""
    out, depth, skipping = [], 0, False
    for ch in path:
        if ch == "{":
            depth += 1
            skipping = False
        elif ch == "}":
            depth -= 1
            skipping = False
        elif ch == ":" and depth:
            skipping = True
            continue
        if not skipping:
            out.append(ch)
    return "".join(out)


def _operation(doc: Doc, params: list[dict[str, Any]]) -> dict[str, Any]:
    codes = [*doc.errors, *((415,) if doc.body is not None else ())]
    responses: dict[str, Any] = {
        str(doc.status): {
            "description": doc.reply,
            "content": {"application/json": {"schema": {}}},
        }
    }
    responses.update({str(code): {"description": _ERRORS[code]} for code in codes})
    op: dict[str, Any] = {"summary": doc.summary, "responses": responses}
    if params:
        op["parameters"] = params
    if doc.body is not None:
        op["requestBody"] = {
            "required": False,
            "description": "a JSON object; an empty body counts as {}",
            "content": {"application/json": {"schema": doc.body, "example": doc.example}},
        }
    return op


def _param(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }


def openapi_document(device_routes: Sequence[Route], api_routes: Sequence[Route]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the routes given; KeyError for an undocumented one."""
    paths: dict[str, dict[str, Any]] = {}
    device_param = _param("device", "the device id (24 hex digits, any case)")
    for method, path, _ in device_routes:
        doc = DEVICE_DOCS[(method, _clean(path))]
        extra = [_param("id", "the fault id")] if "{id" in path else []
        for prefix, params in (("/v1", extra), ("/v1/devices/{device}", [device_param, *extra])):
            paths.setdefault(prefix + _clean(path), {})[method.lower()] = _operation(doc, params)
    for method, path, _ in api_routes:
        doc = API_DOCS[(method, _clean(path))]
        params = [_param("id", "the device id")] if "{id" in path else []
        paths.setdefault(_clean(path), {})[method.lower()] = _operation(doc, params)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "softap-sim control API",
            "version": __version__,
            "description": (
                "Steer emulated devices. Loopback only, no authentication. Request bodies "
                "are JSON objects sent with 'Content-Type: application/json' (another "
                "content type is a 415); an empty body counts as {}. Errors are "
                "{'error': code, 'message': text}. On 'softap-sim run' the /v1/<route> "
                "forms address its device; on a fleet name the device: "
                "/v1/devices/{device}/<route>."
            ),
        },
        "paths": dict(sorted(paths.items())),
    }


__all__ = ["API_DOCS", "DEVICE_DOCS", "Doc", "openapi_document"]
