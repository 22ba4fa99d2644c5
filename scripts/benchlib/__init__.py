"""What the benchmarks in ``scripts/`` share, so each script holds only its own method.

Imported as ``benchlib`` (the benchmarks run as ``python scripts/bench_*.py``, so
``scripts/`` is on ``sys.path``); standard library only, Linux ``/proc`` readings.
:mod:`benchlib.core`: errors and exit codes, quantiles, loop lag, CLI types, the report's
last step, the revision extractor; :mod:`benchlib.procfs`: CPU time, memory, dropped
SYNs; :mod:`benchlib.children`: the server and driver processes, both ends of the pipe.
"""

from benchlib.children import (
    AsyncChild,
    LineChild,
    announce,
    child_env,
    free_port,
    leave_sigint_to_parent,
    read_pipe,
    stop_child,
    until_stdin_closes,
)
from benchlib.core import (
    REPO_ROOT,
    BenchError,
    LagMonitor,
    customer_tokens,
    extract_revision,
    positive_float,
    positive_int,
    quantile,
    run_main,
    show_report,
)
from benchlib.procfs import (
    CLK_TCK,
    CpuSample,
    listen_overflows,
    machine_busy_s,
    memory_mib,
    process_cpu_s,
    raise_nofile,
)

__all__ = [
    "CLK_TCK",
    "REPO_ROOT",
    "AsyncChild",
    "BenchError",
    "CpuSample",
    "LagMonitor",
    "LineChild",
    "announce",
    "child_env",
    "customer_tokens",
    "extract_revision",
    "free_port",
    "leave_sigint_to_parent",
    "listen_overflows",
    "machine_busy_s",
    "memory_mib",
    "positive_float",
    "positive_int",
    "process_cpu_s",
    "quantile",
    "raise_nofile",
    "read_pipe",
    "run_main",
    "show_report",
    "stop_child",
    "until_stdin_closes",
]
