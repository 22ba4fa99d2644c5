"""The fleet: N emulated Photons in one process, each with its own identity, SSID and key.

:class:`Fleet` plans where the devices listen (:mod:`.addresses`), prepares their keys,
identities and state (:mod:`.state_dirs`, the key pool), registers them in the cloud in
batches (:mod:`.registrar`) and starts them a bounded number at a time; see the package
documentation (``pydoc softap_sim.fleet``) for what each device gets.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from firmware_model import Clock, StateChanged
from softap_sim.config import SimConfig
from softap_sim.errors import ConfigError
from softap_sim.fleet.addresses import (
    DEFAULT_HOST_PATTERN,
    DEFAULT_HTTP_PORT,
    DEFAULT_TCP_PORT,
    AddressMode,
    ListenerMode,
    Placement,
    check_listener_mode,
    choose_listeners,
    plan_addresses,
    start_error,
)
from softap_sim.fleet.registrar import Registrar
from softap_sim.fleet.scenario import FleetScenario
from softap_sim.fleet.state_dirs import (
    DEVICES_DIR,
    create_device_dirs,
    device_seed,
    scan_state,
    unique_identities,
)
from softap_sim.keypool import KeyPool, generate_pems, load_pool_key
from softap_sim.lifetime import AsyncLifetime
from softap_sim.listeners import SharedPorts
from softap_sim.scenario import Scenario

if TYPE_CHECKING:
    from softap_sim.cloud_remote import DeviceCloud
    from softap_sim.emulator import DeviceEmulator

#: devices started at the same time
DEFAULT_CONCURRENCY: Final = 128


@dataclass(eq=False)
class FleetDevice:
    """One device of a fleet."""

    index: int
    emulator: DeviceEmulator
    placement: Placement
    state_dir: Path | None = None

    @property
    def host(self) -> str:
        return self.placement.host

    @property
    def ssid(self) -> str:
        return self.emulator.ssid

    @property
    def device_id(self) -> str:
        """Upper-case hex, as ``device-id`` answers it."""
        return self.emulator.device.dct.identity.device_id_hex


@dataclass
class StartReport:
    """What :meth:`Fleet.start` did, for banners and benchmarks (seconds)."""

    devices: int = 0
    mode: str = ""
    #: ``per-device`` or ``shared`` (see :mod:`softap_sim.listeners`)
    listeners: str = ""
    keys_from_pool: int = 0
    keys_generated: int = 0
    keys_s: float = 0.0
    state_s: float = 0.0
    start_s: float = 0.0
    total_s: float = 0.0
    created: int = 0
    registered: int = 0
    phases: dict[str, float] = field(default_factory=dict)


class Fleet(AsyncLifetime):
    """N emulated devices in this process; see the package documentation.

    Args:
        count: number of devices (indices 0 ... count-1).
        base_config: settings every device starts from (its ``identity``, ``key``,
            ``state_dir`` and ``transcript_path`` are not used: each device gets its own
            identity and key, the state directory is ``state_dir`` below, and a fleet
            keeps transcripts in memory only).
        state_dir: persistent state (``<state_dir>/devices/<i>/``); ``None``: in-memory.
        scenario: the per-device overrides (``[[devices]]`` tables, or ``{index:
            Scenario}``). Its base scenario is not applied here: pass
            ``scenario.apply(config)`` as ``base_config`` (the CLI puts its options on
            top of that, so options override the file).
        address_mode: ``auto`` (own loopback addresses if they work, else port offsets),
            ``loopback`` or ``port-offset``.
        listeners: ``per-device`` (two listening sockets per device), ``shared`` (one
            per port for the fleet; own loopback addresses, Linux) or ``auto``
            (per-device while the open-files limit allows two per device, else shared).
        host_pattern: device addresses, ``{hi}``/``{lo}`` as in
            :func:`~softap_sim.fleet.addresses.device_address`.
        tcp_port, http_port: ports on each address; the bases of the port offsets; 0
            picks free ports.
        cloud: register every device there before it powers on; when the cloud serves
            its device endpoint, each device also gets its address and public key. The
            embedded :class:`~softap_sim.cloud.service.CloudService` or a
            :class:`~softap_sim.cloud_remote.RemoteCloud` (another process's cloud).
        cloud_host: the address devices use to reach a local cloud's device endpoint.
        key_pool: where keys come from; ``None`` generates every key.
        concurrency: devices started at the same time.
        clock: the devices' clock (a ManualClock in tests).
        freeze_gc: after start, move the devices' objects to the garbage collector's
            permanent generation (``gc.freeze``) so later collections do not walk them
            (process-wide: for programs that run one fleet; undone by :meth:`close`).
    """

    def __init__(
        self,
        count: int,
        *,
        base_config: SimConfig | None = None,
        state_dir: Path | None = None,
        scenario: FleetScenario | Mapping[int, Scenario] | None = None,
        address_mode: AddressMode = "auto",
        listeners: ListenerMode = "auto",
        host_pattern: str = DEFAULT_HOST_PATTERN,
        tcp_port: int = DEFAULT_TCP_PORT,
        http_port: int = DEFAULT_HTTP_PORT,
        cloud: DeviceCloud | None = None,
        cloud_host: str = "127.0.0.1",
        key_pool: KeyPool | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        clock: Clock | None = None,
        freeze_gc: bool = False,
    ) -> None:
        if count < 0:
            raise ConfigError(f"a fleet needs a device count >= 0, got {count}")
        self.count = count
        self.base_config = base_config or SimConfig()
        self.state_dir = state_dir
        self.scenario = _fleet_scenario(scenario, count)
        self._address_mode = address_mode
        self._listeners = check_listener_mode(listeners)
        #: resolved after start: ``per-device`` or ``shared``
        self.listeners = ""
        self._shared: SharedPorts | None = None
        self.host_pattern = host_pattern
        self.tcp_port = tcp_port
        self.http_port = http_port
        self.cloud = cloud
        self.cloud_host = cloud_host
        self.key_pool = key_pool
        self.concurrency = max(1, concurrency)
        self.clock = clock
        self.freeze_gc = freeze_gc
        self._froze = False
        #: resolved after start: ``loopback`` or ``port-offset``
        self.mode = ""
        self.devices: list[FleetDevice] = []
        #: called for each device when its emulator exists, before it starts
        self.on_device_created: list[Callable[[FleetDevice], None]] = []
        #: called for each device as its start begins (the fleet starts them in bounded
        #: batches, so this is later than creation; benchmarks time start-up from here)
        self.on_device_starting: list[Callable[[FleetDevice], None]] = []
        #: called on every device's state change: ``(device, change, t)``
        self.on_state_change: list[Callable[[FleetDevice, StateChanged, float], None]] = []
        self.report = StartReport()
        self._registrar: Registrar | None = None
        self._started = False

    # -- container -------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.devices)

    def __getitem__(self, index: int) -> FleetDevice:
        return self.devices[index]

    def __iter__(self) -> Iterator[FleetDevice]:
        return iter(self.devices)

    @property
    def emulators(self) -> list[DeviceEmulator]:
        return [d.emulator for d in self.devices]

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> StartReport:
        """Prepare keys, identities and state, then start every device (bounded)."""
        if self._started:
            return self.report
        t0 = time.perf_counter()
        report = self.report = StartReport(devices=self.count)
        self.mode, placements = plan_addresses(
            self.count,
            mode=self._address_mode,
            host_pattern=self.host_pattern,
            tcp_port=self.tcp_port,
            http_port=self.http_port,
        )
        report.mode = self.mode
        self.listeners = report.listeners = choose_listeners(self._listeners, self.mode, self.count)
        if self.listeners == "shared":
            self._shared = SharedPorts()
        configs = self._configs()
        report.phases["configs"] = time.perf_counter() - t0
        gc_was_enabled = gc.isenabled()
        gc.disable()  # tens of thousands of new long-lived objects: no point scanning them
        try:
            if self.state_dir is not None:
                configs = await self._prepare_state(configs, report)
            else:
                configs = await self._in_memory(configs, report)
            report.phases["keys_and_state"] = time.perf_counter() - t0
            await self._start_devices(placements, configs, report)
        finally:
            if gc_was_enabled:
                gc.enable()
        if self.freeze_gc and not self._froze:
            gc.collect()
            gc.freeze()
            self._froze = True
        report.registered = self._registrar.registered if self._registrar else 0
        report.total_s = time.perf_counter() - t0
        return report

    async def close(self) -> None:
        """Power every device off and release its ports. Idempotent."""
        devices = self.devices  # kept: check() still reports their errors
        self._started = False
        sem = asyncio.Semaphore(self.concurrency * 4)

        async def one(emu: DeviceEmulator) -> None:
            async with sem:
                await emu.close()

        await asyncio.gather(*(one(d.emulator) for d in devices), return_exceptions=True)
        if self._shared is not None:
            await self._shared.close()
            self._shared = None
        if self._froze:
            gc.unfreeze()
            self._froze = False

    def check(self) -> None:
        """Re-raise the first error raised inside any device's callbacks."""
        for device in self.devices:
            device.emulator.check()

    # -- preparation -----------------------------------------------------------------
    def _configs(self) -> list[SimConfig]:
        base = dataclasses.replace(
            self.base_config, identity=None, key=None, state_dir=None, transcript_path=None
        )
        endpoint = self.cloud.device_endpoint(self.cloud_host) if self.cloud else None
        if self.cloud is not None and endpoint is not None:
            base = dataclasses.replace(
                base,
                cloud_endpoint=endpoint,
                server_public_key_pem=self.cloud.server_public_key_pem,
            )
        configs = []
        for i in range(self.count):
            cfg = self.scenario.config_for(i, base)
            if cfg.seed is not None:  # one seed for the fleet: a distinct one per device
                cfg = dataclasses.replace(cfg, seed=device_seed(cfg.seed, i))
            configs.append(cfg)
        return configs

    async def _keys(self, wanted: list[tuple[int, int]], report: StartReport) -> dict[int, Any]:
        """``{index: DeviceKey}`` for ``(index, bits)`` pairs: pool first, then generated."""
        t0 = time.perf_counter()
        by_bits: dict[int, list[int]] = {}
        for index, bits in wanted:
            by_bits.setdefault(bits, []).append(index)
        out: dict[int, Any] = {}
        for bits, indices in sorted(by_bits.items()):
            if self.key_pool is not None:
                keys, generated = await self.key_pool.obtain(len(indices), bits)
            else:
                pems = await asyncio.to_thread(generate_pems, len(indices), bits)
                keys = [load_pool_key(p, bits) for p in pems]
                generated = len(keys)
            report.keys_generated += generated
            report.keys_from_pool += len(keys) - generated
            out.update(zip(indices, keys, strict=True))
        report.keys_s = time.perf_counter() - t0
        return out

    async def _in_memory(self, configs: list[SimConfig], report: StartReport) -> list[SimConfig]:
        keys = await self._keys([(i, c.key_bits) for i, c in enumerate(configs)], report)
        identities = unique_identities(configs, set(), set())
        report.created = len(configs)
        return [
            dataclasses.replace(c, identity=identities[i], key=keys[i])
            for i, c in enumerate(configs)
        ]

    async def _prepare_state(
        self, configs: list[SimConfig], report: StartReport
    ) -> list[SimConfig]:
        assert self.state_dir is not None
        t0 = time.perf_counter()
        root = self.state_dir / DEVICES_DIR
        dirs = [root / str(i) for i in range(self.count)]
        new, codes, ids = await asyncio.to_thread(scan_state, root, dirs)
        if new:
            keys = await self._keys([(i, configs[i].key_bits) for i in new], report)
            t1 = time.perf_counter()
            identities = unique_identities(configs, codes, ids, only=new)
            jobs = [(dirs[i], identities[i], keys[i]) for i in new]
            workers = min(16, max(1, len(jobs) // 64 + 1))
            await asyncio.to_thread(create_device_dirs, root, jobs, workers)
            report.state_s = time.perf_counter() - t1
        report.created = len(new)
        report.phases["state_scan"] = time.perf_counter() - t0
        return [dataclasses.replace(c, state_dir=dirs[i]) for i, c in enumerate(configs)]

    def _create_devices(
        self, placements: list[Placement], configs: list[SimConfig]
    ) -> list[FleetDevice]:
        """The devices' emulators, not started; the ``on_device_created`` hooks run."""
        from softap_sim.emulator import DeviceEmulator

        before: Callable[[DeviceEmulator], Awaitable[None]] | None = None
        if self.cloud is not None:
            self._registrar = Registrar(self.cloud)
            before = self._registrar.register
        devices = []
        for i, (place, cfg) in enumerate(zip(placements, configs, strict=True)):
            emu = DeviceEmulator(
                cfg,
                host=place.host,
                tcp_port=place.tcp_port,
                http_port=place.http_port,
                clock=self.clock,
                before_power_on=before,
                shared_ports=self._shared,
            )
            device = FleetDevice(i, emu, place, cfg.state_dir)
            if self.on_state_change:
                emu.on_state_change.append(_bind(self.on_state_change, device))
            devices.append(device)
            for hook in self.on_device_created:
                hook(device)
        return devices

    async def _start_devices(
        self, placements: list[Placement], configs: list[SimConfig], report: StartReport
    ) -> None:
        """Start every device, ``concurrency`` at a time; the first failure stops the rest
        and closes the fleet."""
        t0 = time.perf_counter()
        devices = self.devices = self._create_devices(placements, configs)
        self._started = True
        sem = asyncio.Semaphore(self.concurrency)
        failures: list[tuple[FleetDevice, BaseException]] = []

        async def one(device: FleetDevice) -> None:
            if failures:
                return
            async with sem:
                if failures:
                    return
                try:
                    for hook in self.on_device_starting:
                        hook(device)
                    await device.emulator.start()
                except Exception as err:
                    failures.append((device, err))

        await asyncio.gather(*(one(d) for d in devices))
        report.start_s = time.perf_counter() - t0
        if failures:
            device, err = failures[0]
            await self.close()
            shared = self.listeners == "shared"
            raise start_error(
                device.index, device.placement, err, len(failures), shared=shared
            ) from err


def _fleet_scenario(
    scenario: FleetScenario | Mapping[int, Scenario] | None, count: int
) -> FleetScenario:
    """``scenario`` as a :class:`FleetScenario`, checked against the device count."""
    if not isinstance(scenario, FleetScenario):
        scenario = FleetScenario.from_mapping(scenario or {})
    if scenario.max_index >= count:
        raise ConfigError(
            f"scenario {scenario.source or ''} overrides device "
            f"{scenario.max_index}, but the fleet has only {count} devices "
            f"(indices 0..{count - 1})"
        )
    return scenario


def _bind(
    callbacks: list[Callable[[FleetDevice, StateChanged, float], None]], device: FleetDevice
) -> Callable[[StateChanged, float], None]:
    def callback(change: StateChanged, t: float) -> None:
        for cb in callbacks:
            cb(device, change, t)

    return callback
