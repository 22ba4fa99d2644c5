"""Opt-in DNS-SD (mDNS) records for emulated devices, and a browser for them.

A Photon advertises nothing (pain-points.md §2.2): these records go beyond the device, are
off unless asked for (``softap-sim run --advertise``), and exist so that test runners and
bench apps can find N emulated devices without knowing their addresses (§2.3).

Service types (both clearly vendor-specific, neither used by real Particle firmware):

``_particle-softap._tcp.local.`` -- the **listening record**, present while the device is in
listening mode *and* its access point is up. SRV port: the SoftAP TCP port (5609 on a
device). TXT::

    txtvers=1  id=<24 hex digits>  ssid=Photon-XXXX  claimed=0|1  tcp=<port>
    http=<port, 0 without an HTTP server (0.4.0 era)>  fw=<era, e.g. 0.7.0>
    state=listening  proto=2  [scenario=<name>]  [control=<control API URL>]

``_particle-device._tcp.local.`` -- the **operational record**, the "home LAN" side (the nRF
pattern): present after a successful Wi-Fi join, while the device is in ``cloud-connecting``,
``cloud-retry`` or ``online``; its TXT follows the state, so "joined but the cloud is
unreachable" shows as ``cloud=0``. SRV port: the TCP port again (it refuses connections
outside listening mode; the port just names the emulator). TXT::

    txtvers=1  id=...  ssid=...  claimed=0|1  fw=...  state=<state>  cloud=0|1
    [scenario=...]  [control=...]

The instance name of both is the device id, e.g. ``320020001847333531323135._particle-
softap._tcp.local.``, on the host ``softap-sim-<id>.local.``. A record is withdrawn (goodbye
packets) when its condition ends and on :meth:`Advertiser.close`; a TXT change (claimed,
state) is sent as an update.

:class:`Advertiser` follows one emulator (``emu.on_state_change``, and ``emu.on_dct_change``
/ ``emu.on_access_point_change`` when the emulator has them; :meth:`Advertiser.refresh`
otherwise). Many advertisers may share one :class:`Responder` (one mDNS socket set).
:class:`Browser` watches both types and keeps a live ``{instance name: DeviceInfo}`` map;
:func:`browse` is a timed one-shot browse (``softap-sim discover``).

Plain loopback has no MULTICAST flag on Linux; tests run the responder and browser inside a
network namespace whose ``lo`` has multicast on and a ``224.0.0.0/4`` route (see
``tests/test_mdns.py``). Where multicast does not work, use the control API's device list
(:mod:`softap_sim.registry`).

The ``async_`` methods of python-zeroconf stay inside this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self

import zeroconf
from zeroconf import InterfaceChoice, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from firmware_model import DeviceState
from softap_sim.errors import LifecycleError, SimulatorError
from softap_sim.registry import SOURCE_MDNS, DeviceInfo

if TYPE_CHECKING:
    from softap_sim.emulator import DeviceEmulator

log = logging.getLogger(__name__)

LISTENING_TYPE = "_particle-softap._tcp.local."
OPERATIONAL_TYPE = "_particle-device._tcp.local."
SERVICE_TYPES = (LISTENING_TYPE, OPERATIONAL_TYPE)
TXT_VERSION = "1"
#: the SoftAP protocol version (the ``version`` command's ``{"v":2}``)
PROTOCOL_VERSION = "2"
#: record kinds (keys of :attr:`Advertiser.published`)
LISTENING = "listening"
OPERATIONAL = "operational"
#: the states in which the device is on the home network (operational record present)
OPERATIONAL_STATES = frozenset(
    {DeviceState.CLOUD_CONNECTING, DeviceState.CLOUD_RETRY, DeviceState.ONLINE}
)
#: how long one resolve (SRV/TXT/A query) may take
RESOLVE_TIMEOUT_MS = 3000


class MdnsError(SimulatorError):
    """mDNS sockets could not be opened, or a record could not be published."""


#: errors one publish/update/withdraw may raise; the advertiser logs them and carries on
_PUBLISH_ERRORS = (MdnsError, zeroconf.Error, OSError, RuntimeError, ValueError)


# -- records -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ServiceRecord:
    """One DNS-SD service instance as the advertiser wants it published."""

    kind: str
    service_type: str
    instance: str
    server: str
    port: int
    addresses: tuple[str, ...]
    txt: Mapping[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The full instance name, e.g. ``<id>._particle-softap._tcp.local.``."""
        return f"{self.instance}.{self.service_type}"

    def same_instance(self, other: ServiceRecord) -> bool:
        """Whether ``other`` can be published as a TXT update of this record."""
        return (
            self.service_type == other.service_type
            and self.instance == other.instance
            and self.server == other.server
            and self.port == other.port
            and self.addresses == other.addresses
        )


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
    emu: DeviceEmulator,
    *,
    addresses: Sequence[str] | None = None,
    control_url: str | None = None,
) -> dict[str, ServiceRecord]:
    """The records ``emu`` should have published right now, by kind (empty if stopped)."""
    try:
        dev = emu.device
        _, tcp_port = emu.tcp_address
    except LifecycleError:
        return {}
    try:
        http_port = emu.http_address[1]
    except LifecycleError:  # no HTTP server in this era
        http_port = 0
    identity = dev.dct.identity
    device_id = identity.device_id_hex
    addrs = tuple(addresses) if addresses is not None else record_addresses(emu.host)
    server = f"softap-sim-{device_id}.local."
    common: dict[str, str] = {
        "txtvers": TXT_VERSION,
        "id": device_id,
        "ssid": identity.ssid,
        "claimed": "1" if dev.dct.claimed else "0",
        "fw": dev.era.value,
        "state": dev.state.value,
    }
    extra: dict[str, str] = {}
    if emu.config.scenario:
        extra["scenario"] = emu.config.scenario
    if control_url:
        extra["control"] = control_url
    found: dict[str, ServiceRecord] = {}
    if dev.state is DeviceState.LISTENING and emu.access_point is not None:
        txt = {**common, "tcp": str(tcp_port), "http": str(http_port), "proto": PROTOCOL_VERSION}
        found[LISTENING] = ServiceRecord(
            LISTENING, LISTENING_TYPE, device_id, server, tcp_port, addrs, {**txt, **extra}
        )
    if dev.state in OPERATIONAL_STATES:
        txt = {**common, "cloud": "1" if dev.state is DeviceState.ONLINE else "0"}
        found[OPERATIONAL] = ServiceRecord(
            OPERATIONAL, OPERATIONAL_TYPE, device_id, server, tcp_port, addrs, {**txt, **extra}
        )
    return found


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


