"""Issue 11 (4): scrypt work has a bounded queue; one request more is 429, not a wait."""

from __future__ import annotations

import asyncio
import threading

import aiohttp
import pytest

from softap_sim.cloud import kdf
from softap_sim.cloud.service import CloudService


@pytest.mark.asyncio
async def test_a_full_kdf_queue_answers_429_and_then_recovers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(kdf, "MAX_PENDING", 2)
    service = CloudService(None)
    await service.open()
    gate = threading.Event()
    try:
        server = await service.serve("127.0.0.1", 0)
        creds = service.created_credentials
        assert creds is not None
        form = {
            "grant_type": "password",
            "username": creds["user"]["email"],
            "password": creds["user"]["password"],
            "client_id": "particle",
            "client_secret": "particle",
        }
        held = [asyncio.ensure_future(kdf.run(gate.wait, 10.0)) for _ in range(2)]
        await asyncio.sleep(0)  # both take their places in the queue
        async with aiohttp.ClientSession(server.url) as http:
            async with http.post("/oauth/token", data=form) as resp:
                assert resp.status == 429
                assert resp.headers["Retry-After"] == "1"
                body = await resp.json()
                assert body["error"] == "rate_limit_exceeded"
                assert set(body) == {"error", "error_description"}
            gate.set()
            await asyncio.gather(*held)
            async with http.post("/oauth/token", data=form) as resp:
                assert resp.status == 200
                assert (await resp.json())["token_type"] == "bearer"
    finally:
        gate.set()
        await service.close()
