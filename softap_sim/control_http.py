"""The control API's request and reply plumbing: which device, JSON bodies, secrets.

:mod:`softap_sim.control_api` holds the handlers, routes and server; this module what
every handler shares -- the device a request is about (its own, or a fleet's by id),
the JSON body rules (an object, ``Content-Type: application/json``, known fields), and
replies with every secret the device holds scrubbed out as a last line of defence.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from aiohttp import web

from softap_sim.control import Control, ControlError
from softap_sim.errors import LifecycleError, SimulatorError
from softap_sim.registry import REGISTRY, unknown_device
from softap_sim.transcript import mask_claim_code

if TYPE_CHECKING:
    from softap_sim.emulator import DeviceEmulator

EMULATOR: web.AppKey[DeviceEmulator] = web.AppKey("emulator")
#: the largest request body accepted
MAX_BODY_BYTES = 1024 * 1024
REDACTED = "<redacted>"
#: secrets shorter than this are not searched for in replies (they would match anywhere)
_MIN_SECRET_CHARS = 4


class ApiError(SimulatorError):
    """An error answered as ``{"error": code, "message": message}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra


# -- helpers -------------------------------------------------------------------------
def _target(request: web.Request) -> DeviceEmulator | None:
    """The device a request is about: ``/v1/devices/{device}/...`` or the API's own."""
    device = request.match_info.get("device")
    if device is not None:
        return request.app[REGISTRY].emulator(device)
    return request.app.get(EMULATOR)


def _emu(request: web.Request) -> DeviceEmulator:
    emu = _target(request)
    if emu is not None:
        return emu
    registry = request.app[REGISTRY]
    device = request.match_info.get("device")
    if device is not None:
        raise ApiError(404, "not_found", unknown_device(registry, device))
    suffix = request.path.removeprefix("/v1")
    raise ApiError(
        404,
        "device_required",
        f"this control API serves a fleet of {len(registry)} devices: name one, "
        f"{request.method} /v1/devices/{{id}}{suffix} (GET /v1/devices lists the ids)",
    )


def _control(request: web.Request) -> Control:
    return _emu(request).control


def _secrets(emu: DeviceEmulator) -> list[str]:
    """Every secret the device holds, as it could appear in a reply."""
    try:
        dev = emu.device
    except LifecycleError:
        return []
    raw: list[bytes] = [dev.dct.claim_code]
    raw += [c.password.value for c in dev.dct.credentials]
    raw += [ap.password.value for ap in dev.radio.access_points]
    found: set[str] = set()
    for value in raw:
        for text in (value.decode("latin-1"), value.decode("utf-8", "replace")):
            if len(text) >= _MIN_SECRET_CHARS:
                found.add(text)
    return sorted(found, key=len, reverse=True)


def _scrub(data: Any, secrets: Collection[str]) -> Any:
    if isinstance(data, str):
        for secret in secrets:
            if secret in data:
                data = data.replace(secret, REDACTED)
        return data
    if isinstance(data, dict):
        return {_scrub(k, secrets): _scrub(v, secrets) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_scrub(v, secrets) for v in data]
    return data


def _dumps(data: Any, secrets: Collection[str]) -> str:
    """JSON text with every known secret replaced (a last line of defence)."""
    text = json.dumps(data)
    if any(json.dumps(s)[1:-1] in text or s in text for s in secrets):
        text = json.dumps(_scrub(data, secrets))
    return text + "\n"


def _request_secrets(request: web.Request) -> list[str]:
    emu = _target(request)
    return [] if emu is None else _secrets(emu)


def _reply(request: web.Request, data: Any, status: int = 200) -> web.Response:
    return web.Response(
        text=_dumps(data, _request_secrets(request)),
        status=status,
        content_type="application/json",
    )


def _error(
    request: web.Request, err: ApiError, headers: dict[str, str] | None = None
) -> web.Response:
    body = {"error": err.code, "message": err.message, **err.extra}
    return web.Response(
        text=_dumps(body, _request_secrets(request)),
        status=err.status,
        content_type="application/json",
        headers=headers,
    )


def _type_name(value: Any) -> str:
    return {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "null",
    }.get(type(value), "a value")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in JSON")


async def _body(request: web.Request, allowed: Collection[str] | None) -> dict[str, Any]:
    """The request's JSON object (``{}`` when there is no body); unknown fields -> 400."""
    raw = await request.read()
    if not raw.strip():
        data: Any = {}
    else:
        if request.content_type != "application/json":
            raise ApiError(
                415,
                "unsupported_media_type",
                "the request body must be a JSON object sent with 'Content-Type: "
                f"application/json' (got {request.content_type!r})",
            )
        try:
            data = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
        except UnicodeDecodeError:
            raise ApiError(400, "invalid_json", "the request body is not UTF-8 text") from None
        except ValueError as err:
            raise ApiError(
                400, "invalid_json", f"the request body is not valid JSON: {err}"
            ) from None
    if not isinstance(data, dict):
        raise ApiError(
            400, "invalid_body", f"the request body must be a JSON object, got {_type_name(data)}"
        )
    if allowed is not None:
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            raise ApiError(
                400,
                "unknown_field",
                f"unknown field(s) {unknown} for {request.method} {request.path}; "
                f"allowed: {sorted(allowed)}",
            )
    return data


def _require(body: dict[str, Any], key: str, hint: str) -> Any:
    if key not in body:
        raise ControlError(f"missing '{key}' ({hint})")
    return body[key]


def _string(value: Any, key: str, options: Collection[str]) -> str:
    if not isinstance(value, str) or value not in options:
        raise ControlError(f"'{key}' must be one of {sorted(options)}, got {value!r}")
    return value


async def _settled(request: web.Request) -> web.Response:
    """The snapshot after the emulator carried out the change (listeners included)."""
    emu = _emu(request)
    await emu.settle()
    return _reply(request, emu.control.snapshot())


def mask_set_request(text: str) -> str:
    """Mask the claim code of a recorded ``set`` request (see ``mask_claim_code``)."""
    return mask_claim_code(text.encode("latin-1")).decode("latin-1")


def _mask_record(record: dict[str, Any]) -> dict[str, Any]:
    if record.get("command") != "set" or not isinstance(record.get("request"), str):
        return record
    return {**record, "request": mask_set_request(record["request"])}
