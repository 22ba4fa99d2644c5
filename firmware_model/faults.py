"""Fault injection: runtime-steerable misbehaviour, as plain data with counters.

A :class:`Fault` matches a command and transport (``"*"`` for any), lets ``skip``
matching events pass, then applies ``times`` times (``None``: for ever) — the "skip N
then fail M" counters. The plan is pure: jitter comes from an injected seeded RNG, so a
scenario with a seed behaves the same on every run. Each kind maps to a pain point in
pain-points.md.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from firmware_model.commands import COMMAND_NAMES


class FaultKind(enum.Enum):
    #: delay the reply by ``delay_ms`` ± ``jitter_ms`` (#3 timeouts; slow scan with scan-ap)
    LATENCY = "latency"
    #: read the request, never answer, never close (#3)
    NO_REPLY = "no-reply"
    #: write the reply but never close the connection (#3: JS4/Android/iOS wait for close)
    REPLY_THEN_HANG = "reply-then-hang"
    #: close (FIN) without writing anything (#3)
    CLOSE_WITHOUT_REPLY = "close-without-reply"
    #: the device forgets the connection: no reply, no close, further data ignored (#3)
    HALF_OPEN = "half-open"
    #: write the first ``bytes`` of the reply (default: half), then reset the connection (#1)
    DROP_MID_REPLY = "drop-mid-reply"
    #: reset the connection (RST) as soon as the request is read (#1)
    RESET = "reset"
    #: after ``count`` accepted connections the port refuses connections (#3 ECONNREFUSED)
    REFUSE_AFTER = "refuse-after"
    #: scan-ap reports only the first ``count`` networks (#11 partial scan)
    SCAN_PARTIAL = "scan-partial"
    #: public-key shape variant: ``unpadded``, ``pkcs1`` or ``corrupt`` (#6)
    KEY_VARIANT = "key-variant"
    #: scripted Wi-Fi join outcome: ok, bad_password, ap_missing, dhcp_fail; ``delay_ms``
    #: makes association slow (#2, #5)
    JOIN = "join"
    #: Wi-Fi joins but the cloud cannot be reached: blinking cyan, retrying (#2)
    CLOUD_UNREACHABLE = "cloud-unreachable"
    #: connect-ap answers r=0 but the AP keeps broadcasting and the device stays (#4)
    AP_STAYS_UP = "ap-stays-up"
    #: configure-ap / set answer r=0 but nothing is stored (#8 "seems to save")
    SAVE_LOST = "save-lost"


#: faults that change how a reply is delivered (handled by the transport)
DELIVERY_KINDS = frozenset(
    {
        FaultKind.LATENCY,
        FaultKind.NO_REPLY,
        FaultKind.REPLY_THEN_HANG,
        FaultKind.CLOSE_WITHOUT_REPLY,
        FaultKind.HALF_OPEN,
        FaultKind.DROP_MID_REPLY,
        FaultKind.RESET,
    }
)
JOIN_OUTCOMES = ("ok", "bad_password", "ap_missing", "dhcp_fail")
KEY_VARIANTS = ("unpadded", "pkcs1", "corrupt")
TRANSPORTS = ("tcp", "http", "*")
_COMMANDS = (*COMMAND_NAMES, "*")


#: the keys a fault table/object may have
_FIELDS = frozenset(
    {
        "kind",
        "command",
        "transport",
        "skip",
        "times",
        "delay_ms",
        "jitter_ms",
        "count",
        "outcome",
        "variant",
        "bytes",
    }
)


@dataclass(slots=True)
class Fault:
    kind: FaultKind
    command: str = "*"
    transport: str = "*"
    skip: int = 0
    times: int | None = None
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    count: int = 0
    outcome: str = ""
    variant: str = ""
    nbytes: int | None = None
    #: assigned by the plan
    id: int = 0
    seen: int = 0
    applied: int = 0

    def matches(self, command: str, transport: str) -> bool:
        return (self.command in ("*", command)) and (self.transport in ("*", transport))

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.applied >= self.times

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind.value,
            "command": self.command,
            "transport": self.transport,
            "skip": self.skip,
            "times": self.times,
            "seen": self.seen,
            "applied": self.applied,
        }
        for name in ("delay_ms", "jitter_ms", "count", "outcome", "variant", "nbytes"):
            value = getattr(self, name)
            if value not in (0, 0.0, "", None):
                out[name] = value
        return out

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Fault:
        """Parse a fault from TOML/JSON; ``ValueError`` says exactly what is wrong."""
        if not isinstance(data, Mapping):
            raise ValueError("a fault must be an object/table")
        unknown = set(data) - _FIELDS
        if unknown:
            allowed = sorted(_FIELDS)
            raise ValueError(f"unknown fault field(s) {sorted(unknown)}; allowed: {allowed}")
        kind_text = data.get("kind")
        kinds = [k.value for k in FaultKind]
        if not isinstance(kind_text, str) or kind_text not in kinds:
            raise ValueError(f"'kind' must be one of {kinds}, got {kind_text!r}")
        kind = FaultKind(kind_text)
        command = _choice(data, "command", _COMMANDS, "*")
        transport = _choice(data, "transport", TRANSPORTS, "*")
        skip = _int(data, "skip", 0)
        times = data.get("times")
        if times is not None:
            times = _int(data, "times", 0)
        fault = cls(
            kind,
            command,
            transport,
            skip,
            times,
            delay_ms=_num(data, "delay_ms"),
            jitter_ms=_num(data, "jitter_ms"),
            count=_int(data, "count", 0),
        )
        fault.outcome = _kind_only(data, kind, FaultKind.JOIN, "outcome", JOIN_OUTCOMES)
        fault.variant = _kind_only(data, kind, FaultKind.KEY_VARIANT, "variant", KEY_VARIANTS)
        if "bytes" in data:
            fault.nbytes = _int(data, "bytes", 0)
        if kind in (FaultKind.REFUSE_AFTER, FaultKind.SCAN_PARTIAL) and "count" not in data:
            raise ValueError(f"a {kind.value} fault needs 'count'")
        if kind is FaultKind.LATENCY and fault.delay_ms <= 0 and fault.jitter_ms <= 0:
            raise ValueError("a latency fault needs 'delay_ms' (and optionally 'jitter_ms')")
        return fault


def _kind_only(
    data: Mapping[str, Any], kind: FaultKind, owner: FaultKind, key: str, options: Iterable[str]
) -> str:
    """A field only ``owner`` faults have, and must have (``join``'s outcome ...)."""
    if kind is owner:
        value = _choice(data, key, options, "")
        if not value:
            raise ValueError(f"a {owner.value} fault needs '{key}', one of {list(options)}")
        return value
    if key in data:
        raise ValueError(f"'{key}' only applies to kind '{owner.value}'")
    return ""


def _choice(data: Mapping[str, Any], key: str, options: Iterable[str], default: str) -> str:
    value = data.get(key, default)
    opts = list(options)
    if value != default and value not in opts:
        raise ValueError(f"'{key}' must be one of {opts}, got {value!r}")
    if not isinstance(value, str):
        raise ValueError(f"'{key}' must be a string")
    return value


def _int(data: Mapping[str, Any], key: str, default: int) -> int:
    value = data.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"'{key}' must be a non-negative integer, got {value!r}")
    return value


