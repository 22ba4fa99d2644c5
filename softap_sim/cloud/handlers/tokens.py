"""``/v1/access_tokens`` routes (cloud-api.md §4.1)."""

from __future__ import annotations

from aiohttp import web

from softap_sim.cloud import params, validate
from softap_sim.cloud.errors import InvalidGrant, InvalidRequest, InvalidToken
from softap_sim.cloud.handlers.common import backend_of, begin, json_response
from softap_sim.cloud.views import iso_time


async def current_token(request: web.Request) -> web.StreamResponse:
    """``GET /v1/access_tokens/current`` → ``{expires_at, client, scopes, orgs}``."""
    _backend, _body, principal = await begin(request)
    return json_response(
        {
            "expires_at": iso_time(principal.expires_at),
            "client": principal.client_id,
            "scopes": sorted(principal.scopes),
            "orgs": [],
        }
    )


async def delete_current_token(request: web.Request) -> web.StreamResponse:
    """``DELETE /v1/access_tokens/current`` → ``{"ok":true}``; its refresh token goes too."""
    backend, _body, principal = await begin(request)
    await backend.delete_current_token(principal)
    return json_response({"ok": True})


async def delete_token(request: web.Request) -> web.StreamResponse:
    """``DELETE /v1/access_tokens/:token``: the token itself is the credential (particle-api-js
    sends no auth); unknown or already deleted → 401 ``invalid_token``."""
    if not await backend_of(request).revoke_token(request.match_info["token"]):
        raise InvalidToken()
    return json_response({"ok": True})


async def list_tokens(request: web.Request) -> web.StreamResponse:
    """``GET /v1/access_tokens`` with Basic ``user:password`` → ``[{token,expires_at,client}]``."""
    basic = params.basic_credentials(request)
    if basic is None or not basic[0] or not basic[1]:
        raise InvalidRequest("Send the account's username and password with HTTP Basic")
    user, password = basic
    if len(user) > validate.MAX_EMAIL_LENGTH or len(password) > validate.MAX_PASSWORD_LENGTH:
        raise InvalidGrant("User credentials are invalid")
    tokens = await backend_of(request).list_user_tokens(user.strip().lower(), password)
    return json_response(tokens)
