#!/usr/bin/env python3
"""Benchmark: does a flood on the REST API delay a device's handshake? (issue 11, item 4)

Issue text: "A flood of password grants through the public developer client delayed a
real device's handshake to 14.8 s ... Measure: handshake latency with and without a grant
flood in one run (benchmark)."

Method
------
The cloud runs in a child process (``--serve``): ``CloudService`` with a file-backed
database in a temporary directory, the REST API and the device endpoint on free loopback
ports, and ``--devices`` registered devices (RSA-1024 keys made here). It prints one JSON
line (ports, credentials, server key) and serves until its stdin closes.

This process then measures, one after the other in the same run:

1. **quiet**: ``--handshakes`` full device handshakes (nonce, RSA block, session reply,
   Hello both ways, as ``scripts/bench_claim.py`` does them), one at a time, each from
   connect to the server's Hello;
2. **flood**: the same handshakes while ``--flood`` concurrent clients send password
   grants through the public developer client ``particle``/``particle`` as fast as they
   are answered (each is a scrypt check: ~30 ms of CPU by design), for as long as the
   handshakes take.

Reported: handshake p50/p99/max in both phases and their ratio, the grants answered in the
flood by status (200 ok, 400 bad password, 429 rate limited: the bounded scrypt queue), and
the grants' own p50/p99. The device's own connect timeout is 10 s
(``softap_sim.transports.cloud_link``); ``--enforce`` exits 1 when a flood handshake takes longer
than ``--max-flood-handshake-s`` (default 1.0) or fails, 2 on set-up failure.

Examples::

    python scripts/bench_isolation.py
    python scripts/bench_isolation.py --handshakes 200 --flood 64 --json
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a plain script from a checkout
    sys.path.insert(0, str(REPO_ROOT))

import aiohttp  # noqa: E402
from benchlib import (  # noqa: E402
    AsyncChild,
    BenchError,
    announce,
    positive_float,
    positive_int,
    quantile,
    read_pipe,
    run_main,
    show_report,
)
from claim_handshakes import (  # noqa: E402
    HandshakeFailed,
    device_handshake,
    make_key_pool,
    public_pems,
)
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402

from softap_sim import event_loop  # noqa: E402
from softap_sim.protocol.lightssl import ChannelError  # noqa: E402

HOST: Final = "127.0.0.1"
READY_TIMEOUT_S: Final = 60.0
STOP_TIMEOUT_S: Final = 10.0
SCRIPT: Final = str(Path(__file__).resolve())


# ==================================================================================
# the cloud (--serve)
# ==================================================================================
async def _serve(state_dir: Path, devices: list[list[str]]) -> None:
    from softap_sim.cloud.service import CloudService

    service = CloudService(state_dir)
    await service.open()
    try:
        rest = await service.serve(HOST, 0)
        dev = await service.serve_devices(HOST, 0)
        errors = await service.backend.register_devices((d, pem) for d, pem in devices)
        if any(errors):
            raise BenchError(f"registration failed: {next(e for e in errors if e)}")
        announce(
            {
                "pid": os.getpid(),
                "url": rest.url,
                "device_port": dev.port,
                "credentials": service.created_credentials,
                "server_public_key_pem": service.server_public_key_pem.decode("ascii"),
            }
        )
        reader = await read_pipe()
        while await reader.readline():
            pass
    finally:
        await service.close()


def serve_main(args: argparse.Namespace) -> int:
    # a session ending when the bench closes after the server's Hello is not news
    logging.getLogger("softap_sim").setLevel(logging.ERROR)
    devices = json.loads(Path(args.devices_file).read_text())
    event_loop.run(_serve(Path(args.state_dir), devices), args.loop)
    return 0


# ==================================================================================
# the measurement
# ==================================================================================
def _spread(values: list[float]) -> dict[str, Any]:
    ordered = sorted(values)
    if not ordered:
        return {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    return {
        "n": len(ordered),
        "p50_ms": quantile(ordered, 0.5) * 1e3,
        "p99_ms": quantile(ordered, 0.99) * 1e3,
        "max_ms": ordered[-1] * 1e3,
    }


async def _handshakes(
    port: int, server_key: rsa.RSAPublicKey, pool: list[Any], ids: list[bytes], count: int
) -> tuple[list[float], list[str]]:
    times: list[float] = []
    failures: list[str] = []
    for i in range(count):
        j = i % len(ids)  # device j was registered with key j % len(pool)
        started = time.monotonic()
        try:
            await device_handshake(HOST, port, server_key, pool[j % len(pool)], ids[j])
        except (OSError, TimeoutError, ValueError, ChannelError, HandshakeFailed) as err:
            failures.append(f"{type(err).__name__}: {err}")
            continue
        times.append(time.monotonic() - started)
    return times, failures


async def _flood(
    url: str, creds: dict[str, Any], clients: int, stop: asyncio.Event
) -> dict[str, Any]:
    statuses: collections.Counter[int] = collections.Counter()
    latencies: list[float] = []
    form = {
        "grant_type": "password",
        "username": creds["user"]["email"],
        "password": "not-the-password",
        "client_id": "particle",
        "client_secret": "particle",
    }

    async def one_client() -> None:
        async with aiohttp.ClientSession(url) as http:
            while not stop.is_set():
                started = time.monotonic()
                async with http.post("/oauth/token", data=form) as resp:
                    await resp.read()
                    statuses[resp.status] += 1
                latencies.append(time.monotonic() - started)

    tasks = [asyncio.ensure_future(one_client()) for _ in range(clients)]
    await stop.wait()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {"statuses": dict(statuses), "latency": _spread(latencies)}


async def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    pool = await asyncio.to_thread(make_key_pool, min(args.devices, 8))
    ids = [os.urandom(12) for _ in range(args.devices)]
    pems = public_pems(pool)
    devices = [[d.hex(), pems[i % len(pems)]] for i, d in enumerate(ids)]
    with tempfile.TemporaryDirectory(prefix="bench-isolation-") as tmp:
        devices_file = Path(tmp) / "devices.json"
        devices_file.write_text(json.dumps(devices))
        state = Path(tmp) / "state"
        state.mkdir()
        argv = [SCRIPT, "--serve", "--state-dir", str(state), "--devices-file", str(devices_file)]
        cloud = AsyncChild("the cloud", [sys.executable, *argv, "--loop", args.loop])
        try:
            info = await cloud.start(READY_TIMEOUT_S)
            key = serialization.load_pem_public_key(info["server_public_key_pem"].encode())
            if not isinstance(key, rsa.RSAPublicKey):
                raise BenchError("the server key is not RSA")
            port = int(info["device_port"])
            await _handshakes(port, key, pool, ids, 5)  # warm-up
            quiet, quiet_fail = await _handshakes(port, key, pool, ids, args.handshakes)
            stop = asyncio.Event()
            flood = asyncio.ensure_future(
                _flood(info["url"], info["credentials"], args.flood, stop)
            )
            await asyncio.sleep(args.flood_ramp_s)  # let the flood fill every queue
            loud, loud_fail = await _handshakes(port, key, pool, ids, args.handshakes)
            stop.set()
            flood_stats = await flood
        finally:
            await cloud.stop(STOP_TIMEOUT_S)
    quiet_s, loud_s = _spread(quiet), _spread(loud)
    return {
        "config": {
            "handshakes": args.handshakes,
            "flood_clients": args.flood,
            "devices": args.devices,
            "loop": args.loop,
            "cpus": os.cpu_count(),
        },
        "quiet": {**quiet_s, "failures": quiet_fail},
        "flood": {**loud_s, "failures": loud_fail},
        "p99_ratio": (
            loud_s["p99_ms"] / quiet_s["p99_ms"] if loud_s["p99_ms"] and quiet_s["p99_ms"] else None
        ),
        "grants": flood_stats,
    }


def judge(report: dict[str, Any], args: argparse.Namespace) -> list[str]:
    missed = []
    flood = report["flood"]
    if flood["failures"] or report["quiet"]["failures"]:
        missed.append(f"handshakes failed: {(flood['failures'] or report['quiet']['failures'])[0]}")
    if flood["max_ms"] is not None and flood["max_ms"] / 1e3 > args.max_flood_handshake_s:
        missed.append(
            f"a handshake under the flood took {flood['max_ms'] / 1e3:.2f} s "
            f"> {args.max_flood_handshake_s} s"
        )
    return missed


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def print_report(report: dict[str, Any], missed: list[str]) -> None:
    cfg = report["config"]
    print(
        f"handshakes alone and under a flood of {cfg['flood_clients']} password-grant clients "
        f"(public developer client, scrypt each); {cfg['cpus']} CPUs, {cfg['loop']} loop"
    )
    for phase in ("quiet", "flood"):
        r = report[phase]
        print(
            f"  {phase:<6} {r['n']:>5} handshakes  p50 {_fmt(r['p50_ms'])} ms  "
            f"p99 {_fmt(r['p99_ms'])} ms  max {_fmt(r['max_ms'])} ms  failures {len(r['failures'])}"
        )
    ratio = report["p99_ratio"]
    print(f"  p99 flood/quiet: {'-' if ratio is None else f'{ratio:.2f}x'}")
    grants = report["grants"]
    lat = grants["latency"]
    print(
        f"  grants during the flood: {lat['n']} answered, by status {grants['statuses']}; "
        f"p50 {_fmt(lat['p50_ms'])} ms, p99 {_fmt(lat['p99_ms'])} ms"
    )
    for line in missed:
        print(f"MISSED: {line}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Device handshake latency with and without a password-grant flood."
    )
    parser.add_argument("--handshakes", type=positive_int, default=100, help="per phase")
    parser.add_argument("--flood", type=positive_int, default=32, help="concurrent grant clients")
    parser.add_argument("--devices", type=positive_int, default=50, help="registered devices")
    parser.add_argument(
        "--flood-ramp-s", type=positive_float, default=1.0, help="flood time before measuring"
    )
    parser.add_argument(
        "--max-flood-handshake-s",
        type=positive_float,
        default=1.0,
        help="with --enforce: the slowest handshake under the flood at most (default 1.0)",
    )
    parser.add_argument("--loop", choices=event_loop.LOOP_CHOICES, default="auto")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--enforce", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--state-dir", help=argparse.SUPPRESS)
    parser.add_argument("--devices-file", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.serve:
        return serve_main(args)

    def run() -> int:
        report = event_loop.run(run_benchmark(args), args.loop)
        missed = judge(report, args)
        show_report(report, missed, as_json=args.json, table=print_report)
        return 1 if args.enforce and missed else 0

    return run_main("bench_isolation", run)


if __name__ == "__main__":
    sys.exit(main())
