"""``@pytest.mark.softap(...)``: its arguments, validated, and what they do to a config.

The plugin validates the marker before a test's fixtures run, so a typo fails that test
alone with one line naming the argument (:class:`MarkerError`), never a traceback from
deep inside a fixture.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import pytest

from softap_sim.errors import ConfigError, SimulatorError

if TYPE_CHECKING:
    from firmware_model.eras import FirmwareEra
    from softap_sim.config import SimConfig

MARKER_ARGS = ("scenario", "firmware", "faults", "app_ram", "seed", "count")
MARKER_DOC = (
    "softap(scenario=None, firmware=None, faults=(), app_ram=None, seed=None, count=None): "
    "per-test settings of the softap-sim devices (a shipped scenario name or a TOML file, a "
    "device-os version, fault tables, the application's RAM in bytes or '52k', the identity "
    "seed, softap_fleet's size)"
)
_WHERE = "@pytest.mark.softap"


class MarkerError(SimulatorError):
    """A bad ``@pytest.mark.softap`` argument; the message names it and says why."""


@dataclasses.dataclass(frozen=True)
class SoftapSettings:
    """The validated arguments of ``@pytest.mark.softap``."""

    scenario: str | None = None
    firmware: FirmwareEra | None = None
    faults: tuple[Mapping[str, Any], ...] = ()
    app_ram: int | None = None
    seed: int | None = None
    count: int | None = None

    def apply(self, config: SimConfig) -> SimConfig:
        """``config`` with these settings (scenario first, then the others on top)."""
        if self.scenario is not None:
            from softap_sim.scenario import load_scenario

            config = load_scenario(self.scenario).apply(config)
        changes: dict[str, Any] = {}
        if self.firmware is not None:
            changes["firmware"] = self.firmware
        if self.faults:
            changes["faults"] = (*config.faults, *self.faults)
        if self.app_ram is not None:
            changes["app_ram_bytes"] = self.app_ram
        if self.seed is not None:
            changes["seed"] = self.seed
        return dataclasses.replace(config, **changes) if changes else config


def is_int(value: object) -> bool:
    """An ``int`` that is not a ``bool`` (``count=True`` is a mistake, not 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def parse_marker(mark: pytest.Mark) -> SoftapSettings:
    """Validate ``@pytest.mark.softap(...)``; :class:`MarkerError` names the bad argument."""
    _check_names(mark)
    out: dict[str, Any] = {}
    for name in MARKER_ARGS:  # in this order, so the first bad argument is named
        value = mark.kwargs.get(name)
        if value is None or (name == "faults" and not value):
            continue
        out[name] = _VALIDATORS[name](value)
    return SoftapSettings(**out)


def _check_names(mark: pytest.Mark) -> None:
    if mark.args:
        raise MarkerError(
            f"{_WHERE} takes keyword arguments only ({', '.join(a + '=' for a in MARKER_ARGS)}); "
            f"got positional {mark.args[0]!r}"
        )
    unknown = [key for key in mark.kwargs if key not in MARKER_ARGS]
    if unknown:
        bad = unknown[0]
        close = difflib.get_close_matches(bad, MARKER_ARGS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise MarkerError(
            f"{_WHERE} got an unknown argument {bad!r}{hint}; allowed: {', '.join(MARKER_ARGS)}"
        )


def _scenario(value: Any) -> str:
    from softap_sim.scenario import load_scenario

    scenario: str = os.fspath(value)
    try:
        load_scenario(scenario)
    except ConfigError as err:
        raise MarkerError(f"{_WHERE}(scenario={scenario!r}): {err}") from None
    return scenario


def _firmware(value: Any) -> FirmwareEra:
    from firmware_model.eras import FirmwareEra

    if isinstance(value, FirmwareEra):
        return value
    if isinstance(value, str):
        try:
            return FirmwareEra.parse(value)
        except ValueError as err:
            raise MarkerError(f"{_WHERE}(firmware={value!r}): {err}") from None
    raise MarkerError(
        f'{_WHERE}(firmware=...) must be a version string such as "0.6.4", got {value!r}'
    )


def _faults(value: Any) -> tuple[Mapping[str, Any], ...]:
    from firmware_model import Fault

    if isinstance(value, Mapping) or not isinstance(value, list | tuple):
        raise MarkerError(
            f"{_WHERE}(faults=...) must be a list of fault tables, e.g. "
            f'[{{"kind": "no-reply", "command": "scan-ap"}}], got {value!r}'
        )
    for i, spec in enumerate(value):
        try:
            Fault.from_mapping(spec)
        except ValueError as err:
            raise MarkerError(f"{_WHERE}(faults=...): fault #{i + 1}: {err}") from None
    return tuple(dict(f) for f in value)


def _app_ram(value: Any) -> int:
    if is_int(value):
        if value >= 0:
            return int(value)
    elif isinstance(value, str):
        from softap_sim.argtypes import parse_size

        try:
            return parse_size(value)
        except argparse.ArgumentTypeError:
            pass
    raise MarkerError(
        f"{_WHERE}(app_ram=...) must be a size in bytes (53248) or a string such as '52k', "
        f"got {value!r}"
    )


def _seed(value: Any) -> int:
    if not is_int(value):
        raise MarkerError(f"{_WHERE}(seed=...) must be an integer, got {value!r}")
    return int(value)


def _count(value: Any) -> int:
    if not is_int(value) or value < 1:
        raise MarkerError(f"{_WHERE}(count=...) must be an integer >= 1, got {value!r}")
    return int(value)


_VALIDATORS: dict[str, Callable[[Any], Any]] = {
    "scenario": _scenario,
    "firmware": _firmware,
    "faults": _faults,
    "app_ram": _app_ram,
    "seed": _seed,
    "count": _count,
}
