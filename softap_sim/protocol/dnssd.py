"""Sans-IO DNS-SD records of an emulated device: which records, with which names and TXT.

A Photon advertises nothing (pain-points.md §2.2): these records go beyond the device, are
off unless asked for (``softap-sim run --advertise``), and exist so that test runners and
bench apps can find N emulated devices without knowing their addresses (§2.3). This module
decides *what* is published; :mod:`softap_sim.transports.mdns` puts it on the network.

Service types (both clearly vendor-specific, neither used by real Particle firmware):

``_particle-softap._tcp.local.`` -- the **listening record**, present while the device is in
listening mode *and* its access point is up. SRV port: the SoftAP TCP port (5609 on a
device). TXT::

    txtvers=1  id=<24 hex digits>  ssid=Photon-XXXX  claimed=0|1  tcp=<port>
    http=<port, 0 without an HTTP server (0.4.0 era)>  fw=<era, e.g. 0.7.0>
    state=listening  proto=2  [scenario=<name>]  [control=<control API URL>]

``_particle-device._tcp.local.`` -- the **operational record**, the "home LAN" side (the nRF
pattern): present after a successful Wi-Fi join, while the device is in ``cloud-connecting``,
``cloud-retry`` or ``online``; its TXT follows the state, so "joined but the cloud is
unreachable" shows as ``cloud=0``. SRV port: the TCP port again (it refuses connections
outside listening mode; the port just names the emulator). TXT::

    txtvers=1  id=...  ssid=...  claimed=0|1  fw=...  state=<state>  cloud=0|1
    [scenario=...]  [control=...]

The instance name of both is the device id, e.g. ``320020001847333531323135._particle-
softap._tcp.local.``, on the host ``softap-sim-<id>.local.``. A record is withdrawn (goodbye
packets) when its condition ends; a TXT change (claimed, state) is sent as an update
(:meth:`ServiceRecord.same_instance`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from firmware_model import Device, DeviceState

LISTENING_TYPE = "_particle-softap._tcp.local."
OPERATIONAL_TYPE = "_particle-device._tcp.local."
SERVICE_TYPES = (LISTENING_TYPE, OPERATIONAL_TYPE)
TXT_VERSION = "1"
#: the SoftAP protocol version (the ``version`` command's ``{"v":2}``)
PROTOCOL_VERSION = "2"
#: record kinds (keys of :func:`service_records`' result)
LISTENING = "listening"
OPERATIONAL = "operational"
#: the states in which the device is on the home network (operational record present)
OPERATIONAL_STATES = frozenset(
    {DeviceState.CLOUD_CONNECTING, DeviceState.CLOUD_RETRY, DeviceState.ONLINE}
)


@dataclass(frozen=True, slots=True)
class ServiceRecord:
    """One DNS-SD service instance as the advertiser wants it published."""

    kind: str
    service_type: str
    instance: str
    server: str
    port: int
    addresses: tuple[str, ...]
    txt: Mapping[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The full instance name, e.g. ``<id>._particle-softap._tcp.local.``."""
        return f"{self.instance}.{self.service_type}"

    def same_instance(self, other: ServiceRecord) -> bool:
        """Whether ``other`` can be published as a TXT update of this record."""
        return (
            self.service_type == other.service_type
            and self.instance == other.instance
            and self.server == other.server
            and self.port == other.port
            and self.addresses == other.addresses
        )


def service_records(
    device: Device,
    *,
    ap_up: bool,
    tcp_port: int,
    http_port: int,
    addresses: tuple[str, ...],
    scenario: str | None = None,
    control_url: str | None = None,
) -> dict[str, ServiceRecord]:
    """The records ``device`` should have published now, by kind (``http_port`` 0: none)."""
    identity = device.dct.identity
    device_id = identity.device_id_hex
    server = f"softap-sim-{device_id}.local."
    common: dict[str, str] = {
        "txtvers": TXT_VERSION,
        "id": device_id,
        "ssid": identity.ssid,
        "claimed": "1" if device.dct.claimed else "0",
        "fw": device.era.value,
        "state": device.state.value,
    }
    extra: dict[str, str] = {}
    if scenario:
        extra["scenario"] = scenario
    if control_url:
        extra["control"] = control_url
    found: dict[str, ServiceRecord] = {}
    if device.state is DeviceState.LISTENING and ap_up:
        txt = {**common, "tcp": str(tcp_port), "http": str(http_port), "proto": PROTOCOL_VERSION}
        found[LISTENING] = ServiceRecord(
            LISTENING, LISTENING_TYPE, device_id, server, tcp_port, addresses, {**txt, **extra}
        )
    if device.state in OPERATIONAL_STATES:
        txt = {**common, "cloud": "1" if device.state is DeviceState.ONLINE else "0"}
        found[OPERATIONAL] = ServiceRecord(
            OPERATIONAL, OPERATIONAL_TYPE, device_id, server, tcp_port, addresses, {**txt, **extra}
        )
    return found


# -- reading resolved records ------------------------------------------------------------
def instance_of(service_type: str, name: str) -> str:
    """``<instance>`` of ``<instance>.<service_type>``; ``name`` itself if it is not one."""
    return name[: -len(service_type) - 1] if name.endswith("." + service_type) else name


def port_from_txt(value: str | None) -> int | None:
    """A TXT port value (``tcp=5609``) as a port number; ``None`` if absent, 0 or bad."""
    if value is None or not value.isdigit():
        return None
    port = int(value)
    return port if 0 < port <= 65535 else None


def decode_txt(properties: Mapping[bytes, bytes | None]) -> dict[str, str]:
    """TXT key/value bytes as text; a key without a value reads as ``""``."""
    found: dict[str, str] = {}
    for key, value in properties.items():
        found[key.decode("utf-8", "replace")] = (value or b"").decode("utf-8", "replace")
    return found


__all__ = [
    "LISTENING",
    "LISTENING_TYPE",
    "OPERATIONAL",
    "OPERATIONAL_STATES",
    "OPERATIONAL_TYPE",
    "PROTOCOL_VERSION",
    "SERVICE_TYPES",
    "TXT_VERSION",
    "ServiceRecord",
    "decode_txt",
    "instance_of",
    "port_from_txt",
    "service_records",
]
