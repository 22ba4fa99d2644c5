"""bench_cloud's load: closed-loop aiohttp workers, one keep-alive session each, and the
measured window of one (operation, server) pair."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
from benchlib import (
    BenchError,
    quantile,
)
from cloud_servers import CUSTOMER_PASSWORD, ServerProcess

REQUEST_TIMEOUT_S: Final = 30.0
OPERATIONS: Final = ("password", "client_credentials", "claim_code")


@dataclass
class Window:
    op: str
    role: str
    requests: int = 0
    errors: int = 0
    first_error: str | None = None
    elapsed_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    cpu_s: float = 0.0
    server: dict[str, Any] = field(default_factory=dict)

    def merge(self, other: Window) -> Window:
        """Two windows of the same (operation, server) as one."""
        server: dict[str, Any] = {}
        for key in (
            "db_busy_s",
            "db_transactions",
            "db_jobs",
            "loop_cpu_s",
            "loop_runqueue_wait_s",
        ):
            if key in self.server or key in other.server:
                server[key] = self.server.get(key, 0) + other.server.get(key, 0)
        lags = [w.server.get("lag", {}) for w in (self, other)]
        server["lag"] = {
            "max_ms": max(lag.get("max_ms", 0.0) for lag in lags),
            # the p99 of the merged window is not known exactly: keep the worse one
            "p99_ms": max(lag.get("p99_ms", 0.0) for lag in lags),
        }
        return Window(
            self.op,
            self.role,
            self.requests + other.requests,
            self.errors + other.errors,
            self.first_error or other.first_error,
            self.elapsed_s + other.elapsed_s,
            self.latencies + other.latencies,
            self.cpu_s + other.cpu_s,
            server,
        )

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)
        ok = len(ordered)
        lag = self.server.get("lag", {})
        db_busy = self.server.get("db_busy_s")
        return {
            "requests": self.requests,
            "errors": self.errors,
            "first_error": self.first_error,
            "seconds": self.elapsed_s,
            "ops_per_s": ok / self.elapsed_s if self.elapsed_s > 0 else 0.0,
            "p50_ms": quantile(ordered, 0.50) * 1e3 if ordered else None,
            "p99_ms": quantile(ordered, 0.99) * 1e3 if ordered else None,
            "max_ms": ordered[-1] * 1e3 if ordered else None,
            "cpu_ms_per_op": self.cpu_s / self.requests * 1e3 if self.requests else None,
            "loop_lag_max_ms": lag.get("max_ms"),
            "loop_lag_p99_ms": lag.get("p99_ms"),
            "db_ms_per_op": _per_op(db_busy, self.requests),
            "loop_cpu_ms_per_op": _per_op(self.server.get("loop_cpu_s"), self.requests),
            "loop_runqueue_wait_s": self.server.get("loop_runqueue_wait_s"),
            "db_transactions_per_op": (
                self.server["db_transactions"] / self.requests
                if "db_transactions" in self.server and self.requests
                else None
            ),
        }


def _per_op(seconds: float | None, requests: int) -> float | None:
    return seconds / requests * 1e3 if seconds is not None and requests else None


RequestFn = Callable[[aiohttp.ClientSession, int], Awaitable[tuple[int, Any]]]


def _request_fn(op: str, info: dict[str, Any], tokens: list[str]) -> RequestFn:
    base = info["url"]
    product = info["product"]
    client = {"client_id": info["client_id"], "client_secret": info["client_secret"]}
    customers: list[str] = info["customers"]

    async def password(session: aiohttp.ClientSession, worker: int) -> tuple[int, Any]:
        form = {
            "username": customers[worker % len(customers)],
            "password": CUSTOMER_PASSWORD,
            "grant_type": "password",
            **client,
            "expires_in": "7776000",
        }
        async with session.post(f"{base}/oauth/token", data=form) as resp:
            return resp.status, await resp.json(content_type=None)

    async def client_credentials(session: aiohttp.ClientSession, worker: int) -> tuple[int, Any]:
        form = {
            "grant_type": "client_credentials",
            "scope": f"customer={customers[worker % len(customers)]}",
            **client,
        }
        async with session.post(f"{base}/oauth/token", data=form) as resp:
            return resp.status, await resp.json(content_type=None)

    async def claim_code(session: aiohttp.ClientSession, worker: int) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {tokens[worker % len(tokens)]}"}
        async with session.post(
            f"{base}/v1/products/{product}/device_claims", json={}, headers=headers
        ) as resp:
            return resp.status, await resp.json(content_type=None)

    fns: dict[str, RequestFn] = {
        "password": password,
        "client_credentials": client_credentials,
        "claim_code": claim_code,
    }
    return fns[op]


def _check(op: str, status: int, body: Any) -> str | None:
    if status != 200 or not isinstance(body, dict):
        return f"HTTP {status}: {json.dumps(body)[:200]}"
    key = "claim_code" if op == "claim_code" else "access_token"
    if not isinstance(body.get(key), str):
        return f"no {key} in {json.dumps(body)[:200]}"
    return None


async def run_window(
    server: ServerProcess,
    op: str,
    sessions: list[aiohttp.ClientSession],
    tokens: list[str],
    budget: int,
    duration_s: float,
) -> Window:
    window = Window(op, server.role)
    send = _request_fn(op, server.info, tokens)
    for i, session in enumerate(sessions):  # warm-up: one request per connection
        status, body = await send(session, i)
        if (why := _check(op, status, body)) is not None:
            raise BenchError(f"{server.role} {op}: warm-up request failed: {why}")
    await server.mark()
    left = budget
    deadline = time.monotonic() + duration_s

    async def worker(i: int, session: aiohttp.ClientSession) -> None:
        nonlocal left
        while left > 0 and time.monotonic() < deadline:
            left -= 1
            started = time.perf_counter()
            try:
                status, body = await send(session, i)
                why = _check(op, status, body)
            except (aiohttp.ClientError, TimeoutError, ValueError) as err:
                why = f"{type(err).__name__}: {err}"
            window.requests += 1
            if why is None:
                window.latencies.append(time.perf_counter() - started)
            else:
                window.errors += 1
                window.first_error = window.first_error or why

    cpu0 = server.cpu_s()
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(i, s) for i, s in enumerate(sessions)))
    window.elapsed_s = time.perf_counter() - t0
    window.cpu_s = server.cpu_s() - cpu0
    window.server = await server.mark()
    return window


async def customer_tokens(info: dict[str, Any], count: int) -> list[str]:
    """One customer-scoped token per worker (client_credentials, scope=customer=...)."""
    tokens = []
    async with aiohttp.ClientSession() as session:
        for i in range(count):
            email = info["customers"][i % len(info["customers"])]
            form = {
                "grant_type": "client_credentials",
                "scope": f"customer={email}",
                "client_id": info["client_id"],
                "client_secret": info["client_secret"],
            }
            async with session.post(f"{info['url']}/oauth/token", data=form) as resp:
                body = await resp.json(content_type=None)
                if resp.status != 200:
                    raise BenchError(f"{info['role']}: customer token: HTTP {resp.status} {body}")
                tokens.append(body["access_token"])
    return tokens
