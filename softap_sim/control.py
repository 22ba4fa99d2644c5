"""``emu.control``: steer a running emulator (the moto-api idea, house-style.md §6).

The same operations are served over HTTP by :mod:`softap_sim.control_api` and called by
``softap-sim ctl``. Validation errors raise :class:`ControlError` (HTTP 400); an event
the device does not accept in its state raises :class:`InvalidTransition` (HTTP 409).
Nothing returned here contains a password or a claim code.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from firmware_model import DeviceState, Fault, GateMode, RadioEnvironment
from firmware_model.app import check_event_name, event_spec
from firmware_model.events import (
    ListenRequested,
    PowerCycle,
    PowerOff,
    PowerOn,
    SetupButton,
    WifiLost,
)
from firmware_model.memory import LISTENING_ALLOCATIONS
from firmware_model.scan_packs import PACKS, scan_pack
from softap_sim.errors import SimulatorError

if TYPE_CHECKING:
    import collections

    from firmware_model import Device
    from firmware_model.events import AccessPointUp, Event
    from softap_sim.config import SimConfig
    from softap_sim.dispatch import CommandDispatcher
    from softap_sim.transcript import Transcript


class CloudSession(Protocol):
    """The device-side cloud connection, as far as control reads it."""

    @property
    def up(self) -> bool: ...


class Controlled(Protocol):
    """What :class:`Control` steers: a :class:`~softap_sim.emulator.DeviceEmulator`.

    A Protocol so that control (which the emulator owns) does not import the emulator.
    """

    @property
    def device(self) -> Device: ...
    @property
    def config(self) -> SimConfig: ...
    @property
    def access_point(self) -> AccessPointUp | None: ...
    @property
    def transcript(self) -> Transcript | None: ...
    @property
    def dispatcher(self) -> CommandDispatcher | None: ...
    @property
    def events(self) -> collections.deque[dict[str, Any]]: ...
    @property
    def cloud_client(self) -> CloudSession | None: ...
    @property
    def tcp_address(self) -> tuple[str, int]: ...
    @property
    def http_address(self) -> tuple[str, int]: ...
    @property
    def tcp_listening(self) -> bool: ...
    @property
    def http_listening(self) -> bool: ...
    def fire(self, event: Event) -> None: ...
    def publish_event(
        self, name: str, data: str = "", *, private: bool = True, ttl: int = 60
    ) -> None: ...


class ControlError(SimulatorError):
    """A control request that is malformed or names something unknown."""


class NotFoundError(ControlError):
    """The request names something that does not exist (e.g. a fault id)."""


def _int_arg(value: Any, name: str, *, minimum: int = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ControlError(f"'{name}' must be an integer >= {minimum}, got {value!r}")
    return value


class Control:
    """Operations on one emulator; every method is synchronous and immediate."""

    def __init__(self, emu: Controlled) -> None:
        self._emu = emu

    # -- reading -------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Everything ``GET /v1/state`` shows, in one JSON-ready dict (no secrets)."""
        emu = self._emu
        dev = emu.device
        life = dev.lifecycle
        return {
            "device_id": dev.dct.identity.device_id_hex,
            "ssid": dev.dct.identity.ssid,
            "firmware": dev.era.value,
            "state": dev.state.value,
            "led": dev.led.to_json(),
            "access_point": _access_point_json(emu),
            "ports": _ports_json(emu),
            "listening_health": None if life.health is None else life.health.to_json(),
            "heap": dev.heap.to_json(),
            "credentials": _credentials_json(dev),
            "credentials_changed": dev.credentials_changed,
            "claim_code_set": bool(dev.dct.claim_code),
            "claimed": dev.dct.claimed,
            "last_join": None if life.last_join is None else life.last_join.outcome.value,
            "cloud": _cloud_json(emu),
            "app": _app_json(dev),
            "join_attempts": life.join_attempts,
            "timing": dev.timing.to_json(),
            "faults": dev.faults.to_json(),
            "radio": dev.radio.to_json(),
            "served": dict(emu.dispatcher.served) if emu.dispatcher else {},
            "transcript_seq": emu.transcript.seq if emu.transcript else 0,
        }

    def heap_table(self) -> list[dict[str, Any]]:
        """The listening-mode allocation table with sources (for docs and the API)."""
        return [
            {
                "name": a.name,
                "bytes": a.size_bytes,
                "component": a.component.value,
                "source": a.source,
            }
            for a in LISTENING_ALLOCATIONS
        ]

    def transcript(self, since: int = 0) -> list[dict[str, Any]]:
        since = _int_arg(since, "since")
        return self._emu.transcript.since(since) if self._emu.transcript else []

    # -- acting --------------------------------------------------------------------
    def press_button(self, hold_s: float = 3.0) -> dict[str, Any]:
        if not isinstance(hold_s, int | float) or isinstance(hold_s, bool) or hold_s < 0:
            raise ControlError(f"'hold_s' must be a non-negative number, got {hold_s!r}")
        self._emu.fire(SetupButton(float(hold_s)))
        return self.snapshot()

    def power(self, action: str) -> dict[str, Any]:
        events = {"cycle": PowerCycle(), "off": PowerOff(), "on": PowerOn()}
        if not isinstance(action, str) or action not in events:
            raise ControlError(f"'action' must be one of {sorted(events)}, got {action!r}")
        self._emu.fire(events[action])
        return self.snapshot()

    def listen(self) -> dict[str, Any]:
        self._emu.fire(ListenRequested())
        return self.snapshot()

    def set_app_ram(self, nbytes: int) -> dict[str, Any]:
        """The application's RAM use; the gate is checked when listening mode is entered."""
        heap = self._emu.device.heap
        nbytes = _int_arg(nbytes, "bytes")
        if nbytes > heap.heap_after_boot_bytes:
            raise ControlError(
                f"'bytes' ({nbytes}) exceeds the heap after boot ({heap.heap_after_boot_bytes})"
            )
        heap.app_ram_bytes = nbytes
        return self.snapshot()

    def set_gate(self, *, nbytes: int | None = None, mode: str | None = None) -> dict[str, Any]:
        heap = self._emu.device.heap
        new_bytes = heap.gate_bytes if nbytes is None else _int_arg(nbytes, "bytes")
        new_mode = heap.gate_mode
        if mode is not None:
            modes = [m.value for m in GateMode]
            if not isinstance(mode, str) or mode not in modes:
                raise ControlError(f"'mode' must be one of {modes}, got {mode!r}")
            new_mode = GateMode(mode)
        heap.gate_bytes, heap.gate_mode = new_bytes, new_mode
        return self.snapshot()

    def set_radio(
        self, *, networks: list[Mapping[str, Any]] | None = None, pack: str | None = None
    ) -> dict[str, Any]:
        if (networks is None) == (pack is None):
            raise ControlError(
                f"give exactly one of 'networks' (a list) or 'pack' (one of {sorted(PACKS)})"
            )
        try:
            if pack is not None:
                if not isinstance(pack, str):
                    raise ControlError(f"'pack' must be one of {sorted(PACKS)}, got {pack!r}")
                env = scan_pack(pack)
            else:
                if not isinstance(networks, list):
                    raise ControlError("'networks' must be a list of network objects")
                env = RadioEnvironment.from_list(networks)
        except ValueError as err:
            raise ControlError(str(err)) from None
        device = self._emu.device
        device.radio = env
        reason = device.association_lost()
        if reason is not None:  # the network it is on is gone: Wi-Fi lost, join again
            self._emu.fire(WifiLost(reason))
        return self.snapshot()

    def wifi_lost(self, reason: str = "dropped by the control API") -> dict[str, Any]:
        """The station loses its network (blinking green, the cloud session ends)."""
        self._emu.fire(WifiLost(reason))
        return self.snapshot()

    def reset(self) -> dict[str, Any]:
        """Back to the factory state, as a fresh ``softap-sim run`` of this device.

        Stored networks, claim code and the claimed flag are erased (the identity and
        the key stay, as on a Photon); faults, app RAM, the memory gate and the radio go
        back to the emulator's configuration; then the device powers on -- with no
        networks, into listening mode. The cloud keeps its own records (a real device's
        reset does not unclaim it there).
        """
        emu = self._emu
        cfg = emu.config
        device = emu.device
        if device.state is not DeviceState.OFF:
            emu.fire(PowerOff())
        device.faults.clear()
        for spec in cfg.faults:
            device.faults.add(Fault.from_mapping(spec))
        heap = device.heap
        heap.app_ram_bytes = cfg.app_ram_bytes
        heap.gate_bytes, heap.gate_mode = cfg.gate_bytes, cfg.gate_mode
        device.radio = cfg.radio
        device.cloud_available = cfg.cloud_available
        device.factory_reset()
        emu.fire(PowerOn())
        return self.snapshot()

    def events(self) -> list[dict[str, Any]]:
        """The last events published and received (claim codes masked)."""
        return list(self._emu.events)

    def publish(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        """Publish now: one of the app's ``[app.events]`` by name (its data, privacy and
        ttl unless given), or any event. Needs the cloud session (else LifecycleError)."""
        try:
            name = check_event_name(spec.get("name"))
            known = self._emu.device.app.events.get(name)
            fields = {k: v for k, v in spec.items() if k != "name"}
            if "period_s" in fields:
                raise ValueError("'period_s' belongs in the scenario; publish sends one event")
            if known is not None:
                fields = {"data": known.data, "private": known.private, "ttl": known.ttl, **fields}
            event = event_spec(name, fields)
        except ValueError as err:
            raise ControlError(str(err)) from None
        self._emu.publish_event(event.name, event.data, private=event.private, ttl=event.ttl)
        return {"name": event.name, "data": event.data, "private": event.private, "ttl": event.ttl}

    def add_fault(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        try:
            fault = Fault.from_mapping(spec)
        except ValueError as err:
            raise ControlError(str(err)) from None
        return self._emu.device.faults.add(fault).to_json()

    def remove_fault(self, fault_id: int) -> None:
        fault_id = _int_arg(fault_id, "id", minimum=1)
        if not self._emu.device.faults.remove(fault_id):
            raise NotFoundError(f"no fault with id {fault_id}")

    def clear_faults(self) -> None:
        self._emu.device.faults.clear()

    def faults(self) -> list[dict[str, Any]]:
        return self._emu.device.faults.to_json()


# -- the parts of Control.snapshot ---------------------------------------------------
def _ports_json(emu: Controlled) -> dict[str, Any]:
    ports: dict[str, Any] = {}
    for name, prop in (("tcp", "tcp_address"), ("http", "http_address")):
        try:
            ports[name] = getattr(emu, prop)[1]
        except SimulatorError:
            ports[name] = None
    return ports


def _access_point_json(emu: Controlled) -> dict[str, Any] | None:
    ap = emu.access_point
    if ap is None:
        return None
    return {
        "ssid": ap.ssid,
        "tcp_listening": emu.tcp_listening,
        "tcp_serving": ap.tcp_serving,
        "http_listening": emu.http_listening,
        "http_slots": ap.http_slots,
        "below_memory_gate": ap.degraded,
    }


def _credentials_json(dev: Device) -> list[dict[str, Any]]:
    """The stored networks: SSID and security, never the password."""
    return [
        {
            "ssid": c.ssid.decode("utf-8", "replace"),
            "security": c.security,
            "channel": c.channel,
            "password": "<redacted>" if c.password else "",
            "enterprise": c.enterprise is not None,
        }
        for c in dev.dct.credentials
    ]


def _cloud_json(emu: Controlled) -> dict[str, Any]:
    dev = emu.device
    endpoint = emu.config.cloud_endpoint
    client = emu.cloud_client
    return {
        "link": dev.cloud_link,
        "endpoint": f"{endpoint[0]}:{endpoint[1]}" if endpoint else None,
        "connected": client is not None and client.up,
        "attempts": dev.lifecycle.cloud_attempts,
        "reachable": dev.cloud_available,
    }


def _app_json(dev: Device) -> dict[str, Any]:
    app = dev.app
    return {
        "functions": sorted(app.functions),
        "variables": {n: v.type for n, v in sorted(app.variables.items())},
        "events": {
            n: {"period_s": e.period_s, "private": e.private, "ttl": e.ttl}
            for n, e in sorted(app.events.items())
        },
        "subscriptions": [{"prefix": sub.prefix, "scope": sub.scope} for sub in app.subscriptions],
    }
