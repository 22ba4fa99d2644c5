"""A fleet: N emulated Photons in one process, each with its own identity, SSID and key.

``async with Fleet(100, cloud=service, key_pool=pool) as fleet:`` starts 100
:class:`~softap_sim.emulator.DeviceEmulator` s. Each device gets

* its own address: ``127.0.{hi}.{lo}`` (device ``i``: ``hi = 1 + i // 254``,
  ``lo = 1 + i % 254``, so device 0 is 127.0.1.1 and device 254 is 127.0.2.1), and on it
  the canonical ports (TCP 5609, HTTP 8080) -- Linux routes all of 127.0.0.0/8 to the
  loopback interface, so binding needs no set-up. Where extra loopback addresses do not
  exist (macOS without ``ifconfig lo0 alias``), the fleet falls back to port offsets on
  127.0.0.1: TCP ``5609 + i``, HTTP ``8080 + i`` (or free ports with port 0);
* its own listening sockets on those ports, or -- where the open-files limit is too low
  for two per device (``listeners="auto"`` decides; a container's hard limit of 20,000
  stops at ~9,500 devices) -- one shared socket per port for the whole fleet, which
  hands each connection to the device whose address was dialled (Linux;
  :mod:`softap_sim.listeners`: a device that is not listening then resets connections
  instead of refusing them);
* its own identity (device id, device code, hence SSID), unique within the fleet;
* its own RSA key, taken from a :class:`~softap_sim.keypool.KeyPool` (only missing
  keys are generated, in parallel worker processes);
* its own persistent state under ``<state_dir>/devices/<i>/`` (``device.json`` and
  ``device_key.pem``, the layout of ``softap-sim run``) when a state directory is given,
  otherwise in-memory state;
* a registration in the cloud (before power-on, batched into few transactions) and the
  cloud's endpoint and public key in its configuration, when a cloud is given;
* per-device scenario overrides: a fleet scenario file's ``[[devices]]`` tables.

Fleet scenario files are scenario files (see :mod:`softap_sim.scenario`) with extra
``[[devices]]`` tables; the texts (``description`` ...) are optional in them::

    name = "mixed-fleet"
    [device]                      # for every device, as in any scenario
    firmware = "1.5.2"

    [[devices]]                   # device 3 only (indices start at 0)
    index = 3
    scenario = "low-memory"       # optional: a shipped scenario or file, applied first
    [devices.memory]              # then any scenario table: device, memory, timing,
    app_ram_bytes = 40960         # radio, app, fault
    [[devices.fault]]
    kind = "no-reply"
    command = "device-id"

    [[devices]]
    index = [10, 11]              # a list of indices, and/or
    range = [20, 29]              # an inclusive range
    [devices.device]
    firmware = "0.6.4"

``softap-sim fleet`` is the command line of this module (:func:`add_parser`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import errno
import gc
import ipaddress
import json
import logging
import os
import random
import re
import resource
import secrets
import shutil
import signal
import socket
import sys
import time
import tomllib
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self

from firmware_model import Clock, Dct, DeviceIdentity, DeviceKey, StateChanged
from firmware_model.eras import ERAS
from softap_sim import argtypes, event_loop
from softap_sim.atomic import atomic_write
from softap_sim.config import SimConfig
from softap_sim.errors import ConfigError, SimulatorError, StateError
from softap_sim.keypool import KeyPool, default_pool_dir, generate_pems, load_pool_key
from softap_sim.listeners import SharedPorts, shared_ports_supported
from softap_sim.scenario import NAME_RE, TOP_LEVEL_KEYS, Scenario, load_scenario
from softap_sim.store import DCT_FILE, KEY_FILE, StateStore

if TYPE_CHECKING:
    from softap_sim.cloud.service import CloudService
    from softap_sim.cloud_remote import DeviceCloud, RemoteCloud
    from softap_sim.emulator import DeviceEmulator

log = logging.getLogger(__name__)

DEFAULT_HOST_PATTERN: Final = "127.0.{hi}.{lo}"
DEFAULT_TCP_PORT: Final = 5609
DEFAULT_HTTP_PORT: Final = 8080
DEFAULT_CONTROL_PORT: Final = 5610
#: the host of the port-offset fallback
FALLBACK_HOST: Final = "127.0.0.1"
#: addresses per ``hi`` value of the pattern (``lo`` = 1 ... 254: no .0 and .255)
PER_BLOCK: Final = 254
#: devices started at the same time
DEFAULT_CONCURRENCY: Final = 128
#: file descriptors besides the devices' two listeners (cloud, clients, stdio ...)
FD_RESERVE: Final = 1024
#: subdirectory of the state directory holding one directory per device
DEVICES_DIR: Final = "devices"
#: keys of a ``[[devices]]`` table besides the scenario tables
OVERRIDE_KEYS: Final = ("index", "range", "scenario")
SCENARIO_TABLES: Final = ("device", "memory", "timing", "radio", "app")

AddressMode = str  # "auto" | "loopback" | "port-offset"
ADDRESS_MODES: Final = ("auto", "loopback", "port-offset")
ListenerMode = str  # "auto" | "per-device" | "shared"
LISTENER_MODES: Final = ("auto", "per-device", "shared")


# ======================================================================================
# addresses
# ======================================================================================
def device_address(pattern: str, index: int) -> str:
    """The address of device ``index`` under ``pattern`` (``{hi}``, ``{lo}``, ``{i}``)."""
    hi, lo = 1 + index // PER_BLOCK, 1 + index % PER_BLOCK
    try:
        text = pattern.format(hi=hi, lo=lo, i=index)
    except (KeyError, IndexError, ValueError) as err:
        raise ConfigError(
            f"bad host pattern {pattern!r} ({err}); use the fields {{hi}} and {{lo}}, "
            f"e.g. {DEFAULT_HOST_PATTERN}"
        ) from None
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise ConfigError(
            f"host pattern {pattern!r} gives {text!r} for device {index}, which is not an "
            f"IP address; with {{hi}} = 1 + i // {PER_BLOCK} it allows at most "
            f"{255 * PER_BLOCK} devices"
        ) from None
    return text


def loopback_aliases_work(host: str) -> bool:
    """Whether ``host`` can be bound here (all of 127/8 on Linux; not on macOS)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, 0))
        except OSError as err:
            if err.errno in (errno.EADDRNOTAVAIL, errno.EINVAL, errno.EAFNOSUPPORT):
                return False
            raise
    return True


