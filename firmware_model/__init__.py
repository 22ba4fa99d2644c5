"""Pure, synchronous model of a Photon-class device in SoftAP listening mode.

Nothing in this package performs I/O, reads the wall clock or draws global
randomness: transports feed it bytes-derived requests and carry out the
replies and effects it returns (see ``house-style.md`` §1).
"""

from __future__ import annotations

from firmware_model.clock import Clock, ManualClock
from firmware_model.commands import COMMAND_NAMES, Reply, ReplyKind
from firmware_model.credentials import CredentialStore, WifiCredential
from firmware_model.dct import Dct
from firmware_model.device import Device, DeviceEffect
from firmware_model.eras import ERAS, EraProfile, FirmwareEra
from firmware_model.errors import DctFormatError, FirmwareError
from firmware_model.events import (
    AccessPointDown,
    AccessPointUp,
    CancelTimer,
    DctChanged,
    Effect,
    Event,
    SoftApShutdown,
    StartTimer,
    StateChanged,
)
from firmware_model.faults import Fault, FaultKind, FaultPlan
from firmware_model.identity import DeviceIdentity
from firmware_model.keys import DeviceKey
from firmware_model.led import Led
from firmware_model.memory import GateMode, Heap
from firmware_model.radio import AccessPoint, RadioEnvironment, default_environment
from firmware_model.secret import Secret
from firmware_model.state import DeviceState, InvalidTransition
from firmware_model.timing import FAST, REALISTIC, TimingProfile

__all__ = [
    "COMMAND_NAMES",
    "ERAS",
    "FAST",
    "REALISTIC",
    "AccessPoint",
    "AccessPointDown",
    "AccessPointUp",
    "CancelTimer",
    "Clock",
    "CredentialStore",
    "Dct",
    "DctChanged",
    "DctFormatError",
    "Device",
    "DeviceEffect",
    "DeviceIdentity",
    "DeviceKey",
    "DeviceState",
    "Effect",
    "EraProfile",
    "Event",
    "Fault",
    "FaultKind",
    "FaultPlan",
    "FirmwareEra",
    "FirmwareError",
    "GateMode",
    "Heap",
    "InvalidTransition",
    "Led",
    "ManualClock",
    "RadioEnvironment",
    "Reply",
    "ReplyKind",
    "Secret",
    "SoftApShutdown",
    "StartTimer",
    "StateChanged",
    "TimingProfile",
    "WifiCredential",
    "default_environment",
]
