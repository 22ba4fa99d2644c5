"""What every handler shares: the backend of the app, the caller, JSON replies."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from softap_sim.cloud import params
from softap_sim.cloud.backend import CloudBackend
from softap_sim.cloud.errors import CloudError
from softap_sim.cloud.principal import Principal

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

BACKEND_KEY = web.AppKey("backend", CloudBackend)


def backend_of(request: web.Request) -> CloudBackend:
    return request.app[BACKEND_KEY]


async def caller(request: web.Request, body: Mapping[str, str]) -> Principal:
    """The principal of the request's one access token (cloud-api.md §1)."""
    return await backend_of(request).principal_for(params.bearer_token(request, body))


async def begin(request: web.Request) -> tuple[CloudBackend, dict[str, str], Principal]:
    """The usual start of a handler: backend, parsed body, authenticated caller."""
    body = await params.read_params(request)
    return backend_of(request), body, await caller(request, body)


def json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.json_response(data, status=status, headers=headers)


def error_response(err: CloudError) -> web.Response:
    return web.json_response(err.body(), status=err.status, headers=err.headers)


def match(request: web.Request, key: str) -> str | None:
    """A path parameter, or None when the route has none of that name."""
    return request.match_info.get(key)
