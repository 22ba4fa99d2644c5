"""Puts the DNS-SD records of emulated devices on the network (python-zeroconf).

:mod:`softap_sim.protocol.dnssd` decides what is published (its docstring lists the types,
names and TXT keys); this module keeps it on the network. :class:`Advertiser` follows one
emulator, read through :class:`AdvertisedEmulator` so that this transport does not depend on
the emulator module, and withdraws its records (goodbye packets) on :meth:`Advertiser.close`.
Many advertisers may share one :class:`Responder` (one mDNS socket set).

Plain loopback has no MULTICAST flag on Linux; tests run the responder and browser inside a
network namespace whose ``lo`` has multicast on and a ``224.0.0.0/4`` route (see
``tests/transports/test_mdns.py``). Where multicast does not work, use the control API's device list
(:mod:`softap_sim.registry`).

The ``async_`` methods of python-zeroconf stay inside this module and
:mod:`softap_sim.transports.mdns_browser`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import zeroconf
from zeroconf import InterfaceChoice
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from firmware_model import Device, StateChanged
from softap_sim.config import SimConfig
from softap_sim.errors import LifecycleError, SimulatorError
from softap_sim.lifetime import AsyncLifetime
from softap_sim.protocol.dnssd import ServiceRecord, service_records

log = logging.getLogger(__name__)


class MdnsError(SimulatorError):
    """mDNS sockets could not be opened, or a record could not be published."""


#: errors one publish/update/withdraw may raise; the advertiser logs them and carries on
_PUBLISH_ERRORS = (MdnsError, zeroconf.Error, OSError, RuntimeError, ValueError)


class AdvertisedEmulator(Protocol):
    """What an :class:`Advertiser` reads from the emulator it follows.

    A :class:`~softap_sim.emulator.DeviceEmulator` is one. ``device``, ``tcp_address`` and
    ``http_address`` raise :class:`~softap_sim.errors.LifecycleError` while it is stopped
    (``http_address`` also in an era without an HTTP server).
    """

    @property
    def host(self) -> str: ...

    @property
    def config(self) -> SimConfig: ...

    @property
    def device(self) -> Device: ...

    @property
    def tcp_address(self) -> tuple[str, int]: ...

    @property
    def http_address(self) -> tuple[str, int]: ...

    @property
    def ap_up(self) -> bool: ...

    @property
    def on_state_change(self) -> list[Callable[[StateChanged, float], None]]: ...

    async def settle(self) -> None:
        """Wait until the listeners follow the last state change."""


# -- addresses -------------------------------------------------------------------------
def _is_unspecified(host: str) -> bool:
    if host in ("", "0.0.0.0", "::"):
        return True
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def interfaces_for(host: str) -> list[str] | None:
    """The mDNS interfaces for an emulator bound to ``host``: that address, else all."""
    if _is_unspecified(host) or not _is_ip(host):
        return None
    return [host]


def _local_addresses() -> tuple[str, ...]:
    """This machine's non-loopback IPv4 addresses (for an emulator bound to 0.0.0.0)."""
    import ifaddr  # a dependency of zeroconf

    found: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if ip.is_IPv4 and isinstance(ip.ip, str) and not ip.ip.startswith("127."):
                found.append(ip.ip)
    return tuple(dict.fromkeys(found))


def record_addresses(host: str, interfaces: Sequence[str] | None = None) -> tuple[str, ...]:
    """The A/AAAA addresses to publish for an emulator bound to ``host``."""
    if not _is_unspecified(host) and _is_ip(host):
        return (host,)
    explicit = tuple(i for i in interfaces or () if _is_ip(i) and not _is_unspecified(i))
    return explicit or _local_addresses() or ("127.0.0.1",)


def records_for(
    emu: AdvertisedEmulator,
    *,
    addresses: Sequence[str] | None = None,
    control_url: str | None = None,
) -> dict[str, ServiceRecord]:
    """The records ``emu`` should have published right now, by kind (empty if stopped)."""
    try:
        device = emu.device
        _, tcp_port = emu.tcp_address
    except LifecycleError:
        return {}
    try:
        http_port = emu.http_address[1]
    except LifecycleError:  # no HTTP server in this era
        http_port = 0
    return service_records(
        device,
        ap_up=emu.ap_up,
        tcp_port=tcp_port,
        http_port=http_port,
        addresses=tuple(addresses) if addresses is not None else record_addresses(emu.host),
        scenario=emu.config.scenario,
        control_url=control_url,
    )


