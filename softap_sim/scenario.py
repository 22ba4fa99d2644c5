"""Scenarios: named, documented device set-ups that reproduce one pain point each.

A scenario is a TOML file. The ready-made ones ship in ``softap_sim/scenarios/``
(``softap-sim scenarios`` lists them); ``softap-sim run --scenario NAME|FILE`` runs one,
and :meth:`Scenario.apply` turns one into a :class:`~softap_sim.config.SimConfig` for the
Python API. Every section is optional; a setting the file gives replaces the base
config's value, a setting it omits keeps the base's (so a state directory, a fixed test
identity or key, or command-line options layered on top are preserved).

Schema::

    name = "wrong-password"        # [a-z0-9-]; default: from the file name
    description = "..."            # required: one line, what the scenario sets up
    pain_point = "#2, #5: ..."     # optional (default ""): the pain point(s) of
                                   # pain-points.md, with issue refs
    expect = "..."                 # optional (default ""): what the app / client
                                   # observes, and how the device recovers

    [device]
    firmware = "0.7.0"             # device-os version or era: 0.4.0, 0.4.4, 0.6.4, 1.5.2 ...
    ssid_prefix = "Photon"         # 1-25 bytes; SSID = <prefix>-<device code>
    seed = 42                      # identity generation and fault jitter, reproducible
    key_bits = 1024                # 1024 (a Photon) or 2048, for a new device (a state
                                   # directory keeps its key); a fixed key of another
                                   # size in the base config is replaced by a new one
    cloud_available = true         # false: joins Wi-Fi, then retries the cloud forever

    [memory]                       # softap-protocol.md §7, firmware_model.memory
    heap_after_boot_bytes = 61440  # free heap after boot with an empty application
    app_ram_bytes = 0              # the application's RAM use
    gate_bytes = 22016             # the 21.5 KB listening-mode gate
    gate_mode = "appears"          # below the gate: "appears" (AP up, requests fail,
                                   # saves lost) or "refuse" (no AP at all)

    [timing]
    profile = "fast"               # "fast" (CI: immediate) or "realistic" (device-like)
    join_s = 12.0                  # ... any field of firmware_model.timing.TimingProfile
                                   # overrides the profile: boot_s, listen_start_s, scan_s,
                                   # ap_teardown_s, join_s, dhcp_s, cloud_s, retry_s,
                                   # listening_timeout_s (seconds, >= 0)

    [radio]
    pack = "unicode"               # a scan pack (firmware_model.scan_packs.PACKS) ...
    [[radio.network]]              # ... and/or networks, as in a --networks file
    ssid = "HomeNetwork"           # (pack networks first, then these)
    security = "wpa2_aes"
    password = "correct horse battery staple"
    channel = 1

    [app.functions.lightsOn]       # the user firmware's cloud functions (int fn(String))
    returns = 1                    # the return value; mode = "length" returns len(arg)
    delay_s = 0.0                  # a slow function; hang = true never answers (408)
    [app.variables.temperature]    # and variables: type int32 | double | bool | string
    type = "double"
    value = 21.5

    [[fault]]                      # zero or more; the fields of
    kind = "join"                  # firmware_model.faults.Fault.from_mapping:
    outcome = "bad_password"       # kind, command, transport, skip, times, delay_ms,
    times = 1                      # jitter_ms, count, outcome, variant, bytes

Every error is a :class:`~softap_sim.errors.ConfigError` with one line that names the
file, the key and what to do.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from firmware_model import Fault, GateMode, RadioEnvironment
from firmware_model.app import UserApp
from firmware_model.eras import FirmwareEra
from firmware_model.identity import MAX_SSID_PREFIX_LEN
from firmware_model.scan_packs import PACKS, scan_pack
from firmware_model.timing import PROFILES, TimingProfile, timing_profile
from softap_sim.config import SimConfig
from softap_sim.errors import ConfigError, SimulatorError

#: the package holding the shipped ``*.toml`` files
SCENARIO_PACKAGE = "softap_sim.scenarios"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")
TOP_LEVEL_KEYS = (
    "name",
    "description",
    "pain_point",
    "expect",
    "device",
    "memory",
    "timing",
    "radio",
    "fault",
    "app",
)
TEXT_KEYS = ("description", "pain_point", "expect")
#: the text keys a file must give (the others default to "")
REQUIRED_TEXT_KEYS = ("description",)
DEVICE_KEYS = ("firmware", "ssid_prefix", "seed", "key_bits", "cloud_available")
MEMORY_KEYS = ("heap_after_boot_bytes", "app_ram_bytes", "gate_bytes", "gate_mode")
RADIO_KEYS = ("pack", "network")
KEY_BITS = (1024, 2048)


class _Bad(SimulatorError):
    """One problem in a scenario file; becomes a one-line ConfigError naming the file."""


@dataclass(frozen=True)
class Scenario:
    """A validated scenario. ``settings`` holds the file's tables as plain data."""

    name: str
    description: str
    #: the pain point(s) of pain-points.md it reproduces; "" when the file gives none
    pain_point: str = ""
    #: what a client observes (the promised failure) and how the device recovers; "" when
    #: the file gives none
    expect: str = ""
    #: ``device``, ``memory``, ``timing``, ``radio`` and ``fault`` tables, as given
    settings: dict[str, Any] = field(default_factory=dict)
    #: where it came from: a file path, or ``<shipped>/NAME.toml``
    source: str = ""

    def apply(self, base: SimConfig) -> SimConfig:
        """``base`` with this scenario's settings; what the scenario omits is kept."""
        try:
            changes = _changes(self.settings, base)
        except _Bad as err:  # only when settings were altered after loading
            raise ConfigError(f"scenario {self.source or self.name}: {err}") from None
        return dataclasses.replace(base, scenario=self.name, **changes)


