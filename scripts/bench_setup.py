#!/usr/bin/env python3
"""Onboarding bench: the real npm setup client against a fleet of emulated Photons.

Issue text: "runs the real npm client libraries (the apps available here) through the full
setup against a fleet at a chosen concurrency, in fast or realistic timing, with or without
the cloud step, and prints onboarding metrics: setups/s, time to listening, per-command
p50/p95/p99, connect-ap → claimed p50/p99, failure taxonomy. JSON output for CI, plus a PNG
chart of the latency distribution. Peer comparison in the same run: the same driver against
softap-emulator-js@1.0.3 ... compare server CPU time per completed setup (user+sys of the
server process): report ours/theirs. Target ≤ 1.0."

Method
------
Three kinds of processes per measured run (``--concurrency`` K, one run per K and variant):

* **our server** (``--serve``, this script in its own process): K devices as a
  ``softap_sim.fleet.Fleet`` (each on its own loopback address 127.0.x.y, free ports, its
  own RSA-1024 key, in-memory state by default; ``--state persistent`` gives each its own
  state directory). ``--fleet off`` (or without that module) starts K plain
  ``DeviceEmulator``s on 127.0.0.1 instead, with a small pool of keys shared round-robin
  (``--key-pool``). Timing ``--timing fast|realistic``; a simulated home network
  ``HomeNet`` (WPA2, the password the driver sends); the device really decrypts every
  ``configure-ap`` password with its private key. Only public hooks are used
  (``on_state_change``, ``on_access_point_change``, ``fire``). With
  ``--cloud on`` the same process also runs the embedded cloud (``CloudService(None)``,
  in-memory SQLite on its worker thread, the device endpoint TCP 5683 on a free port);
  every device is registered and owned by a shadow customer of the default product, gets
  a fresh product claim code for every setup, connects to the cloud after its join (RSA
  handshake, AES channel, CoAP) and publishes the code; the cloud claims it and confirms.
* **the driver** (``scripts/setup_load.js``, ONE node process): K concurrent setups, each
  with a fresh client object of ``@particle/softap-setup`` 4.1.2 (the pinned copy in
  ``tests/clients/node_modules``), the full sequence deviceInfo, scan, publicKey,
  setClaimCode, configure (RSA-encrypted password), connect over TCP (``--protocol http``
  for HTTP). 4.x opens a throw-away ``device-id`` connection before its first command, so
  one setup = 7 TCP connections. With the cloud step a setup ends when the cloud confirmed
  the claim (the driver is told by the server process). Per setup it reports each step's
  latency (callback time) and the error text of a failed step. Over HTTP the driver drops
  node's idle keep-alive sockets to a device before each setup on it (between two real
  setups the phone changes networks; see setup_load.js).
* **the peer** (``--peer``, on by default): ``softap-emulator-js`` 1.0.3 from npm, its own
  ``main.js`` run by node, unmodified except for its port (``settings.tcp_port`` is set to a
  free port before ``main.js`` is required, so a running softap-sim on 5609 is not hit).
  It is TCP only and stateless (no crypto, no AP teardown), so the driver runs the same
  steps against it in "free" mode: K workers back to back on the one port. All six steps
  work with 4.x (``c`` is a boolean, so 4.x reads "not claimed"; the 10-character write
  pieces are reassembled because 4.x parses on every chunk; see clients.md §2.7).

A device serves one setup per listening session, as a Photon does: after ``connect-ap``
the AP goes down and the device joins and goes online. Gated mode keeps the fleet cycling:
the server process tells the driver "device i is ready" (listening; plus its claim code)
over a pipe, the driver runs one setup on it and answers "recycle i" over another pipe;
the server waits for the device to be online (and, with the cloud, claimed) and puts it
back into listening mode (``emu.fire(ListenRequested())``, what ``softap-sim ctl listen``
does);
when its listeners are up again it says "ready" again. Those messages go directly between
the two processes, not through this one.

Measured window: after ``--warmup`` finished setups, CPU time is sampled; after ``--setups``
more, again. Server CPU is ``sum_exec_runtime`` of ``/proc/<pid>/task/*/schedstat`` (all
threads; the same quantity as utime+stime of ``/proc/<pid>/stat``, in ns), for the server
process only: the emulator process (devices, and the cloud when on) or the peer's node
process. Reported per run:

* setups/s: setups that completed in the window / window length;
* CPU per completed setup: server CPU in the window / completed setups (the key number:
  on a 2-core machine the one node driver saturates at a few hundred setups/s, before the
  peer, so setups/s is mostly the driver's; CPU per setup is the price of each server's
  code path, whoever the bottleneck is). ``ours/theirs`` = our CPU per setup / the peer's
  at the same concurrency; target ≤ 1.0, judged without the cloud step (with it, ours
  also runs the cloud: RSA handshake, AES, CoAP, SQLite);
* per-command p50/p95/p99 (driver side, from the library call to its callback), and the
  whole setup's p50/p95/p99;
* connect-ap → claimed p50/p99 (cloud step): from the device's ``connect-ap`` reply (its
  state change out of listening) to the cloud's claim confirmation, both in the server
  process; also connect-ap → online;
* time to listening: emulator ``start()`` → both listeners up, per device (and, in the
  window, ``listen`` → listeners up again); for the peer, node start → port accepting;
* failure taxonomy: failed setups grouped by step and normalised error text (addresses
  and ports removed), over the whole run (warm-up included).

What-ifs (``--what-if A+B``, repeatable) add variants of ours without the cloud, to
measure what a change would buy (or cost) before making it: ``asyncio-loop`` (asyncio's
loop, not uvloop: ours runs on the loop ``softap-sim run`` uses, uvloop when installed),
``python-rsa`` (the RSA private operation with the builtin ``pow``, not GMP:
``firmware_model.keys.use_powmod``, in the server process only), ``no-record`` (no
transcript), ``persistent`` (a state directory per device); ``--help`` lists them. (The
former ``fast-hex`` what-if is gone: the model's ``hex_decode`` has that ``bytes.fromhex``
fast path itself since 2f125b6.) ``--rounds R`` repeats every measurement, alternating the
servers, and sums the windows, so load from other programs on a shared machine hits all of
them alike; the "other" column shows how much there was.

``--baseline-rev REV`` also measures the devices of git revision REV in the same run:
``firmware_model`` and ``softap_sim`` of REV are extracted with ``git archive`` into a
temporary directory and a second server process runs with ``PYTHONPATH`` there (it checks
that it imported them from there). Both server processes run this script's own fleet host
(the setup cycle, the hooks, the cloud step), so what differs is the devices' code alone;
ours already runs in a process of its own, so the comparison is like for like. Each
``rev`` run is measured right after the ``ours`` run of the same settings, every round,
and reported as ours / rev server CPU per completed setup (for information, not judged).
``--profile-server PREFIX`` runs cProfile in our server process and prints the top
functions.

Benchmarks are not tests: the exit status is 0 whatever the numbers unless ``--enforce``
is given (then 1 if a ratio is above ``--target`` or a setup failed). 2 means set-up
failed (no numbers).

Examples::

    python scripts/bench_setup.py              # K = 1 10 50, fast timing, no cloud, with the peer
    python scripts/bench_setup.py --concurrency 10 --cloud both --json out.json --chart out.png
    python scripts/bench_setup.py --timing realistic --concurrency 10 --setups 20 --no-peer
    python scripts/bench_setup.py --concurrency 10 --profile-server /tmp/ours   # cProfile
    python scripts/bench_setup.py --concurrency 10 --what-if asyncio-loop --what-if python-rsa
    python scripts/bench_setup.py --concurrency 10 --setups 300 --no-peer --baseline-rev HEAD~1
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchlib import BenchError, extract_revision, run_main
from setup_chart import write_chart
from setup_report import CPU_TARGET, print_profile, print_report, ratios, revision_ratios
from setup_results import STEPS, Run
from setup_runs import CLIENTS, progress, run_ours, run_peer
from setup_serve import TWEAKS, serve_main


def _what_if(text: str) -> tuple[str, ...]:
    tweaks = tuple(dict.fromkeys(t.strip() for t in text.split("+") if t.strip()))
    unknown = [t for t in tweaks if t not in TWEAKS]
    if not tweaks or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown tweak(s) {unknown or text!r}; use {', '.join(TWEAKS)} joined by '+'"
        )
    return tweaks


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=(
            "Onboarding bench: the real @particle/softap-setup 4.1.2 client runs full setups "
            "against a fleet of emulated Photons (and against softap-emulator-js 1.0.3 for "
            "comparison); setups/s, latencies, connect-ap -> claimed, failures, server CPU "
            "per setup."
        ),
        epilog="The method is described at the top of this script.",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=[1, 10, 50],
        metavar="K",
        help="concurrent setups = devices in the fleet (default: 1 10 50)",
    )
    p.add_argument("--timing", choices=("fast", "realistic"), default="fast")
    p.add_argument(
        "--cloud",
        choices=("off", "on", "both"),
        default="off",
        help="the cloud step: each setup waits until the device is claimed",
    )
    p.add_argument(
        "--protocol",
        choices=("tcp", "http"),
        default="tcp",
        help="transport to our devices (the peer is TCP only)",
    )
    p.add_argument(
        "--state",
        choices=("memory", "persistent"),
        default="memory",
        help="device state in memory (default) or a state directory per device",
    )
    p.add_argument(
        "--what-if",
        action="append",
        default=[],
        metavar="TWEAK[+TWEAK...]",
        type=_what_if,
        help="also measure a variant of ours without the cloud (repeatable); "
        "tweaks: " + "; ".join(f"{k}: {v}" for k, v in TWEAKS.items()),
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="repeat every measurement, alternating the servers, and sum (default 1)",
    )
    p.add_argument(
        "--peer",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run softap-emulator-js 1.0.3 (default: yes)",
    )
    p.add_argument(
        "--setups",
        type=int,
        default=None,
        help="measured setups per run (default: fast max(500, 10K), realistic max(10, 3K))",
    )
    p.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="setups before the window (default: fast max(20, 2K), realistic K)",
    )
    p.add_argument(
        "--fleet",
        choices=("auto", "on", "off"),
        default="auto",
        help="run the devices as a softap_sim.fleet.Fleet (own 127.0.x.y address each; "
        "auto: when that module exists) or as plain DeviceEmulators on 127.0.0.1 (off)",
    )
    p.add_argument(
        "--key-pool",
        type=int,
        default=8,
        help="without the fleet: RSA-1024 device keys made at start-up, shared round-robin "
        "(the fleet gives each device its own key)",
    )
    p.add_argument("--step-timeout-ms", type=int, default=15000)
    p.add_argument("--claim-timeout-ms", type=int, default=30000)
    p.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="FILE",
        help="write the JSON report to FILE (or stdout with no FILE; the table "
        "then goes to stderr)",
    )
    p.add_argument("--chart", metavar="PNG", help="write a latency chart (needs matplotlib)")
    p.add_argument(
        "--profile-server",
        metavar="PREFIX",
        help="cProfile our server process; PREFIX-<run>.pstats, top functions printed",
    )
    p.add_argument(
        "--target",
        type=float,
        default=CPU_TARGET,
        help="ours/theirs CPU per setup target (default 1.0)",
    )
    p.add_argument(
        "--enforce",
        action="store_true",
        help="exit 1 when a judged ratio misses --target or a setup failed",
    )
    p.add_argument(
        "--baseline-rev",
        metavar="REV",
        default=None,
        help="also measure the devices of this git revision (extracted with git archive) "
        "beside ours in the same run, alternating, and report ours / rev",
    )
    p.add_argument("--node", default=None, help="node binary (default: node on PATH)")
    # internal: the server process
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--devices", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--events-fd", type=int, default=-1, help=argparse.SUPPRESS)
    p.add_argument("--requests-fd", type=int, default=-1, help=argparse.SUPPRESS)
    p.add_argument("--profile-out", default=None, help=argparse.SUPPRESS)
    p.add_argument(
        "--tweak", action="append", default=[], choices=tuple(TWEAKS), help=argparse.SUPPRESS
    )
    return p


def plan_runs(args: argparse.Namespace, rev_tree: str | None) -> list[list[tuple[Run, str]]]:
    """Per concurrency, the runs measured together: ours per cloud setting (and the
    ``--baseline-rev`` devices beside each), the what-ifs, the peer."""
    clouds = {"off": [False], "on": [True], "both": [False, True]}[args.cloud]
    base = ("persistent",) if args.state == "persistent" else ()
    groups = []
    for k in args.concurrency:
        group: list[tuple[Run, str]] = []
        for cloud in clouds:
            run = Run("ours", k, cloud, args.timing, args.protocol, base)
            group.append((run, f"k{k}-{'cloud' if cloud else 'nocloud'}"))
            if rev_tree is not None:
                rev = Run("rev", k, cloud, args.timing, args.protocol, base, pythonpath=rev_tree)
                group.append((rev, f"k{k}-rev-{'cloud' if cloud else 'nocloud'}"))
        for what in dict.fromkeys(args.what_if):
            tweaks = tuple(dict.fromkeys((*base, *what)))
            run = Run("ours", k, False, args.timing, args.protocol, tweaks)
            if run.label not in {r.label for r, _ in group}:
                group.append((run, f"k{k}-{'-'.join(what)}"))
        if args.peer:
            group.append((Run("peer", k, False, "n/a", "tcp"), ""))
        groups.append(group)
    return groups


def run_benchmark(args: argparse.Namespace) -> int:
    node = args.node or shutil.which("node")
    if not node:
        raise BenchError("node is not on PATH (the driver is a node script)")
    if not (CLIENTS / "@particle" / "softap-setup").is_dir():
        raise BenchError(
            f"the pinned npm clients are missing in {CLIENTS}: run 'npm ci' in tests/clients"
        )
    if args.chart:  # fail early, not after minutes of measuring
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print(
                "bench_setup: note: --chart needs matplotlib (pip install matplotlib); "
                "the chart will be skipped",
                file=sys.stderr,
            )
    if any(k < 1 for k in args.concurrency):
        raise BenchError("--concurrency values must be >= 1")
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="bench-setup-rev-") as tmp:
        rev_tree = None
        if args.baseline_rev:
            progress(f"extracting revision {args.baseline_rev} into {tmp}")
            rev_tree = str(extract_revision(args.baseline_rev, Path(tmp)))
        for group in plan_runs(args, rev_tree):
            # rounds alternate the servers, so background load on a shared machine hits
            # all alike
            for _ in range(args.rounds):
                for run, tag in group:
                    if run.server == "peer":
                        run_peer(args, node, run)
                    else:
                        run_ours(args, node, run, tag)
            runs.extend(run for run, _ in group)
    report = build_report(args, node, runs)
    to_stdout = args.json == "-"
    with contextlib.redirect_stdout(sys.stderr) if to_stdout else contextlib.nullcontext():
        print_report(runs, args)
        if args.chart and write_chart(runs, args.chart, args):
            print(f"\nchart: {args.chart}")
        for r in runs:
            for path in r.info.get("profiles", []):
                print_profile(path)
    if args.json:
        text = json.dumps(report, indent=2)
        if to_stdout:
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    if args.enforce:
        judged = [r for r in report["ratios"] if r["judged"]]
        failed = any(s["failures_total"] for s in report["runs"])
        if failed or not all(r["pass"] for r in judged):
            return 1
    return 0


def build_report(args: argparse.Namespace, node: str, runs: Sequence[Run]) -> dict[str, Any]:
    """The JSON report: the configuration, every run's summary and the ratios."""
    report: dict[str, Any] = {
        "config": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "node": subprocess.run(
                [node, "--version"], capture_output=True, text=True, check=False
            ).stdout.strip(),
            "client": "@particle/softap-setup 4.1.2",
            "peer": "softap-emulator-js 1.0.3" if args.peer else None,
            "timing": args.timing,
            "protocol": args.protocol,
            "state": args.state,
            "concurrency": list(args.concurrency),
            "cloud": args.cloud,
            "what_if": ["+".join(w) for w in dict.fromkeys(args.what_if)],
            "tweaks": TWEAKS,
            "rounds": args.rounds,
            "steps": list(STEPS),
            "target": args.target,
        },
        "runs": [r.summary() for r in runs],
        "ratios": ratios(runs, args.target),
    }
    if args.baseline_rev:
        report["config"]["baseline_rev"] = args.baseline_rev
        report["versus_revision"] = revision_ratios(runs)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.serve:
        return serve_main(args)
    return run_main("bench_setup", lambda: run_benchmark(args))


if __name__ == "__main__":
    sys.exit(main())
