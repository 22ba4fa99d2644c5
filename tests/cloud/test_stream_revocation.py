"""Issue 11 (2): an open event stream ends with its token (revoked, deleted, expired) and
stops carrying a device its caller no longer owns."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from softap_sim.cloud.events import EventStream, device_event
from softap_sim.cloud.principal import Principal
from softap_sim.cloud.service import CloudService

DEVICE = "0123456789abcdef0000beef"
EMAIL = "stream@example.com"
WAIT_S = 10.0


class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t


@dataclass
class World:
    service: CloudService
    clock: Clock
    http: aiohttp.ClientSession
    product_id: int
    client_id: str
    client_secret: str
    token: str
    principal: Principal


@pytest_asyncio.fixture
async def world() -> AsyncIterator[World]:
    clock = Clock()
    service = CloudService(None, now=clock)
    await service.open()
    try:
        server = await service.serve("127.0.0.1", 0)
        backend = service.backend
        creds = service.created_credentials
        assert creds is not None
        product_id = int(creds["product"]["id"])
        # a client of its own, so that deleting it is a case of its own
        client, secret = await backend.create_client(
            preset="two-legged", name="stream test", type="", scope=None, product_id=product_id
        )
        _customer, body = await backend.create_customer_with_token(
            product_id, client["id"], EMAIL, None
        )
        token = str(body["access_token"])
        principal = await backend.principal_for(token)
        key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        await backend.register_device(DEVICE, pem.decode())
        code, _ids = await backend.create_claim_code(principal, product_id)
        _before, owner, _row = await backend.claim_with_code(DEVICE, code)
        assert owner is not None
        async with aiohttp.ClientSession(server.url) as http:
            yield World(service, clock, http, product_id, client["id"], secret, token, principal)
    finally:
        await service.close()


async def publish(w: World, name: str) -> None:
    owners = await w.service.backend.device_owners(DEVICE)
    assert owners is not None
    w.service.backend.publish(device_event(owners, name, "x", now=w.clock()))


async def open_stream(w: World) -> aiohttp.ClientResponse:
    resp = await w.http.get("/v1/devices/events", headers={"Authorization": f"Bearer {w.token}"})
    assert resp.status == 200
    async with asyncio.timeout(WAIT_S):
        assert (await resp.content.readline()) == b":ok\n"
        await resp.content.readline()
    return resp


async def next_event(resp: aiohttp.ClientResponse) -> bytes | None:
    """The next ``event:`` line, or None at the end of the stream."""
    async with asyncio.timeout(WAIT_S):
        while True:
            line = await resp.content.readline()
            if not line:
                return None
            if line.startswith(b"event:"):
                return line


async def revoke(w: World) -> None:
    async with w.http.delete(f"/v1/access_tokens/{w.token}") as resp:
        assert resp.status == 200


async def delete_customer(w: World) -> None:
    await w.service.backend.delete_customer(w.product_id, EMAIL)


async def delete_client(w: World) -> None:
    assert await w.service.backend.delete_client(w.client_id)


async def expire(w: World) -> None:
    assert w.principal.expires_at is not None
    w.clock.t = w.principal.expires_at + 1


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "end", [revoke, delete_customer, delete_client, expire], ids=lambda f: f.__name__
)
async def test_the_stream_ends_with_its_token(world: World, end: object) -> None:
    resp = await open_stream(world)
    await publish(world, "before")
    assert await next_event(resp) == b"event: before\n"
    await end(world)  # type: ignore[operator]
    await publish(world, "after")  # an expired stream notices at the latest here
    assert await next_event(resp) is None, "nothing after the end, and the stream closes"
    assert not any(isinstance(s, EventStream) for s in world.service.backend.subscribers)
    resp.close()


@pytest.mark.asyncio
async def test_an_unclaimed_device_no_longer_reaches_the_old_owner(world: World) -> None:
    resp = await open_stream(world)
    await publish(world, "mine")
    assert await next_event(resp) == b"event: mine\n"
    await world.service.backend.unclaim_device(world.principal, DEVICE, None)
    await publish(world, "not-mine-any-more")
    (stream,) = [s for s in world.service.backend.subscribers if isinstance(s, EventStream)]
    assert stream.queue.empty()
    resp.close()