# -- loading -------------------------------------------------------------------------------


def load_scenario(name_or_path: str) -> Scenario:
    """A shipped scenario by name, or a scenario TOML file by path."""
    text = str(name_or_path)
    if NAME_RE.match(text):
        shipped = _shipped_file(text)
        if shipped is not None:
            return _load_text(shipped.read_text(encoding="utf-8"), f"<shipped>/{text}.toml", text)
        if not Path(text).is_file():
            raise ConfigError(
                f"unknown scenario {text!r}: not a shipped scenario and no such file; "
                f"'softap-sim scenarios' lists them ({', '.join(_shipped_names())})"
            )
    path = Path(text)
    try:
        data = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"scenario file {path} does not exist; give a shipped scenario name "
            "('softap-sim scenarios' lists them) or the path of a .toml file"
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"scenario file {path} is a directory; give a .toml file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"scenario file {path} is not UTF-8 text; save it as UTF-8") from None
    except OSError as err:
        raise ConfigError(f"cannot read scenario file {path}: {err.strerror}") from None
    default_name = re.sub(r"[^a-z0-9-]+", "-", path.stem.lower()).strip("-") or "scenario"
    return _load_text(data, str(path), default_name)


def list_scenarios() -> list[Scenario]:
    """The shipped scenarios, sorted by name."""
    return sorted((load_scenario(n) for n in _shipped_names()), key=lambda s: s.name)


def _shipped_dir() -> Traversable:
    return resources.files(SCENARIO_PACKAGE)


def _shipped_names() -> list[str]:
    return sorted(
        entry.name.removesuffix(".toml")
        for entry in _shipped_dir().iterdir()
        if entry.name.endswith(".toml") and entry.is_file()
    )


def _shipped_file(name: str) -> Traversable | None:
    entry = _shipped_dir().joinpath(f"{name}.toml")
    return entry if entry.is_file() else None


def _load_text(text: str, source: str, default_name: str) -> Scenario:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(
            f"scenario file {source} is not valid TOML: {_one_line(str(err))}"
        ) from None
    try:
        return _parse(data, source, default_name)
    except _Bad as err:
        raise ConfigError(f"scenario file {source}: {_one_line(str(err))}") from None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _parse(data: Mapping[str, Any], source: str, default_name: str) -> Scenario:
    _known(data, TOP_LEVEL_KEYS, "top-level key")
    name = data.get("name", default_name)
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise _Bad(
            f"'name' must be lower-case letters, digits and '-' (e.g. \"slow-scan\"), got {name!r}"
        )
    texts: dict[str, str] = {}
    for key in TEXT_KEYS:
        value = data.get(key, "")
        if key in REQUIRED_TEXT_KEYS and (not isinstance(value, str) or not value.strip()):
            raise _Bad(f"'{key}' is required: a non-empty string")
        if not isinstance(value, str):
            raise _Bad(f"'{key}' must be a string (or left out), got {value!r}")
        texts[key] = _one_line(value)
    settings: dict[str, Any] = {}
    for key in ("device", "memory", "timing", "radio", "app"):
        if key in data:
            if not isinstance(data[key], dict):
                raise _Bad(f"'{key}' must be a table: [{key}]")
            settings[key] = dict(data[key])
    if "fault" in data:
        faults = data["fault"]
        if not isinstance(faults, list) or not all(isinstance(f, dict) for f in faults):
            raise _Bad("'fault' must be an array of tables: [[fault]] (one per fault)")
        settings["fault"] = [dict(f) for f in faults]
    _changes(settings, SimConfig())  # validate every table now, at load time
    return Scenario(
        name, texts["description"], texts["pain_point"], texts["expect"], settings, source
    )


# -- settings -> SimConfig changes -------------------------------------------------------


def _changes(settings: Mapping[str, Any], base: SimConfig) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if "device" in settings:
        changes.update(_device(settings["device"], base))
    if "memory" in settings:
        changes.update(_memory(settings["memory"], base.heap_after_boot_bytes))
    if "timing" in settings:
        changes["timing"] = _timing(settings["timing"])
    if "radio" in settings:
        changes["radio"] = _radio(settings["radio"])
    if "fault" in settings:
        changes["faults"] = _faults(settings["fault"])
    if "app" in settings:
        if not isinstance(settings["app"], Mapping):
            raise _Bad("[app] must be a table")
        try:
            changes["app"] = UserApp.from_mapping(settings["app"])
        except ValueError as err:
            raise _Bad(f"[app] {err}") from None
    return changes