@dataclass(frozen=True, slots=True)
class Placement:
    """Where device ``index`` listens (the requested ports; 0 means a free one)."""

    host: str
    tcp_port: int
    http_port: int


def plan_addresses(
    count: int,
    *,
    mode: AddressMode = "auto",
    host_pattern: str = DEFAULT_HOST_PATTERN,
    tcp_port: int = DEFAULT_TCP_PORT,
    http_port: int = DEFAULT_HTTP_PORT,
    fallback_host: str = FALLBACK_HOST,
) -> tuple[str, list[Placement]]:
    """``(mode, placements)``: the resolved mode (``loopback``/``port-offset``) and one
    placement per device; :class:`ConfigError` when the layout cannot work."""
    if mode not in ADDRESS_MODES:
        raise ConfigError(f"unknown address mode {mode!r}; use one of {', '.join(ADDRESS_MODES)}")
    if count <= 0:
        return ("loopback" if mode == "auto" else mode), []
    if mode in ("auto", "loopback"):
        hosts = [device_address(host_pattern, i) for i in range(count)]
        if len(set(hosts)) != count:
            raise ConfigError(
                f"host pattern {host_pattern!r} gives the same address to several devices; "
                "use both {hi} and {lo}"
            )
        if loopback_aliases_work(hosts[0]) and (count == 1 or loopback_aliases_work(hosts[-1])):
            return "loopback", [Placement(h, tcp_port, http_port) for h in hosts]
        if mode == "loopback":
            raise ConfigError(
                f"cannot bind {hosts[0]}: this system has no such loopback address (on macOS "
                f"add aliases, e.g. 'sudo ifconfig lo0 alias {hosts[0]}', or use --port-offset)"
            )
        log.info("no extra loopback addresses here: using port offsets on %s", fallback_host)
    for name, base in (("TCP", tcp_port), ("HTTP", http_port)):
        if base and base + count - 1 > 65535:
            raise ConfigError(
                f"with {count} devices the {name} ports {base}..{base + count - 1} pass 65535; "
                f"choose a lower base port or 0 (free ports)"
            )
    if tcp_port and http_port and tcp_port < http_port + count and http_port < tcp_port + count:
        raise ConfigError(
            f"with {count} devices the TCP ports {tcp_port}..{tcp_port + count - 1} overlap "
            f"the HTTP ports {http_port}..{http_port + count - 1}; pass other base ports "
            "(e.g. --http-port 30000) or 0 for free ports"
        )
    return "port-offset", [
        Placement(fallback_host, tcp_port + i if tcp_port else 0, http_port + i if http_port else 0)
        for i in range(count)
    ]


def nofile_hard_limit() -> int | None:
    """The hard open-files limit (``None``: unlimited)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return None if hard == resource.RLIM_INFINITY else int(hard)


def choose_listeners(requested: ListenerMode, mode: str, count: int) -> str:
    """Resolve ``auto`` and raise the open-files limit for what was chosen.

    ``per-device`` needs two descriptors per device (plus a reserve for connections);
    ``auto`` takes it while the hard limit allows, and shared listeners beyond that
    when they work here (own loopback addresses, Linux).
    """
    if requested == "per-device":
        ensure_nofile(count)
        return "per-device"
    why_not = (
        shared_ports_supported()
        if mode == "loopback"
        else "shared listeners need the devices' own loopback addresses, not port "
        "offsets: drop --port-offset, or use --listeners per-device"
    )
    hard = nofile_hard_limit()
    if requested == "shared":
        if why_not is not None:
            raise ConfigError(why_not)
    elif why_not is not None or hard is None or hard >= 2 * count + FD_RESERVE:
        ensure_nofile(count)  # auto, and own sockets fit (or shared ones do not work here)
        return "per-device"
    else:
        log.info(
            "%d devices need %d open files with their own sockets, the hard limit is %s: "
            "one shared socket per port instead",
            count,
            2 * count + FD_RESERVE,
            hard,
        )
    ensure_nofile(0, reserve=hard or FD_RESERVE)
    return "shared"


def ensure_nofile(count: int, reserve: int = FD_RESERVE) -> int:
    """Raise the soft open-files limit for ``count`` devices; the limit now.

    Each device holds two listening sockets. :class:`SimulatorError` when even the hard
    limit is too low for them.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    minimum = 2 * count + 32
    wanted = 2 * count + reserve
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < minimum:
        raise SimulatorError(
            f"{count} devices need at least {minimum} open files (two listening sockets "
            f"each) but this process may open only {soft} (hard limit {hard}); raise the "
            f"limit (e.g. 'ulimit -Hn {wanted}' as root, LimitNOFILE= in a systemd unit), "
            f"use --listeners shared (Linux: one socket per port for the whole fleet) "
            f"or run at most {max(0, (int(soft) - 32) // 2)} devices"
        )
    return int(soft)


