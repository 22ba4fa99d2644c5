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

Examples::

    python scripts/bench_fleet.py
    python scripts/bench_fleet.py --ready 1000 --scale 0 --json
    python scripts/bench_fleet.py --scale 5000 --pool /tmp/pool
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import io
import json
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

from softap_sim import event_loop  # noqa: E402
from softap_sim.argtypes import parse_non_negative_int  # noqa: E402
from softap_sim.errors import SimulatorError  # noqa: E402
from softap_sim.fleet import LISTENER_MODES, Fleet  # noqa: E402
from softap_sim.keypool import KeyPool, generate_pem  # noqa: E402
from softap_sim.listeners import shared_ports_supported  # noqa: E402
from softap_sim.protocol.client import parse_http_reply  # noqa: E402

#: descriptors kept free besides the listeners in the scale run (cloud, loader's
#: accepted connections, stdio, epoll ...)
SCALE_FD_RESERVE: Final = 200
READY_TARGET_S: Final = 5.0
RSS_TARGET_MIB: Final = 1024.0
REQUEST_TIMEOUT_S: Final = 30.0
SCRIPT: Final = str(Path(__file__).resolve())


def rss_mib() -> dict[str, float]:
    """This process's resident set size now and its peak, MiB."""
    return {k: v or 0.0 for k, v in memory_mib(os.getpid()).items()}


# ======================================================================================
# the load child: device-id over TCP and HTTP
# ======================================================================================
async def _device_id_tcp(host: str, port: int) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(b"device-id\n0\n\n")
        return await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _device_id_http(host: str, port: int) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(
            f"GET /device-id HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
        )
        return parse_http_reply(await reader.read(), "device-id").body
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def load(targets: list[list[Any]], concurrency: int) -> dict[str, Any]:
    """``targets``: [host, tcp port, http port, expected id]; both transports each."""
    sem = asyncio.Semaphore(concurrency)
    ok = {"tcp": 0, "http": 0}
    errors: list[str] = []

    async def one(kind: str, host: str, port: int, expected: str) -> None:
        async with sem:
            try:
                call = _device_id_tcp if kind == "tcp" else _device_id_http
                body = await asyncio.wait_for(call(host, port), REQUEST_TIMEOUT_S)
                got = json.loads(body.strip() or b"{}").get("id")
            except (OSError, TimeoutError, ValueError, SimulatorError) as err:
                errors.append(f"{kind} {host}:{port}: {type(err).__name__}: {err}")
                return
            if got == expected:
                ok[kind] += 1
            else:
                errors.append(f"{kind} {host}:{port}: id {got!r}, expected {expected}")

    t0 = time.perf_counter()
    await asyncio.gather(
        *(one("tcp", h, t, e) for h, t, _p, e in targets),
        *(one("http", h, p, e) for h, _t, p, e in targets),
    )
    elapsed = time.perf_counter() - t0
    return {
        "devices": len(targets),
        "tcp_ok": ok["tcp"],
        "http_ok": ok["http"],
        "errors": len(errors),
        "first_errors": errors[:3],
        "seconds": elapsed,
        "requests_per_s": (ok["tcp"] + ok["http"]) / elapsed if elapsed > 0 else 0.0,
    }


def load_main(args: argparse.Namespace) -> int:
    raise_nofile()
    targets = json.loads(sys.stdin.read())
    print(json.dumps(asyncio.run(load(targets, args.load_concurrency))))
    return 0


async def ask_all(fleet: Fleet, concurrency: int) -> dict[str, Any]:
    """Every device's device-id over TCP and HTTP, from a child process."""
    targets = [
        [
            d.emulator.tcp_address[0],
            d.emulator.tcp_address[1],
            d.emulator.http_address[1],
            d.device_id,
        ]
        for d in fleet
    ]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        SCRIPT,
        "--load",
        "--load-concurrency",
        str(concurrency),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate(json.dumps(targets).encode())
    if proc.returncode != 0:
        raise BenchError(f"the load process failed (exit status {proc.returncode})")
    result: dict[str, Any] = json.loads(out)
    return result


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


