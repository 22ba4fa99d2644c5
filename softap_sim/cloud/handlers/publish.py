"""``POST /v1/devices/events``: publish an event from the API (cloud-api.md §6.5).

The event goes to the caller's own SSE streams (and to public ones if ``private=false``)
and, through the device server, to every online device whose subscription takes it
(``MY_DEVICES``: devices of the same owner). ``coreid`` is ``"api"`` as on the real
cloud. Names follow the firmware's limits (63 characters), data at most 622 bytes.
Since 2020 the real API makes every event private; ``private=false`` still makes one
public here, for firmware that subscribes with ``ALL_DEVICES``.
"""

from __future__ import annotations

from aiohttp import web

from softap_sim.cloud import validate
from softap_sim.cloud.errors import InvalidRequest
from softap_sim.cloud.events import DEFAULT_EVENT_TTL_S, make_event
from softap_sim.cloud.handlers.common import begin, json_response

MAX_NAME = 63
MAX_DATA_BYTES = 622


async def post_event(request: web.Request) -> web.StreamResponse:
    backend, body, principal = await begin(request)
    name = validate.text(body.get("name"), "name", max_length=MAX_NAME, required=True)
    if not name.isprintable():
        raise InvalidRequest('The "name" parameter must be printable text')
    data = validate.text(body.get("data"), "data", max_length=MAX_DATA_BYTES)
    if len(data.encode("utf-8")) > MAX_DATA_BYTES:
        raise InvalidRequest(f'The "data" parameter is longer than {MAX_DATA_BYTES} bytes')
    private = True
    if body.get("private", "").strip():
        private = validate.flag(body, "private")
    ttl = DEFAULT_EVENT_TTL_S
    if body.get("ttl", "").strip():
        parsed = validate.int64(body["ttl"])
        if parsed is None or parsed < 0 or parsed > 0xFFFFFFFF:
            raise InvalidRequest('The "ttl" parameter must be a number of seconds')
        ttl = parsed
    backend.publish(
        make_event(
            name,
            data or None,
            coreid="api",
            now=backend.now(),
            ttl=ttl,
            private=private,
            owner_user_id=principal.user_id if not principal.is_customer else None,
            owner_customer_id=principal.customer_id,
            product_id=principal.product_id,
        )
    )
    return json_response({"ok": True})
