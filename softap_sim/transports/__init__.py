"""Thin asyncio transports: they move bytes between sockets and the sans-IO codecs."""

from __future__ import annotations
