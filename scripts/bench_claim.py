#!/usr/bin/env python3
"""Benchmark the device link of the embedded cloud: handshakes/s and connect-ap → claimed.

Issue text: "full handshakes per second, and time from connect-ap to claimed (p50/p99) in
fast timing mode, with N devices connecting at once (N = 1, 100, 1000). Report them."
(``scripts/bench_cloud.py`` measures the REST API; this script the Photon protocol.)

Method
------
The cloud always runs in its own process, started from this script (``--serve-cloud``):
``CloudService(None)`` (in-memory SQLite behind its worker thread, bootstrapped with the
default product and its two-legged client) and ``service.serve_devices("127.0.0.1", 0)``
(the TCP 5683 protocol on a free port). It prints one JSON line (pid, port, server public
key) and then takes JSON-line commands on stdin (register devices, make claim codes, read
counters) until stdin closes; it streams every ``spark/device/claim/confirm`` it
publishes (a ``cloud.subscribers`` callback) with its ``time.monotonic()``: on Linux that
clock (``CLOCK_MONOTONIC``) is system-wide, so it is compared with the bench's directly.
The devices run in this (main) process. So the cloud has a core of its own, as it would
in production, and its CPU time is measured alone (``sum_exec_runtime`` of
``/proc/<pid>/task/*/schedstat``, all threads; ``utime+stime`` of ``/proc/<pid>/stat``
as the fallback). A watchdog tick in the cloud's event loop (``--tick-ms``) records how
late it fires: the time that loop was blocked or starved.

Device keys: generating an RSA-1024 key costs a few ms to ~50 ms on a small machine, so
``--key-pool`` keys (default 16) are generated once per run and shared round-robin by
distinct device ids: device ``i`` uses key ``i % pool``. The registry maps id → public key
and does not require keys to be unique, and every handshake still does all of its RSA
work (the server looks the key up and parses it per handshake), so sharing keys changes
no measured cost; it only saves set-up time.

1. Handshakes/s (``--handshakes``, per ``--hs-concurrency`` value): a closed loop of C
   device-side clients written with the real device protocol, not the emulator:
   ``lightssl.DeviceHandshake`` (40-byte nonce in, 256-byte RSA block out, 384-byte
   reply in), ``lightssl.Channel``, a Hello (CON POST ``h``, the payload the emulated
   Photon sends) and the wait for the server's Hello. That is one *full handshake*; the
   client then closes (the server's online/Describe/offline bookkeeping for that session
   is part of its CPU per handshake). Every handshake uses its own registered device id
   (a fresh id avoids the server's "replace the older session" path). Reported:
   handshakes/s, p50/p99/max latency (connect → server Hello), cloud CPU per handshake,
   bench CPU per handshake, cloud loop lag.
2. connect-ap → claimed (``--devices``, default 1 100 1000; a fresh cloud process per N):
   N ``DeviceEmulator`` in fast timing (the default profile), each with in-memory state, a
   distinct identity ``DeviceIdentity.generate(random.Random(i))``, a pool key, port-0
   listeners, the radio environment ``HomeNet`` and the cloud's endpoint and public key.
   All N are registered (one batch) before any powers on. The cloud makes N shadow
   customers and a customer token each (``CloudBackend.create_customers_with_tokens``,
   resolved by ``backend.principal_for`` like the REST API does) and a product claim code
   each (``CloudBackend.create_claim_codes``). Over the device's own raw TCP protocol (port
   5609 emulated on a free port) each device gets ``set`` (the claim code) and
   ``configure-ap`` (the Wi-Fi password RSA-encrypted to the device's key); then
   ``connect-ap`` is sent to all N at once. The time is measured from the moment the
   device answered connect-ap (its first state change out of listening mode, an
   ``emu.on_state_change`` callback run right after the reply is written) to the cloud's
   claim confirmation (the cloud.subscribers callback above: the owner is committed and
   the confirm event is on its way to the device); the device's ONLINE transition splits
   it into "to online" (join + cloud handshake, retries included) and "online →
   claimed" (the claim-code event). Cloud connection attempts and failures are counted
   from the same callbacks. Afterwards each device's DCT is checked for ``claimed`` (a
   short bounded wait: the model has no claimed event to subscribe to). Reported per N:
   p50/p99/max of each span, the wall time from the connect-ap burst to the last
   claim, RSS (now and peak) of both processes, cloud CPU, SYNs dropped by full listen
   queues (machine-wide ``TcpExt ListenOverflows``), session-end reasons on both sides.
   Waiting is bounded by ``--claim-timeout`` per N; devices still unclaimed then are
   counted, not waited for. ``RLIMIT_NOFILE`` is raised (soft → hard) when N needs it.

The floor (issue text: "N x the measured cost of one handshake's RSA private operation ÷
usable cores", measured in the same run): right before each storm the bench times the
private operations of one handshake on this machine, single-threaded, median of
``--floor-reps``: the server's RSA-2048 PKCS#1 decrypt of the device block and its raw
type-1 signature of the HMAC, and the device's RSA-1024 decrypt of the session material.
``rsa_floor_s = N x that ÷ usable cores`` (``os.sched_getaffinity``). The report also gives
a second floor that counts all the work actually done: ``cpu_floor_s = (cloud CPU +
bench CPU during the storm) ÷ usable cores``, the wall time if both cores were busy all
the time. ``wall / floor`` is reported for both.

``--loop`` picks the event loop of both processes, as ``softap-sim run --loop`` does
(``auto``: uvloop when installed, the default of ``run`` and ``fleet``).

Benchmarks are not tests: the exit status is 0 whatever the numbers unless
``--enforce`` is given; then 1 when a target is missed (handshake errors or fewer than
``--min-handshake-rate`` handshakes/s; any device not claimed within the time bound, or
a claim p99 above ``--max-claim-p99-s``). 2 means set-up failed.

Examples::

    python scripts/bench_claim.py
    python scripts/bench_claim.py --devices 1 100 --handshakes 300 --json
    python scripts/bench_claim.py --skip-handshakes --devices 1000 --loop asyncio
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any, Final

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a plain script from a checkout
    sys.path.insert(0, str(REPO_ROOT))

from benchlib import positive_float, positive_int, run_main, show_report  # noqa: E402
from claim_cloud import LogCounter, install_log_counter, serve_main  # noqa: E402
from claim_handshakes import make_key_pool, run_handshakes  # noqa: E402
from claim_storm import run_claims, usable_cores  # noqa: E402

from softap_sim import event_loop  # noqa: E402


async def run_benchmark(args: argparse.Namespace, device_logs: LogCounter) -> dict[str, Any]:
    t0 = time.monotonic()
    pool = await asyncio.to_thread(make_key_pool, args.key_pool)
    keygen_s = time.monotonic() - t0
    report: dict[str, Any] = {
        "config": {
            "cpus": os.cpu_count(),
            "key_pool": args.key_pool,
            "keygen_s": keygen_s,
            "handshakes": args.handshakes,
            "hs_concurrency": list(args.hs_concurrency),
            "devices": list(args.devices),
            "claim_timeout_s": args.claim_timeout,
            "timing": "fast",
            "loop": args.loop,
            "usable_cores": usable_cores(),
            "tick_ms": args.tick_ms,
        },
        "handshakes": None,
        "claims": {},
    }
    if not args.skip_handshakes:
        report["handshakes"] = await run_handshakes(args, pool)
    for n in args.devices:
        report["claims"][str(n)] = await run_claims(args, pool, n, device_logs)
    return report


def judge(report: dict[str, Any], args: argparse.Namespace) -> list[str]:
    missed = []
    hs = report["handshakes"] or {"windows": []}
    for window in hs["windows"]:
        name = f"{window['concurrency']} clients"
        if window["errors"]:
            missed.append(f"handshakes {name}: {window['errors']} errors ({window['first_error']})")
        if window["concurrency"] > 1 and window["handshakes_per_s"] < args.min_handshake_rate:
            missed.append(
                f"handshakes {name}: {window['handshakes_per_s']:.1f}/s < "
                f"{args.min_handshake_rate}/s"
            )
    for n, res in report["claims"].items():
        if res["claimed"] < res["devices"]:
            missed.append(
                f"N={n}: {res['devices'] - res['claimed']} devices not claimed within "
                f"{res['claim_timeout_s']} s"
            )
        ratio = res["floor"]["wall_over_rsa_floor"]
        if ratio is not None and ratio > args.max_floor_ratio:
            missed.append(
                f"N={n}: wall {res['wall_s']:.2f} s = {ratio:.2f}x the RSA floor "
                f"{res['floor']['rsa_floor_s']:.3f} s > {args.max_floor_ratio}x"
            )
        p99 = res["connect_ap_to_claimed"]["p99_ms"]
        if p99 is not None and p99 / 1e3 > args.max_claim_p99_s:
            missed.append(f"N={n}: claim p99 {p99 / 1e3:.1f} s > {args.max_claim_p99_s} s")
    return missed


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _s(spread: dict[str, Any], key: str) -> str:
    value = spread.get(key)
    return "-" if value is None else f"{value / 1e3:.3f}"


def print_table(report: dict[str, Any], missed: list[str]) -> None:
    cfg = report["config"]
    print(
        f"device-link benchmark: {cfg['cpus']} CPUs, cloud in its own process, fast timing, "
        f"{cfg['key_pool']} RSA-1024 keys shared round-robin (made in {cfg['keygen_s']:.2f} s)"
        + f", {cfg['loop']} loop"
    )
    hs = report["handshakes"]
    if hs:
        print()
        print("full handshakes (nonce, RSA block, session reply, Hello both ways), closed loop")
        head = (
            f"{'clients':>8}{'done':>7}{'err':>5}{'hs/s':>8}{'p50 ms':>9}{'p99 ms':>9}"
            f"{'max ms':>9}{'cloud cpu ms/hs':>17}{'cloud util':>11}{'bench ms/hs':>12}"
            f"{'lag max ms':>11}{'ovfl':>6}"
        )
        print(head)
        print("-" * len(head))
        for w in hs["windows"]:
            lat, lag = w["latency"], w["cloud_loop_lag"] or {}
            print(
                f"{w['concurrency']:>8}{w['handshakes']:>7}{w['errors']:>5}"
                f"{w['handshakes_per_s']:>8.1f}{_fmt(lat['p50_ms']):>9}{_fmt(lat['p99_ms']):>9}"
                f"{_fmt(lat['max_ms']):>9}{_fmt(w['cloud_cpu_ms_per_handshake'], 2):>17}"
                f"{_fmt(w['cloud_cpu_utilisation'], 2):>11}"
                f"{_fmt(w['bench_cpu_ms_per_handshake'], 2):>12}"
                f"{_fmt(lag.get('max_ms')):>11}{_fmt(w['listen_overflows'], 0):>6}"
            )
    if report["claims"]:
        print()
        print(
            "connect-ap -> claimed (s): from the device's connect-ap reply to the cloud's "
            "claim confirmation; all N get connect-ap at once"
        )
        head = (
            f"{'N':>6}{'claimed':>9}{'p50':>8}{'p99':>8}{'max':>8}{'wall s':>8}"
            f"{'->online p50/p99':>18}{'online->claim p99':>19}{'attempts':>9}{'fails':>7}"
            f"{'cloud cpu s':>12}{'RSS MiB bench/cloud':>21}{'lag max ms':>11}{'ovfl':>6}"
        )
        print(head)
        print("-" * len(head))
        for n, r in report["claims"].items():
            total, online, claim = (
                r["connect_ap_to_claimed"],
                r["connect_ap_to_online"],
                r["online_to_claimed"],
            )
            lag = r["cloud_loop_lag"] or {}
            rss = f"{_fmt(r['bench_memory']['rss_mib'], 0)}/{_fmt(r['cloud_memory']['rss_mib'], 0)}"
            print(
                f"{n:>6}{r['claimed']:>9}{_s(total, 'p50_ms'):>8}{_s(total, 'p99_ms'):>8}"
                f"{_s(total, 'max_ms'):>8}{_fmt(r['wall_s'], 2):>8}"
                f"{_s(online, 'p50_ms') + '/' + _s(online, 'p99_ms'):>18}"
                f"{_s(claim, 'p99_ms'):>19}{r['cloud_attempts']:>9}{r['cloud_failures']:>7}"
                f"{_fmt(r['cloud_cpu_s'], 2):>12}{rss:>21}{_fmt(lag.get('max_ms')):>11}"
                f"{_fmt(r['listen_overflows'], 0):>6}"
            )
        for n, r in report["claims"].items():
            notes = [f"set-up {r['setup_s']:.1f} s"]
            if r["claimed_on_device"] != r["claimed"]:
                notes.append(f"claimed in the device DCT: {r['claimed_on_device']}")
            if r["connect_ap_errors"]:
                notes.append(f"connect-ap errors {r['connect_ap_errors']}")
            ends = {**r["cloud_logs"], **r["device_logs"]}
            ends.pop("cloud: sessions online", None)
            if ends:
                notes.append("; ".join(f"{k} x{v}" for k, v in sorted(ends.items())))
            print(f"  N={n}: " + ", ".join(notes))
            fl = r["floor"]
            rsa_ops = fl["rsa"]
            print(
                f"  N={n} floors ({fl['cores']} usable cores): RSA private ops per handshake "
                f"{rsa_ops['per_handshake_ms']:.3f} ms (server decrypt "
                f"{rsa_ops['server_decrypt_ms']:.3f} + sign {rsa_ops['server_sign_ms']:.3f} + "
                f"device decrypt {rsa_ops['device_decrypt_ms']:.3f}) -> RSA floor "
                f"{fl['rsa_floor_s']:.3f} s, wall/RSA floor {_fmt(fl['wall_over_rsa_floor'], 2)}; "
                f"CPU floor (cloud {r['cloud_cpu_s']:.2f} + bench {r['bench_cpu_s']:.2f} CPU-s) "
                f"{fl['cpu_floor_s']:.3f} s, wall/CPU floor {_fmt(fl['wall_over_cpu_floor'], 2)}"
            )
    for line in missed:
        print(f"MISSED: {line}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Full device handshakes/s against the embedded cloud, and the time from "
        "connect-ap to claimed with N emulated Photons connecting at once.",
        epilog="Exit status: 0 (even on missed targets unless --enforce), 1 missed target "
        "with --enforce, 2 set-up failure.",
    )
    parser.add_argument(
        "--handshakes",
        type=positive_int,
        default=400,
        help="handshakes per concurrency window (default 400)",
    )
    parser.add_argument(
        "--hs-concurrency",
        type=positive_int,
        nargs="+",
        default=[1, 32],
        help="concurrent device clients, one window each (default 1 32)",
    )
    parser.add_argument(
        "--hs-duration",
        type=positive_float,
        default=60.0,
        help="upper bound of a handshake window in seconds (default 60)",
    )
    parser.add_argument(
        "--devices",
        type=positive_int,
        nargs="*",
        default=[1, 100, 1000],
        help="N values of the connect-ap -> claimed runs (default 1 100 1000; none: skip)",
    )
    parser.add_argument(
        "--claim-timeout",
        type=positive_float,
        default=150.0,
        help="per N: longest wait for every claim after the connect-ap burst (default 150)",
    )
    parser.add_argument(
        "--key-pool",
        type=positive_int,
        default=16,
        help="RSA-1024 device keys, shared round-robin by the device ids (default 16)",
    )
    parser.add_argument(
        "--setup-concurrency",
        type=positive_int,
        default=64,
        help="devices started / prepared over SoftAP at a time (default 64)",
    )
    parser.add_argument("--skip-handshakes", action="store_true", help="only the claim runs")
    parser.add_argument(
        "--loop",
        choices=event_loop.LOOP_CHOICES,
        default="auto",
        help="event loop of both processes (default auto: uvloop when installed, as run)",
    )
    parser.add_argument(
        "--floor-reps",
        type=positive_int,
        default=300,
        help="repetitions of each RSA private operation for the floor (default 300)",
    )
    parser.add_argument(
        "--max-floor-ratio",
        type=positive_float,
        default=1.3,
        help="with --enforce: the claim storm's wall time / RSA floor at most (default 1.3)",
    )
    parser.add_argument(
        "--tick-ms", type=positive_float, default=5.0, help="cloud loop watchdog (default 5)"
    )
    parser.add_argument(
        "--profile-cloud",
        metavar="PATH",
        help="cProfile the cloud's event-loop thread in the handshake run (pstats to PATH; "
        "the RSA step runs in worker threads and is not in it)",
    )
    parser.add_argument(
        "--profile-devices",
        metavar="PATH",
        help="cProfile this process during the claim window(s) (pstats to PATH; last N wins)",
    )
    parser.add_argument(
        "--min-handshake-rate",
        type=float,
        default=20.0,
        help="--enforce: minimum handshakes/s of the concurrent windows (default 20)",
    )
    parser.add_argument(
        "--max-claim-p99-s",
        type=float,
        default=60.0,
        help="--enforce: maximum connect-ap -> claimed p99 in seconds (default 60)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--enforce", action="store_true", help="exit with status 1 when a target is missed"
    )
    parser.add_argument("--serve-cloud", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--nofile", type=int, default=4096, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.serve_cloud:
        return serve_main(args)
    device_logs = install_log_counter(cloud=False)

    def run() -> int:
        report = event_loop.run(run_benchmark(args, device_logs), args.loop)
        missed = judge(report, args)
        show_report(report, missed, as_json=args.json, table=print_table)
        return 1 if args.enforce and missed else 0

    return run_main("bench_claim", run, label="set-up failed")


if __name__ == "__main__":
    sys.exit(main())
