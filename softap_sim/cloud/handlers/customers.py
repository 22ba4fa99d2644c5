"""``/v1/products/:p/customers`` (cloud-api.md §3): create (three variants), list, update,
delete."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote

from aiohttp import web

from softap_sim.cloud import params, validate
from softap_sim.cloud.errors import Forbidden, InvalidRequest
from softap_sim.cloud.handlers.common import backend_of, begin, caller, json_response
from softap_sim.cloud.handlers.oauth import TOKEN_HEADERS
from softap_sim.cloud.policy import is_product_admin


async def create_customer(request: web.Request) -> web.StreamResponse:
    """Client credentials (Basic or form), implicit (client id + ``response_type=token``,
    web clients) or a product administrator's token. 201 + token JSON (create + log in).

    The implicit reply carries ``Location: <redirect_uri>#access_token=…&token_type=bearer
    &expires_in=…`` (RFC 6749 §4.2.2 fragment; ``&state=`` is appended when given).
    """
    backend = backend_of(request)
    body = await params.read_params(request)
    product = await backend.product(validate.product_ref(request.match_info["product"]))
    client_id, secret = params.client_credentials(request, body)
    implicit = body.get("response_type") == "token" and client_id is not None
    redirect: str | None = None
    with_refresh = True
    if implicit:
        assert client_id is not None
        uri = validate.text(body.get("redirect_uri"), "redirect_uri", max_length=2048)
        client = await backend.implicit_client(client_id, product, uri or None)
        token_client, redirect, with_refresh = client["id"], client["redirect_uri"], False
    elif client_id is not None:
        client = await backend.authenticate_client(client_id, secret)
        await backend.customer_client(client, product)
        token_client = client["id"]
    else:
        principal = await caller(request, body)
        if not is_product_admin(principal, product):
            raise Forbidden("This token cannot create customers of this product")
        token_client = principal.client_id

    email = validate.email(body.get("email"))
    password = validate.password(body.get("password")) if implicit else _customer_password(body)
    expiry = validate.expiry(body, backend.now())
    reply = await backend.create_customer(
        product,
        email,
        password,
        token_client=token_client,
        expiry=expiry,
        with_refresh=with_refresh,
    )
    headers = dict(TOKEN_HEADERS)
    if redirect is not None:
        fragment = (
            f"access_token={reply['access_token']}&token_type=bearer"
            f"&expires_in={reply['expires_in']}"
        )
        state = validate.text(body.get("state"), "state", max_length=1024)
        if state:
            fragment += f"&state={quote(state, safe='')}"
        headers["Location"] = f"{redirect}#{fragment}"
    return json_response(reply, status=201, headers=headers)


def _customer_password(body: Mapping[str, str]) -> str | None:
    """``password`` or ``no_password=true`` (a shadow customer), exactly one of them."""
    no_password = body.get("no_password", "").strip().lower() in ("true", "1", "yes", "on")
    raw = body.get("password") or None
    if no_password and raw is not None:
        raise InvalidRequest('Send "password" or "no_password=true", not both')
    if not no_password and raw is None:
        raise InvalidRequest('The "password" parameter is required (or "no_password=true")')
    return None if raw is None else validate.password(raw)


async def _admin_product_id(request: web.Request) -> tuple[int, dict[str, str]]:
    backend, body, principal = await begin(request)
    ref = validate.product_ref(request.match_info["product"])
    product = await backend.admin_product(principal, ref)
    return int(product["id"]), body


async def list_customers(request: web.Request) -> web.StreamResponse:
    product_id, _body = await _admin_product_id(request)
    return json_response(await backend_of(request).list_customers(product_id))


async def update_customer(request: web.Request) -> web.StreamResponse:
    """``PUT …/customers/:email`` with ``password`` → ``{"ok":true}``."""
    product_id, body = await _admin_product_id(request)
    email = validate.email(request.match_info["email"])
    password = validate.password(body.get("password"))
    await backend_of(request).set_customer_password(product_id, email, password)
    return json_response({"ok": True})


async def delete_customer(request: web.Request) -> web.StreamResponse:
    """``DELETE …/customers/:email``: also revokes tokens and pending claim codes."""
    product_id, _body = await _admin_product_id(request)
    email = validate.email(request.match_info["email"])
    await backend_of(request).delete_customer(product_id, email)
    return json_response({"ok": True})
