"""A device linked to an in-process cloud: what the cloud-link tests share.

``async with linked_cloud() as cloud:`` serves the REST API and the device endpoint on
free ports, records every published event (``cloud.events``) and knows the seeded
developer; ``cloud.device_config(key, ...)`` is a device configuration pointing at it and
``cloud.register`` the ``before_power_on`` hook that puts a device's key in the registry.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp

from firmware_model import DeviceKey, RadioEnvironment
from softap_sim import DeviceEmulator, SimConfig
from softap_sim.cloud.service import CloudService
from tests.cloud.test_device_server import Events as DeviceServerEvents
from tests.cloud.test_link_device import HOME


class Events(DeviceServerEvents):
    """The device server tests' recorder, plus the ``spark/status`` sequence."""

    def statuses(self) -> list[str]:
        return [e["data"] for e in self.named("spark/status")]

    async def wait_status(self, data: str, count: int) -> None:
        await self.wait("spark/status", data, count=count)


@dataclass
class LinkedCloud:
    service: CloudService
    events: Events
    credentials: dict[str, Any]

    @property
    def url(self) -> str:
        assert self.service.server is not None
        return self.service.server.url

    @property
    def password(self) -> str:
        return str(self.credentials["user"]["password"])

    def device_config(self, key: DeviceKey, **changes: Any) -> SimConfig:
        """A device on the home network whose DCT holds this cloud's address and key."""
        assert self.service.device_server is not None
        return SimConfig(
            radio=RadioEnvironment.from_list([HOME]),
            key=key,
            cloud_endpoint=("127.0.0.1", self.service.device_server.port),
            server_public_key_pem=self.service.server_public_key_pem,
            **changes,
        )

    async def register(self, emu: DeviceEmulator) -> None:
        await self.service.register_device(
            emu.device.dct.identity.device_id_hex, emu.device.key.public_key_pem.decode()
        )

    async def developer_token(self, http: aiohttp.ClientSession) -> str:
        """A token of the seeded developer (password grant, the public ``particle`` client)."""
        async with http.post(
            self.url + "/oauth/token",
            data={
                "grant_type": "password",
                "username": self.credentials["user"]["email"],
                "password": self.password,
            },
            headers={"Authorization": aiohttp.encode_basic_auth("particle", "particle")},
        ) as resp:
            assert resp.status == 200, await resp.text()
            return str((await resp.json())["access_token"])


@dataclass
class World:
    """A test's view: the cloud, one linked device, an HTTP session with a token."""

    service: CloudService
    emu: DeviceEmulator
    events: Events
    http: aiohttp.ClientSession
    token: str
    device_id: str

    async def rest(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        """One REST call with the token; (status, JSON body)."""
        assert self.service.server is not None
        headers = {"Authorization": f"Bearer {self.token}"}
        async with self.http.request(
            method, self.service.server.url + path, headers=headers, **kw
        ) as resp:
            return resp.status, await resp.json()


@asynccontextmanager
async def linked_cloud() -> AsyncIterator[LinkedCloud]:
    service = CloudService(None)
    await service.open()
    try:
        await service.serve("127.0.0.1", 0)
        await service.serve_devices("127.0.0.1", 0)
        events = Events()
        service.backend.subscribers.add(events)
        assert service.created_credentials is not None
        yield LinkedCloud(service, events, service.created_credentials)
    finally:
        await service.close()
