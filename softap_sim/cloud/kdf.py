"""Slow password hashing (scrypt) off the event loop and off the database thread.

scrypt costs about 30 ms of CPU and 16 MiB of memory per call by design. It runs on a
pool of its own with ``cores - 1`` threads: more would only starve the event loop thread
of CPU on a 2-core machine without finishing sooner, and a pool of its own keeps the
16 MiB blocks in those threads' malloc arenas (on the shared default executor every
thread's arena would keep one: ~100 MiB of resident memory that never comes back).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from softap_sim.cloud import hashing
from softap_sim.cloud.errors import RateLimited
from softap_sim.cloud.models.clients import secret_matches

_T = TypeVar("_T")

KDF_THREADS = max(1, (os.cpu_count() or 2) - 1)
#: KDF calls queued or running at once (about half a second of work per thread); one
#: more is answered at once with 429 ``rate_limit_exceeded``, like the real API's rate
#: limit, instead of waiting without bound
MAX_PENDING = 16 * KDF_THREADS

_pool: concurrent.futures.ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
_pending = 0


def _executor() -> concurrent.futures.ThreadPoolExecutor:
    """The process's KDF pool, made on first use (shared by every backend: the CPU is)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(KDF_THREADS, thread_name_prefix="kdf")
        return _pool


async def run(fn: Callable[..., _T], *args: Any) -> _T:
    """``fn(*args)`` on the KDF pool; :class:`RateLimited` when :data:`MAX_PENDING` wait."""
    global _pending
    with _pool_lock:
        if _pending >= MAX_PENDING:
            raise RateLimited()
        _pending += 1
    try:
        return await asyncio.get_running_loop().run_in_executor(_executor(), fn, *args)
    finally:
        with _pool_lock:
            _pending -= 1


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
