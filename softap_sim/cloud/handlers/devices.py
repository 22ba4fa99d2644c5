"""Claim codes, device lists, one device, claim by id and unclaim (cloud-api.md §5, §6.1)."""

from __future__ import annotations

from aiohttp import web

from softap_sim.cloud import validate
from softap_sim.cloud.errors import DeviceError, DeviceOffline, InvalidRequest
from softap_sim.cloud.handlers.common import begin, json_response, match
from softap_sim.cloud.models.devices import DEFAULT_PER_PAGE, MAX_PER_PAGE
from softap_sim.cloud.views import device_view, iso_time

#: pages beyond this are empty anyway; the bound keeps OFFSET inside SQLite's int64
MAX_PAGE = 10**9


def product_ref(request: web.Request) -> str | None:
    """``:product`` of a product route (validated: an int64 id or a slug), else None."""
    ref = match(request, "product")
    return None if ref is None else str(validate.product_ref(ref))


def device_ref(request: web.Request) -> str:
    return validate.device_ref(request.match_info["device"])


async def post_device_claims(request: web.Request) -> web.StreamResponse:
    backend, body, principal = await begin(request)
    if body.get("iccid") or body.get("imei"):
        raise InvalidRequest("Cellular claim codes (iccid/imei) are not emulated: send no body")
    code, device_ids = await backend.create_claim_code(principal, product_ref(request))
    return json_response({"claim_code": code, "device_ids": device_ids})


async def get_devices(request: web.Request) -> web.StreamResponse:
    backend, _body, principal = await begin(request)
    rows = await backend.list_devices(principal)
    return json_response([device_view(r, backend.link.is_online(r["id"])) for r in rows])


async def post_devices(request: web.Request) -> web.StreamResponse:
    backend, body, principal = await begin(request)
    device_id = validate.device_id(body.get("id"))
    if device_id is None:
        raise DeviceError("Please specify a device ID (id): 24 hexadecimal characters")
    transfer = validate.flag(body, "request_transfer")
    return json_response(
        await backend.claim_device(principal, device_id, request_transfer=transfer)
    )


async def get_device(request: web.Request) -> web.StreamResponse:
    backend, _body, principal = await begin(request)
    row, owner = await backend.visible_device(principal, device_ref(request), product_ref(request))
    online = backend.link.is_online(row["id"])
    return json_response(device_view(row, online, detail=True, owner=owner))


async def put_device(request: web.Request) -> web.StreamResponse:
    """Rename (``name``: ``particle device rename``) or signal (``signal=1|0``:
    ``particle nyan``, the rainbow LED; acknowledged, the emulated LED is unchanged)."""
    backend, body, principal = await begin(request)
    if "signal" in body and "name" not in body:
        signal = body.get("signal", "").strip()
        if signal not in ("0", "1"):
            raise InvalidRequest('The "signal" parameter must be 1 or 0')
        row, _owner = await backend.visible_device(
            principal, device_ref(request), product_ref(request)
        )
        online = backend.link.is_online(row["id"])
        if not online:
            raise DeviceOffline()
        return json_response({"id": row["id"], "connected": True, "signaling": signal == "1"})
    if "name" not in body:
        unsupported = sorted(k for k in body if k != "access_token")[:5]
        raise InvalidRequest(
            f"Only renaming (name) and signal are emulated; not {unsupported}"
            if unsupported
            else 'The "name" parameter is required'
        )
    name = validate.name(body.get("name"))
    row = await backend.rename_device(principal, device_ref(request), name, product_ref(request))
    return json_response(
        {"id": row["id"], "name": row["name"], "updated_at": iso_time(backend.now())}
    )


async def delete_device(request: web.Request) -> web.StreamResponse:
    backend, _body, principal = await begin(request)
    reply = await backend.unclaim_device(principal, device_ref(request), product_ref(request))
    return json_response(reply)


async def get_product_devices(request: web.Request) -> web.StreamResponse:
    backend, _body, principal = await begin(request)
    ref = product_ref(request)
    assert ref is not None
    query = request.query
    page = validate.positive_int(query, "page", default=1, maximum=MAX_PAGE)
    per_page = validate.positive_int(
        query, "per_page", "perPage", default=DEFAULT_PER_PAGE, maximum=MAX_PER_PAGE
    )
    device_id = validate.text(query.get("deviceId"), "deviceId", max_length=64)
    device_name = validate.text(query.get("deviceName"), "deviceName", max_length=200)
    rows, customers, total_pages, owners = await backend.list_product_devices(
        principal,
        ref,
        page=page,
        per_page=per_page,
        device_id=device_id or None,
        device_name=device_name or None,
    )
    devices = [
        device_view(r, backend.link.is_online(r["id"]), detail=True, owner=owners[r["id"]])
        for r in rows
    ]
    return json_response(
        {"devices": devices, "customers": customers, "meta": {"total_pages": total_pages}}
    )