# -- publishing ------------------------------------------------------------------------
class Publisher(Protocol):
    """Where an :class:`Advertiser` puts its records (a :class:`Responder`, or a fake)."""

    async def publish(self, record: ServiceRecord) -> None: ...

    async def update(self, record: ServiceRecord) -> None: ...

    async def withdraw(self, record: ServiceRecord) -> None: ...


def _service_info(record: ServiceRecord) -> AsyncServiceInfo:
    return AsyncServiceInfo(
        record.service_type,
        record.name,
        port=record.port,
        properties=dict(record.txt),
        server=record.server,
        parsed_addresses=list(record.addresses),
    )


def open_zeroconf(interfaces: Sequence[str] | None) -> AsyncZeroconf:
    """An ``AsyncZeroconf`` on ``interfaces`` (all if ``None``); :class:`MdnsError` if not."""
    try:
        return AsyncZeroconf(interfaces=list(interfaces) if interfaces else InterfaceChoice.All)
    except OSError as err:
        where = ", ".join(interfaces) if interfaces else "all interfaces"
        raise MdnsError(
            f"cannot open mDNS sockets on {where}: {err.strerror or err} (give the address "
            "of an interface of this machine that is up)"
        ) from err


class Responder(AsyncLifetime):
    """One mDNS responder (an ``AsyncZeroconf``), shareable by many advertisers.

    Args:
        interfaces: addresses of the interfaces to answer on (e.g. ``["127.0.0.1"]``);
            ``None`` for all. Create it inside a running event loop.
    """

    def __init__(self, interfaces: Sequence[str] | None = None) -> None:
        self.interfaces = list(interfaces) if interfaces else None
        self._zc: AsyncZeroconf | None = None
        self._infos: dict[str, AsyncServiceInfo] = {}

    def _open(self) -> AsyncZeroconf:
        if self._zc is None:
            self._zc = open_zeroconf(self.interfaces)
        return self._zc

    async def start(self) -> None:
        """Open the mDNS sockets (also done by the first publish). Idempotent."""
        self._open()

    async def publish(self, record: ServiceRecord) -> None:
        """Probe for the name, then announce the record (about 1.5 s)."""
        info = _service_info(record)
        announced = await self._open().async_register_service(info)
        await announced
        self._infos[record.name] = info

    async def update(self, record: ServiceRecord) -> None:
        info = _service_info(record)
        sent = await self._open().async_update_service(info)
        await sent
        self._infos[record.name] = info

    async def withdraw(self, record: ServiceRecord) -> None:
        info = self._infos.pop(record.name, None)
        if info is None or self._zc is None:
            return
        sent = await self._zc.async_unregister_service(info)
        await sent

    async def close(self) -> None:
        """Withdraw everything still published and close the sockets. Idempotent."""
        zc, self._zc = self._zc, None
        self._infos.clear()
        if zc is not None:
            await zc.async_close()


