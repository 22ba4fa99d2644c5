"""Emulator configuration: a frozen dataclass with TOML loading for networks files."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from firmware_model import DeviceIdentity, DeviceKey, RadioEnvironment, default_environment
from firmware_model.device import LISTENING_FREE_HEAP_BYTES
from firmware_model.eras import FirmwareEra
from softap_sim.errors import ConfigError


def default_state_dir() -> Path:
    """``$SOFTAP_SIM_STATE_DIR``, else ``$XDG_STATE_HOME/softap-sim/device``."""
    env = os.environ.get("SOFTAP_SIM_STATE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "softap-sim" / "device"


def load_networks(path: Path) -> RadioEnvironment:
    """Read a TOML networks file: ``[[network]]`` tables (see README)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"cannot read networks file {path}: {err.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"networks file {path} is not valid TOML: {err}") from None
    items = data.get("network")
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise ConfigError(
            f"networks file {path} must contain [[network]] tables, e.g.\n"
            '  [[network]]\n  ssid = "HomeNetwork"\n  security = "wpa2_aes"\n'
            '  password = "secret123"\n  channel = 6\n  rssi = -50'
        )
    try:
        return RadioEnvironment.from_list(items)
    except ValueError as err:
        raise ConfigError(f"networks file {path}: {err}") from None


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Settings of one emulated device. Units are in the field names."""

    state_dir: Path | None = None
    firmware: FirmwareEra = FirmwareEra.CURRENT
    ssid_prefix: str = "Photon"
    #: seeds identity generation (device id, device code) for reproducible runs
    seed: int | None = None
    radio: RadioEnvironment = field(default_factory=default_environment)
    free_heap_bytes: int = LISTENING_FREE_HEAP_BYTES
    #: RSA modulus of a newly generated device key (the Photon uses 1024)
    key_bits: int = 1024
    #: fixed identity / key for an in-memory device (``state_dir=None``), e.g. in tests
    identity: DeviceIdentity | None = None
    key: DeviceKey | None = None