def judge(report: dict[str, Any]) -> list[str]:
    missed = []
    for run in report["ready_runs"]:
        if run["run"] == "in-memory" and run["ready_s"] > READY_TARGET_S:
            missed.append(f"{run['devices']} devices ready in {run['ready_s']:.2f} s > 5 s")
    for run in [*report["ready_runs"], *([report["scale"]] if "scale" in report else [])]:
        a = run["answers"]
        if a["errors"] or a["tcp_ok"] != run["devices"] or a["http_ok"] != run["devices"]:
            missed.append(f"{run['run']}: {a['errors']} device-id errors {a['first_errors']}")
        if run["distinct_ids"] != run["devices"] or run["distinct_ssids"] != run["devices"]:
            missed.append(f"{run['run']}: identities are not distinct")
    scale = report.get("scale")
    if scale is not None:
        if scale["peak_rss_mib"] > RSS_TARGET_MIB:
            missed.append(f"scale: peak RSS {scale['peak_rss_mib']:.0f} MiB > 1 GiB")
        if report.get("scale_limited"):
            missed.append(report["scale_limited"])
    return missed


def print_table(report: dict[str, Any], missed: list[str]) -> None:
    kg = report["keygen"]
    print(
        f"fleet benchmark: {report['cpus']} CPUs, Python {report['python']} "
        f"({report['loop']}), "
        f"RLIMIT_NOFILE {report['nofile']['soft']}/{report['nofile']['hard']}, ports TCP "
        f"{report['ports']['tcp']} / HTTP {report['ports']['http']} on each address"
    )
    if "serial_keys_per_s" in kg:
        print(
            f"RSA-1024 key generation ({kg['sample']} keys): serial "
            f"{kg['serial_keys_per_s']:.0f}/s, {kg['cpus']} threads "
            f"{kg['threads_keys_per_s']:.0f}/s, {kg['cpus']} worker processes (pool fill) "
            f"{kg['processes_keys_per_s']:.0f}/s"
        )
    if "ready_fill" in report:
        f = report["ready_fill"]
        rate = f"{f['keys_per_s']:.0f} keys/s" if f["keys_per_s"] else "-"
        print(f"warm-up: pool filled to {f['target']} in {f['seconds']:.1f} s ({rate})")
    head = (
        f"{'run':<20}{'devices':>8}{'ready s':>9}{'ms/dev':>8}{'keys s':>8}{'state s':>8}"
        f"{'start s':>8}{'pool/gen':>11}{'reg':>7}{'tcp ok':>8}{'http ok':>8}{'req/s':>8}"
        f"  listeners"
    )
    print()
    print(head)
    print("-" * len(head))
    runs = list(report["ready_runs"])
    scales = [report[k] for k in ("scale", "scale_per_device") if k in report]
    runs.extend(scales)
    for r in runs:
        a = r["answers"]
        print(
            f"{r['run']:<20}{r['devices']:>8}{r['ready_s']:>9.2f}"
            f"{r['per_device_startup_ms']:>8.2f}{r['keys_s']:>8.2f}{r['state_s']:>8.2f}"
            f"{r['devices_start_s']:>8.2f}"
            f"{str(r['keys_from_pool']) + '/' + str(r['keys_generated']):>11}"
            f"{r['registered']:>7}{a['tcp_ok']:>8}{a['http_ok']:>8}{a['requests_per_s']:>8.0f}"
            f"  {r['listeners']}"
        )
    for scale in scales:
        print()
        print(
            f"{scale['run']}: {scale['devices']} devices ({scale['listeners']} listeners, "
            f"{scale['first_address']} ... {scale['last_address']}) in one process: RSS "
            f"{scale['rss_before_mib']:.0f} MiB before, {scale['rss_ready_mib']:.0f} MiB ready, "
            f"{scale['rss_after_requests_mib']:.0f} MiB after {2 * scale['devices']} "
            f"device-id requests (process peak so far {scale['peak_rss_mib']:.0f} MiB); per device "
            f"{scale['per_device_kib']:.1f} KiB ready, "
            f"{scale['per_device_after_requests_kib']:.1f} KiB after the requests; "
            f"start-up {scale['ready_s']:.2f} s ({scale['per_device_startup_ms']:.2f} ms "
            "per device)"
        )
        if "live_view_poll_ms" in scale:
            print(
                f"  live view over all {scale['devices']} devices: one poll (last command, "
                f"claimed; {scale['live_view_served']} commands seen) "
                f"{scale['live_view_poll_ms']:.1f} ms (idle: "
                f"{scale['live_view_idle_poll_ms']:.1f} ms), one redraw "
                f"{scale['live_view_render_ms']:.1f} ms"
            )
        f = report.get("scale_fill") if scale is report.get("scale") else None
        if f and f["made"]:
            print(
                f"  (pool topped up to {f['target']} first: {f['made']} keys in "
                f"{f['seconds']:.1f} s, {f['keys_per_s']:.0f} keys/s)"
            )
    if report.get("scale_limited"):
        print(f"NOTE: {report['scale_limited']}")
    for line in missed:
        print(f"MISSED: {line}")


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
