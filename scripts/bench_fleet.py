#!/usr/bin/env python3
"""Benchmark ``softap-sim fleet``: start-up time with a warm key pool, and N devices per
process with their memory.

Issue text: "1,000 devices ready in <= 5 s with a warm key pool; 10,000 devices in one
process under 1 GiB RSS, each answering device-id; report the per-device memory and
startup time."

Method
------
Everything runs as ``softap-sim fleet`` does: a :class:`~softap_sim.fleet.Fleet` with the
embedded cloud (``CloudService``, in-memory database, device endpoint on a free port),
every device registered there before it powers on, keys from a
:class:`~softap_sim.keypool.KeyPool`, devices on their own loopback addresses
(127.0.1.1, 127.0.1.2 ...) with the canonical ports (TCP 5609, HTTP 8080; ``--tcp-port``
and ``--http-port`` change them), ``gc.freeze()`` after the start.

0. Key generation rate (``--keygen-sample`` keys, default 200): serial, threads and
   worker processes (the pool's ``fill``), keys/s.
1. Warm pool (``--ready N``, default 1000): the pool is filled to N first (timed: the
   cold cost); then ``Fleet.start()`` is timed from the call to the moment every device
   is listening and registered ("ready"). Runs: in-memory state; a state directory,
   first start (N new device directories) and restart (N loaded). After each start
   every device is asked ``device-id`` over TCP and HTTP and must answer its own id.
2. Scale (``--scale N``, default 10000): one fleet of N devices in this process (the
   warm pool is filled to N first), in-memory state. ``RSS`` (``VmRSS``) is read before
   the start (cloud and pool ready), after it, and after every device answered
   ``device-id`` over TCP and HTTP; per-device memory = (after - before) / N. The
   requests come from a child process (``--load``), so the clients' sockets and buffers
   are not in the measured process, at ``--load-concurrency`` at a time.

File descriptors: a device with its own listening sockets holds two, so N devices need
2N + a few descriptors. ``RLIMIT_NOFILE`` is raised to the hard limit; raising the hard
limit needs ``CAP_SYS_RESOURCE`` (root outside a restricted container: not here, the hard
limit is 20,000). ``--listeners auto`` (the fleet's default) then gives the scale run
shared listeners (one loopback-only socket per port, connections routed by the address
dialled; ``softap_sim.listeners``); ``--listeners per-device`` forces own sockets and the
scale run then uses the largest N that fits. ``--scale-per-device N`` adds a scale run
with own sockets (at most what fits) to compare memory per device.

The event loop is the one ``softap-sim fleet`` uses (``--loop``, default auto: uvloop
when installed).

Device keys in a state directory load without OpenSSL's RSA consistency check
(``StateStore`` passes ``trusted=True`` to ``DeviceKey.from_pem``), so the "restart" run
measures that; the former ``--what-if-skip-key-validation`` measured the same and is gone.

Benchmarks are not tests: exit status 0 whatever the numbers unless ``--enforce``
(then 1 when a target is missed); 2 when set-up failed.

The load child (``--load``) is in ``fleet_load.py``, the targets and the table in
``fleet_report.py``.

Examples::

    python scripts/bench_fleet.py
    python scripts/bench_fleet.py --ready 1000 --scale 0 --json
    python scripts/bench_fleet.py --scale 5000 --pool /tmp/pool
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import io
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a plain script from a checkout
    sys.path.insert(0, str(REPO_ROOT))

from benchlib import BenchError, memory_mib, raise_nofile, run_main, show_report  # noqa: E402
from fleet_load import ask_all, load_main  # noqa: E402
from fleet_report import judge, print_table  # noqa: E402

from softap_sim import event_loop  # noqa: E402
from softap_sim.argtypes import parse_non_negative_int  # noqa: E402
from softap_sim.errors import SimulatorError  # noqa: E402
from softap_sim.fleet import LISTENER_MODES, Fleet  # noqa: E402
from softap_sim.keypool import KeyPool, generate_pem  # noqa: E402
from softap_sim.listeners import shared_ports_supported  # noqa: E402

#: descriptors kept free besides the listeners in the scale run (cloud, loader's
#: accepted connections, stdio, epoll ...)
SCALE_FD_RESERVE: Final = 200


def rss_mib() -> dict[str, float]:
    """This process's resident set size now and its peak, MiB."""
    return {k: v or 0.0 for k, v in memory_mib(os.getpid()).items()}


# ======================================================================================
# the runs
# ======================================================================================
def progress(text: str) -> None:
    print(f"bench_fleet: {text}", file=sys.stderr, flush=True)


