"""``POST /oauth/token``: form-encoded only; ``password``, ``client_credentials`` (with or
without ``scope=customer=<email>``) and ``refresh_token`` (cloud-api.md §4)."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from softap_sim.cloud import params, validate
from softap_sim.cloud.errors import CloudError, InvalidClient, InvalidRequest, InvalidScope
from softap_sim.cloud.handlers.common import backend_of, json_response
from softap_sim.cloud.policy import GRANT_TYPES, grant_allowed

log = logging.getLogger(__name__)

TOKEN_HEADERS = {"Cache-Control": "no-store", "Pragma": "no-cache"}
FORM_ONLY = "Method must be POST with application/x-www-form-urlencoded encoding"
UNAUTHORISED_GRANT = "The grant type is unauthorised for this client_id"


async def oauth_token(request: web.Request) -> web.StreamResponse:
    try:
        body = await _grant(request)
    except CloudError as err:
        err.headers = {**err.headers, **TOKEN_HEADERS}
        raise
    return json_response(body, headers=TOKEN_HEADERS)


async def _grant(request: web.Request) -> dict[str, Any]:
    backend = backend_of(request)
    if request.method != "POST" or request.content_type != "application/x-www-form-urlencoded":
        raise InvalidRequest(FORM_ONLY)
    form = await params.read_params(request)
    grant_type = form.get("grant_type", "")
    if grant_type not in GRANT_TYPES:
        raise InvalidRequest("Invalid or missing grant_type parameter")
    # a Bearer header next to form credentials is ignored here (cloud-api.md §10.3)
    client = await backend.authenticate_client(*params.client_credentials(request, form))
    if not grant_allowed(client, grant_type):
        raise InvalidClient(UNAUTHORISED_GRANT)
    if grant_type == "password":
        username = validate.text(
            form.get("username"), "username", max_length=validate.MAX_EMAIL_LENGTH
        )
        password = validate.text(
            form.get("password"), "password", max_length=validate.MAX_PASSWORD_LENGTH
        )
        if not username.strip() or not password:
            raise InvalidClient('Missing parameters. "username" and "password" are required')
        if form.get("scope"):
            raise InvalidScope("Invalid scope")
        expiry = validate.expiry(form, backend.now())
        body = await backend.password_grant(client, username.strip().lower(), password, expiry)
    elif grant_type == "client_credentials":
        scope = validate.text(
            form.get("scope"), "scope", max_length=validate.MAX_EMAIL_LENGTH + 16
        ).strip()
        expiry = validate.expiry(form, backend.now())
        body = await backend.client_credentials_grant(client, scope, expiry)
    else:
        refresh = validate.text(
            form.get("refresh_token"), "refresh_token", max_length=validate.MAX_TOKEN_LENGTH
        )
        if not refresh:
            raise InvalidRequest('No "refresh_token" parameter')
        expiry = validate.expiry(form, backend.now())
        body = await backend.refresh_grant(client, refresh, expiry)
    log.info("cloud: token issued (grant %s, client %s)", grant_type, client["id"])
    return body
