"""The lifecycle table, the memory gate and join outcomes, on the pure model."""

from __future__ import annotations

from dataclasses import replace

import pytest

from firmware_model import (
    AccessPoint,
    AccessPointDown,
    AccessPointUp,
    Dct,
    DctChanged,
    Device,
    DeviceIdentity,
    DeviceKey,
    DeviceState,
    Fault,
    FaultKind,
    FaultPlan,
    GateMode,
    Heap,
    InvalidTransition,
    RadioEnvironment,
    Secret,
    StartTimer,
    StateChanged,
    TimingProfile,
    WifiCredential,
)
from firmware_model import security as sec
from firmware_model.events import (
    ApTornDown,
    BootDone,
    CloudFinished,
    ConnectApRequested,
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
)
from firmware_model.led import LED_CLOUD, LED_JOINING, LED_LISTENING, LED_OFF, LED_ONLINE
from firmware_model.memory import (
    DEFAULT_GATE_BYTES,
    LISTENING_ALLOCATIONS,
    LISTENING_COST_BYTES,
    REQUEST_HEADROOM_BYTES,
    Component,
)
from firmware_model.state import LEDS, TRANSITIONS

S = DeviceState
HOME = AccessPoint(b"Home", sec.WPA2_AES_PSK, 6, -50, 72200, password=Secret(b"home-password"))


def make(
    key: DeviceKey,
    *,
    creds: tuple[WifiCredential, ...] = (),
    heap: Heap | None = None,
    timing: TimingProfile | None = None,
    radio: RadioEnvironment | None = None,
    faults: FaultPlan | None = None,
    cloud: bool = True,
) -> Device:
    dct = Dct(DeviceIdentity(bytes(12), "ABCDEF"))
    for c in creds:
        dct.credentials.add(c)
    return Device(
        dct,
        key,
        radio or RadioEnvironment([HOME]),
        heap=heap,
        timing=timing or TimingProfile(),
        faults=faults,
        cloud_available=cloud,
    )


def good_cred() -> WifiCredential:
    return WifiCredential(b"Home", Secret(b"home-password"), sec.WPA2_AES_PSK, 6)


def states(effects: list[object]) -> list[tuple[str, str]]:
    return [(e.old, e.new) for e in effects if isinstance(e, StateChanged)]


# -- the table ------------------------------------------------------------------------
def test_every_state_is_reachable_and_has_an_led() -> None:
    reachable = {S.OFF}
    frontier = [S.OFF]
    while frontier:
        s = frontier.pop()
        for (src, _event), targets in TRANSITIONS.items():
            if src is s:
                for t in targets:
                    if t not in reachable:
                        reachable.add(t)
                        frontier.append(t)
    assert reachable == set(S)
    assert set(LEDS) == set(S)


ALL_EVENTS: list[Event] = [
    PowerOn(),
    PowerOff(),
    PowerCycle(),
    BootDone(),
    SetupButton(1.0),
    SetupButton(3.0),
    SetupButton(10.0),
    ListenRequested(),
    ListeningReady(),
    ConnectApRequested(),
    ApTornDown(),
    ListeningTimedOut(),
    JoinFinished(JoinOutcome.OK),
    JoinFinished(JoinOutcome.BAD_PASSWORD),
    CloudFinished(True),
    CloudFinished(False),
    RetryDue(),
    ResetDue(),
]


def drive_to(device: Device, target: DeviceState) -> None:
    """Put a fresh device into ``target`` with slow timers (so it stays there)."""
    slow = TimingProfile(
        boot_s=1, listen_start_s=1, ap_teardown_s=1, join_s=1, cloud_s=1, retry_s=1
    )
    device.timing = slow
    online = [PowerOn(), BootDone(), JoinFinished(JoinOutcome.OK), CloudFinished(True)]
    path: dict[DeviceState, list[Event]] = {
        S.OFF: [],
        S.BOOTING: [PowerOn()],
        S.JOINING: [PowerOn(), BootDone()],
        S.JOIN_RETRY: [PowerOn(), BootDone(), JoinFinished(JoinOutcome.AP_MISSING)],
        S.CLOUD_CONNECTING: [PowerOn(), BootDone(), JoinFinished(JoinOutcome.OK)],
        S.CLOUD_RETRY: [PowerOn(), BootDone(), JoinFinished(JoinOutcome.OK), CloudFinished(False)],
        S.ONLINE: online,
        S.LISTENING: [*online, ListenRequested()],
        S.FAULTED: [],
    }
    if target is S.FAULTED:
        path[S.FAULTED] = [*online, ListenRequested()]
    for ev in path[target]:
        if target is S.FAULTED and isinstance(ev, ListenRequested):
            device.heap = Heap(heap_after_boot_bytes=1000)  # the SoftAP object cannot fit
        device.handle(ev, 0.0)
    # a network with credentials that do not change in the session
    assert device.state is target


