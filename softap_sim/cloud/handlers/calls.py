"""Function calls and variable reads (cloud-api.md §6.2, §6.3), through the device link."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from softap_sim.cloud import validate
from softap_sim.cloud.handlers.common import begin, json_response
from softap_sim.cloud.handlers.devices import device_ref, product_ref
from softap_sim.cloud.views import iso_time

#: firmware buffer for a function argument: 63 bytes + NUL (cloud-api.md §6.2)
MAX_FUNCTION_ARG_BYTES = 63
#: function and variable names: the firmware's limit is 12 (later 64) characters
MAX_CALL_NAME_LENGTH = 64


def _name(request: web.Request) -> str:
    return validate.text(request.match_info["name"], "name", max_length=MAX_CALL_NAME_LENGTH)


def _wants_raw(request: web.Request, body: Mapping[str, str]) -> bool:
    return (body.get("format") or request.query.get("format", "")).lower() == "raw"


async def call_function(request: web.Request) -> web.StreamResponse:
    backend, body, principal = await begin(request)
    name = _name(request)
    arg = validate.function_argument(body, MAX_FUNCTION_ARG_BYTES)
    row = await backend.online_device(principal, device_ref(request), product_ref(request))
    value = await backend.call_function(row, name, arg)
    if _wants_raw(request, body):
        return web.Response(text=str(value), content_type="text/plain")
    return json_response(
        {"id": row["id"], "name": row["name"], "connected": True, "return_value": value}
    )


def _raw_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value)


async def get_variable(request: web.Request) -> web.StreamResponse:
    backend, body, principal = await begin(request)
    name = _name(request)
    row = await backend.online_device(principal, device_ref(request), product_ref(request))
    value = await backend.get_variable(row, name)
    if _wants_raw(request, body):
        return web.Response(text=_raw_text(value), content_type="text/plain")
    return json_response(
        {
            "name": name,
            "result": value,
            "coreInfo": {
                "name": row["name"],
                "deviceID": row["id"],
                "connected": True,
                "last_handshake_at": iso_time(row["last_handshake_at"]),
            },
        }
    )
