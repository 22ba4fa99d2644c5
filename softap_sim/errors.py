"""Errors of the emulator layer (the firmware model has its own tree)."""

from __future__ import annotations

from firmware_model.errors import SoftapSimError


class SimulatorError(SoftapSimError):
    """Base class of errors raised by :mod:`softap_sim`."""


class StateError(SimulatorError):
    """The state directory or a file in it cannot be used; the message names it."""


class ConfigError(SimulatorError):
    """A configuration input (networks file, option) is invalid; the message says why."""


class LifecycleError(SimulatorError):
    """The emulator was used out of order (e.g. ports read before ``start()``)."""
