"""Error tree of the firmware model."""

from __future__ import annotations


class FirmwareError(Exception):
    """Base class of every error raised by :mod:`firmware_model`."""


class DctFormatError(FirmwareError):
    """Persisted device state (the emulated DCT) is corrupt or of a foreign format."""