def keygen_rates(sample: int) -> dict[str, Any]:
    cpus = os.cpu_count() or 1
    out: dict[str, Any] = {"sample": sample, "cpus": cpus}
    if sample <= 0:
        return out
    t0 = time.perf_counter()
    for _ in range(sample):
        generate_pem(1024)
    out["serial_keys_per_s"] = sample / (time.perf_counter() - t0)
    with concurrent.futures.ThreadPoolExecutor(cpus) as pool:
        t0 = time.perf_counter()
        list(pool.map(lambda _i: generate_pem(1024), range(sample)))
        out["threads_keys_per_s"] = sample / (time.perf_counter() - t0)
    with tempfile.TemporaryDirectory() as tmp:
        kp = KeyPool(Path(tmp))
        t0 = time.perf_counter()
        made = kp.fill(sample)
        out["processes_keys_per_s"] = made / (time.perf_counter() - t0)
    return out


def fill_pool(pool: KeyPool, target: int) -> dict[str, Any]:
    before = pool.available()
    progress(f"filling the key pool to {target} (has {before})")
    t0 = time.perf_counter()
    made = pool.fill(target)
    elapsed = time.perf_counter() - t0
    return {
        "target": target,
        "had": before,
        "made": made,
        "seconds": elapsed,
        "keys_per_s": made / elapsed if made and elapsed > 0 else None,
    }


async def start_cloud() -> Any:
    from softap_sim.cloud.service import CloudService

    cloud = CloudService(None)
    await cloud.open()
    await cloud.serve_devices("127.0.0.1", 0)
    return cloud


async def one_fleet(
    args: argparse.Namespace,
    pool: KeyPool,
    count: int,
    *,
    state_dir: Path | None,
    label: str,
    measure_memory: bool = False,
    listeners: str | None = None,
) -> dict[str, Any]:
    progress(f"{label}: {count} devices")
    cloud = await start_cloud()
    fleet = Fleet(
        count,
        state_dir=state_dir,
        cloud=cloud,
        key_pool=pool,
        tcp_port=args.tcp_port,
        http_port=args.http_port,
        concurrency=args.concurrency,
        freeze_gc=True,
        listeners=listeners or args.listeners,
    )
    view = None
    if measure_memory:
        from softap_sim.live_view import LiveView

        view = LiveView(stream=io.StringIO(), plain=False, recent=20)
        view.attach_fleet(fleet)
    mem0 = rss_mib()
    try:
        t0 = time.perf_counter()
        report = await fleet.start()
        ready_s = time.perf_counter() - t0
        mem1 = rss_mib()
        answers = await ask_all(fleet, args.load_concurrency)
        mem2 = rss_mib()
        ids = {d.device_id for d in fleet}
        ssids = {d.ssid for d in fleet}
        result: dict[str, Any] = {
            "run": label,
            "devices": count,
            "mode": fleet.mode,
            "listeners": fleet.listeners,
            "ready_s": ready_s,
            "per_device_startup_ms": ready_s / count * 1e3 if count else None,
            "keys_from_pool": report.keys_from_pool,
            "keys_generated": report.keys_generated,
            "keys_s": report.keys_s,
            "state_s": report.state_s,
            "devices_start_s": report.start_s,
            "created": report.created,
            "registered": report.registered,
            "distinct_ids": len(ids),
            "distinct_ssids": len(ssids),
            "answers": answers,
            "first_address": fleet[0].host if count else None,
            "last_address": fleet[-1].host if count else None,
        }
        if view is not None:
            t1 = time.perf_counter()
            view.poll()  # every device has two new commands
            t2 = time.perf_counter()
            view.poll()  # nothing new: the steady state
            t3 = time.perf_counter()
            view.render(40)
            t4 = time.perf_counter()
            result["live_view_poll_ms"] = (t2 - t1) * 1e3
            result["live_view_idle_poll_ms"] = (t3 - t2) * 1e3
            result["live_view_render_ms"] = (t4 - t3) * 1e3
            result["live_view_served"] = view.summary()["served"]
        if measure_memory:
            result["rss_before_mib"] = mem0["rss_mib"]
            result["rss_ready_mib"] = mem1["rss_mib"]
            result["rss_after_requests_mib"] = mem2["rss_mib"]
            result["peak_rss_mib"] = mem2["peak_rss_mib"]
            result["per_device_kib"] = (mem1["rss_mib"] - mem0["rss_mib"]) * 1024 / count
            result["per_device_after_requests_kib"] = (
                (mem2["rss_mib"] - mem0["rss_mib"]) * 1024 / count
            )
        fleet.check()
        return result
    finally:
        await fleet.close()
        await cloud.close()


