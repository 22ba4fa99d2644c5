"""The local cloud of one test (``softap_cloud``) and its one-call helpers.

:class:`SoftapCloud` wraps a :class:`~softap_sim.cloud.service.CloudService` started in
memory: products, OAuth clients, customers and claim codes in one call each, and the
bits a device needs to reach it (endpoint and server key, registration). The tuples it
returns unpack like the REST API's answers (``token, *_ = await cloud.customer(...)``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from softap_sim.cloud.service import CloudService
    from softap_sim.config import SimConfig
    from softap_sim.emulator import DeviceEmulator


class CloudProduct(NamedTuple):
    """A product and its two-legged (server) OAuth client."""

    id: int
    slug: str
    name: str
    client_id: str
    client_secret: str


class OAuthClient(NamedTuple):
    """An OAuth client of a product (not the device's cloud client: that is
    :class:`~softap_sim.cloud_client.DeviceCloudClient`)."""

    id: str
    secret: str
    preset: str
    product_id: int | None


class CloudCustomer(NamedTuple):
    """A product customer with a fresh access token (``token, *_ = await cloud.customer(..)``)."""

    token: str
    id: str
    email: str
    product_id: int
    refresh_token: str | None


class SoftapCloud:
    """The local cloud of one test (``softap_cloud``), in memory.

    Attributes:
        service: the :class:`~softap_sim.cloud.service.CloudService`.
        backend: its :class:`~softap_sim.cloud.backend.CloudBackend` (the verbs).
        url: the REST API's base URL (point particle-api-js or requests at it).
        device_address: the device endpoint (Photon protocol, TCP).
        product: the default product (slug ``softap-sim``) and its server client.
        developer: the developer user: ``{"id", "email", "password"}``.
    """

    def __init__(self, service: CloudService) -> None:
        creds = service.created_credentials
        assert creds is not None
        assert service.server is not None
        assert service.device_server is not None
        self.service = service
        self.backend = service.backend
        self.url = service.server.url
        self.device_address = (service.device_server.host, service.device_server.port)
        self.product = CloudProduct(
            creds["product"]["id"],
            creds["product"]["slug"],
            creds["product"]["name"],
            creds["client"]["id"],
            creds["client"]["secret"],
        )
        self.developer: dict[str, str] = dict(creds["user"])
        self._devices: list[DeviceEmulator] = []

    @property
    def server_public_key_pem(self) -> bytes:
        return self.service.server_public_key_pem

    async def create_product(self, name: str, *, slug: str | None = None) -> CloudProduct:
        """A new product owned by the developer, with a two-legged client, in one call."""
        slug = slug or re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "product"
        product, client, secret = await self.backend.create_product_with_client(
            name, slug, self.developer["id"]
        )
        return CloudProduct(product["id"], product["slug"], product["name"], client["id"], secret)

    async def create_client(
        self,
        preset: str = "simple-auth-mobile",
        *,
        name: str = "softap-sim test client",
        product: CloudProduct | None = None,
    ) -> OAuthClient:
        """An OAuth client of a product (presets: two-legged, simple-auth-mobile/-web)."""
        pid = (product or self.product).id
        redirect = "http://127.0.0.1/callback" if preset == "simple-auth-web" else None
        client, secret = await self.backend.create_client(
            preset=preset, name=name, type="", scope=None, product_id=pid, redirect_uri=redirect
        )
        return OAuthClient(client["id"], secret, preset, pid)

    async def customer(
        self, email: str, *, password: str | None = None, product: CloudProduct | None = None
    ) -> CloudCustomer:
        """A customer of the product (a shadow one without ``password``) and its token.

        The token is what ``POST /oauth/token`` with the product's two-legged client and
        ``scope=customer=<email>`` returns.
        """
        prod = product or self.product
        cust, tokens = await self.backend.create_customer_with_token(
            prod.id, prod.client_id, email, password
        )
        return CloudCustomer(
            tokens["access_token"], cust["id"], cust["email"], prod.id, tokens.get("refresh_token")
        )

    async def claim_code(self, owner: CloudCustomer | str) -> str:
        """A fresh 63-character claim code for a customer (or any user/customer token)."""
        token = owner.token if isinstance(owner, CloudCustomer) else owner
        principal = await self.backend.principal_for(token)
        product_id = principal.product_id if principal.is_customer else None
        code, _ids = await self.backend.create_claim_code(principal, product_id)
        return code

    def device_config(self, config: SimConfig) -> SimConfig:
        """``config`` pointed at this cloud (endpoint and server key, as in a device's DCT)."""
        return dataclasses.replace(
            config,
            cloud_endpoint=self.device_address,
            server_public_key_pem=self.server_public_key_pem,
        )

    async def register_device(self, emu: DeviceEmulator) -> None:
        """Put the device (id and public key) into the registry, so it can connect."""
        device = emu.device
        await self.service.register_device(
            device.dct.identity.device_id_hex, device.key.public_key_pem.decode("ascii")
        )

    def adopt(self, emu: DeviceEmulator) -> None:
        """Close ``emu`` before the cloud at teardown, so it never sees the cloud vanish."""
        self._devices.append(emu)

    async def wait_claimed(
        self, device: DeviceEmulator | str, *, timeout_s: float = 10.0
    ) -> dict[str, Any]:
        """Wait (event-driven) until the cloud has an owner for the device.

        Returns:
            ``{"device_id", "user_id", "customer_id", "product_id"}``.
        """
        device_id = (
            device if isinstance(device, str) else device.device.dct.identity.device_id_hex
        ).lower()
        claimed = asyncio.get_running_loop().create_future()

        def on_event(event: dict[str, Any]) -> None:
            if (
                event["name"] == "spark/device/claim/confirm"
                and event["coreid"] == device_id
                and not claimed.done()
            ):
                claimed.set_result(None)

        subscribers = self.backend.subscribers
        subscribers.add(on_event)
        try:
            found = await self.backend.device_owner(device_id)
            if found is None:
                await asyncio.wait_for(claimed, timeout_s)
                found = await self.backend.device_owner(device_id)
        finally:
            subscribers.discard(on_event)
        assert found is not None
        return found

    async def aclose(self) -> None:
        while self._devices:
            await self._devices.pop().close()
        await self.service.close()
