"""bench_setup's results: one measured configuration (:class:`Run`) and its summary.

Every finished setup the driver reports lands in a :class:`Run`; the measured window's
setups, CPU times and server-side spans are summed over the rounds.
"""

from __future__ import annotations

import collections
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from benchlib import quantile

STEPS: Final = ("deviceInfo", "scan", "publicKey", "setClaimCode", "configure", "connect")


def spread(values: Sequence[float], scale: float = 1.0) -> dict[str, Any]:
    """count, p50, p95, p99, max, mean (values multiplied by ``scale``)."""
    ordered = sorted(v * scale for v in values)
    out: dict[str, Any] = {"count": len(ordered)}
    for name, q in (("p50", 0.50), ("p95", 0.95), ("p99", 0.99)):
        out[name] = quantile(ordered, q)
    out["max"] = ordered[-1] if ordered else None
    out["mean"] = statistics.fmean(ordered) if ordered else None
    return out


_ADDR = re.compile(r"\[?[0-9a-fA-F:.]*\d\]?:\d{2,5}\b")
_HEX = re.compile(r"\b[0-9a-fA-F]{24}\b")


def normalise_error(text: str) -> str:
    """Error text without addresses, ports and device ids, to group like failures."""
    return _HEX.sub("<id>", _ADDR.sub("<addr>", text))[:160]


@dataclass
class Run:
    """One measured configuration (all its rounds) and what came back."""

    server: str  # "ours", "rev" (the --baseline-rev devices) or "peer"
    concurrency: int
    cloud: bool
    timing: str
    protocol: str
    tweaks: tuple[str, ...] = ()
    rounds: int = 0
    setups: list[dict[str, Any]] = field(default_factory=list)  # every finished setup
    window_setups: list[dict[str, Any]] = field(default_factory=list)  # the measured ones
    window_s: float = 0.0  # summed over the rounds, like the CPU times
    server_cpu_s: float = 0.0
    driver_cpu_s: float = 0.0
    other_cpu_s: float = 0.0
    #: server-side spans (seconds) that ended inside a measured window
    spans: dict[str, list[float]] = field(default_factory=lambda: collections.defaultdict(list))
    time_to_listening_s: list[float] = field(default_factory=list)
    counters: collections.Counter[str] = field(default_factory=collections.Counter)
    served: collections.Counter[str] = field(default_factory=collections.Counter)
    states: collections.Counter[str] = field(default_factory=collections.Counter)
    server_errors: list[str] = field(default_factory=list)
    uncaught: list[str] = field(default_factory=list)
    extra_callbacks: int = 0
    info: dict[str, Any] = field(default_factory=dict)
    #: ``rev``: the extracted revision the server process imports its devices from
    pythonpath: str | None = None

    @property
    def label(self) -> str:
        if self.server == "peer":
            return "peer"
        return " ".join([self.server, "cloud" if self.cloud else "no-cloud"]) + "".join(
            f" +{t}" for t in self.tweaks
        )

    def add_server_stats(self, stats: dict[str, Any], t0: float, t1: float) -> None:
        for name, values in stats.get("spans", {}).items():
            self.spans[name].extend(v for t, v in values if t0 <= t <= t1)
        self.counters.update(stats.get("counters") or {})
        self.served.update(stats.get("served") or {})
        self.states.update(stats.get("states") or {})
        self.server_errors.extend(stats.get("errors") or [])

    def summary(self) -> dict[str, Any]:
        window = self.window_setups
        ok = [s for s in window if s["ok"]]
        steps: dict[str, Any] = {}
        for name in STEPS:
            values = self.step_values_ms(name)
            if values:
                steps[name] = spread(values)
        failures = collections.Counter(
            normalise_error(s["error"] or "unknown") for s in self.setups if not s["ok"]
        )
        cpu_per_setup = self.server_cpu_s / len(ok) if ok else None
        ours = self.server != "peer"  # our fleet host, around ours or the rev's devices
        return {
            "label": self.label,
            "server": self.server,
            "concurrency": self.concurrency,
            "cloud": self.cloud,
            "timing": self.timing,
            "protocol": self.protocol,
            "tweaks": list(self.tweaks),
            "rounds": self.rounds,
            "window_setups": len(window),
            "completed": len(ok),
            "failed": len(window) - len(ok),
            "window_s": self.window_s,
            "setups_per_s": len(ok) / self.window_s if self.window_s > 0 else None,
            "server_cpu_s": self.server_cpu_s,
            "server_cpu_ms_per_setup": cpu_per_setup * 1e3 if cpu_per_setup else None,
            "server_cpu_util": self.server_cpu_s / self.window_s if self.window_s else None,
            "driver_cpu_util": self.driver_cpu_s / self.window_s if self.window_s else None,
            "other_cpu_util": self.other_cpu_s / self.window_s if self.window_s else None,
            "setup_ms": spread(self.durations_ms()),
            "steps_ms": steps,
            "connect_ap_to_claimed_ms": (
                spread(self.spans.get("connect_to_claimed", []), 1e3) if self.cloud else None
            ),
            "online_to_claimed_ms": (
                spread(self.spans.get("online_to_claimed", []), 1e3) if self.cloud else None
            ),
            "connect_ap_to_online_ms": (
                spread(self.spans.get("connect_to_online", []), 1e3) if ours else None
            ),
            "driver_connect_to_claimed_ms": (
                spread([s["claimMs"] for s in ok if s.get("claimMs") is not None])
                if self.cloud
                else None
            ),
            "time_to_listening_ms": spread(self.time_to_listening_s, 1e3),
            "relisten_ms": spread(self.spans.get("relisten", []), 1e3) if ours else None,
            "failures": dict(failures.most_common()),
            "failures_total": sum(failures.values()),
            "setups_total": len(self.setups),
            "uncaught": self.uncaught[:10],
            "uncaught_total": len(self.uncaught),
            "extra_callbacks": self.extra_callbacks,
            "server_counters": dict(self.counters) if ours else None,
            "server_errors": self.server_errors[:20],
            "served": dict(self.served) if ours else None,
            "device_states_at_end": dict(self.states) if ours else None,
            "info": self.info,
        }

    def durations_ms(self) -> list[float]:
        return [(s["t1"] - s["t0"]) * 1e3 for s in self.window_setups if s["ok"]]

    def step_values_ms(self, name: str) -> list[float]:
        return [s["steps"][name][1] for s in self.window_setups if s["steps"].get(name, [False])[0]]

    def claim_values_ms(self) -> list[float]:
        return [v * 1e3 for v in self.spans.get("connect_to_claimed", [])]
