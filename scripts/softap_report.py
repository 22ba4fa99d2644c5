"""bench_softap's report: the ratios against their targets, the table and the profile.

The key ratio is the server's CPU time per command (ours / bare): on 2 cores the Python
load generator caps the baseline's throughput, so throughput alone understates the cost.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from benchlib import CLK_TCK
from softap_load import Measurement

CPU_TARGET: Final = 1.4
THROUGHPUT_TARGET: Final = 0.70
#: recording on / recording off: at most 10 % throughput loss, and the CPU per command
#: increase that costs a CPU-bound server 10 % throughput
REC_THROUGHPUT_TARGET: Final = 0.90
REC_CPU_TARGET: Final = 1 / 0.90


@dataclass(frozen=True)
class Ratio:
    """``num`` / ``den`` for one transport: CPU per command and throughput."""

    transport: str
    cpu: float
    throughput: float
    num: str = "ours"
    den: str = "bare"
    #: None: shown for information, not judged
    cpu_target: float | None = CPU_TARGET
    throughput_target: float | None = THROUGHPUT_TARGET

    @property
    def cpu_pass(self) -> bool:
        return self.cpu_target is None or self.cpu <= self.cpu_target

    @property
    def throughput_pass(self) -> bool:
        return self.throughput_target is None or self.throughput >= self.throughput_target

    @property
    def passed(self) -> bool:
        return self.cpu_pass and self.throughput_pass

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "transport": self.transport,
            "ratio": f"{self.num}/{self.den}",
            "cpu_per_command": round(self.cpu, 3),
            "throughput": round(self.throughput, 3),
        }
        if self.cpu_target is not None:
            out["cpu_target_max"] = round(self.cpu_target, 3)
            out["cpu_pass"] = self.cpu_pass
        if self.throughput_target is not None:
            out["throughput_target_min"] = self.throughput_target
            out["throughput_pass"] = self.throughput_pass
        return out


def _ratios(
    results: Sequence[Measurement],
    num: str = "ours",
    den: str = "bare",
    cpu_target: float | None = CPU_TARGET,
    throughput_target: float | None = THROUGHPUT_TARGET,
) -> list[Ratio]:
    ratios = []
    for transport in ("tcp", "http"):
        pair = {m.server: m for m in results if m.transport == transport}
        if num in pair and den in pair:
            a, b = pair[num], pair[den]
            ratios.append(
                Ratio(
                    transport,
                    cpu=a.cpu_per_command_us / b.cpu_per_command_us
                    if b.cpu_per_command_us > 0
                    else math.inf,
                    throughput=a.rate / b.rate if b.rate > 0 else 0.0,
                    num=num,
                    den=den,
                    cpu_target=cpu_target,
                    throughput_target=throughput_target,
                )
            )
    return ratios


@dataclass(frozen=True)
class RatioBlock:
    """A titled group of ratios in the report (``key`` names it in the JSON summary)."""

    key: str
    title: str
    ratios: list[Ratio]

    @property
    def judged(self) -> bool:
        return any(r.cpu_target is not None or r.throughput_target is not None for r in self.ratios)


def ratio_blocks(results: Sequence[Measurement]) -> list[RatioBlock]:
    """ours/bare (issue 2), recording on/off (issue 3), and the model cost for context."""
    blocks = [
        RatioBlock("ratios", "ours / bare  (issue-2 targets)", _ratios(results)),
        RatioBlock(
            "recording",
            "recording on / recording off  (ours / norec; target: at most 10 % throughput loss)",
            _ratios(results, "ours", "norec", REC_CPU_TARGET, REC_THROUGHPUT_TARGET),
        ),
        RatioBlock(
            "model_without_recording",
            "norec / bare  (state machine + RAM accounting, no recording; for information)",
            _ratios(results, "norec", "bare", None, None),
        ),
        RatioBlock(
            "versus_revision",
            "ours / rev  (the whole model against the --baseline-rev emulator; for information)",
            _ratios(results, "ours", "rev", None, None),
        ),
        RatioBlock(
            "norec_versus_revision",
            "norec / rev  (the model without recording against --baseline-rev; for information)",
            _ratios(results, "norec", "rev", None, None),
        ),
        RatioBlock(
            "revision_versus_bare",
            "rev / bare  (the --baseline-rev emulator, for information)",
            _ratios(results, "rev", "bare", None, None),
        ),
    ]
    return [b for b in blocks if b.ratios]


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def print_ratio_block(block: RatioBlock) -> None:
    print(block.title)
    for r in block.ratios:
        cpu = f"CPU per command {r.cpu:5.2f}"
        if r.cpu_target is not None:
            cpu += f" (target <= {r.cpu_target:.2f}) {_verdict(r.cpu_pass)}"
        tput = f"throughput {r.throughput:5.2f}"
        if r.throughput_target is not None:
            tput += f" (target >= {r.throughput_target:.2f}) {_verdict(r.throughput_pass)}"
        print(f"  {r.transport:<5} {cpu}   {tput}")


def print_table(
    results: Sequence[Measurement],
    blocks: Sequence[RatioBlock],
    commands: Sequence[str],
    cpu_source: str,
) -> None:
    print(
        f"softap-sim benchmark: command(s) {','.join(commands)}; {os.cpu_count()} CPUs; "
        f"Python {sys.version.split()[0]}; server CPU from {cpu_source}"
    )
    print(
        "  ours: the emulator as configured by default (lifecycle, RAM accounting, "
        "recording on); norec: the same with SimConfig(record=False); rev: the "
        "--baseline-rev emulator; bare: bare asyncio server"
    )
    print(
        "  srv CPU / gen CPU / other CPU: server process, this load generator, rest of the "
        "machine (kernel, foreign load), in % of one core"
    )
    head = (
        f"{'transport':<9} {'server':<6} {'clients':>7} {'commands':>9} {'errors':>6} "
        f"{'cmd/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'srv CPU/cmd':>11} {'srv CPU':>7} "
        f"{'gen CPU':>7} {'other':>6}"
    )
    print(head)
    print("-" * len(head))
    for m in results:
        print(
            f"{m.transport:<9} {m.server:<6} {m.clients:>7} {m.commands:>9} {m.errors:>6} "
            f"{m.rate:>8.0f} {m.percentile_ms(50):>7.2f} {m.percentile_ms(99):>7.2f} "
            f"{m.cpu_per_command_us:>8.2f} us {m.util(m.server_cpu_s):>7.0%} "
            f"{m.util(m.client_cpu_s):>7.0%} {m.util(m.other_cpu_s):>6.0%}"
        )
    for block in blocks:
        print()
        print_ratio_block(block)
    print()
    for m in results:
        for sample in m.error_samples:
            print(f"  error ({m.transport}/{m.server}): {sample}")
    print(
        "  cross-check, /proc/<pid>/stat utime+stime vs the CPU used above: "
        + ", ".join(
            f"{m.transport}/{m.server} {m.server_cpu_ticks_s:.2f} s vs {m.server_cpu_s:.2f} s"
            for m in results
        )
    )
    if any(m.util(m.other_cpu_s) > 0.5 for m in results):
        print(
            "  note: > 50% of a core went to other work during a window (kernel or foreign "
            "load): throughput is noisy, trust CPU per command"
        )
    dropped = [m for m in results if m.listen_overflows]
    if dropped:
        print(
            "  note: full listen queues dropped SYNs during "
            + ", ".join(f"{m.transport}/{m.server} ({m.listen_overflows})" for m in dropped)
            + ": each drop stalls a client for a 1 s SYN retransmit, so that throughput "
            "(and p99) measures the server's accept backlog, not its CPU cost"
        )
    if any(m.server_cpu_s * CLK_TCK < 100 for m in results) and "schedstat" not in cpu_source:
        print("  note: a window used < 100 CPU ticks; raise --requests for steadier ratios")


def print_profile(path: str) -> None:
    import pstats

    print(f"\n== cProfile of our server process ({path}), top 30 by own time ==", file=sys.stderr)
    stats = pstats.Stats(path, stream=sys.stderr)
    stats.sort_stats("tottime").print_stats(30)
    print("== the same, restricted to transcript.py and dispatch.py ==", file=sys.stderr)
    stats.sort_stats("tottime").print_stats(r"transcript\.py|dispatch\.py")
