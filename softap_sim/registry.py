"""The device list: every running emulator of this process, served as JSON.

This is the fallback for discovery where multicast DNS does not work (plain loopback in
CI has no MULTICAST flag, pain-points.md §2.4): ``softap-sim run`` and fleets add their
emulators to a :class:`DeviceRegistry`, the control API serves it at ``GET /v1/devices``,
and ``softap-sim discover`` reads it when an mDNS browse finds nothing.

Entries are read from the emulators when asked for, so they are always current::

    registry = DeviceRegistry()
    registry.add(emu, control_url="http://127.0.0.1:5610")
    registry.devices()          # -> [DeviceInfo(device_id=..., state="listening", ...)]

Routes (JSON, mounted by :func:`add_routes` or through :data:`ROUTES` plus
``app[REGISTRY] = registry``)::

    GET /v1/devices            a JSON array of device objects (DeviceInfo.to_json())
    GET /v1/devices/{id}       one device object; 404 {"error": "not_found", ...}

A device object holds no secret: no claim code, no Wi-Fi password.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from softap_sim.errors import LifecycleError

if TYPE_CHECKING:
    from softap_sim.emulator import DeviceEmulator

#: where an entry came from
SOURCE_REGISTRY = "registry"
SOURCE_MDNS = "mdns"


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What a discovery client needs to know about one device.

    ``tcp_port`` / ``http_port`` are ``None`` when the emulator is stopped or (HTTP) when
    the firmware era has no HTTP server. ``led``, ``ap_up`` and ``running`` are only known
    from the registry, ``record`` (the DNS-SD instance name) only from mDNS.
    """

    device_id: str
    ssid: str
    firmware: str
    state: str
    claimed: bool
    host: str | None
    tcp_port: int | None
    http_port: int | None
    led: str | None = None
    ap_up: bool | None = None
    running: bool | None = None
    control_url: str | None = None
    scenario: str | None = None
    record: str | None = None
    source: str = SOURCE_REGISTRY

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.device_id,
            "ssid": self.ssid,
            "firmware": self.firmware,
            "state": self.state,
            "claimed": self.claimed,
            "host": self.host,
            "tcp_port": self.tcp_port,
            "http_port": self.http_port,
            "led": self.led,
            "ap_up": self.ap_up,
            "running": self.running,
            "control_url": self.control_url,
            "scenario": self.scenario,
            "record": self.record,
            "source": self.source,
        }

    @classmethod
    def from_json(cls, data: Any) -> DeviceInfo:
        """Parse a device object (e.g. from ``GET /v1/devices``); ``ValueError`` if malformed."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a device must be a JSON object, got {type(data).__name__}")

        def text(key: str, *, optional: bool = False) -> str | None:
            value = data.get(key)
            if value is None and optional:
                return None
            if not isinstance(value, str):
                raise ValueError(f"device field {key!r} must be a string, got {value!r}")
            return value

        def port(key: str) -> int | None:
            value = data.get(key)
            if value is None:
                return None
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 65535:
                raise ValueError(f"device field {key!r} must be a port number, got {value!r}")
            return value

        def flag(key: str, *, optional: bool = True) -> bool | None:
            value = data.get(key)
            if value is None and optional:
                return None
            if not isinstance(value, bool):
                raise ValueError(f"device field {key!r} must be true or false, got {value!r}")
            return value

        claimed = flag("claimed", optional=False)
        assert claimed is not None
        return cls(
            device_id=text("id") or "",
            ssid=text("ssid") or "",
            firmware=text("firmware") or "",
            state=text("state") or "",
            claimed=claimed,
            host=text("host", optional=True),
            tcp_port=port("tcp_port"),
            http_port=port("http_port"),
            led=text("led", optional=True),
            ap_up=flag("ap_up"),
            running=flag("running"),
            control_url=text("control_url", optional=True),
            scenario=text("scenario", optional=True),
            record=text("record", optional=True),
            source=text("source", optional=True) or SOURCE_REGISTRY,
        )


def describe(emu: DeviceEmulator, *, control_url: str | None = None) -> DeviceInfo | None:
    """The emulator as a :class:`DeviceInfo`; ``None`` before it was first started."""
    try:
        dev = emu.device
    except LifecycleError:
        return None
    ports: dict[str, int | None] = {}
    for name in ("tcp_address", "http_address"):
        try:
            ports[name] = getattr(emu, name)[1]
        except LifecycleError:  # stopped, or no HTTP server in this era
            ports[name] = None
    running = ports["tcp_address"] is not None
    return DeviceInfo(
        device_id=dev.dct.identity.device_id_hex,
        ssid=dev.dct.identity.ssid,
        firmware=dev.era.value,
        state=dev.state.value if running else "stopped",
        claimed=dev.dct.claimed,
        host=emu.host,
        tcp_port=ports["tcp_address"],
        http_port=ports["http_address"],
        led=dev.led.describe() if running else "off",
        ap_up=emu.ap_up,
        running=running,
        control_url=control_url,
        scenario=emu.config.scenario or None,
    )


class DeviceRegistry:
    """The emulators of this process, in the order they were added."""

    def __init__(self) -> None:
        self._emulators: dict[DeviceEmulator, str | None] = {}
        #: lower-case device id -> emulator, rebuilt when a lookup misses after a change
        self._index: dict[str, DeviceEmulator] = {}
        self._generation = 0
        self._indexed = -1

    @classmethod
    def of(cls, emu: DeviceEmulator, *, control_url: str | None = None) -> DeviceRegistry:
        """A registry holding just ``emu`` (``softap-sim run`` without a fleet)."""
        registry = cls()
        registry.add(emu, control_url=control_url)
        return registry

    def add(self, emu: DeviceEmulator, *, control_url: str | None = None) -> None:
        """Add (or re-add, replacing its control URL) an emulator, started or not."""
        self._emulators[emu] = control_url
        self._generation += 1

    def remove(self, emu: DeviceEmulator) -> None:
        """Forget an emulator; unknown ones are ignored."""
        self._emulators.pop(emu, None)
        self._generation += 1

    def emulators(self) -> list[DeviceEmulator]:
        """Every added emulator, in the order added."""
        return list(self._emulators)

    def emulator(self, device_id: str) -> DeviceEmulator | None:
        """The emulator of ``device_id`` (any case); O(1) for a fleet's control API.

        The index is rebuilt only when a lookup misses and the registry changed (or some
        emulator had not started yet), so unknown ids cannot make every request O(n).
        """
        wanted = device_id.lower()
        emu = self._index.get(wanted)
        if emu is not None and emu in self._emulators:
            return emu
        if self._indexed != self._generation or len(self._index) < len(self._emulators):
            index: dict[str, DeviceEmulator] = {}
            for candidate in self._emulators:
                try:
                    index[candidate.device.dct.identity.device_id_hex.lower()] = candidate
                except LifecycleError:  # not started yet: no identity
                    continue
            self._index, self._indexed = index, self._generation
        return self._index.get(wanted)

    def control_url(self, emu: DeviceEmulator) -> str | None:
        return self._emulators.get(emu)

    def __len__(self) -> int:
        return len(self._emulators)

    def __contains__(self, emu: object) -> bool:
        return emu in self._emulators

    def devices(self) -> list[DeviceInfo]:
        """Every added emulator that has been started, as it is now."""
        found = (describe(emu, control_url=url) for emu, url in self._emulators.items())
        return [info for info in found if info is not None]

    def find(self, device_id: str) -> DeviceInfo | None:
        emu = self.emulator(device_id)
        if emu is None:
            return None
        return describe(emu, control_url=self._emulators.get(emu))

    def to_json(self) -> list[dict[str, Any]]:
        return [info.to_json() for info in self.devices()]


# -- HTTP ----------------------------------------------------------------------------
REGISTRY: web.AppKey[DeviceRegistry] = web.AppKey("device_registry", DeviceRegistry)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(data) + "\n", status=status, content_type="application/json"
    )


async def get_devices(request: web.Request) -> web.Response:
    """``GET /v1/devices``: every device of ``app[REGISTRY]``."""
    return _json(request.app[REGISTRY].to_json())


async def get_device(request: web.Request) -> web.Response:
    """``GET /v1/devices/{id}``: one device, or a JSON 404."""
    registry = request.app[REGISTRY]
    device_id = request.match_info["id"]
    info = registry.find(device_id)
    if info is None:
        return _json({"error": "not_found", "message": unknown_device(registry, device_id)}, 404)
    return _json(info.to_json())


def unknown_device(registry: DeviceRegistry, device_id: str) -> str:
    """The 404 message for an id no device has (a few known ids, not 10,000)."""
    known: list[str] = []
    for emu in registry.emulators()[:5]:
        info = describe(emu)
        if info is not None:
            known.append(info.device_id)
    more = f" and {len(registry) - len(known)} more" if len(registry) > len(known) else ""
    return f"no device {device_id[:64]!r}; known: {known}{more} (GET /v1/devices lists them)"


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: (method, path, handler) rows, the shape of ``control_api.ROUTES``
ROUTES: tuple[tuple[str, str, Handler], ...] = (
    ("GET", "/v1/devices", get_devices),
    ("GET", "/v1/devices/{id}", get_device),
)


def add_routes(app: web.Application, registry: DeviceRegistry) -> None:
    """Serve ``registry`` from ``app`` (an app that keeps no route table of its own)."""
    app[REGISTRY] = registry
    app.router.add_routes([web.route(method, path, handler) for method, path, handler in ROUTES])


__all__ = [
    "REGISTRY",
    "ROUTES",
    "SOURCE_MDNS",
    "SOURCE_REGISTRY",
    "DeviceInfo",
    "DeviceRegistry",
    "add_routes",
    "describe",
    "get_device",
    "get_devices",
]