class Advertiser(AsyncLifetime):
    """Keeps one emulator's DNS-SD records in step with the device.

    Args:
        emu: the emulator (started or not; records appear once it is).
        interfaces: for an own :class:`Responder` when ``responder`` is not given;
            default: the emulator's host address (all interfaces if it binds 0.0.0.0).
        responder: a shared responder (not closed by :meth:`close`).
        addresses: the A/AAAA addresses to publish; default: the emulator's host
            address, else the responder's interfaces, else this machine's addresses.
        control_url: published as TXT ``control`` (where to steer the device).

    ``async with Advertiser(emu) as adv:``; :meth:`settle` waits until what is published
    matches the device; :meth:`refresh` re-reads the device after a change the emulator
    does not announce (e.g. a DCT change while it has no ``on_dct_change`` hook).
    """

    def __init__(
        self,
        emu: AdvertisedEmulator,
        *,
        interfaces: Sequence[str] | None = None,
        responder: Publisher | None = None,
        addresses: Sequence[str] | None = None,
        control_url: str | None = None,
    ) -> None:
        self._emu = emu
        self._own = responder is None
        self._interfaces = list(interfaces) if interfaces is not None else None
        self._responder: Publisher | None = responder
        self._addresses = tuple(addresses) if addresses is not None else None
        self._control_url = control_url
        self._published: dict[str, ServiceRecord] = {}
        self._wake = asyncio.Event()
        self._done = asyncio.Condition()
        self._requested = 0
        self._reconciled = 0
        self._closing = False
        self._worker: asyncio.Task[None] | None = None
        self._hooks: list[list[Any]] = []
        #: publish errors (logged as they happen); :meth:`check` raises the first
        self.errors: list[BaseException] = []

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        """Subscribe to the emulator and publish what applies now. Idempotent."""
        if self._worker is not None:
            return
        if self._responder is None:
            interfaces = self._interfaces
            if interfaces is None:
                interfaces = interfaces_for(self._emu.host)
            responder = Responder(interfaces)
            await responder.start()
            self._responder = responder
        emu = self._emu
        self._hooks = [emu.on_state_change]
        for name in ("on_dct_change", "on_access_point_change"):
            hooks = getattr(emu, name, None)
            if isinstance(hooks, list):
                self._hooks.append(hooks)
        for hooks in self._hooks:
            hooks.append(self._on_change)
        self._worker = asyncio.get_running_loop().create_task(self._run())
        self.refresh()

    async def close(self) -> None:
        """Withdraw every record, unsubscribe, close an own responder. Idempotent."""
        worker = self._worker
        if worker is None or self._closing:
            return
        for hooks in self._hooks:
            with contextlib.suppress(ValueError):
                hooks.remove(self._on_change)
        self._hooks = []
        self._closing = True
        self.refresh()
        await worker
        if self._own and isinstance(self._responder, Responder):
            await self._responder.close()

    # -- following the device ----------------------------------------------------------
    def _on_change(self, *_: Any) -> None:
        self.refresh()

    def refresh(self) -> None:
        """Re-read the device and bring the records in line (in the background)."""
        self._requested += 1
        self._wake.set()

    async def settle(self, timeout_s: float = 10.0) -> None:
        """Wait until every change so far is published (probing takes about 1.5 s)."""
        worker = self._worker
        if worker is None:
            raise LifecycleError("the advertiser is not started; use 'async with' or start()")
        self.refresh()
        target = self._requested

        async def reconciled() -> None:
            async with self._done:
                await self._done.wait_for(lambda: self._reconciled >= target or worker.done())

        await asyncio.wait_for(reconciled(), timeout_s)
        if worker.done() and self._reconciled < target and not worker.cancelled():
            worker.result()  # re-raise what stopped it

    @property
    def published(self) -> Mapping[str, ServiceRecord]:
        """What is on the network now, by kind (``"listening"``, ``"operational"``)."""
        return dict(self._published)

    def check(self) -> None:
        """Raise :class:`MdnsError` for the first record that could not be published."""
        if self.errors:
            err = self.errors[0]
            raise MdnsError(f"DNS-SD publishing failed: {err!r}") from err

    async def _run(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                target = self._requested
                if self._closing:
                    await self._reconcile({})
                    return
                await self._emu.settle()  # listeners opened or closed
                desired = records_for(
                    self._emu,
                    addresses=self._addresses or self._default_addresses(),
                    control_url=self._control_url,
                )
                await self._reconcile(desired)
                async with self._done:
                    self._reconciled = max(self._reconciled, target)
                    self._done.notify_all()
        finally:
            async with self._done:
                self._reconciled = self._requested if self._closing else self._reconciled
                self._done.notify_all()

    def _default_addresses(self) -> tuple[str, ...]:
        interfaces = self._responder.interfaces if isinstance(self._responder, Responder) else None
        return record_addresses(self._emu.host, interfaces)

    async def _reconcile(self, desired: Mapping[str, ServiceRecord]) -> None:
        responder = self._responder
        assert responder is not None
        for kind in sorted(set(self._published) | set(desired)):
            old, new = self._published.get(kind), desired.get(kind)
            try:
                if old is not None and (new is None or not old.same_instance(new)):
                    self._published.pop(kind)
                    log.info("mDNS: withdrawing %s", old.name)
                    await responder.withdraw(old)
                    old = None
                if new is None:
                    continue
                if old is None:
                    log.info("mDNS: publishing %s %s", new.name, dict(new.txt))
                    await responder.publish(new)
                    self._published[kind] = new
                elif dict(old.txt) != dict(new.txt):
                    log.info("mDNS: updating %s %s", new.name, dict(new.txt))
                    await responder.update(new)
                    self._published[kind] = new
            except _PUBLISH_ERRORS as err:
                log.warning("mDNS: %s record of %s failed: %r", kind, self._emu.host, err)
                self.errors.append(err)


__all__ = [
    "AdvertisedEmulator",
    "Advertiser",
    "MdnsError",
    "Publisher",
    "Responder",
    "interfaces_for",
    "open_zeroconf",
    "record_addresses",
    "records_for",
]
