"""Devices, claim codes, functions, variables and events (cloud-api.md §5-§7). Being written."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

ROUTES: list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]] = []