def _num(data: Mapping[str, Any], key: str) -> float:
    value = data.get(key, 0)
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        raise ValueError(f"'{key}' must be a non-negative number, got {value!r}")
    return float(value)


@dataclass(slots=True)
class FaultPlan:
    """The active faults of one device, consumed in order."""

    rng: random.Random = field(default_factory=lambda: random.Random(0))
    faults: list[Fault] = field(default_factory=list)
    _next_id: int = 1

    def add(self, fault: Fault) -> Fault:
        fault.id = self._next_id
        self._next_id += 1
        self.faults.append(fault)
        return fault

    def remove(self, fault_id: int) -> bool:
        before = len(self.faults)
        self.faults = [f for f in self.faults if f.id != fault_id]
        return len(self.faults) != before

    def clear(self) -> None:
        self.faults.clear()

    def take(
        self, kinds: Iterable[FaultKind], command: str = "*", transport: str = "*"
    ) -> list[Fault]:
        """The faults of ``kinds`` that apply to this event, counting it for all matches."""
        wanted = set(kinds)
        hits: list[Fault] = []
        for fault in self.faults:
            if fault.kind not in wanted or fault.exhausted:
                continue
            if not fault.matches(command, transport):
                continue
            fault.seen += 1
            if fault.seen <= fault.skip:
                continue
            fault.applied += 1
            hits.append(fault)
        return hits

    def first(self, kind: FaultKind, command: str = "*", transport: str = "*") -> Fault | None:
        hits = self.take((kind,), command, transport)
        return hits[0] if hits else None

    def delay_s(self, fault: Fault) -> float:
        jitter = self.rng.uniform(-fault.jitter_ms, fault.jitter_ms) if fault.jitter_ms else 0.0
        return max(0.0, fault.delay_ms + jitter) / 1000.0

    def to_json(self) -> list[dict[str, Any]]:
        return [f.to_json() for f in self.faults]
