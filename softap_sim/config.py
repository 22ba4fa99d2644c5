"""Emulator configuration: a frozen dataclass with TOML loading for networks files."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware_model import DeviceIdentity, DeviceKey, RadioEnvironment, default_environment
from firmware_model.app import UserApp
from firmware_model.eras import FirmwareEra
from firmware_model.memory import DEFAULT_GATE_BYTES, DEFAULT_HEAP_AFTER_BOOT_BYTES, GateMode
from firmware_model.timing import FAST, TimingProfile
from softap_sim.argtypes import NetworksFileError, read_network_tables
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
        items = read_network_tables(path)
    except NetworksFileError as err:
        raise ConfigError(str(err)) from None
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
    #: step durations (``fast`` for CI, ``realistic`` for bench runs)
    timing: TimingProfile = FAST
    #: free heap after boot with an empty application, and the application's RAM use
    heap_after_boot_bytes: int = DEFAULT_HEAP_AFTER_BOOT_BYTES
    app_ram_bytes: int = 0
    #: the listening-mode memory gate (21.5 KB) and what happens below it
    gate_bytes: int = DEFAULT_GATE_BYTES
    gate_mode: GateMode = GateMode.APPEARS
    #: faults active from the start, as fault tables (see ``firmware_model.faults``)
    faults: tuple[Mapping[str, Any], ...] = ()
    #: whether the (simulated) cloud answers after a successful join
    cloud_available: bool = True
    #: record every exchange in memory (``emu.transcript``) and, if set, to this file
    record: bool = True
    transcript_path: Path | None = None
    #: a name for logs and transcripts (the scenario's)
    scenario: str = ""
    #: RSA modulus of a newly generated device key (the Photon uses 1024)
    key_bits: int = 1024
    #: the device-to-cloud endpoint (host, port) and the server's public key (PEM), as a
    #: real device holds them in its DCT; without them the cloud is only simulated
    cloud_endpoint: tuple[str, int] | None = None
    server_public_key_pem: bytes | None = None
    #: the user application's cloud functions and variables (default: firmware_model.app)
    app: UserApp | None = None
    #: fixed identity / key for an in-memory device (``state_dir=None``), e.g. in tests
    identity: DeviceIdentity | None = None
    key: DeviceKey | None = None
