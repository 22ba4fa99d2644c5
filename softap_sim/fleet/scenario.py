"""Fleet scenario files: a scenario for every device plus per-device ``[[devices]]`` tables.

The format is in the package documentation (``pydoc softap_sim.fleet``, where
``softap-sim fleet --help`` sends users). Every scenario in a file is validated while it
is read: a mistake fails before any device starts, with the file and the ``[[devices]]``
table in the message.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from softap_sim.config import SimConfig
from softap_sim.errors import ConfigError
from softap_sim.scenario import NAME_RE, TOP_LEVEL_KEYS, Scenario, load_scenario

#: keys of a ``[[devices]]`` table besides the scenario tables
OVERRIDE_KEYS: Final = ("index", "range", "scenario")
SCENARIO_TABLES: Final = ("device", "memory", "timing", "radio", "app")


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
    base = _base_scenario(data, name, source, bad)
    entries = data["devices"]
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise bad("'devices' must be an array of tables: [[devices]] (one per override)")
    overrides = tuple(
        _override(entry, f"[[devices]] #{number}", name, source, bad)
        for number, entry in enumerate(entries, 1)
    )
    return FleetScenario(base, overrides, source)


def _base_scenario(
    data: Mapping[str, Any], name: str, source: str, bad: Callable[[str], ConfigError]
) -> Scenario | None:
    """The file's top-level tables as the scenario of every device (None: it has none)."""
    texts = {}
    for key in ("description", "pain_point", "expect"):
        value = data.get(key, "")
        if not isinstance(value, str):
            raise bad(f"'{key}' must be a string")
        texts[key] = " ".join(value.split())
    settings = _settings(data, bad, "")
    if not (settings or any(texts.values()) or "name" in data):
        return None
    base = Scenario(
        name,
        texts["description"] or f"fleet scenario {name}",
        texts["pain_point"] or "-",
        texts["expect"] or "-",
        settings,
        source,
    )
    base.apply(SimConfig())  # validate now
    return base


def _override(
    entry: Mapping[str, Any],
    where: str,
    name: str,
    source: str,
    bad: Callable[[str], ConfigError],
) -> DeviceOverride:
    """One ``[[devices]]`` table; ``where`` names it in errors."""
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
    return DeviceOverride(indices, tuple(scenarios), label)


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
