"""The heap budget of a Photon in listening mode, and the 21.5 KB gate.

Every figure is in one table below with its source (softap-protocol.md §7). The
firmware itself never checks free memory: shortage shows up as a missing AP, dead
ports or empty replies. The empirical rule that listening mode needs about 21.5 KB
free (flashgamer.com, 2018) is modelled as the *gate*: with less free heap when
listening mode is triggered, the device cannot properly enter listening mode.

Model: ``free = heap_after_boot - app_ram - allocations``. Listening mode's fixed
allocations (:data:`LISTENING_ALLOCATIONS`, in start order) plus the working memory of
one typical request (:data:`REQUEST_HEADROOM_BYTES`) add up to the default gate
(22,016 bytes), so the gate and the accounting agree. The ~17 KB of issue
device-os#2082's measured 32,232-byte drop that no source itemises (spec §13 #8) is
not charged.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from firmware_model.errors import FirmwareError


class Component(enum.Enum):
    """What stops working when an allocation fails (spec §7 failure list)."""

    #: the SoftAP object itself: the constructor runs on a null pointer -> hard fault
    SOFTAP_OBJECT = "softap-object"
    #: the AP interface cannot come up: no SSID, although the LED blinks blue
    AP_INTERFACE = "ap-interface"
    #: no DHCP server: clients never get an address (the AP is unusable)
    DHCP = "dhcp"
    #: no captive DNS redirector
    DNS = "dns"
    #: TCP server never started: port 5609 refuses
    TCP_LISTENER = "tcp-listener"
    #: TCP thread not created after the listener was: 5609 accepts but never answers
    TCP_THREAD = "tcp-thread"
    #: no request slots: every HTTP command gets 500
    HTTP_SLOTS = "http-slots"
    #: HTTP thread or stream pool not created: port 80 refuses
    HTTP_SERVER = "http-server"


@dataclass(frozen=True, slots=True)
class Allocation:
    name: str
    size_bytes: int
    component: Component
    source: str


#: listening mode's fixed allocations, in the order the firmware makes them (§1 AP start
#: order: SoftAP object, AP + DHCP + DNS, TCP 5609, HTTP 80)
LISTENING_ALLOCATIONS: tuple[Allocation, ...] = (
    Allocation(
        "softap object (wiced_http_server_t)",
        1132,
        Component.SOFTAP_OBJECT,
        "LIB:http_server.o wiced_http_server_start memset size",
    ),
    Allocation(
        "AP interface + WWD AP state",
        1920,
        Component.AP_INTERFACE,
        "not itemised by the spec; sized so the table + one request = 22,016 B",
    ),
    Allocation(
        "DHCP server thread stack",
        1280,
        Component.DHCP,
        "Lib_DHCP_Server.a wiced_start_dhcp_server",
    ),
    Allocation(
        "DNS redirector thread stack",
        1536,
        Component.DNS,
        "Lib_DNS_Redirect_Daemon.a wiced_dns_redirector_start",
    ),
    Allocation("TCP event queue (10 x 8 B)", 80, Component.TCP_LISTENER, "softap.cpp L1667"),
    Allocation("TCP server thread stack", 6144, Component.TCP_THREAD, "softap.cpp L1673"),
    Allocation(
        "HTTP request slots (10 x HTTPRequest)", 240, Component.HTTP_SLOTS, "softap.cpp L1335"
    ),
    Allocation("HTTP event queue (20 x 8 B)", 160, Component.HTTP_SERVER, "http_server.o"),
    Allocation("HTTP worker queue (20 x 8 B)", 160, Component.HTTP_SERVER, "http_server.o"),
    Allocation("HTTP event thread stack", 4096, Component.HTTP_SERVER, "softap.cpp L1336"),
    Allocation(
        "HTTP connect worker stack",
        1500,
        Component.HTTP_SERVER,
        "http_server.o wiced_http_server_start",
    ),
    Allocation(
        "HTTP stream pool (10 x 44 B)",
        440,
        Component.HTTP_SERVER,
        "http_server.o http_internal_server_start",
    ),
)
LISTENING_COST_BYTES = sum(a.size_bytes for a in LISTENING_ALLOCATIONS)

#: per-request allocations (§7 "Per request")
JSON_TOKEN_BYTES = 16  # sizeof(jsmntok_t); arrays of 64, 129, 259 ... (softap.cpp L179-197)
#: mbedTLS RSA-1024 private-key operation with CRT and blinding (working MPIs); an estimate
RSA_WORK_BYTES = 1792
SCAN_QUEUE_BYTES = 5 * 52  # 5-entry queue of ScanEntry (softap.cpp L426)
SCAN_RESULT_BYTES = 64  # one malloc per scan result (wiced_scan_handler_result_t)
#: a typical configure-ap body copy (310 bytes + NUL, rounded)
TYPICAL_BODY_BYTES = 512
#: tokens + RSA + body: what one configure-ap needs beyond the fixed allocations
REQUEST_HEADROOM_BYTES = 64 * JSON_TOKEN_BYTES + RSA_WORK_BYTES + TYPICAL_BODY_BYTES

#: the empirical gate: 21.5 KB (flashgamer.com 2018; spec §7)
DEFAULT_GATE_BYTES = 22_016
assert LISTENING_COST_BYTES + REQUEST_HEADROOM_BYTES == DEFAULT_GATE_BYTES

#: free heap after boot with an empty user application: the Photon's ~60 KB of user RAM
DEFAULT_HEAP_AFTER_BOOT_BYTES = 61_440


class GateMode(enum.Enum):
    """What the device does when listening mode is triggered below the gate."""

    #: the device appears to listen (LED blue, AP up) but requests time out or fail and
    #: credentials seem to save but are lost (the default: the documented seed text)
    APPEARS = "appears"
    #: no AP at all, both ports closed (the LED still blinks blue)
    REFUSE = "refuse"


class AllocationFailed(FirmwareError):
    """A modelled ``malloc`` returned NULL."""

    def __init__(self, name: str, size_bytes: int, free_bytes: int) -> None:
        super().__init__(f"{name}: {size_bytes} B requested, {free_bytes} B free")
        self.name = name
        self.size_bytes = size_bytes
        self.free_bytes = free_bytes


@dataclass(slots=True)
class Heap:
    """Free-heap accounting: named long-lived blocks plus transient request blocks."""

    heap_after_boot_bytes: int = DEFAULT_HEAP_AFTER_BOOT_BYTES
    app_ram_bytes: int = 0
    gate_bytes: int = DEFAULT_GATE_BYTES
    gate_mode: GateMode = GateMode.APPEARS
    blocks: dict[str, int] = field(default_factory=dict)
    #: ``sum(blocks.values())``, kept up to date (free_bytes is read on every request)
    blocks_bytes: int = 0
    transient_bytes: int = 0
    #: lowest free heap seen (``System.freeMemory()`` low-water mark)
    low_water_bytes: int | None = None
    failures: int = 0

    @property
    def free_bytes(self) -> int:
        return (
            self.heap_after_boot_bytes
            - self.app_ram_bytes
            - self.blocks_bytes
            - self.transient_bytes
        )

    def _note(self) -> None:
        free = self.free_bytes
        if self.low_water_bytes is None or free < self.low_water_bytes:
            self.low_water_bytes = free

    def allocate(self, name: str, size_bytes: int) -> None:
        """Reserve a long-lived block, or raise :class:`AllocationFailed`."""
        free = self.free_bytes
        if size_bytes < 0 or size_bytes > free:
            self.failures += 1
            raise AllocationFailed(name, size_bytes, free)
        self.blocks[name] = self.blocks.get(name, 0) + size_bytes
        self.blocks_bytes += size_bytes
        self._note()

    def release(self, name: str) -> None:
        self.blocks_bytes -= self.blocks.pop(name, 0)

    def try_transient(self, size_bytes: int) -> bool:
        """A request-scoped ``malloc``: succeeds if it fits; release with :meth:`end_request`."""
        if size_bytes < 0 or size_bytes > self.free_bytes:
            self.failures += 1
            return False
        self.transient_bytes += size_bytes
        self._note()
        return True

    def end_request(self) -> None:
        self.transient_bytes = 0

    def to_json(self) -> dict[str, object]:
        return {
            "free_bytes": self.free_bytes,
            "heap_after_boot_bytes": self.heap_after_boot_bytes,
            "app_ram_bytes": self.app_ram_bytes,
            "gate_bytes": self.gate_bytes,
            "gate_mode": self.gate_mode.value,
            "allocated": dict(self.blocks),
            "low_water_bytes": self.low_water_bytes,
            "allocation_failures": self.failures,
        }
