"""Slow password hashing (scrypt) off the event loop and off the database thread.

scrypt costs about 30 ms of CPU per call by design. It runs in worker threads, at most
``cores - 1`` at once: more would only starve the event loop thread of CPU on a 2-core
machine without finishing sooner.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from softap_sim.cloud import hashing
from softap_sim.cloud.models.clients import secret_matches

_T = TypeVar("_T")

_KDF_SLOTS = threading.BoundedSemaphore(max(1, (os.cpu_count() or 2) - 1))


def _throttled(fn: Callable[..., _T], *args: Any) -> _T:
    with _KDF_SLOTS:  # waits in the worker thread, never on the event loop
        return fn(*args)


async def run(fn: Callable[..., _T], *args: Any) -> _T:
    """``fn(*args)`` on a worker thread, throttled to the KDF slots."""
    return await asyncio.to_thread(_throttled, fn, *args)


async def hash_password(password: str) -> str:
    return await run(hashing.hash_password, password)


async def verify_password(password: str, stored: str | None) -> bool:
    """Constant time; a missing hash (shadow customer, unknown user) never matches."""
    return await run(hashing.verify_password, password, stored)


async def verify_secret(secret: str, stored: str | None) -> bool:
    """A client secret: a generated one (SHA-256) is checked inline, a chosen one
    (scrypt) on a worker thread. Constant time either way."""
    if stored is None:
        hashing.same_digest(secret, "0" * 64)
        return False
    if not stored.startswith("scrypt$"):
        return secret_matches(secret, stored)
    return await run(secret_matches, secret, stored)
