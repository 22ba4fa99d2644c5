"""The device lifecycle: states, the transition table, and the handlers.

Theory of operation (h11's two rules): all transition logic lives in this file, and the
model does not know which transport it sits behind. :data:`TRANSITIONS` maps
``(state, event type)`` to the states the handler may move to; an event not in the
table raises :class:`InvalidTransition` and changes nothing. Handlers return effects
as data; timers are effects too (:class:`StartTimer`), delivered back as events. A timer
of zero seconds is handled at once, so the ``fast`` timing profile needs no scheduler.

Sources: softap-protocol.md §4.5 (leaving listening mode, re-entering it after a failed
join when credentials changed), §7 (memory), the device-os system network loop.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from firmware_model.errors import FirmwareError
from firmware_model.events import (
    AccessPointDown,
    AccessPointUp,
    ApTornDown,
    BootDone,
    CancelTimer,
    CloudFinished,
    CloudLost,
    ConnectApRequested,
    ConnectCloud,
    DisconnectCloud,
    Effect,
    Event,
    JoinFinished,
    JoinOutcome,
    ListeningReady,
    ListeningTimedOut,
    ListenRequested,
    PowerCycle,
    PowerOff,
    PowerOn,
    ResetDue,
    RetryDue,
    SetupButton,
    StartTimer,
    StateChanged,
    WifiLost,
)
from firmware_model.led import (
    LED_BOOTING,
    LED_CLOUD,
    LED_JOINING,
    LED_LISTENING,
    LED_OFF,
    LED_ONLINE,
    LED_SOS,
    Led,
)
from firmware_model.memory import (
    LISTENING_ALLOCATIONS,
    AllocationFailed,
    Component,
    GateMode,
)

if TYPE_CHECKING:
    from firmware_model.dct import Dct
    from firmware_model.eras import EraProfile
    from firmware_model.memory import Heap
    from firmware_model.timing import TimingProfile

#: hold times of the SETUP button (Particle docs): 3 s enters listening mode, 10 s in
#: listening mode clears the stored networks; a tap in listening mode exits it
LISTEN_HOLD_S = 3.0
CLEAR_HOLD_S = 10.0
#: how long the SOS pattern shows before the reset
SOS_S = 1.0


class DeviceState(enum.Enum):
    #: no power; LED off
    OFF = "off"
    #: starting up; LED white
    BOOTING = "booting"
    #: listening mode (SoftAP); LED blinking dark blue
    LISTENING = "listening"
    #: associating with a stored network and getting an address; LED blinking green
    JOINING = "joining"
    #: waiting to retry the Wi-Fi join; LED blinking green
    JOIN_RETRY = "join-retry"
    #: connecting to the cloud; LED fast-blinking cyan
    CLOUD_CONNECTING = "cloud-connecting"
    #: waiting to retry the cloud connection; LED fast-blinking cyan
    CLOUD_RETRY = "cloud-retry"
    #: connected; LED breathing cyan
    ONLINE = "online"
    #: hard fault (red SOS), resets shortly
    FAULTED = "faulted"


LEDS: dict[DeviceState, Led] = {
    DeviceState.OFF: LED_OFF,
    DeviceState.BOOTING: LED_BOOTING,
    DeviceState.LISTENING: LED_LISTENING,
    DeviceState.JOINING: LED_JOINING,
    DeviceState.JOIN_RETRY: LED_JOINING,
    DeviceState.CLOUD_CONNECTING: LED_CLOUD,
    DeviceState.CLOUD_RETRY: LED_CLOUD,
    DeviceState.ONLINE: LED_ONLINE,
    DeviceState.FAULTED: LED_SOS,
}

S = DeviceState
_POWERED = [s for s in S if s is not S.OFF]
_NETWORK = [S.JOINING, S.JOIN_RETRY, S.CLOUD_CONNECTING, S.CLOUD_RETRY, S.ONLINE]
#: states with the station associated (a Wi-Fi loss is noticed)
_ASSOCIATED = [S.CLOUD_CONNECTING, S.CLOUD_RETRY, S.ONLINE]
#: states in which a device-to-cloud session may be open (ConnectCloud was asked for)
_CLOUD_SESSION = frozenset({S.CLOUD_CONNECTING, S.ONLINE})

#: (state, event type) -> states the handler may move to
TRANSITIONS: dict[tuple[DeviceState, type[Event]], tuple[DeviceState, ...]] = {
    (S.OFF, PowerOn): (S.BOOTING,),
    **{(s, PowerOff): (S.OFF,) for s in _POWERED},
    **{(s, PowerCycle): (S.OFF, S.BOOTING) for s in _POWERED},
    (S.BOOTING, BootDone): (S.LISTENING, S.JOINING, S.FAULTED),
    (S.LISTENING, ListeningReady): (S.LISTENING,),
    (S.LISTENING, ConnectApRequested): (S.LISTENING,),
    (S.LISTENING, ApTornDown): (S.JOINING, S.LISTENING, S.FAULTED),
    (S.LISTENING, ListeningTimedOut): (S.JOINING, S.LISTENING, S.FAULTED),
    (S.LISTENING, SetupButton): (S.LISTENING, S.JOINING, S.FAULTED),
    (S.LISTENING, ListenRequested): (S.LISTENING,),
    (S.JOINING, JoinFinished): (S.CLOUD_CONNECTING, S.LISTENING, S.JOIN_RETRY, S.FAULTED),
    (S.JOIN_RETRY, RetryDue): (S.JOINING,),
    (S.CLOUD_CONNECTING, CloudFinished): (S.ONLINE, S.CLOUD_RETRY),
    (S.CLOUD_CONNECTING, CloudLost): (S.CLOUD_RETRY,),
    (S.ONLINE, CloudLost): (S.CLOUD_RETRY,),
    (S.CLOUD_RETRY, RetryDue): (S.CLOUD_CONNECTING,),
    **{(s, WifiLost): (S.JOINING,) for s in _ASSOCIATED},
    **{(s, SetupButton): (s, S.LISTENING, S.FAULTED) for s in _NETWORK},
    **{(s, ListenRequested): (S.LISTENING, S.FAULTED) for s in _NETWORK},
    (S.FAULTED, ResetDue): (S.OFF, S.BOOTING),
}


class InvalidTransition(FirmwareError):
    """An event that the current state does not accept; the state is unchanged."""

    def __init__(self, state: DeviceState, event: Event) -> None:
        super().__init__(f"{type(event).__name__} is not accepted in state {state.value!r}")
        self.state = state
        self.event = event


@dataclass(frozen=True, slots=True)
class ListeningHealth:
    """What came up when listening mode started (softap-protocol.md §7)."""

    gate_passed: bool
    free_at_trigger_bytes: int
    failed: tuple[Component, ...] = ()
    refused: bool = False

    def ok(self, component: Component) -> bool:
        return component not in self.failed

    def to_json(self) -> dict[str, object]:
        return {
            "gate_passed": self.gate_passed,
            "free_at_trigger_bytes": self.free_at_trigger_bytes,
            "failed_components": [c.value for c in self.failed],
            "refused": self.refused,
        }


class LifecycleHost(Protocol):
    """What the lifecycle reads and changes on its device (:class:`~firmware_model.device.Device`).

    A Protocol rather than the ``Device`` class, so that the transition table can be
    read (and tested) without the command handlers, and ``state`` never imports ``device``.
    """

    heap: Heap
    dct: Dct
    profile: EraProfile
    timing: TimingProfile
    cloud_link: bool
    #: networks were stored in this listening-mode period (spec §4.5)
    credentials_changed: bool

    def clear_credentials(self) -> None: ...
    def join_attempt(self) -> tuple[JoinFinished, int]: ...
    def join_delay_s(self) -> float: ...
    def cloud_reachable(self) -> bool: ...


class Lifecycle:
    """Runs the transition table for one device (a :class:`LifecycleHost`)."""

    @property
    def associated(self) -> bool:
        """The station is associated with a network (a Wi-Fi loss would be noticed)."""
        return self.state in _ASSOCIATED

    def __init__(self, device: LifecycleHost) -> None:
        self.device = device
        self.state = DeviceState.OFF
        self.health: ListeningHealth | None = None
        self.ap_up = False
        self.last_join: JoinFinished | None = None
        self.join_attempts = 0
        self.cloud_attempts = 0
        #: every move, as (state the event arrived in, new, event type): checked in tests
        self.moves: list[tuple[DeviceState, DeviceState, type[Event]]] = []
        self._now = 0.0
        self._cause: list[tuple[type[Event], DeviceState]] = []
        self._effects: list[Effect] = []
        self._handlers: dict[type[Event], Callable[[Event], None]] = {
            PowerOn: self._power_on,
            PowerOff: self._power_off,
            PowerCycle: self._power_cycle,
            BootDone: self._boot_done,
            ListeningReady: self._listening_ready,
            ConnectApRequested: self._connect_ap,
            ApTornDown: self._leave_listening,
            ListeningTimedOut: self._leave_listening,
            SetupButton: self._setup_button,
            ListenRequested: self._listen_requested,
            JoinFinished: self._join_finished,
            RetryDue: self._retry_due,
            CloudFinished: self._cloud_finished,
            CloudLost: self._cloud_lost,
            WifiLost: self._wifi_lost,
            ResetDue: self._power_cycle,
        }

    @property
    def led(self) -> Led:
        return LEDS[self.state]

    def accepts(self, event: Event) -> bool:
        return (self.state, type(event)) in TRANSITIONS

    def handle(self, event: Event, now: float) -> list[Effect]:
        """Apply ``event``; returns the effects. Raises :class:`InvalidTransition`."""
        if not self.accepts(event):
            raise InvalidTransition(self.state, event)
        self._now = now
        self._effects = []
        self._dispatch(event)
        effects, self._effects = self._effects, []
        return effects

    def _dispatch(self, event: Event) -> None:
        self._cause.append((type(event), self.state))
        try:
            self._handlers[type(event)](event)
        finally:
            self._cause.pop()

    def _go(self, new: DeviceState) -> None:
        """Move to ``new`` (announcing it) before any follow-up timer runs."""
        old = self.state
        cause, origin = self._cause[-1]
        # recorded against the state the event arrived in (a cycle is off + on)
        self.moves.append((origin, new, cause))
        self.state = new
        # power off, reset, listening mode, Wi-Fi loss, a failed or lost session: the
        # session ends with the state that held it (the host closes it once)
        leaves_session = old in _CLOUD_SESSION and new not in _CLOUD_SESSION
        if leaves_session and self.device.cloud_link and DisconnectCloud() not in self._effects:
            self._effects.append(DisconnectCloud())
        if new is old and cause not in (PowerCycle, ResetDue):
            return
        detail: dict[str, object] = {}
        if new is DeviceState.LISTENING and self.health is not None:
            detail = self.health.to_json()
        if self.last_join is not None and new in (DeviceState.JOIN_RETRY, DeviceState.LISTENING):
            detail["last_join"] = self.last_join.outcome.value
        self._effects.append(StateChanged(old.value, new.value, cause.__name__, LEDS[new], detail))

    def _timer(self, key: str, delay_s: float, event: Event) -> None:
        """Schedule ``event``; a zero delay is handled right away (fast profile)."""
        if delay_s <= 0:
            if not self.accepts(event):  # pragma: no cover - a bug in this file
                raise InvalidTransition(self.state, event)
            self._dispatch(event)
        else:
            self._effects.append(StartTimer(key, self._now + delay_s, event))

    def _cancel_all(self) -> None:
        for key in (
            "boot",
            "listen",
            "teardown",
            "listen-timeout",
            "join",
            "retry",
            "cloud",
            "reset",
        ):
            self._effects.append(CancelTimer(key))

    # -- power -------------------------------------------------------------------
    def _power_on(self, _: Event) -> None:
        self._go(DeviceState.BOOTING)
        self._timer("boot", self.device.timing.boot_s, BootDone())

    def _power_off(self, _: Event) -> None:
        self._cancel_all()
        self._take_ap_down()
        self.device.heap.end_request()
        self._go(DeviceState.OFF)

    def _power_cycle(self, event: Event) -> None:
        self._power_off(event)
        self._power_on(event)

    def _boot_done(self, _: Event) -> None:
        if len(self.device.dct.credentials) == 0:
            self._enter_listening()
        else:
            self._start_join()

    # -- listening mode ------------------------------------------------------------
    def _enter_listening(self) -> None:
        """Start SoftAP: gate check, the fixed allocations in order, then the AP."""
        dev = self.device
        heap = dev.heap
        dev.credentials_changed = False  # wlan_smart_config_init
        free = heap.free_bytes
        gate_passed = free >= heap.gate_bytes
        if not gate_passed and heap.gate_mode is GateMode.REFUSE:
            self.health = ListeningHealth(False, free, refused=True)
        else:
            failed: list[Component] = []
            for alloc in LISTENING_ALLOCATIONS:
                try:
                    heap.allocate(alloc.name, alloc.size_bytes)
                except AllocationFailed:
                    if alloc.component not in failed:
                        failed.append(alloc.component)
            self.health = ListeningHealth(gate_passed, free, tuple(failed))
            if Component.SOFTAP_OBJECT in failed:
                self._hard_fault()
                return
        self._go(DeviceState.LISTENING)
        if dev.timing.listening_timeout_s > 0:
            self._timer("listen-timeout", dev.timing.listening_timeout_s, ListeningTimedOut())
        self._timer("listen", dev.timing.listen_start_s, ListeningReady())

    def _listening_ready(self, _: Event) -> None:
        health = self.health
        assert health is not None
        self._go(DeviceState.LISTENING)
        if health.refused or not health.ok(Component.AP_INTERFACE):
            return  # no SSID, although the LED blinks blue
        reachable = health.ok(Component.DHCP)  # without DHCP no client gets an address
        self.ap_up = True
        self._effects.append(
            AccessPointUp(
                ssid=self.device.dct.identity.ssid,
                tcp_listening=reachable and health.ok(Component.TCP_LISTENER),
                tcp_serving=health.ok(Component.TCP_THREAD),
                http_listening=(
                    reachable and self.device.profile.http and health.ok(Component.HTTP_SERVER)
                ),
                http_slots=health.ok(Component.HTTP_SLOTS),
                degraded=not health.gate_passed,
            )
        )

    def _take_ap_down(self) -> None:
        if self.ap_up:
            self._effects.append(AccessPointDown())
            self.ap_up = False
        heap = self.device.heap
        for alloc in LISTENING_ALLOCATIONS:
            heap.release(alloc.name)

    def _connect_ap(self, _: Event) -> None:
        self._go(DeviceState.LISTENING)
        self._timer("teardown", self.device.timing.ap_teardown_s, ApTornDown())

    def _leave_listening(self, _: Event) -> None:
        """``wlan_smart_config_finalize``: stop SoftAP, then connect if networks exist."""
        self._effects.append(CancelTimer("listen-timeout"))
        self._effects.append(CancelTimer("listen"))
        self._effects.append(CancelTimer("teardown"))
        self._take_ap_down()
        if len(self.device.dct.credentials) == 0:
            self._enter_listening()  # nothing to join: straight back to listening
        else:
            self._start_join()

    def _setup_button(self, event: Event) -> None:
        assert isinstance(event, SetupButton)
        if self.state is DeviceState.LISTENING:
            if event.hold_s >= CLEAR_HOLD_S:
                self.device.clear_credentials()
                self._go(DeviceState.LISTENING)
            elif event.hold_s < LISTEN_HOLD_S:
                self._leave_listening(event)  # a tap exits listening mode
            else:
                self._go(DeviceState.LISTENING)
        elif event.hold_s >= LISTEN_HOLD_S:
            self._listen_from_network()
        else:
            self._go(self.state)

    def _listen_requested(self, _: Event) -> None:
        if self.state is DeviceState.LISTENING:
            self._go(DeviceState.LISTENING)
        else:
            self._listen_from_network()

    def _listen_from_network(self) -> None:
        self._cancel_all()
        self._enter_listening()

    def _hard_fault(self) -> None:
        self._take_ap_down()
        self._go(DeviceState.FAULTED)
        self._timer("reset", SOS_S, ResetDue())

    # -- Wi-Fi and cloud -----------------------------------------------------------
    def _start_join(self) -> None:
        dev = self.device
        self.join_attempts += 1
        result, tried = dev.join_attempt()
        duration = dev.timing.join_s * max(tried, 1)
        if result.outcome in (JoinOutcome.OK, JoinOutcome.DHCP_FAIL):
            duration += dev.timing.dhcp_s
        duration += dev.join_delay_s()
        self._go(DeviceState.JOINING)
        self._timer("join", duration, result)

    def _join_finished(self, event: Event) -> None:
        assert isinstance(event, JoinFinished)
        self.last_join = event
        if event.outcome is JoinOutcome.OK:
            self.cloud_attempts = 0
            # the listening-mode period is over: a later loss of this network is a
            # plain reconnect (blinking green), not a return to listening (§4.5)
            self.device.credentials_changed = False
            self._start_cloud()
        elif self.device.credentials_changed:
            self._enter_listening()  # §4.5: back to listening with the same SSID
        else:
            self._go(DeviceState.JOIN_RETRY)
            # never faster than once a second so a zero-delay profile cannot spin
            self._timer("retry", max(self.device.timing.retry_s, 1.0), RetryDue())

    def _retry_due(self, _: Event) -> None:
        if self.state is DeviceState.JOIN_RETRY:
            self._start_join()
        else:
            self._start_cloud()

    def _start_cloud(self) -> None:
        dev = self.device
        self.cloud_attempts += 1
        self._go(DeviceState.CLOUD_CONNECTING)
        if dev.cloud_link and dev.cloud_reachable():
            # a real device-to-cloud connection: the host answers with CloudFinished
            self._effects.append(ConnectCloud())
        else:
            self._timer("cloud", dev.timing.cloud_s, CloudFinished(dev.cloud_reachable()))

    def _cloud_lost(self, _: Event) -> None:
        self._go(DeviceState.CLOUD_RETRY)
        self._timer("retry", max(self.device.timing.retry_s, 1.0), RetryDue())

    def _wifi_lost(self, _: Event) -> None:
        """Blinking green again: the cloud session ends (``_go``), the join starts over."""
        for key in ("cloud", "retry"):
            self._effects.append(CancelTimer(key))
        self._start_join()

    def _cloud_finished(self, event: Event) -> None:
        assert isinstance(event, CloudFinished)
        if event.ok:
            self._go(DeviceState.ONLINE)
        else:
            self._go(DeviceState.CLOUD_RETRY)
            self._timer("retry", max(self.device.timing.retry_s, 1.0), RetryDue())