@pytest.mark.parametrize("state", list(S), ids=lambda s: s.value)
@pytest.mark.parametrize("event", ALL_EVENTS, ids=lambda e: repr(e))
def test_table_is_enforced(device_key: DeviceKey, state: DeviceState, event: Event) -> None:
    device = make(device_key, creds=(good_cred(),))
    drive_to(device, state)
    if (state, type(event)) in TRANSITIONS:
        device.handle(event, 1.0)
        for old, new, cause in device.lifecycle.moves:
            assert new in TRANSITIONS[(old, cause)], (old, new, cause)
    else:
        moves = list(device.lifecycle.moves)
        with pytest.raises(InvalidTransition):
            device.handle(event, 1.0)
        assert device.state is state
        assert device.lifecycle.moves == moves


# -- the happy path and its LEDs ---------------------------------------------------
def test_first_boot_listens_then_joins_and_goes_online(device_key: DeviceKey) -> None:
    device = make(device_key)
    effects = device.handle(PowerOn(), 0.0)
    assert states(effects) == [("off", "booting"), ("booting", "listening")]
    assert any(isinstance(e, AccessPointUp) for e in effects)
    assert device.led == LED_LISTENING
    device.dct.credentials.add(good_cred())
    device.credentials_changed = True
    effects = device.handle(ConnectApRequested(), 1.0)
    assert any(isinstance(e, AccessPointDown) for e in effects)
    assert states(effects) == [
        ("listening", "joining"),
        ("joining", "cloud-connecting"),
        ("cloud-connecting", "online"),
    ]
    assert device.led == LED_ONLINE


def test_realistic_timers_are_effects(device_key: DeviceKey) -> None:
    timing = TimingProfile(boot_s=2, listen_start_s=1.5, join_s=4, dhcp_s=1, cloud_s=2.5)
    device = make(device_key, creds=(good_cred(),), timing=timing)
    [timer] = [e for e in device.handle(PowerOn(), 10.0) if isinstance(e, StartTimer)]
    assert (timer.key, timer.deadline, timer.event) == ("boot", 12.0, BootDone())
    effects = device.handle(BootDone(), 12.0)
    [join] = [e for e in effects if isinstance(e, StartTimer)]
    assert join.deadline == 12.0 + 4 + 1
    assert device.led == LED_JOINING
    effects = device.handle(join.event, join.deadline)
    assert device.state is S.CLOUD_CONNECTING
    assert device.led == LED_CLOUD


@pytest.mark.parametrize(
    ("radio_ap", "outcome"),
    [
        pytest.param(HOME, JoinOutcome.OK, id="ok"),
        pytest.param(
            replace(HOME, password=Secret(b"other-password")),
            JoinOutcome.BAD_PASSWORD,
            id="bad-password",
        ),
        pytest.param(replace(HOME, ssid=b"Elsewhere"), JoinOutcome.AP_MISSING, id="ap-missing"),
        pytest.param(replace(HOME, dhcp=False), JoinOutcome.DHCP_FAIL, id="dhcp"),
        pytest.param(replace(HOME, hidden=True), JoinOutcome.OK, id="hidden-joins-by-name"),
    ],
)
def test_join_outcomes_from_the_radio(
    device_key: DeviceKey, radio_ap: AccessPoint, outcome: JoinOutcome
) -> None:
    device = make(device_key, creds=(good_cred(),), radio=RadioEnvironment([radio_ap]))
    device.handle(PowerOn(), 0.0)
    assert device.lifecycle.last_join is not None
    assert device.lifecycle.last_join.outcome is outcome
    expected = S.ONLINE if outcome is JoinOutcome.OK else S.JOIN_RETRY
    assert device.state is expected


def test_failed_join_after_new_credentials_returns_to_listening(device_key: DeviceKey) -> None:
    """§4.5: credentials changed in this listening session + failed join -> listening."""
    device = make(device_key)
    device.handle(PowerOn(), 0.0)
    wrong = WifiCredential(b"Home", Secret(b"typo-password"), sec.WPA2_AES_PSK, 6)
    device.dct.credentials.add(wrong)
    device.credentials_changed = True
    effects = device.handle(ConnectApRequested(), 1.0)
    assert states(effects) == [("listening", "joining"), ("joining", "listening")]
    assert any(isinstance(e, AccessPointUp) for e in effects)
    assert device.state is S.LISTENING
    assert device.lifecycle.last_join is not None
    assert device.lifecycle.last_join.outcome is JoinOutcome.BAD_PASSWORD
    # the flag resets on re-entry: a second connect-ap without configure keeps retrying
    effects = device.handle(ConnectApRequested(), 2.0)
    assert device.state is S.JOIN_RETRY