def _known(table: Mapping[str, Any], allowed: tuple[str, ...], what: str) -> None:
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise _Bad(f"unknown {what} {unknown[0]!r}; allowed: {', '.join(allowed)}")


def _get(
    table: Mapping[str, Any], section: str, key: str, check: Callable[[Any], bool], want: str
) -> Any:
    value = table[key]
    if not check(value):
        raise _Bad(f"[{section}] {key} must be {want}, got {value!r}")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _device(table: Mapping[str, Any], base: SimConfig) -> dict[str, Any]:
    _known(table, DEVICE_KEYS, "key in [device]")
    out: dict[str, Any] = {}
    if "firmware" in table:
        text = _get(
            table,
            "device",
            "firmware",
            lambda v: isinstance(v, str),
            'a quoted version string such as "0.6.4" or "1.5.2"',
        )
        try:
            out["firmware"] = FirmwareEra.parse(text)
        except ValueError as err:
            raise _Bad(f"[device] firmware: {err}") from None
    if "ssid_prefix" in table:
        out["ssid_prefix"] = _get(
            table,
            "device",
            "ssid_prefix",
            lambda v: isinstance(v, str) and 0 < len(v.encode()) <= MAX_SSID_PREFIX_LEN,
            f"a string of 1-{MAX_SSID_PREFIX_LEN} bytes",
        )
    if "seed" in table:
        out["seed"] = _get(table, "device", "seed", _is_int, "an integer")
    if "key_bits" in table:
        bits = _get(
            table,
            "device",
            "key_bits",
            lambda v: _is_int(v) and v in KEY_BITS,
            "1024 (a Photon's key) or 2048",
        )
        out["key_bits"] = bits
        if base.key is not None and base.key.bits != bits:
            out["key"] = None  # the fixed key does not fit: generate one of this size
    if "cloud_available" in table:
        out["cloud_available"] = _get(
            table, "device", "cloud_available", lambda v: isinstance(v, bool), "true or false"
        )
    return out


def _memory(table: Mapping[str, Any], base_heap_bytes: int) -> dict[str, Any]:
    _known(table, MEMORY_KEYS, "key in [memory]")
    out: dict[str, Any] = {}
    for key in ("heap_after_boot_bytes", "app_ram_bytes", "gate_bytes"):
        if key in table:
            out[key] = _get(
                table,
                "memory",
                key,
                lambda v: _is_int(v) and v >= 0,
                "a non-negative integer (bytes)",
            )
    heap = out.get("heap_after_boot_bytes", base_heap_bytes)
    if out.get("app_ram_bytes", 0) > heap:
        raise _Bad(
            f"[memory] app_ram_bytes ({out['app_ram_bytes']}) exceeds heap_after_boot_bytes "
            f"({heap}); lower it or raise heap_after_boot_bytes"
        )
    if "gate_mode" in table:
        modes = [m.value for m in GateMode]
        mode = _get(
            table,
            "memory",
            "gate_mode",
            lambda v: v in modes,
            f"one of {', '.join(repr(m) for m in modes)}",
        )
        out["gate_mode"] = GateMode(mode)
    return out


def _timing(table: Mapping[str, Any]) -> TimingProfile:
    overrides = dict(table)
    name = overrides.pop("profile", "fast")
    if not isinstance(name, str):
        raise _Bad(f"[timing] profile must be one of {', '.join(sorted(PROFILES))}, got {name!r}")
    try:
        profile = timing_profile(name)
    except ValueError as err:
        raise _Bad(f"[timing] profile: {err}") from None
    try:
        return profile.with_overrides(overrides)
    except ValueError as err:
        raise _Bad(f"[timing] {err}") from None


def _radio(table: Mapping[str, Any]) -> RadioEnvironment:
    _known(table, RADIO_KEYS, "key in [radio]")
    if not table:
        raise _Bad('[radio] is empty; give pack = "NAME" and/or [[radio.network]] tables')
    aps = []
    if "pack" in table:
        pack = table["pack"]
        if not isinstance(pack, str):
            raise _Bad(f"[radio] pack must be a string, one of {', '.join(sorted(PACKS))}")
        try:
            aps.extend(scan_pack(pack).access_points)
        except ValueError as err:
            raise _Bad(f"[radio] pack: {err}") from None
    if "network" in table:
        items = table["network"]
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise _Bad("[radio] network must be [[radio.network]] tables")
        try:
            aps.extend(RadioEnvironment.from_list(items).access_points)
        except ValueError as err:
            raise _Bad(f"[[radio.network]] {err}") from None
    return RadioEnvironment(aps)


def _faults(items: list[Mapping[str, Any]]) -> tuple[Mapping[str, Any], ...]:
    for i, item in enumerate(items, 1):
        try:
            Fault.from_mapping(item)
        except ValueError as err:
            raise _Bad(f"[[fault]] #{i}: {err}") from None
    return tuple(dict(item) for item in items)


__all__ = ["Scenario", "list_scenarios", "load_scenario"]
