"""``GET /v1/user``: the developer a token belongs to (``particle whoami``, particle-cli)."""

from __future__ import annotations

from aiohttp import web

from softap_sim.cloud.handlers.common import begin, json_response


async def get_user(request: web.Request) -> web.StreamResponse:
    backend, _body, principal = await begin(request)
    user = await backend.current_user(principal)
    return json_response(
        {
            "username": user["email"],
            "subscription_ids": [],
            "account_info": {
                "first_name": "",
                "last_name": "",
                "company_name": "",
                "business_account": False,
            },
            "mfa": {"enabled": False},
            "scim_provisioned": False,
        }
    )


async def get_webhooks(request: web.Request) -> web.StreamResponse:
    """``GET /v1/webhooks``: integrations are not emulated, so there are none (``[]``);
    creating one is a 404 like any unknown route (``particle webhook list``)."""
    await begin(request)
    return json_response([])
