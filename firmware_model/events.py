"""Inputs to the device's lifecycle and the effects it asks the host to carry out.

All are frozen, slotted dataclasses (house-style.md §3): the model returns effects as
data and the emulator performs them (start listeners, schedule timers, persist state).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from firmware_model.led import Led


class Event:
    """Base class of lifecycle inputs."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class PowerOn(Event):
    """Power applied (or reset released)."""


@dataclass(frozen=True, slots=True)
class PowerOff(Event):
    """Power removed: every state ends, the AP disappears."""


@dataclass(frozen=True, slots=True)
class PowerCycle(Event):
    """Off, then on again (a reset)."""


@dataclass(frozen=True, slots=True)
class BootDone(Event):
    """Boot finished: the system decides between listening and connecting."""


@dataclass(frozen=True, slots=True)
class SetupButton(Event):
    """The SETUP button was held for ``hold_s`` seconds and released."""

    hold_s: float = 3.0


@dataclass(frozen=True, slots=True)
class ListenRequested(Event):
    """An explicit request to enter listening mode (control API, ``WiFi.listen()``)."""


@dataclass(frozen=True, slots=True)
class ListeningReady(Event):
    """Listening mode's start-up finished: the AP and listeners come up."""


@dataclass(frozen=True, slots=True)
class ConnectApRequested(Event):
    """``connect-ap`` was answered: setup is complete (``HAL_WLAN_notify_simple_config_done``)."""


@dataclass(frozen=True, slots=True)
class ApTornDown(Event):
    """The SoftAP teardown after setup-complete finished."""


@dataclass(frozen=True, slots=True)
class ListeningTimedOut(Event):
    """The listening-mode timeout expired (none by default on a Photon)."""


class JoinOutcome(enum.Enum):
    """How a Wi-Fi join attempt ends (pain-points.md #2 knob)."""

    OK = "ok"
    BAD_PASSWORD = "bad_password"
    AP_MISSING = "ap_missing"
    DHCP_FAIL = "dhcp_fail"
    NO_CREDENTIALS = "no_credentials"


@dataclass(frozen=True, slots=True)
class JoinFinished(Event):
    outcome: JoinOutcome
    ssid: bytes = b""


@dataclass(frozen=True, slots=True)
class CloudFinished(Event):
    ok: bool


@dataclass(frozen=True, slots=True)
class CloudLost(Event):
    """The cloud connection dropped (or was refused) after it had been started."""

    reason: str = ""


@dataclass(frozen=True, slots=True)
class WifiLost(Event):
    """The station lost its access point (gone from the air, or dropped by the host).

    Device OS goes back to blinking green and joins again; the cloud session ends
    with the link it ran over.
    """

    reason: str = ""


@dataclass(frozen=True, slots=True)
class RetryDue(Event):
    """The back-off before the next join / cloud attempt expired."""


@dataclass(frozen=True, slots=True)
class ResetDue(Event):
    """A hard fault's SOS pattern ended: the device resets."""


# -- effects ----------------------------------------------------------------------
class Effect:
    """Base class of what the model asks the host to do."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class DctChanged(Effect):
    """Persistent state changed: write it to disk."""


@dataclass(frozen=True, slots=True)
class SoftApShutdown(Effect):
    """``connect-ap`` signalled "setup complete": flush the reply, then tell the model."""


@dataclass(frozen=True, slots=True)
class StartTimer(Effect):
    """Deliver ``event`` at ``deadline`` (model clock), replacing a timer of the same key."""

    key: str
    deadline: float
    event: Event


@dataclass(frozen=True, slots=True)
class CancelTimer(Effect):
    key: str


@dataclass(frozen=True, slots=True)
class AccessPointUp(Effect):
    """The SoftAP network is up; which listeners exist and work depends on the heap."""

    ssid: str
    tcp_listening: bool = True
    tcp_serving: bool = True
    http_listening: bool = True
    http_slots: bool = True
    #: the memory gate failed: DCT writes seem to work but are lost
    degraded: bool = False


@dataclass(frozen=True, slots=True)
class ConnectCloud(Effect):
    """Open the device-to-cloud connection (handshake, Hello); answer with CloudFinished."""


@dataclass(frozen=True, slots=True)
class DisconnectCloud(Effect):
    """Close the device-to-cloud connection, if any."""


@dataclass(frozen=True, slots=True)
class AccessPointDown(Effect):
    """The SoftAP network and all its listeners are gone."""


@dataclass(frozen=True, slots=True)
class EventReceived(Effect):
    """An event the application subscribed to arrived (its handler runs; the host logs it)."""

    name: str
    data: str


@dataclass(frozen=True, slots=True)
class StateChanged(Effect):
    old: str
    new: str
    cause: str
    led: Led
    detail: dict[str, object] = field(default_factory=dict)
