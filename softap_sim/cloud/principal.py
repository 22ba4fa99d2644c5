"""Who is calling (:class:`Principal`) and how the REST API reaches devices."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from softap_sim.cloud.errors import DeviceOffline


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a bearer token belongs to, and what it may do."""

    kind: str  # "user" | "customer" | "client"
    token_hash: str
    client_id: str
    user_id: str | None = None
    customer_id: str | None = None
    product_id: int | None = None
    scopes: frozenset[str] = frozenset()
    expires_at: float | None = None

    @property
    def is_customer(self) -> bool:
        return self.kind == "customer"


class DeviceLink(Protocol):
    """How the REST API reaches devices; the device server (TCP 5683) implements it."""

    def is_online(self, device_id: str) -> bool: ...

    async def call_function(self, device_id: str, name: str, arg: str, timeout_s: float) -> int: ...

    async def get_variable(self, device_id: str, name: str, timeout_s: float) -> Any: ...


class OfflineLink:
    """No device server: every device is honestly reported offline."""

    def is_online(self, device_id: str) -> bool:
        return False

    async def call_function(self, device_id: str, name: str, arg: str, timeout_s: float) -> int:
        raise DeviceOffline()

    async def get_variable(self, device_id: str, name: str, timeout_s: float) -> Any:
        raise DeviceOffline()