def test_cloud_unreachable_retries_blinking_cyan(device_key: DeviceKey) -> None:
    device = make(device_key, creds=(good_cred(),), cloud=False)
    effects = device.handle(PowerOn(), 0.0)
    assert device.state is S.CLOUD_RETRY
    assert device.led == LED_CLOUD
    [retry] = [e for e in effects if isinstance(e, StartTimer)]
    assert retry.deadline >= 1.0  # never spins, even with a zero-delay profile
    device.cloud_available = True
    device.handle(RetryDue(), retry.deadline)
    assert device.state is S.ONLINE


def test_join_fault_overrides_radio(device_key: DeviceKey) -> None:
    plan = FaultPlan()
    plan.add(Fault(FaultKind.JOIN, outcome="dhcp_fail", times=1))
    device = make(device_key, creds=(good_cred(),), faults=plan)
    device.handle(PowerOn(), 0.0)
    assert device.state is S.JOIN_RETRY
    device.handle(RetryDue(), 1.0)  # the fault was for one attempt only
    assert device.state is S.ONLINE


def test_setup_button(device_key: DeviceKey) -> None:
    device = make(device_key, creds=(good_cred(),))
    device.handle(PowerOn(), 0.0)
    assert device.state is S.ONLINE
    device.handle(SetupButton(1.0), 1.0)  # a tap does nothing while online
    assert device.state is S.ONLINE
    device.handle(SetupButton(3.0), 2.0)
    assert device.state is S.LISTENING
    effects = device.handle(SetupButton(10.0), 3.0)  # clear credentials
    assert len(device.dct.credentials) == 0
    assert DctChanged() in effects
    device.dct.credentials.add(good_cred())
    device.handle(SetupButton(0.5), 4.0)  # a tap exits listening mode
    assert device.state is S.ONLINE


def test_listening_timeout(device_key: DeviceKey) -> None:
    device = make(device_key, creds=(good_cred(),), timing=TimingProfile(listening_timeout_s=300))
    device.handle(PowerOn(), 0.0)
    device.handle(ListenRequested(), 1.0)
    assert device.state is S.LISTENING
    device.handle(ListeningTimedOut(), 301.0)
    assert device.state is S.ONLINE


def test_power_off_and_cycle(device_key: DeviceKey) -> None:
    device = make(device_key)
    device.handle(PowerOn(), 0.0)
    effects = device.handle(PowerOff(), 1.0)
    assert any(isinstance(e, AccessPointDown) for e in effects)
    assert device.led == LED_OFF
    assert device.heap.blocks == {}
    device.handle(PowerOn(), 2.0)
    effects = device.handle(PowerCycle(), 3.0)
    assert states(effects)[:2] == [("listening", "off"), ("off", "booting")]
    assert device.state is S.LISTENING


# -- the memory gate ----------------------------------------------------------------
def test_table_and_gate_agree() -> None:
    assert LISTENING_COST_BYTES + REQUEST_HEADROOM_BYTES == DEFAULT_GATE_BYTES == 22_016
    assert sum(a.size_bytes for a in LISTENING_ALLOCATIONS) == LISTENING_COST_BYTES


def gate_device(key: DeviceKey, free_at_trigger: int, mode: GateMode) -> Device:
    heap = Heap(
        heap_after_boot_bytes=61_440, app_ram_bytes=61_440 - free_at_trigger, gate_mode=mode
    )
    device = make(key, heap=heap, radio=RadioEnvironment([HOME]))
    device.handle(PowerOn(), 0.0)
    return device


@pytest.mark.parametrize("mode", list(GateMode), ids=lambda m: m.value)
@pytest.mark.parametrize("delta", [0, 1, -1], ids=["at", "above", "below"])
def test_gate_threshold(device_key: DeviceKey, mode: GateMode, delta: int) -> None:
    free = DEFAULT_GATE_BYTES + delta
    device = gate_device(device_key, free, mode)
    health = device.lifecycle.health
    assert health is not None
    assert device.state is S.LISTENING
    assert device.led == LED_LISTENING  # the LED blinks blue in every case (§7)
    passed = delta >= 0
    assert health.gate_passed is passed
    if passed:
        assert health.failed == ()
        assert device.lifecycle.ap_up
        assert device.heap.free_bytes == free - LISTENING_COST_BYTES
    elif mode is GateMode.REFUSE:
        assert health.refused
        assert not device.lifecycle.ap_up
    else:
        assert device.lifecycle.ap_up  # appears to listen
        assert device.saves_lost