def _zeroconf(interfaces: Sequence[str] | None) -> AsyncZeroconf:
    try:
        return AsyncZeroconf(interfaces=list(interfaces) if interfaces else InterfaceChoice.All)
    except OSError as err:
        where = ", ".join(interfaces) if interfaces else "all interfaces"
        raise MdnsError(
            f"cannot open mDNS sockets on {where}: {err.strerror or err} (give the address "
            "of an interface of this machine that is up)"
        ) from err


class Responder:
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
            self._zc = _zeroconf(self.interfaces)
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

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class Advertiser:
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
        emu: DeviceEmulator,
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

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

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


# -- browsing ------------------------------------------------------------------------
def _port_txt(value: str | None) -> int | None:
    if value is None or not value.isdigit():
        return None
    port = int(value)
    return port if 0 < port <= 65535 else None


def device_from_service(
    service_type: str,
    name: str,
    txt: Mapping[str, str],
    addresses: Sequence[str],
    port: int | None,
) -> DeviceInfo:
    """A :class:`DeviceInfo` from one resolved record (TXT keys as documented above)."""
    instance = name[: -len(service_type) - 1] if name.endswith("." + service_type) else name
    listening = service_type == LISTENING_TYPE
    state = txt.get("state") or (LISTENING if listening else "")
    return DeviceInfo(
        device_id=txt.get("id") or instance,
        ssid=txt.get("ssid", ""),
        firmware=txt.get("fw", ""),
        state=state,
        claimed=txt.get("claimed") == "1",
        host=addresses[0] if addresses else None,
        tcp_port=_port_txt(txt.get("tcp")) or (port if listening else None),
        http_port=_port_txt(txt.get("http")),
        ap_up=True if listening else None,
        control_url=txt.get("control") or None,
        scenario=txt.get("scenario") or None,
        record=name,
        source=SOURCE_MDNS,
    )


def _txt(info: AsyncServiceInfo) -> dict[str, str]:
    found: dict[str, str] = {}
    for key, value in info.properties.items():
        found[key.decode("utf-8", "replace")] = (value or b"").decode("utf-8", "replace")
    return found


class Browser:
    """Watches the two service types; :attr:`devices` is the live view.

    ``async with Browser(interfaces=["127.0.0.1"]) as browser:`` then
    ``await browser.wait_for(lambda devices: ..., timeout_s=10)``.
    """

    def __init__(
        self,
        *,
        interfaces: Sequence[str] | None = None,
        service_types: Sequence[str] = SERVICE_TYPES,
    ) -> None:
        self.interfaces = list(interfaces) if interfaces else None
        self.service_types = list(service_types)
        self._zc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._devices: dict[str, DeviceInfo] = {}
        self._generation: dict[str, int] = {}
        self._changed = asyncio.Condition()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Open the sockets and start browsing. Idempotent."""
        if self._zc is not None:
            return
        self._zc = _zeroconf(self.interfaces)
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

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def devices(self) -> dict[str, DeviceInfo]:
        """Resolved records now on the network, by instance name."""
        return dict(self._devices)

    async def wait_for(
        self, predicate: Callable[[Mapping[str, DeviceInfo]], bool], timeout_s: float = 10.0
    ) -> dict[str, DeviceInfo]:
        """Wait (event-driven, bounded) until ``predicate(devices)``; the devices then."""

        async def waiter() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: predicate(self._devices))

        await asyncio.wait_for(waiter(), timeout_s)
        return self.devices

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

    def _spawn(self, coro: Any) -> None:
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
        device = device_from_service(
            service_type, name, _txt(info), info.parsed_addresses(), info.port
        )
        async with self._changed:
            self._devices[name] = device
            self._changed.notify_all()

    async def _forget(self, name: str) -> None:
        async with self._changed:
            self._devices.pop(name, None)
            self._changed.notify_all()


async def browse(
    timeout_s: float = 3.0, *, interfaces: Sequence[str] | None = None
) -> list[DeviceInfo]:
    """Browse both service types for ``timeout_s`` seconds; what was found, sorted."""
    async with Browser(interfaces=interfaces) as browser:
        await asyncio.sleep(timeout_s)  # the browse window itself, not a synchronisation
        devices = browser.devices
    return sorted(devices.values(), key=lambda d: (d.device_id, d.record or ""))


__all__ = [
    "LISTENING",
    "LISTENING_TYPE",
    "OPERATIONAL",
    "OPERATIONAL_STATES",
    "OPERATIONAL_TYPE",
    "SERVICE_TYPES",
    "Advertiser",
    "Browser",
    "MdnsError",
    "Publisher",
    "Responder",
    "ServiceRecord",
    "browse",
    "device_from_service",
    "interfaces_for",
    "record_addresses",
    "records_for",
]