# ======================================================================================
# fleet scenario files
# ======================================================================================
@dataclass(frozen=True, slots=True)
class DeviceOverride:
    """One ``[[devices]]`` table: the devices it selects and what it applies to them."""

    indices: frozenset[int]
    #: applied in order: the named scenario (if any), then the table's own settings
    scenarios: tuple[Scenario, ...]
    label: str


@dataclass(frozen=True, slots=True)
class FleetScenario:
    """A base scenario for every device and per-device overrides."""

    base: Scenario | None = None
    overrides: tuple[DeviceOverride, ...] = ()
    source: str = ""

    @property
    def max_index(self) -> int:
        return max((max(o.indices) for o in self.overrides if o.indices), default=-1)

    def apply(self, config: SimConfig) -> SimConfig:
        """``config`` with the base scenario (what every device gets)."""
        return self.base.apply(config) if self.base is not None else config

    def config_for(self, index: int, config: SimConfig) -> SimConfig:
        """``config`` (already with the base) plus the overrides that select ``index``."""
        for override in self.overrides:
            if index in override.indices:
                for scenario in override.scenarios:
                    config = scenario.apply(config)
                config = dataclasses.replace(config, scenario=override.label)
        return config

    @classmethod
    def from_mapping(
        cls, overrides: Mapping[int, Scenario], base: Scenario | None = None
    ) -> FleetScenario:
        """Overrides from Python: ``{index: scenario}``."""
        return cls(
            base,
            tuple(
                DeviceOverride(frozenset([i]), (s,), s.name) for i, s in sorted(overrides.items())
            ),
        )


def load_fleet_scenario(name_or_path: str) -> FleetScenario:
    """A shipped scenario, a scenario file, or a fleet scenario file (``[[devices]]``)."""
    path = Path(name_or_path)
    if NAME_RE.match(str(name_or_path)) and not path.is_file():
        return FleetScenario(load_scenario(name_or_path), (), str(name_or_path))
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        # not readable or not TOML: the scenario loader says why, in one line
        return FleetScenario(load_scenario(name_or_path), (), str(name_or_path))
    if "devices" not in data:
        return FleetScenario(load_scenario(name_or_path), (), str(name_or_path))
    return _parse_fleet(data, str(path), path.stem)


def _parse_fleet(data: Mapping[str, Any], source: str, stem: str) -> FleetScenario:
    def bad(message: str) -> ConfigError:
        return ConfigError(f"fleet scenario {source}: {message}")

    allowed = (*TOP_LEVEL_KEYS, "devices")
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise bad(f"unknown top-level key {unknown[0]!r}; allowed: {', '.join(allowed)}")
    name = data.get("name", _name_from(stem))
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise bad(f"'name' must be lower-case letters, digits and '-', got {name!r}")
    texts = {}
    for key in ("description", "pain_point", "expect"):
        value = data.get(key, "")
        if not isinstance(value, str):
            raise bad(f"'{key}' must be a string")
        texts[key] = " ".join(value.split())
    settings = _settings(data, bad, "")
    base = None
    if settings or any(texts.values()) or "name" in data:
        base = Scenario(
            name,
            texts["description"] or f"fleet scenario {name}",
            texts["pain_point"] or "-",
            texts["expect"] or "-",
            settings,
            source,
        )
        base.apply(SimConfig())  # validate now
    entries = data["devices"]
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise bad("'devices' must be an array of tables: [[devices]] (one per override)")
    overrides = []
    for number, entry in enumerate(entries, 1):
        where = f"[[devices]] #{number}"
        unknown = sorted(set(entry) - {*OVERRIDE_KEYS, *SCENARIO_TABLES, "fault"})
        if unknown:
            raise bad(
                f"{where}: unknown key {unknown[0]!r}; allowed: "
                f"{', '.join((*OVERRIDE_KEYS, *SCENARIO_TABLES, 'fault'))}"
            )
        at = _prefixed(bad, where)
        indices = _indices(entry, at)
        scenarios: list[Scenario] = []
        label = name
        if "scenario" in entry:
            ref = entry["scenario"]
            if not isinstance(ref, str) or not ref:
                raise bad(f"{where}: 'scenario' must be a scenario name or file")
            if not NAME_RE.match(ref) and not Path(ref).is_absolute():
                ref = str(Path(source).parent / ref)
            named = load_scenario(ref)
            scenarios.append(named)
            label = named.name
        own = _settings(entry, at, "devices.")
        if own:
            inline = Scenario(label, "override", "-", "-", own, f"{source} {where}")
            inline.apply(SimConfig())  # validate now
            scenarios.append(inline)
        overrides.append(DeviceOverride(indices, tuple(scenarios), label))
    return FleetScenario(base, tuple(overrides), source)


def _prefixed(bad: Callable[[str], ConfigError], where: str) -> Callable[[str], ConfigError]:
    def at(message: str) -> ConfigError:
        return bad(f"{where}: {message}")

    return at


