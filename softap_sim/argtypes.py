"""Command-line value parsers and the networks-file reader, shared by every subcommand.

Standard library only, so ``softap-sim ctl`` and ``replay`` stay cheap to start.
"""

from __future__ import annotations

import argparse
import math
import re
import tomllib
from pathlib import Path
from typing import Any

from softap_sim.errors import ConfigError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmM]?)(?:i?[bB])?\s*$")


def parse_port(text: str, *, allow_zero: bool = True) -> int:
    """A TCP port; 0 (pick a free one) only where a server binds."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    low = 0 if allow_zero else 1
    if not low <= v <= 65535:
        raise argparse.ArgumentTypeError(f"port must be {low}-65535, got {v}")
    return v


def parse_connect_port(text: str) -> int:
    return parse_port(text, allow_zero=False)


def parse_size(text: str) -> int:
    """``53248``, ``52k``/``52K``/``52KiB``, ``21.5k``, ``1M`` (k = 1024) or ``0xd000``."""
    match = _SIZE.match(text)
    if match:
        number, unit = float(match.group(1)), match.group(2).lower()
        return int(number * {"": 1, "k": 1024, "m": 1024 * 1024}[unit])
    try:
        value = int(text.strip(), 0)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a size: {text!r} (use bytes, e.g. 53248, 52k, 21.5k or 0xd000)"
        ) from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"a size cannot be negative: {text!r}")
    return value


def parse_non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _non_negative_number(text: str, unit: str) -> float:
    """A finite number >= 0; the error names ``unit`` so a typo is not blamed on another."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of {unit}: {text!r}") from None
    if not value >= 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be a finite number of {unit} >= 0, got {text!r}")
    return value


def parse_seconds(text: str) -> float:
    """A finite, non-negative number of seconds."""
    return _non_negative_number(text, "seconds")


def parse_milliseconds(text: str) -> float:
    """A finite, non-negative number of milliseconds (fault delays are given in ms)."""
    return _non_negative_number(text, "milliseconds")


def parse_whole_seconds(text: str) -> int:
    """A whole, non-negative number of seconds (an event's ttl)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of seconds: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number of seconds >= 0, got {value}")
    return value


def parse_positive_seconds(text: str) -> float:
    value = parse_seconds(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    return value


def state_dir_problem(path: Path) -> str | None:
    """Why ``path`` cannot be a state directory (it or a parent is a file), else None.

    Checked before anything is opened in it: otherwise the first file opened there (the
    cloud database, ``device.json``) gets the blame with a bare "File exists".
    """
    for candidate in (path, *path.parents):
        if not candidate.exists():
            continue
        if candidate.is_dir():
            return None
        what = (
            f"state directory {path} is a file, not a directory"
            if candidate == path
            else f"state directory {path} cannot be created: {candidate} is a file"
        )
        return (
            f"{what}; pass a directory with --state-dir (it is created if missing), "
            "or move the file away"
        )
    return None


class HelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to an option's help only where it tells something.

    Unlike ``ArgumentDefaultsHelpFormatter`` it adds nothing when the help already
    states a default (no "(default 60k) (default: None)"), for flags, or when the
    default is None or empty (the help says what happens then).
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        help_text = action.help or ""
        default = action.default
        if (
            "%(default)" in help_text
            or re.search(r"\bdefault\b", help_text, re.IGNORECASE)
            or action.nargs == 0  # flags: store_true, count, ...
            or default is None
            or default is argparse.SUPPRESS
            or default in ("", [], ())
            or not (action.option_strings or action.nargs in ("?", "*"))
        ):
            return action.help
        return f"{help_text} (default: %(default)s)"


class NetworksFileError(ConfigError, ValueError):
    """A networks file cannot be read or has no ``[[network]]`` tables."""


def read_network_tables(path: Path) -> list[dict[str, Any]]:
    """The ``[[network]]`` tables of a TOML networks file, unvalidated."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise NetworksFileError(f"cannot read networks file {path}: {err.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise NetworksFileError(f"networks file {path} is not valid TOML: {err}") from None
    items = data.get("network")
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise NetworksFileError(
            f"networks file {path} must contain [[network]] tables, e.g.\n"
            '  [[network]]\n  ssid = "HomeNetwork"\n  security = "wpa2_aes"\n'
            '  password = "secret123"\n  channel = 6\n  rssi = -50'
        )
    return items
