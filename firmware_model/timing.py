"""Timing profiles: how long the device takes for each step.

``fast`` is for CI (everything immediate); ``realistic`` uses real-device-like durations
(multi-second scans and joins). Scan stays under iOS's 3 s reply timer by default
(clients.md §4 #2): a slower scan is an explicit fault.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any


@dataclass(frozen=True, slots=True)
class TimingProfile:
    name: str = "fast"
    #: power-on to the first network decision
    boot_s: float = 0.0
    #: entering listening mode until the AP and its listeners are up
    listen_start_s: float = 0.0
    #: the blocking scan of ``scan-ap`` (also delays the reply)
    scan_s: float = 0.0
    #: ``connect-ap`` reply until the AP is torn down
    ap_teardown_s: float = 0.0
    #: association attempt per stored network
    join_s: float = 0.0
    #: DHCP after a successful association
    dhcp_s: float = 0.0
    #: cloud connection (handshake) after the IP is up
    cloud_s: float = 0.0
    #: wait before retrying a failed join / cloud connection
    retry_s: float = 0.0
    #: listening-mode timeout; 0 = none (the Photon default)
    listening_timeout_s: float = 0.0

    def with_overrides(self, data: dict[str, Any]) -> TimingProfile:
        names = {f.name for f in fields(self)} - {"name"}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown timing field(s) {sorted(unknown)}; known: {sorted(names)}")
        values: dict[str, float] = {}
        for k, v in data.items():
            if not isinstance(v, int | float) or isinstance(v, bool) or v < 0:
                raise ValueError(f"timing '{k}' must be a non-negative number of seconds")
            values[k] = float(v)
        return replace(self, **values)  # type: ignore[arg-type]

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


FAST = TimingProfile()
REALISTIC = TimingProfile(
    name="realistic",
    boot_s=2.0,
    listen_start_s=1.5,
    scan_s=1.8,
    ap_teardown_s=0.05,
    join_s=4.0,
    dhcp_s=1.0,
    cloud_s=2.5,
    retry_s=5.0,
)
PROFILES = {"fast": FAST, "realistic": REALISTIC}


def timing_profile(name: str) -> TimingProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(
            f"unknown timing profile {name!r}; use one of {sorted(PROFILES)}"
        ) from None