async def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    nofile = raise_nofile()
    soft, hard = nofile["soft"], nofile["hard"]
    report: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "nofile": {"soft": soft, "hard": hard},
        "python": sys.version.split()[0],
        "ports": {"tcp": args.tcp_port, "http": args.http_port},
        "loop": event_loop.loop_name(asyncio.get_running_loop()),
    }
    report["keygen"] = await asyncio.to_thread(keygen_rates, args.keygen_sample)
    tmp = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    try:
        pool = KeyPool(args.pool or tmp / "keypool")
        runs = []
        if args.ready:
            fill = await asyncio.to_thread(fill_pool, pool, args.ready)
            report["ready_fill"] = fill
            runs.append(await one_fleet(args, pool, args.ready, state_dir=None, label="in-memory"))
            await asyncio.to_thread(fill_pool, pool, args.ready)
            state = tmp / "state"
            runs.append(
                await one_fleet(args, pool, args.ready, state_dir=state, label="state dir, first")
            )
            runs.append(
                await one_fleet(args, pool, args.ready, state_dir=state, label="state dir, restart")
            )
        report["ready_runs"] = runs
        fits = max(0, (hard - SCALE_FD_RESERVE) // 2)
        if args.scale:
            n = args.scale
            report["scale_requested"] = n
            own = args.listeners == "per-device" or shared_ports_supported() is not None
            if n > fits and own:
                report["scale_limited"] = (
                    f"{n} devices need {2 * n + SCALE_FD_RESERVE} file descriptors "
                    f"(2 listening sockets each + {SCALE_FD_RESERVE}); the hard limit "
                    f"RLIMIT_NOFILE is {hard} and cannot be raised here (no "
                    f"CAP_SYS_RESOURCE): running the largest N that fits, {fits}"
                )
                n = fits
            fill = await asyncio.to_thread(fill_pool, pool, n)
            report["scale_fill"] = fill
            report["scale"] = await one_fleet(
                args, pool, n, state_dir=None, label="scale", measure_memory=True
            )
        if args.scale_per_device:
            n = min(args.scale_per_device, fits)
            await asyncio.to_thread(fill_pool, pool, n)
            report["scale_per_device"] = await one_fleet(
                args,
                pool,
                n,
                state_dir=None,
                label="scale, own sockets",
                measure_memory=True,
                listeners="per-device",
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Fleet start-up time with a warm key pool, and devices per process "
        "with their memory.",
        epilog="Exit status: 0 (even on missed targets unless --enforce), 1 missed target "
        "with --enforce, 2 set-up failure.",
    )
    p.add_argument(
        "--ready", type=parse_non_negative_int, default=1000, help="warm-pool runs (default 1000)"
    )
    p.add_argument(
        "--scale", type=parse_non_negative_int, default=10000, help="scale run (default 10000)"
    )
    p.add_argument(
        "--keygen-sample", type=parse_non_negative_int, default=200, help="keys per rate (200)"
    )
    p.add_argument("--pool", type=Path, default=None, help="key pool dir (default: temporary)")
    p.add_argument("--tcp-port", type=int, default=5609, help="TCP port on each address")
    p.add_argument("--http-port", type=int, default=8080, help="HTTP port on each address")
    p.add_argument("--concurrency", type=int, default=128, help="devices started at a time")
    p.add_argument(
        "--listeners",
        choices=LISTENER_MODES,
        default="auto",
        help="the fleet's listeners (default auto: own sockets while descriptors allow)",
    )
    p.add_argument(
        "--scale-per-device",
        type=parse_non_negative_int,
        default=0,
        metavar="N",
        help="also a scale run of N devices with their own sockets (at most what fits)",
    )
    p.add_argument(
        "--loop",
        choices=event_loop.LOOP_CHOICES,
        default="auto",
        help="event loop (default auto: uvloop when installed, as softap-sim fleet)",
    )
    p.add_argument("--load-concurrency", type=int, default=64, help="requests at a time (64)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--enforce", action="store_true", help="exit 1 when a target is missed")
    p.add_argument("--load", action="store_true", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.load:
        return load_main(args)
    logging.basicConfig(level=logging.WARNING)

    def run() -> int:
        report = event_loop.run(run_benchmark(args), args.loop)
        missed = judge(report)
        show_report(report, missed, as_json=args.json, table=print_table)
        return 1 if args.enforce and missed else 0

    return run_main(
        "bench_fleet", run, errors=(BenchError, SimulatorError, OSError), label="set-up failed"
    )


if __name__ == "__main__":
    sys.exit(main())
