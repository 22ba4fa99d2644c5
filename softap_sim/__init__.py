"""softap-sim: a hardware-free emulator of a Photon-class device in SoftAP listening mode.

The public names are imported lazily, so ``softap-sim ctl`` and the pytest plugin stay
cheap to import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_LAZY = {
    "SimConfig": "softap_sim.config",
    "DeviceEmulator": "softap_sim.emulator",
    "ConfigError": "softap_sim.errors",
    "LifecycleError": "softap_sim.errors",
    "SimulatorError": "softap_sim.errors",
    "StateError": "softap_sim.errors",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'softap_sim' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
