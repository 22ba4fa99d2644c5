"""bench_setup's report: the tables, ours / theirs and ours / rev, the failure taxonomy.

The key number is the server CPU per completed setup: on a 2-core machine the one node
driver saturates first, so setups/s is mostly the driver's.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any, Final

from setup_results import STEPS, Run

#: ours/theirs CPU per completed setup (``--target`` changes it for the run)
CPU_TARGET: Final = 1.0


def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ms(value: float | None) -> str:
    """A latency in ms with as many decimals as are meaningful at its size."""
    if value is None:
        return "-"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 1000 else f"{value:.0f}"


def _per_s_ratio(a: dict[str, Any], b: dict[str, Any]) -> float | None:
    return (
        a["setups_per_s"] / b["setups_per_s"] if a["setups_per_s"] and b["setups_per_s"] else None
    )


def ratios(runs: Sequence[Run], target: float = CPU_TARGET) -> list[dict[str, Any]]:
    """ours/theirs server CPU per completed setup, per concurrency and our variant."""
    peers = {r.concurrency: r.summary() for r in runs if r.server == "peer"}
    out = []
    for r in runs:
        if r.server != "ours" or r.concurrency not in peers:
            continue
        ours, theirs = r.summary(), peers[r.concurrency]
        a, b = ours["server_cpu_ms_per_setup"], theirs["server_cpu_ms_per_setup"]
        ratio = a / b if a and b else None
        out.append(
            {
                "concurrency": r.concurrency,
                "ours": r.label,
                "ours_cpu_ms_per_setup": a,
                "theirs_cpu_ms_per_setup": b,
                "ratio": ratio,
                "target": target,
                "pass": ratio is not None and ratio <= target,
                "judged": not r.cloud,  # with the cloud step ours also runs the cloud
                "throughput_ratio": _per_s_ratio(ours, theirs),
            }
        )
    return out


def revision_ratios(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """ours/rev server CPU per completed setup: each ``rev`` run against the ``ours`` run
    of the same concurrency, cloud step and tweaks (for information, not judged)."""
    revs = {(r.concurrency, r.cloud, r.tweaks): r.summary() for r in runs if r.server == "rev"}
    out = []
    for r in runs:
        rev = revs.get((r.concurrency, r.cloud, r.tweaks))
        if r.server != "ours" or rev is None:
            continue
        ours = r.summary()
        a, b = ours["server_cpu_ms_per_setup"], rev["server_cpu_ms_per_setup"]
        out.append(
            {
                "concurrency": r.concurrency,
                "ours": r.label,
                "rev": rev["label"],
                "ours_cpu_ms_per_setup": a,
                "rev_cpu_ms_per_setup": b,
                "ratio": a / b if a and b else None,
                "throughput_ratio": _per_s_ratio(ours, rev),
            }
        )
    return out


def print_report(runs: Sequence[Run], args: argparse.Namespace) -> None:
    summaries = [r.summary() for r in runs]
    w = max([22, *(len(s["label"]) + 2 for s in summaries)])
    fleets = {
        f"{r['fleet']}, keys: {r['keys']}"
        for s in summaries
        for r in s["info"].get("rounds", [])
        if "fleet" in r
    }
    print(
        f"onboarding bench: {os.cpu_count()} CPUs; Python {sys.version.split()[0]}; driver "
        f"@particle/softap-setup 4.1.2 in one node process ({args.protocol.upper()} to ours, "
        "TCP to the peer); server CPU = the server process only"
    )
    for text in sorted(fleets):
        print(f"  our devices: {text}")
    head = (
        f"{'run':<{w}}{'K':>4}{'window':>8}{'ok':>6}{'fail':>5}{'setups/s':>9}"
        f"{'srv ms/setup':>13}{'srv CPU':>8}{'drv CPU':>8}{'other':>6}"
        f"{'setup p50':>10}{'p99':>8}{'claim p50':>10}{'p99':>8}{'listen ms':>10}"
    )
    print(head)
    print("-" * len(head))
    for s in summaries:
        claim = s["connect_ap_to_claimed_ms"] or {}
        ttl = s["time_to_listening_ms"]
        print(
            f"{s['label']:<{w}}{s['concurrency']:>4}{s['window_setups']:>8}{s['completed']:>6}"
            f"{s['failed']:>5}{_f(s['setups_per_s']):>9}"
            f"{_f(s['server_cpu_ms_per_setup'], 3):>13}"
            f"{_f((s['server_cpu_util'] or 0) * 100, 0) + '%':>8}"
            f"{_f((s['driver_cpu_util'] or 0) * 100, 0) + '%':>8}"
            f"{_f((s['other_cpu_util'] or 0) * 100, 0) + '%':>6}"
            f"{_f(s['setup_ms']['p50']):>10}{_f(s['setup_ms']['p99']):>8}"
            f"{_f(claim.get('p50')):>10}{_f(claim.get('p99')):>8}"
            f"{_f(ttl['p50']):>10}"
        )
    print(
        "  window: measured setups; srv/drv CPU: % of one core (server process, node driver);"
        " setup p50/p99 ms: driver's start -> connect callback (-> claim with the cloud);"
        " claim: connect-ap -> claimed ms (server side); listen ms: start -> listeners up (p50)"
    )
    print()
    print("per-command latency, ms (p50 / p95 / p99), driver side")
    print(f"{'run':<{w}}{'K':>4}  " + "".join(f"{n:>22}" for n in STEPS))
    for s in summaries:
        cells = []
        for name in STEPS:
            st = s["steps_ms"].get(name)
            cells.append(
                "-" if st is None else f"{_ms(st['p50'])}/{_ms(st['p95'])}/{_ms(st['p99'])}"
            )
        print(f"{s['label']:<{w}}{s['concurrency']:>4}  " + "".join(f"{c:>22}" for c in cells))
    extra = [s for s in summaries if s["server"] != "peer"]
    if extra:
        print()
        print("our server: time to listening and the cycle (ms, p50 / p99 / max)")
        for s in extra:
            ttl, rel, onl = (
                s["time_to_listening_ms"],
                s["relisten_ms"] or {},
                (s["connect_ap_to_online_ms"] or {}),
            )
            line = (
                f"  {s['label']:<{w}} K={s['concurrency']:<4} start->listening "
                f"{_f(ttl['p50'], 2)}/{_f(ttl['p99'], 2)}/{_f(ttl['max'], 2)}  "
                f"listen->listening {_f(rel.get('p50'), 2)}/{_f(rel.get('p99'), 2)}  "
                f"connect-ap->online {_f(onl.get('p50'), 2)}/{_f(onl.get('p99'), 2)}"
            )
            if s["cloud"]:
                c = s["connect_ap_to_claimed_ms"] or {}
                line += f"  connect-ap->claimed {_f(c.get('p50'), 2)}/{_f(c.get('p99'), 2)}"
            print(line)
    peers = [s for s in summaries if s["server"] == "peer"]
    for s in peers:
        print(
            f"  peer K={s['concurrency']}: node start -> port accepting "
            f"{_f(s['time_to_listening_ms']['p50'], 1)} ms"
        )
    rs = ratios(runs, args.target)
    if rs:
        print()
        print(
            f"server CPU per completed setup, ours / theirs (softap-emulator-js); "
            f"target <= {args.target:.1f}"
        )
        for r in rs:
            verdict = ("PASS" if r["pass"] else "FAIL") if r["judged"] else "(not judged)"
            note = "" if r["judged"] else "  ours includes the cloud (handshake + claim)"
            print(
                f"  K={r['concurrency']:<4} {r['ours']:<{w}} {_f(r['ours_cpu_ms_per_setup'], 3)} ms"
                f" / {_f(r['theirs_cpu_ms_per_setup'], 3)} ms = {_f(r['ratio'], 2)} "
                f"{verdict}   throughput ratio {_f(r['throughput_ratio'], 2)}{note}"
            )
    vs = revision_ratios(runs)
    if vs:
        print()
        print(
            f"server CPU per completed setup, ours / rev (the devices of --baseline-rev "
            f"{args.baseline_rev}, same fleet host; for information)"
        )
        for v in vs:
            print(
                f"  K={v['concurrency']:<4} {v['ours']:<{w}} {_f(v['ours_cpu_ms_per_setup'], 3)} ms"
                f" / {_f(v['rev_cpu_ms_per_setup'], 3)} ms = {_f(v['ratio'], 2)}   "
                f"throughput ratio {_f(v['throughput_ratio'], 2)}"
            )
    print()
    print("failure taxonomy (whole run, warm-up included)")
    any_failure = False
    for s in summaries:
        if s["failures"] or s["uncaught_total"] or s["server_errors"]:
            any_failure = True
            print(
                f"  {s['label']} K={s['concurrency']}: {s['failures_total']} of "
                f"{s['setups_total']} setups failed"
            )
            for text, n in s["failures"].items():
                print(f"    {n:>6}  {text}")
            if s["uncaught_total"]:
                print(
                    f"    {s['uncaught_total']:>6}  uncaught in the library, e.g. "
                    f"{s['uncaught'][0]!r}"
                )
            for err in s["server_errors"] or []:
                print(f"    server error: {err}")
    if not any_failure:
        print("  none: every setup completed")
    busy = [s for s in summaries if (s["other_cpu_util"] or 0) > 0.5]
    if busy:
        print(
            "  note: > 50% of a core went to other work in a window: setups/s is noisy, "
            "trust CPU per setup"
        )


def print_profile(path: str, limit: int = 25) -> None:
    import pstats

    print(f"\n== cProfile of our server process ({path}): top {limit} by own time ==")
    stats = pstats.Stats(path)
    stats.sort_stats("tottime").print_stats(limit)
    print("== the same, our code only (softap_sim, firmware_model), by cumulative time ==")
    stats.sort_stats("cumulative").print_stats(r"softap_sim|firmware_model", limit)
