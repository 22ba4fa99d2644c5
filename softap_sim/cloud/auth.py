"""OAuth clients, users, customers and tokens (cloud-api.md §2-§4). Being written."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

ROUTES: list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]] = []
