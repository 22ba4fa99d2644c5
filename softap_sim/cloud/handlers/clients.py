"""``/v1/clients`` and ``/v1/products/:p/clients`` (cloud-api.md §2).

``POST`` answers 201 ``{"ok":true,"client":{name,type,id,secret[,redirect_uri]}}`` (the
secret is shown once); ``PUT`` changes ``name`` and/or ``scope`` (``none`` clears);
``DELETE`` answers 204 and the client's tokens go with it.
"""

from __future__ import annotations

from aiohttp import web

from softap_sim.cloud import validate
from softap_sim.cloud.errors import Forbidden, NotFound
from softap_sim.cloud.handlers.common import begin, json_response, match
from softap_sim.cloud.principal import Principal
from softap_sim.cloud.views import client_json


def _user_only(principal: Principal) -> str:
    if principal.kind != "user" or principal.user_id is None:
        raise Forbidden("Only a user's token can manage that user's OAuth clients")
    return principal.user_id


def _product_ref(request: web.Request) -> str | None:
    ref = match(request, "product")
    return None if ref is None else str(validate.product_ref(ref))


async def create_client(request: web.Request) -> web.StreamResponse:
    backend, body, principal = await begin(request)
    ref = _product_ref(request)
    product_id: int | None = None
    owner: str | None = None
    if ref is not None:
        product_id = int((await backend.admin_product(principal, ref))["id"])
    else:
        owner = _user_only(principal)
    client, secret = await backend.create_client(
        name=body.get("name", ""),
        type=validate.text(body.get("type"), "type", max_length=20),
        scope=validate.text(body.get("scope"), "scope", max_length=200) or None,
        product_id=product_id,
        owner_user_id=owner,
        redirect_uri=validate.text(
            body.get("redirect_uri"), "redirect_uri", max_length=validate.MAX_URI_LENGTH
        )
        or None,
    )
    return json_response({"ok": True, "client": client_json(client, secret)}, status=201)


async def list_clients(request: web.Request) -> web.StreamResponse:
    backend, _body, principal = await begin(request)
    ref = _product_ref(request)
    if ref is not None:
        product = await backend.admin_product(principal, ref)
        found = await backend.list_clients(product_id=product["id"])
    else:
        found = await backend.list_clients(owner_user_id=_user_only(principal))
    return json_response({"ok": True, "clients": [client_json(c) for c in found]})


def _client_id(request: web.Request) -> str:
    value = request.match_info["client_id"]
    if len(value) > 40 or not validate.is_text(value):
        raise NotFound("Client not found")
    return value


async def update_client(request: web.Request) -> web.StreamResponse:
    backend, body, principal = await begin(request)
    client = await backend.managed_client(principal, _client_id(request), _product_ref(request))
    name = body.get("name")
    scope = body.get("scope")
    updated = await backend.update_client(
        client["id"],
        name=None if name is None else validate.text(name, "name", max_length=200),
        scope=None if scope is None else validate.text(scope, "scope", max_length=200),
    )
    return json_response({"ok": True, "client": client_json(updated)})


async def delete_client(request: web.Request) -> web.StreamResponse:
    backend, _body, principal = await begin(request)
    client = await backend.managed_client(principal, _client_id(request), _product_ref(request))
    if not await backend.delete_client(client["id"]):
        raise NotFound("Client not found")
    return web.Response(status=204)
