"""Pure, synchronous model of a Photon-class device in SoftAP listening mode.

Nothing in this package performs I/O, reads the wall clock or draws global
randomness: transports feed it bytes-derived requests and carry out the
replies it returns (see ``house-style.md`` §1).
"""

from __future__ import annotations

from firmware_model.commands import COMMAND_NAMES, Reply, ReplyKind
from firmware_model.credentials import CredentialStore, WifiCredential
from firmware_model.dct import Dct
from firmware_model.device import Device, DeviceEffect, SoftApShutdown
from firmware_model.eras import ERAS, EraProfile, FirmwareEra
from firmware_model.errors import DctFormatError, FirmwareError
from firmware_model.identity import DeviceIdentity
from firmware_model.keys import DeviceKey
from firmware_model.radio import AccessPoint, RadioEnvironment, default_environment
from firmware_model.secret import Secret

__all__ = [
    "COMMAND_NAMES",
    "ERAS",
    "AccessPoint",
    "CredentialStore",
    "Dct",
    "Device",
    "DeviceEffect",
    "DeviceIdentity",
    "DeviceKey",
    "DctFormatError",
    "EraProfile",
    "FirmwareEra",
    "FirmwareError",
    "RadioEnvironment",
    "Reply",
    "ReplyKind",
    "Secret",
    "SoftApShutdown",
    "WifiCredential",
    "default_environment",
]