def _name_from(stem: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", stem.lower()).strip("-") or "fleet"


def _settings(
    data: Mapping[str, Any], bad: Callable[[str], ConfigError], prefix: str
) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for key in SCENARIO_TABLES:
        if key in data:
            if not isinstance(data[key], dict):
                raise bad(f"'{key}' must be a table: [{prefix}{key}]")
            settings[key] = dict(data[key])
    if "fault" in data:
        faults = data["fault"]
        if not isinstance(faults, list) or not all(isinstance(f, dict) for f in faults):
            raise bad(f"'fault' must be an array of tables: [[{prefix}fault]]")
        settings["fault"] = [dict(f) for f in faults]
    return settings


def _is_index(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _indices(entry: Mapping[str, Any], bad: Callable[[str], ConfigError]) -> frozenset[int]:
    out: set[int] = set()
    if "index" not in entry and "range" not in entry:
        raise bad("give 'index' (a device index or a list of them) and/or 'range' = [first, last]")
    if "index" in entry:
        value = entry["index"]
        values = value if isinstance(value, list) else [value]
        if not values or not all(_is_index(v) for v in values):
            raise bad(
                f"'index' must be a device index (0, 1, ...) or a list of them, got {value!r}"
            )
        out.update(values)
    if "range" in entry:
        value = entry["range"]
        if (
            not isinstance(value, list)
            or len(value) != 2
            or not all(_is_index(v) for v in value)
            or value[0] > value[1]
        ):
            raise bad(f"'range' must be [first, last] device indices, got {value!r}")
        out.update(range(value[0], value[1] + 1))
    return frozenset(out)


# ======================================================================================
# the cloud registrations (batched)
# ======================================================================================
class _Registrar:
    """Registers devices in the cloud in batches: one transaction per wave of starts."""

    def __init__(self, cloud: DeviceCloud) -> None:
        self._cloud = cloud
        self._pending: list[tuple[str, str, asyncio.Future[None]]] = []
        self._flushing: asyncio.Task[None] | None = None
        self.registered = 0

    async def register(self, emu: DeviceEmulator) -> None:
        device = emu.device
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(
            (
                device.dct.identity.device_id_hex.lower(),
                device.key.public_key_pem.decode("ascii"),
                fut,
            )
        )
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.get_running_loop().create_task(self._flush())
        await fut

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # let the other starts of this wave queue up
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                results = await self._cloud.register_devices([(d, pem) for d, pem, _f in batch])
            except Exception as err:
                for *_x, fut in batch:
                    if not fut.done():
                        fut.set_exception(
                            SimulatorError(f"cannot register the devices in the cloud: {err}")
                        )
                continue
            for (device_id, _pem, fut), error in zip(batch, results, strict=True):
                if fut.done():
                    continue
                if error is None:
                    self.registered += 1
                    fut.set_result(None)
                else:
                    fut.set_exception(
                        SimulatorError(f"cannot register device {device_id}: {error}")
                    )


# ======================================================================================
# the fleet
# ======================================================================================
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


class Fleet:
    """N emulated devices in this process; see the module documentation.

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
        host_pattern: device addresses, ``{hi}``/``{lo}`` as in :func:`device_address`.
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
        if isinstance(scenario, FleetScenario):
            self.scenario = scenario
        else:
            self.scenario = FleetScenario.from_mapping(scenario or {})
        if self.scenario.max_index >= count:
            raise ConfigError(
                f"scenario {self.scenario.source or ''} overrides device "
                f"{self.scenario.max_index}, but the fleet has only {count} devices "
                f"(indices 0..{count - 1})"
            )
        self._address_mode = address_mode
        if listeners not in LISTENER_MODES:
            raise ConfigError(
                f"listeners must be one of {', '.join(LISTENER_MODES)}, not {listeners!r}"
            )
        self._listeners = listeners
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
        #: called on every device's state change: ``(device, change, t)``
        self.on_state_change: list[Callable[[FleetDevice, StateChanged, float], None]] = []
        self.report = StartReport()
        self._registrar: _Registrar | None = None
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
                cfg = dataclasses.replace(cfg, seed=_device_seed(cfg.seed, i))
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
        identities = _unique_identities(configs, set(), set())
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
        new, codes, ids = await asyncio.to_thread(_scan_state, root, dirs)
        if new:
            keys = await self._keys([(i, configs[i].key_bits) for i in new], report)
            t1 = time.perf_counter()
            identities = _unique_identities(configs, codes, ids, only=new)
            jobs = [(dirs[i], identities[i], keys[i]) for i in new]
            workers = min(16, max(1, len(jobs) // 64 + 1))
            await asyncio.to_thread(_create_device_dirs, root, jobs, workers)
            report.state_s = time.perf_counter() - t1
        report.created = len(new)
        report.phases["state_scan"] = time.perf_counter() - t0
        return [dataclasses.replace(c, state_dir=dirs[i]) for i, c in enumerate(configs)]

    async def _start_devices(
        self, placements: list[Placement], configs: list[SimConfig], report: StartReport
    ) -> None:
        from softap_sim.emulator import DeviceEmulator

        t0 = time.perf_counter()
        before: Callable[[DeviceEmulator], Awaitable[None]] | None = None
        if self.cloud is not None:
            self._registrar = _Registrar(self.cloud)
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
        self.devices = devices
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
                    await device.emulator.start()
                except Exception as err:
                    failures.append((device, err))

        await asyncio.gather(*(one(d) for d in devices))
        report.start_s = time.perf_counter() - t0
        if failures:
            device, err = failures[0]
            await self.close()
            raise _start_error(
                device, err, len(failures), shared=self.listeners == "shared"
            ) from err


def _bind(
    callbacks: list[Callable[[FleetDevice, StateChanged, float], None]], device: FleetDevice
) -> Callable[[StateChanged, float], None]:
    def callback(change: StateChanged, t: float) -> None:
        for cb in callbacks:
            cb(device, change, t)

    return callback


def _start_error(
    device: FleetDevice, err: BaseException, failed: int, *, shared: bool = False
) -> SimulatorError:
    place = device.placement
    more = f" ({failed - 1} more failed)" if failed > 1 else ""
    where = f"{place.host} (TCP {place.tcp_port or 'free'}, HTTP {place.http_port or 'free'})"
    if isinstance(err, SimulatorError):
        return SimulatorError(f"device {device.index}: {err}{more}")
    if shared and isinstance(err, OSError) and err.errno == errno.EADDRINUSE:
        return SimulatorError(
            f"shared listeners take TCP {place.tcp_port} and HTTP {place.http_port} on every "
            "loopback address (127.x.y.z), and one of them is in use (e.g. by 'softap-sim "
            "run' on 127.0.0.1); stop it, pass other --tcp-port/--http-port, or run fewer "
            "devices with --listeners per-device"
        )
    if isinstance(err, OSError) and err.errno == errno.EADDRINUSE:
        return SimulatorError(
            f"device {device.index}: a port is already in use on {where}{more}; stop the "
            "other program, or pass other --tcp-port/--http-port (0 picks free ports)"
        )
    if isinstance(err, OSError) and err.errno == errno.EACCES:
        return SimulatorError(
            f"device {device.index}: permission denied binding {where}{more}; ports below "
            "1024 need privileges"
        )
    if isinstance(err, OSError) and err.errno == errno.EMFILE:
        return SimulatorError(
            f"device {device.index}: too many open files{more}; raise 'ulimit -n' or run "
            "fewer devices"
        )
    if isinstance(err, OSError):
        return SimulatorError(
            f"device {device.index}: cannot listen on {where}: {err.strerror or err}{more}"
        )
    return SimulatorError(f"device {device.index} failed to start: {err!r}{more}")


def _device_seed(seed: int, index: int) -> int:
    return random.Random(f"softap-sim fleet {seed} {index}").getrandbits(63)


def _unique_identities(
    configs: Sequence[SimConfig],
    codes: set[str],
    ids: set[bytes],
    *,
    only: Iterable[int] | None = None,
) -> dict[int, DeviceIdentity]:
    """New identities with device ids and SSIDs unique in the fleet (and vs ``codes``)."""
    fresh = random.Random()
    out: dict[int, DeviceIdentity] = {}
    seen = set(codes)
    for i in only if only is not None else range(len(configs)):
        cfg = configs[i]
        rng = fresh
        if cfg.seed is not None:
            rng = random.Random(f"softap-sim fleet identity {cfg.seed} {i}")
        length = ERAS[cfg.firmware].device_code_length
        for _attempt in range(1000):
            ident = DeviceIdentity.generate(rng, code_length=length, ssid_prefix=cfg.ssid_prefix)
            if ident.ssid not in seen and ident.device_id not in ids:
                break
        else:  # pragma: no cover - 4-char codes with more than ~a million devices
            raise ConfigError(f"cannot find a unique device code for device {i}")
        seen.add(ident.ssid)
        ids.add(ident.device_id)
        out[i] = ident
    return out


def _scan_state(root: Path, dirs: list[Path]) -> tuple[list[int], set[str], set[bytes]]:
    """Which devices are new, and (if any are) the SSIDs and ids of the existing ones."""
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise StateError(
            f"cannot create {root}: {err.strerror}; choose another --state-dir"
        ) from None
    for leftover in root.glob(".new-*"):  # a crash while creating devices
        shutil.rmtree(leftover, ignore_errors=True)
    new = [
        i for i, d in enumerate(dirs) if not (d / DCT_FILE).exists() and not (d / KEY_FILE).exists()
    ]
    codes: set[str] = set()
    ids: set[bytes] = set()
    if new and len(new) < len(dirs):
        new_set = set(new)
        for i, d in enumerate(dirs):
            if i in new_set:
                continue
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                ident = Dct.from_json(json.loads((d / DCT_FILE).read_bytes())).identity
                codes.add(ident.ssid)
                ids.add(ident.device_id)
    return new, codes, ids


def _create_device_dirs(
    root: Path, jobs: list[tuple[Path, DeviceIdentity, DeviceKey]], workers: int
) -> None:
    """Write each new device's key and DCT into a temporary directory, then rename it
    into place: a device directory is complete or absent, whatever happens."""

    def one(job: tuple[Path, DeviceIdentity, DeviceKey]) -> None:
        target, identity, key = job
        tmp = root / f".new-{target.name}-{secrets.token_hex(4)}"
        tmp.mkdir(mode=0o700)
        atomic_write(tmp / KEY_FILE, key.to_pem(), 0o600)
        StateStore(tmp).save(Dct(identity))
        if target.exists():
            with contextlib.suppress(OSError):
                target.rmdir()  # an empty leftover directory
        try:
            tmp.rename(target)
        except OSError:  # the directory holds other files: put the state files into it
            for name in (KEY_FILE, DCT_FILE):
                (tmp / name).rename(target / name)
            shutil.rmtree(tmp, ignore_errors=True)

    try:
        if workers <= 1:
            for job in jobs:
                one(job)
        else:
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(one, jobs))
        fd = os.open(root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as err:
        raise StateError(
            f"cannot create device state under {root}: {err.strerror or err}; "
            "choose another --state-dir"
        ) from None


# ======================================================================================
# softap-sim fleet
# ======================================================================================
def _count(text: str) -> int:
    value = argtypes.parse_non_negative_int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {text}")
    return value


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``softap-sim fleet``; sets the default ``fleet_func`` (args -> exit code)."""
    p = sub.add_parser(
        "fleet",
        help="run N emulated devices in one process (own addresses, identities, keys)",
        description=(
            "Start N emulated Photons in listening mode in one process. Each device has its\n"
            "own identity, SSID and RSA key, and listens on its own loopback address with the\n"
            "canonical ports: 127.0.1.1, 127.0.1.2 ... each with TCP 5609 and HTTP 8080 (port\n"
            "offsets on 127.0.0.1 where extra loopback addresses do not exist). All of them\n"
            "are registered in the embedded cloud. Keys come from a reusable key pool that\n"
            "--fill-pool fills ahead of time. On a terminal a live view shows the devices;\n"
            "otherwise one line is printed per state change. Stop with Ctrl-C."
        ),
        epilog=(
            "examples:  softap-sim fleet --count 100\n"
            "           softap-sim fleet --fill-pool 1000          # fill the key pool, exit\n"
            "           softap-sim fleet --count 20 --scenario fleet.toml --state-dir ./fleet\n"
            "           curl http://127.0.1.7:8080/device-id      # device 6"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--count",
        "-n",
        type=_count,
        default=None,
        metavar="N",
        help="number of devices (indices 0..N-1)",
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep each device's state in DIR/devices/<i>/ and the cloud's in DIR "
        "(reused on the next start); default: in memory, a new fleet every start",
    )
    p.add_argument(
        "--scenario",
        metavar="NAME|FILE",
        default=None,
        help="a scenario for every device, or a fleet scenario file with per-device "
        "[[devices]] overrides (see 'pydoc softap_sim.fleet')",
    )
    p.add_argument("--seed", type=int, default=None, help="reproducible identities")
    p.add_argument("--ssid-prefix", default=None, help="SSID prefix of new devices (Photon)")
    net = p.add_argument_group("addresses")
    net.add_argument(
        "--host-pattern",
        default=DEFAULT_HOST_PATTERN,
        metavar="PATTERN",
        help=f"device addresses; device i: hi = 1 + i // {PER_BLOCK}, lo = 1 + i %% "
        f"{PER_BLOCK} (default {DEFAULT_HOST_PATTERN}: 127.0.1.1 ...)",
    )
    net.add_argument(
        "--port-offset",
        action="store_true",
        help="all devices on 127.0.0.1, device i on TCP base+i and HTTP base+i (the "
        "automatic fallback where extra loopback addresses do not exist)",
    )
    net.add_argument(
        "--listeners",
        choices=LISTENER_MODES,
        default="auto",
        help="per-device: two listening sockets per device, as a Photon has; shared: "
        "one socket per port for the whole fleet, routing each connection to the "
        "address dialled (Linux; a device that is not listening resets connections "
        "instead of refusing them); auto (default): per-device while the open-files "
        "limit allows, else shared",
    )
    net.add_argument(
        "--tcp-port",
        type=argtypes.parse_port,
        default=DEFAULT_TCP_PORT,
        help=f"TCP port of each device, or the base with --port-offset (default "
        f"{DEFAULT_TCP_PORT}); 0 picks free ports",
    )
    net.add_argument(
        "--http-port",
        type=argtypes.parse_port,
        default=DEFAULT_HTTP_PORT,
        help=f"HTTP port of each device, or the base with --port-offset (default "
        f"{DEFAULT_HTTP_PORT}); 0 picks free ports",
    )
    net.add_argument(
        "--concurrency",
        type=_count,
        default=DEFAULT_CONCURRENCY,
        metavar="N",
        help=f"devices started at a time (default {DEFAULT_CONCURRENCY})",
    )
    net.add_argument(
        "--control-port",
        type=argtypes.parse_port,
        default=DEFAULT_CONTROL_PORT,
        help=f"control API port on 127.0.0.1 (default {DEFAULT_CONTROL_PORT}): every device "
        "under /v1/devices/<id>/..., e.g. 'softap-sim ctl --device ID state'; 0 picks a "
        "free port",
    )
    net.add_argument(
        "--control-host",
        default="127.0.0.1",
        help="address of the control API (default 127.0.0.1; it has no authentication)",
    )
    net.add_argument("--no-control", action="store_true", help="do not start the control API")
    net.add_argument(
        "--advertise",
        action="store_true",
        help="publish DNS-SD records for every device (as 'run --advertise'; one mDNS "
        "responder for the fleet); a real Photon advertises nothing",
    )
    net.add_argument(
        "--advertise-interface",
        action="append",
        default=[],
        metavar="IP",
        help="answer mDNS on the interface with this address (repeatable; default: all)",
    )
    cloud = p.add_argument_group("cloud")
    cloud.add_argument("--no-cloud", action="store_true", help="no embedded cloud")
    cloud.add_argument("--cloud-host", default="127.0.0.1", help="address of the cloud")
    cloud.add_argument(
        "--cloud-port",
        type=argtypes.parse_port,
        default=8181,
        help="the cloud's REST API port (default 8181); 0 picks a free one",
    )
    cloud.add_argument(
        "--cloud-device-port",
        type=argtypes.parse_port,
        default=5683,
        help="the cloud's device endpoint (default 5683); 0 picks a free one",
    )
    from softap_sim import cloud_remote

    cloud_remote.add_options(cloud)
    keys = p.add_argument_group("keys")
    keys.add_argument(
        "--key-pool",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"the key pool (default: DIR/keypool with --state-dir, else {default_pool_dir()})",
    )
    keys.add_argument(
        "--fill-pool",
        type=_count,
        default=None,
        metavar="N",
        help="fill the key pool to N keys first; without --count, exit afterwards",
    )
    keys.add_argument(
        "--no-refill",
        action="store_true",
        help="do not top the pool up (to N keys) in the background after the start",
    )
    out = p.add_argument_group("output")
    out.add_argument(
        "--plain",
        action="store_true",
        help="plain lines (one per state change) even on a terminal",
    )
    out.add_argument(
        "--recent", type=_count, default=12, metavar="N", help="recent changes in the live view"
    )
    p.add_argument(
        "--loop",
        choices=event_loop.LOOP_CHOICES,
        default="auto",
        help="event loop; auto: uvloop when installed (less CPU), else asyncio's",
    )
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    p.set_defaults(fleet_func=fleet_main)


def fleet_main(args: argparse.Namespace) -> int:
    """``softap-sim fleet``: the exit code (0 ok, 1 error, 130 interrupted)."""
    try:
        return event_loop.run(_fleet(args), args.loop)
    except SimulatorError as err:
        print(f"softap-sim: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader of our output went away (e.g. '| head')
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _pool_for(args: argparse.Namespace) -> KeyPool:
    if args.key_pool is not None:
        return KeyPool(args.key_pool)
    if args.state_dir is not None:
        return KeyPool(args.state_dir / "keypool")
    return KeyPool(default_pool_dir())


def _fill(pool: KeyPool, target: int) -> None:
    have = pool.available()
    if have >= target:
        print(f"key pool {pool.directory}: {have} keys ready", flush=True)
        return
    print(
        f"key pool {pool.directory}: {have} keys ready, generating {target - have} ...",
        flush=True,
    )
    t0 = time.perf_counter()
    made = pool.fill(target)
    elapsed = time.perf_counter() - t0
    rate = made / elapsed if elapsed > 0 else 0.0
    print(
        f"key pool {pool.directory}: {pool.available()} keys ready (made {made} in "
        f"{elapsed:.1f} s, {rate:.0f} keys/s)",
        flush=True,
    )


async def _start_cloud(args: argparse.Namespace) -> CloudService:
    from softap_sim.cloud.service import CloudService

    service = CloudService(args.state_dir)
    await service.open()
    try:
        await service.serve(args.cloud_host, args.cloud_port)
        await service.serve_devices(args.cloud_host, args.cloud_device_port)
    except ValueError as err:
        await service.close()
        raise SimulatorError(str(err)) from None
    except OSError as err:
        await service.close()
        raise SimulatorError(
            f"cannot start the cloud on {args.cloud_host} (REST {args.cloud_port}, devices "
            f"{args.cloud_device_port}): {err.strerror or err}; pass --cloud-port 0 "
            "--cloud-device-port 0, or --no-cloud"
        ) from None
    return service


def _base_config(args: argparse.Namespace, scenario: FleetScenario | None) -> SimConfig:
    base = SimConfig()
    if scenario is not None:
        base = scenario.apply(base)
    changes: dict[str, Any] = {}
    if args.seed is not None:
        changes["seed"] = args.seed
    if args.ssid_prefix is not None:
        from firmware_model.identity import MAX_SSID_PREFIX_LEN

        if not 0 < len(args.ssid_prefix.encode()) <= MAX_SSID_PREFIX_LEN:
            raise ConfigError(f"--ssid-prefix must be 1-{MAX_SSID_PREFIX_LEN} bytes")
        changes["ssid_prefix"] = args.ssid_prefix
    return dataclasses.replace(base, **changes)


async def _start_control(
    args: argparse.Namespace, fleet: Fleet, *, responder: Any = None
) -> tuple[Any, list[Any]]:
    """The fleet's control API (every device by id) and, if asked, its DNS-SD records.

    ``responder``: the publisher the advertisers share (tests pass a fake); default a
    real mDNS :class:`~softap_sim.transports.mdns.Responder`, closed with the fleet.
    """
    from softap_sim.registry import DeviceRegistry

    registry = DeviceRegistry()
    control = None
    if not args.no_control:
        from softap_sim.control_api import start_control_api

        try:
            control = await start_control_api(
                None, args.control_host, args.control_port, registry=registry
            )
        except OSError as err:
            raise SimulatorError(
                f"cannot start the control API on {args.control_host}:{args.control_port} "
                f"({err.strerror or err}); pass --control-port 0 or --no-control"
            ) from None
    url = control.url if control is not None else None
    for device in fleet.devices:
        registry.add(device.emulator, control_url=url)
    advertising: list[Any] = []
    if args.advertise:
        from softap_sim.transports.mdns import Advertiser, Responder

        if responder is None:
            responder = Responder(args.advertise_interface or None)
            await responder.start()
            advertising.append(responder)
        for device in fleet.devices:
            adv = Advertiser(device.emulator, responder=responder, control_url=url)
            await adv.start()
            advertising.insert(0, adv)  # closed before the responder
    return control, advertising


async def _close_all(control: Any, advertising: list[Any]) -> None:
    for item in advertising:
        await item.close()
    if control is not None:
        await control.close()


def fleet_banner(
    fleet: Fleet,
    cloud: CloudService | RemoteCloud | None,
    pool: KeyPool | None,
    control_url: str | None = None,
) -> str:
    r = fleet.report
    first, last = fleet.devices[0], fleet.devices[-1]
    tcp0, tcp1 = first.emulator.tcp_address[1], last.emulator.tcp_address[1]
    lines = [
        f"softap-sim fleet: {len(fleet)} devices ready in {r.total_s:.2f} s "
        f"(keys: {r.keys_from_pool} from the pool, {r.keys_generated} generated; "
        f"{r.created} new devices)",
    ]
    if fleet.mode == "loopback":
        lines.append(
            f"  addresses  {first.host} ... {last.host}  (device i: "
            f"{fleet.host_pattern}, hi = 1 + i // {PER_BLOCK}, lo = 1 + i % {PER_BLOCK})"
        )
        shared = "  (shared listeners: one socket per port)" if fleet.listeners == "shared" else ""
        lines.append(
            f"  ports      TCP {tcp0}, HTTP {first.emulator.http_address[1]} on each{shared}"
        )
    else:
        lines.append(
            f"  addresses  {first.host}, port offsets: device i on TCP {tcp0}+i ... {tcp1}"
        )
    host, port = first.emulator.tcp_address
    lines.append(
        f"  e.g.       curl {first.emulator.url_for('/device-id')}    "
        f"printf 'device-id\\n0\\n\\n' | nc {host} {port}"
    )
    from softap_sim.cloud_remote import RemoteCloud

    if isinstance(cloud, RemoteCloud):
        host, port = cloud.endpoint
        lines.append(
            f"  cloud      {cloud.url}  (external; devices: {host}:{port}; "
            f"{r.registered} registered)"
        )
    elif cloud is not None and cloud.server is not None and cloud.device_server is not None:
        lines.append(
            f"  cloud      {cloud.server.url}  (devices: TCP {cloud.device_server.port}; "
            f"{r.registered} registered)"
        )
    if control_url is not None:
        lines.append(
            f"  control    {control_url}   e.g.  softap-sim ctl --control {control_url} "
            f"--device {first.device_id} state"
        )
    state = fleet.state_dir / DEVICES_DIR if fleet.state_dir is not None else "in memory"
    lines.append(f"  state      {state}")
    if pool is not None:
        lines.append(f"  key pool   {pool.directory} ({pool.available()} ready)")
    return "\n".join(lines)


async def _fleet(args: argparse.Namespace) -> int:
    if args.count is None and args.fill_pool is None:
        raise ConfigError(
            "give --count N (devices to run), or --fill-pool N to only fill the key pool"
        )
    pool = _pool_for(args)
    if args.fill_pool is not None:
        pool.ensure_dir()
        await asyncio.to_thread(_fill, pool, args.fill_pool)
        if args.count is None:
            return 0
    count: int = args.count
    scenario = load_fleet_scenario(args.scenario) if args.scenario else None
    base = _base_config(args, scenario)
    if scenario is not None and scenario.max_index >= count:
        raise ConfigError(
            f"scenario {scenario.source} overrides device {scenario.max_index} but "
            f"--count is {count} (indices 0..{count - 1})"
        )
    from softap_sim.live_view import LiveView

    if args.state_dir is not None:
        problem = argtypes.state_dir_problem(args.state_dir)
        if problem is not None:
            raise StateError(problem)
        try:
            args.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StateError(
                f"cannot create state directory {args.state_dir}: {err.strerror}; "
                "choose another with --state-dir"
            ) from None
    cloud: Any = None
    if args.cloud is not None:
        from softap_sim import cloud_remote

        cloud = await cloud_remote.from_args(args)
    elif not args.no_cloud:
        cloud = await _start_cloud(args)
    fleet = Fleet(
        count,
        base_config=base,
        state_dir=args.state_dir,
        scenario=scenario,
        address_mode="port-offset" if args.port_offset else "auto",
        listeners=args.listeners,
        host_pattern=args.host_pattern,
        tcp_port=args.tcp_port,
        http_port=args.http_port,
        cloud=cloud,
        cloud_host=args.cloud_host,
        key_pool=pool,
        concurrency=args.concurrency,
        freeze_gc=True,
    )
    view = LiveView(plain=True if args.plain else None, recent=args.recent)
    view.attach_fleet(fleet)
    refill = None
    stack = contextlib.AsyncExitStack()
    try:
        pool.ensure_dir()
        if not view.plain:
            print(f"starting {count} devices ...", flush=True)
        await fleet.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        control, advertising = await _start_control(args, fleet)
        stack.push_async_callback(_close_all, control, advertising)
        banner = fleet_banner(fleet, cloud, pool, control.url if control else None)
        print(banner, flush=True)
        if getattr(cloud, "created_credentials", None):
            from softap_sim import cloud_cli

            cloud_cli.print_credentials(cloud.created_credentials, cloud.credentials_path)
        if not args.no_refill and pool.available() < count:
            refill = pool.fill_in_background(count)
        print("Press Ctrl-C to stop.", flush=True)
        view.header = fleet_banner(fleet, cloud, None, control.url if control else None)
        async with view:
            await stop.wait()
    finally:
        if refill is not None:
            await asyncio.to_thread(refill.stop)
        await stack.aclose()  # the control API and mDNS goodbyes before the devices go
        await fleet.close()
        if cloud is not None:
            await cloud.close()
    fleet.check()
    print("stopped", flush=True)
    return 0


__all__ = [
    "DEFAULT_HOST_PATTERN",
    "DeviceOverride",
    "Fleet",
    "FleetDevice",
    "FleetScenario",
    "Placement",
    "StartReport",
    "add_parser",
    "device_address",
    "choose_listeners",
    "ensure_nofile",
    "fleet_main",
    "load_fleet_scenario",
    "loopback_aliases_work",
    "plan_addresses",
]
