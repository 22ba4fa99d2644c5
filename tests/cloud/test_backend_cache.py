"""The backend's caches (tokens, clients, device owners) never outlive a change it made."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from softap_sim.cloud.backend import CloudBackend
from softap_sim.cloud.errors import InvalidClient, InvalidToken
from softap_sim.cloud.service import CloudService

DEVICE = "0123456789abcdef0000cafe"


@pytest_asyncio.fixture
async def service() -> AsyncIterator[CloudService]:
    svc = CloudService(None)
    await svc.open()
    try:
        yield svc
    finally:
        await svc.close()


def _ids(svc: CloudService) -> tuple[int, str]:
    creds = svc.created_credentials
    assert creds is not None
    return int(creds["product"]["id"]), str(creds["client"]["id"])


async def _customer_token(
    backend: CloudBackend, product_id: int, client_id: str, email: str
) -> str:
    _customer, body = await backend.create_customer_with_token(product_id, client_id, email, None)
    return str(body["access_token"])


@pytest.mark.asyncio
async def test_a_revoked_token_stops_working_at_once(service: CloudService) -> None:
    backend = service.backend
    product_id, client_id = _ids(service)
    token = await _customer_token(backend, product_id, client_id, "a@example.com")
    assert (await backend.principal_for(token)).is_customer  # now cached
    assert await backend.revoke_token(token)
    with pytest.raises(InvalidToken):
        await backend.principal_for(token)


@pytest.mark.asyncio
async def test_deleting_a_customer_ends_its_cached_tokens(service: CloudService) -> None:
    backend = service.backend
    product_id, client_id = _ids(service)
    token = await _customer_token(backend, product_id, client_id, "b@example.com")
    await backend.principal_for(token)
    await backend.delete_customer(product_id, "b@example.com")
    with pytest.raises(InvalidToken):
        await backend.principal_for(token)


@pytest.mark.asyncio
async def test_client_changes_reach_authentication_at_once(service: CloudService) -> None:
    backend = service.backend
    product_id, _client = _ids(service)
    client, secret = await backend.create_client(
        preset="two-legged", name="cache test", type="", scope=None, product_id=product_id
    )
    assert (await backend.authenticate_client(client["id"], secret))["scope"] == ""
    await backend.update_client(client["id"], name=None, scope="customers:create")
    found = await backend.authenticate_client(client["id"], secret)
    assert found["scope"] == "customers:create"
    assert await backend.delete_client(client["id"])
    with pytest.raises(InvalidClient):
        await backend.authenticate_client(client["id"], secret)


@pytest.mark.asyncio
async def test_device_owners_follow_claims_unclaims_and_customer_deletion(
    service: CloudService,
) -> None:
    backend = service.backend
    product_id, client_id = _ids(service)
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    await backend.register_device(DEVICE, pem.decode())
    await backend.device_online(DEVICE, "127.0.0.1")
    owners = await backend.device_owners(DEVICE)
    assert owners is not None
    assert owners["owner_customer_id"] is None

    token = await _customer_token(backend, product_id, client_id, "c@example.com")
    principal = await backend.principal_for(token)
    code, _ids_owned = await backend.create_claim_code(principal, product_id)
    _before, owner, _row = await backend.claim_with_code(DEVICE, code)
    assert owner is not None
    owners = await backend.device_owners(DEVICE)
    assert owners is not None
    assert owners["owner_customer_id"] == principal.customer_id

    await backend.unclaim_device(principal, DEVICE, None)
    owners = await backend.device_owners(DEVICE)
    assert owners is not None
    assert owners["owner_customer_id"] is None

    code, _ids_owned = await backend.create_claim_code(principal, product_id)
    await backend.claim_with_code(DEVICE, code)
    assert (await backend.device_owners(DEVICE) or {})["owner_customer_id"] is not None
    await backend.delete_customer(product_id, "c@example.com")
    owners = await backend.device_owners(DEVICE)
    assert owners is not None
    assert owners["owner_customer_id"] is None
