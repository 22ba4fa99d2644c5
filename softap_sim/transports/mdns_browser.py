"""Watches the network for DNS-SD records (python-zeroconf), resolving each one it sees.

:class:`ServiceBrowser` keeps a live ``{instance name: item}`` map, one item per resolved
record, made by the function it is given; it knows nothing of what the items are, so this
transport does not depend on the device list. :class:`softap_sim.mdns_browse.Browser` is the
one that turns records into :class:`~softap_sim.registry.DeviceInfo` entries.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, Generic, Protocol, TypeVar

from zeroconf import ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from softap_sim.lifetime import AsyncLifetime
from softap_sim.protocol.dnssd import SERVICE_TYPES, decode_txt
from softap_sim.transports.mdns import open_zeroconf

log = logging.getLogger(__name__)

#: how long one resolve (SRV/TXT/A query) may take
RESOLVE_TIMEOUT_MS = 3000

T_co = TypeVar("T_co", covariant=True)
T = TypeVar("T")


class MakeItem(Protocol[T_co]):
    """Turns one resolved record into a map item."""

    def __call__(
        self,
        service_type: str,
        name: str,
        txt: Mapping[str, str],
        addresses: Sequence[str],
        port: int | None,
    ) -> T_co: ...


class ServiceBrowser(Generic[T], AsyncLifetime):
    """Watches ``service_types``; :attr:`items` is the live view of what resolved.

    ``async with ServiceBrowser(make_item, interfaces=["127.0.0.1"]) as browser:`` then
    ``await browser.wait_for(lambda items: ..., timeout_s=10)``.
    """

    def __init__(
        self,
        make_item: MakeItem[T],
        *,
        interfaces: Sequence[str] | None = None,
        service_types: Sequence[str] = SERVICE_TYPES,
    ) -> None:
        self.interfaces = list(interfaces) if interfaces else None
        self.service_types = list(service_types)
        self._make_item = make_item
        self._zc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._items: dict[str, T] = {}
        self._generation: dict[str, int] = {}
        self._changed = asyncio.Condition()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Open the sockets and start browsing. Idempotent."""
        if self._zc is not None:
            return
        self._zc = open_zeroconf(self.interfaces)
        self._browser = AsyncServiceBrowser(
            self._zc.zeroconf, self.service_types, handlers=[self._on_service]
        )

    async def close(self) -> None:
        """Stop browsing and close the sockets. Idempotent."""
        browser, self._browser = self._browser, None
        zc, self._zc = self._zc, None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if browser is not None:
            await browser.async_cancel()
        if zc is not None:
            await zc.async_close()

    @property
    def items(self) -> dict[str, T]:
        """Resolved records now on the network, by instance name."""
        return dict(self._items)

    async def wait_for(
        self, predicate: Callable[[Mapping[str, T]], bool], timeout_s: float = 10.0
    ) -> dict[str, T]:
        """Wait (event-driven, bounded) until ``predicate(items)``; the items then."""

        async def waiter() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: predicate(self._items))

        await asyncio.wait_for(waiter(), timeout_s)
        return self.items

    def _on_service(
        self,
        zeroconf: Zeroconf,
        service_type: str,
        name: str,
        state_change: ServiceStateChange,
    ) -> None:
        generation = self._generation[name] = self._generation.get(name, 0) + 1
        if state_change is ServiceStateChange.Removed:
            self._spawn(self._forget(name))
        else:
            self._spawn(self._resolve(service_type, name, generation))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resolve(self, service_type: str, name: str, generation: int) -> None:
        zc = self._zc
        if zc is None:
            return
        info = AsyncServiceInfo(service_type, name)
        if not await info.async_request(zc.zeroconf, RESOLVE_TIMEOUT_MS):
            log.info("mDNS: could not resolve %s", name)
            return
        if self._generation.get(name) != generation:
            return  # a newer change of this record is being handled
        item = self._make_item(
            service_type, name, decode_txt(info.properties), info.parsed_addresses(), info.port
        )
        async with self._changed:
            self._items[name] = item
            self._changed.notify_all()

    async def _forget(self, name: str) -> None:
        async with self._changed:
            self._items.pop(name, None)
            self._changed.notify_all()


__all__ = ["RESOLVE_TIMEOUT_MS", "MakeItem", "ServiceBrowser"]
