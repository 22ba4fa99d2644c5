"""What the benchmarks read from Linux ``/proc``: CPU time per process and machine-wide,
memory, dropped SYNs; and the open-files limit they raise for many sockets.

CPU time is the benchmarks' key measure (a server's price per request, whoever the
bottleneck is), so it is read the precise way (``schedstat``, nanoseconds) with the
tick counters as the fallback and the cross-check.
"""

from __future__ import annotations

import contextlib
import os
import resource
from dataclasses import dataclass
from pathlib import Path
from typing import Final

#: clock ticks per second of ``/proc`` times
CLK_TCK: Final = os.sysconf("SC_CLK_TCK")


def _schedstat_s(pid: int) -> float:
    """``sum_exec_runtime`` of every thread (``/proc/<pid>/task/*/schedstat``), seconds."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # a thread that just ended
            total += int((task / "schedstat").read_text().split()[0]) / 1e9
    return total


def _ticks_s(pid: int) -> float:
    """``utime + stime`` of ``/proc/<pid>/stat`` (all threads), seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def process_cpu_s(pid: int) -> float:
    """CPU seconds of one process, all threads: schedstat (ns) if available, else ticks."""
    try:
        return _schedstat_s(pid)
    except (OSError, ValueError, IndexError):
        return _ticks_s(pid)


@dataclass(frozen=True)
class CpuSample:
    """CPU time of one process (all threads) at one instant, two ways.

    ``ticks_s`` is ``utime + stime`` of ``/proc/<pid>/stat`` (10 ms resolution at 100
    ticks/s); ``precise_s`` sums ``sum_exec_runtime`` of ``/proc/<pid>/task/*/schedstat``
    (ns resolution; the same quantity the kernel splits into utime and stime). The
    precise value is used when the kernel provides it, so short windows stay exact, and
    the ticks cross-check it.
    """

    ticks_s: float
    precise_s: float | None

    @classmethod
    def of(cls, pid: int) -> CpuSample:
        ticks = _ticks_s(pid)
        try:
            precise: float | None = _schedstat_s(pid)
        except (OSError, ValueError, IndexError):
            precise = None
        return cls(ticks, precise)

    def __sub__(self, other: CpuSample) -> CpuSample:
        precise = (
            None
            if self.precise_s is None or other.precise_s is None
            else self.precise_s - other.precise_s
        )
        return CpuSample(self.ticks_s - other.ticks_s, precise)

    @property
    def seconds(self) -> float:
        return self.precise_s if self.precise_s is not None else self.ticks_s


def machine_busy_s() -> float:
    """CPU time all CPUs spent busy so far (``/proc/stat``: all but idle and iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(values) - values[3] - values[4]) / CLK_TCK


def memory_mib(pid: int) -> dict[str, float | None]:
    """Resident set size now and its peak (``VmRSS``/``VmHWM``), MiB."""
    out: dict[str, float | None] = {"rss_mib": None, "peak_rss_mib": None}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out["rss_mib" if key == "VmRSS" else "peak_rss_mib"] = int(value.split()[0]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return out


def listen_overflows() -> int | None:
    """Machine-wide SYNs dropped by full listen queues (``TcpExt ListenOverflows``).

    Each such drop costs the client a 1 s SYN retransmit, which caps throughput without
    costing the server any CPU.
    """
    try:
        lines = [ln.split() for ln in Path("/proc/net/netstat").read_text().splitlines()]
    except OSError:
        return None
    rows = [ln for ln in lines if ln and ln[0] == "TcpExt:"]
    if len(rows) < 2 or "ListenOverflows" not in rows[0]:
        return None
    return int(rows[1][rows[0].index("ListenOverflows")])


def raise_nofile(needed: int | None = None) -> dict[str, int]:
    """Raise the soft open-files limit to ``needed`` (default: the hard limit), never past
    the hard limit: N devices hold 2N listening sockets and more connections."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if needed is None or (hard != resource.RLIM_INFINITY and needed > hard) else needed
    if soft != resource.RLIM_INFINITY and (want == resource.RLIM_INFINITY or soft < want):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return {"soft": int(soft), "hard": int(hard)}
