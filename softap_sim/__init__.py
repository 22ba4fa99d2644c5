"""softap-sim: a hardware-free emulator of a Photon-class device in SoftAP listening mode."""

from __future__ import annotations

from softap_sim.config import SimConfig
from softap_sim.emulator import DeviceEmulator
from softap_sim.errors import ConfigError, LifecycleError, SimulatorError, StateError

__all__ = [
    "ConfigError",
    "DeviceEmulator",
    "LifecycleError",
    "SimConfig",
    "SimulatorError",
    "StateError",
]
__version__ = "0.1.0"
