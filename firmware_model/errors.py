"""Error tree of the firmware model, and the project's root error."""

from __future__ import annotations


class SoftapSimError(Exception):
    """The root of every error this project raises: ``except SoftapSimError`` catches
    the firmware model's and the emulator's (the lowest layer owns it)."""


class FirmwareError(SoftapSimError):
    """Base class of every error raised by :mod:`firmware_model`."""


class DctFormatError(FirmwareError):
    """Persisted device state (the emulated DCT) is corrupt or of a foreign format."""