def test_at_gate_a_configure_fits_exactly(device_key: DeviceKey) -> None:
    from cryptography.hazmat.primitives.asymmetric import padding

    device = gate_device(device_key, DEFAULT_GATE_BYTES, GateMode.APPEARS)
    ct = device_key._key.public_key().encrypt(b"home-password", padding.PKCS1v15()).hex()
    body = ('{"idx":0,"ssid":"Home","sec":4194308,"ch":6,"pwd":"%s"}' % ct).encode()
    assert device.execute("configure-ap", body).body == b'{"r":0}'
    assert len(device.dct.credentials) == 1


def test_below_gate_saves_seem_to_work_but_are_lost(device_key: DeviceKey) -> None:
    from cryptography.hazmat.primitives.asymmetric import padding

    device = gate_device(device_key, DEFAULT_GATE_BYTES - 1, GateMode.APPEARS)
    ct = device_key._key.public_key().encrypt(b"home-password", padding.PKCS1v15()).hex()
    body = ('{"idx":0,"ssid":"Home","sec":4194308,"ch":6,"pwd":"%s"}' % ct).encode()
    reply = device.execute("configure-ap", body)
    assert reply.body in (b'{"r":0}', b'{"r":-17168}', b"")
    assert len(device.dct.credentials) == 0
    assert not reply.effects
    assert device.execute("set", b'{"k":"cc","v":"CODE"}').body == b'{"r":0}'
    assert device.dct.claim_code == b""


@pytest.mark.parametrize(
    ("free", "failed"),
    [
        pytest.param(LISTENING_COST_BYTES, (), id="table-fits-no-request-headroom"),
        pytest.param(
            1132 + 1920 + 1280 + 1536 + 80 + 100,
            (Component.TCP_THREAD, Component.HTTP_SLOTS, Component.HTTP_SERVER),
            id="no-threads",
        ),
        pytest.param(
            1132 + 1000,
            (
                Component.AP_INTERFACE,
                Component.DHCP,
                Component.DNS,
                Component.TCP_THREAD,
                Component.HTTP_SERVER,
            ),
            id="no-ap",
        ),
    ],
)
def test_appears_mode_allocation_failures(
    device_key: DeviceKey, free: int, failed: tuple[Component, ...]
) -> None:
    device = gate_device(device_key, free, GateMode.APPEARS)
    health = device.lifecycle.health
    assert health is not None
    for comp in failed:
        assert comp in health.failed, (comp, health.failed)
    if Component.AP_INTERFACE in failed:
        assert not device.lifecycle.ap_up


def test_appears_mode_listener_flags(device_key: DeviceKey) -> None:
    heap = Heap(heap_after_boot_bytes=1132 + 1920 + 1280 + 1536 + 80 + 100)
    device = make(device_key, heap=heap)
    effects = device.handle(PowerOn(), 0.0)
    [up] = [e for e in effects if isinstance(e, AccessPointUp)]
    assert up.tcp_listening  # the listener exists ...
    assert not up.tcp_serving  # ... but no thread ever answers
    assert not up.http_listening  # port 80 refuses
    assert up.degraded


def test_softap_object_allocation_failure_is_a_hard_fault(device_key: DeviceKey) -> None:
    device = make(device_key, heap=Heap(heap_after_boot_bytes=1000))
    effects = device.handle(PowerOn(), 0.0)
    assert device.state is S.FAULTED
    [reset] = [e for e in effects if isinstance(e, StartTimer)]
    device.handle(reset.event, reset.deadline)
    assert device.state is S.FAULTED  # it faults again on every boot: a reboot loop


def test_request_allocations_fail_when_heap_is_short(device_key: DeviceKey) -> None:
    device = gate_device(device_key, LISTENING_COST_BYTES + 300, GateMode.APPEARS)
    assert (
        device.execute("scan-ap").body
        == b'{"scans":[{"ssid":"Home","rssi":-50,"sec":4194308,"ch":6,"mdr":72200}]}'
    )
    body = b'{"k":"cc","v":"' + b"C" * 63 + b'"}'
    assert device.execute("set", body).body == b""  # the 1 KB token array does not fit
    assert device.heap.failures >= 1
    assert device.heap.transient_bytes == 0  # released after every request


def test_rsa_working_memory_failure_is_an_mbedtls_alloc_error(device_key: DeviceKey) -> None:
    from cryptography.hazmat.primitives.asymmetric import padding

    device = gate_device(device_key, LISTENING_COST_BYTES + 1024 + 400 + 500, GateMode.APPEARS)
    ct = device_key._key.public_key().encrypt(b"home-password", padding.PKCS1v15()).hex()
    body = ('{"idx":0,"ssid":"Home","sec":4194308,"ch":6,"pwd":"%s"}' % ct).encode()
    assert device.execute("configure-ap", body).body == b'{"r":-17168}'  # -0x4300 - 0x0010
