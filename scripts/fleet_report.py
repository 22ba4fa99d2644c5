"""bench_fleet's targets and table: the issue's goals judged, the runs printed.

Apart from the runs so the numbers a target is judged on and the table that shows them
can be read (and changed) without the set-up code around them.
"""

from __future__ import annotations

from typing import Any, Final

READY_TARGET_S: Final = 5.0
RSS_TARGET_MIB: Final = 1024.0


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
