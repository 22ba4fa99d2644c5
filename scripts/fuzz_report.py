"""fuzz_cloud's goals and report: internal errors joined to requests, goals judged.

The child's stderr and ``errors.jsonl`` are read after it stopped; aiohttp's parser
refusing the raw malformed requests is expected and counted apart, everything else with a
traceback is an internal error. Each distinct error (exception and the line of our code
it came through) is reported once with the smallest request that caused it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any, Final

from benchlib import REPO_ROOT
from fuzz_load import MAX_REPORTED, Stats
from fuzz_setup import Child

RECORD_START: Final = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ")
PARSER_EXCEPTION: Final = re.compile(r"^aiohttp\.http_exceptions\.\w+: 400")


def stderr_records(text: str) -> list[list[str]]:
    """The child's stderr as log records: the record line and its continuation lines."""
    records: list[list[str]] = []
    for line in text.splitlines():
        if RECORD_START.match(line) or not records:
            records.append([line])
        else:
            records[-1].append(line)
    return records


def read_internal_errors(child: Child, stats: Stats) -> dict[str, Any]:
    text = child.stderr_log.read_text(errors="replace") if child.stderr_log.exists() else ""
    tracebacks = parser_tracebacks = 0
    error_lines: list[str] = []
    parser_lines = 0
    for record in stderr_records(text):
        parser = any(PARSER_EXCEPTION.match(ln) for ln in record) and "aiohttp" in record[0]
        n_tb = sum(1 for ln in record if ln.startswith("Traceback"))
        n_err = [ln for ln in record if " ERROR " in ln]
        if parser:
            parser_tracebacks += n_tb
            parser_lines += len(n_err)
        else:
            tracebacks += n_tb
            error_lines.extend(n_err)
    records: list[dict[str, Any]] = []
    if child.errors_path.exists():
        for line in child.errors_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                records.append(json.loads(line))
    distinct: dict[str, dict[str, Any]] = {}
    parser_rejections: Counter[str] = Counter()
    exc_by_fuzz_id: dict[str, str] = {}
    for rec in records:
        if rec.get("parser_rejection"):
            parser_rejections[f"{rec.get('exc_type')}: {rec.get('exc', '').splitlines()[:2]}"] += 1
            continue
        exc_by_fuzz_id[str(rec.get("fuzz_id"))] = f"{rec.get('exc_type')}: {rec.get('exc')}"
        frames = rec.get("frames") or []
        ours = [f for f in frames if "softap_sim" in f["file"]] or frames
        where = ours[-1] if ours else {}
        raised = frames[-1] if frames else {}
        request = stats.r500.get(str(rec.get("fuzz_id")))
        route = request["template"] if request else rec.get("message", "")
        # one entry per exception type and the line of our code it came through
        key = f"{rec.get('exc_type')} | {where.get('file')}:{where.get('line')}"
        entry = distinct.get(key)
        if entry is None:
            entry = distinct[key] = {
                "route": route,
                "routes": Counter(),
                "exception": f"{rec.get('exc_type')}: {rec.get('exc')}",
                "log": rec.get("message"),
                "where": f"{_rel(where.get('file'))}:{where.get('line')} in {where.get('func')}: "
                f"{where.get('code')}",
                "raised_at": f"{_rel(raised.get('file'))}:{raised.get('line')} in "
                f"{raised.get('func')}: {raised.get('code')}",
                "count": 0,
                "request": request,
            }
        entry["count"] += 1
        entry["routes"][
            f"{request['method']} {route}" if request and "method" in request else route
        ] += 1
        if entry["request"] is None and request is not None:
            entry["request"] = request
        elif request is not None and _size(request) < _size(entry["request"]):
            entry["request"] = request  # keep the smallest example
    return {
        "traceback_lines": tracebacks,
        "error_lines": len(error_lines),
        "parser_rejections_logged": {
            "traceback_lines": parser_tracebacks,
            "error_lines": parser_lines,
            "by_exception": dict(parser_rejections.most_common(20)),
        },
        "first_error_lines": error_lines[:5],
        "exception_by_fuzz_id": exc_by_fuzz_id,
        "distinct": [
            {**e, "routes": dict(e["routes"].most_common())}
            for e in sorted(distinct.values(), key=lambda e: -e["count"])[:MAX_REPORTED]
        ],
    }


def _rel(path: str | None) -> str:
    if not path:
        return "?"
    with contextlib.suppress(ValueError):
        return str(Path(path).relative_to(REPO_ROOT))
    return path


def _size(request: dict[str, Any] | None) -> int:
    return len(json.dumps(request)) if request else 1 << 30


def recorded_500s(stats: Stats, internal: dict[str, Any]) -> list[dict[str, Any]]:
    """The 500 requests, distinct by route + error (up to 50)."""
    exc_by_id: dict[str, str] = internal.pop("exception_by_fuzz_id")
    seen: set[str] = set()
    out = []
    for fuzz_id, req in stats.r500.items():
        key = (
            f"{req.get('method', 'RAW')} {req['template']} "
            f"{exc_by_id.get(fuzz_id, req.get('reply', ''))[:80]}"
        )
        if key in seen:
            continue
        seen.add(key)
        out.append({**req, "exception": exc_by_id.get(fuzz_id)})
        if len(out) >= MAX_REPORTED:
            break
    return out


def print_report(report: dict[str, Any]) -> None:
    cfg = report["config"]
    res = report["results"]
    print(
        f"cloud fuzz: {res['requests']} requests in {res['seconds']:.1f} s "
        f"({res['requests_per_s']:.0f}/s), {cfg['connections']} connections, seed "
        f"{cfg['seed']}, batches of {cfg['batch']}; {res['kdf_requests']} reached scrypt, "
        f"{res['sse_streams']} SSE streams opened"
    )
    print("HTTP statuses: " + ", ".join(f"{k}={v}" for k, v in sorted(res["statuses"].items())))
    if res["protocol"]:
        print("no reply: " + ", ".join(f"{k}={v}" for k, v in res["protocol"].items()))
    print(f"500s: {res['http_500']} (by route: {dict(res['http_500_by_route'])})")
    internal = res["internal_errors"]
    print(
        f"child stderr: {internal['traceback_lines']} Traceback lines, "
        f"{internal['error_lines']} ERROR lines (besides aiohttp's parser refusing malformed "
        f"HTTP: {internal['parser_rejections_logged']['error_lines']} ERROR records, "
        f"{sum(res['parser_400'].values())} parser 400 replies)"
    )
    for entry in internal["distinct"]:
        print(f"  [{entry['count']}x] {entry['exception'][:200]}")
        print(f"       on {len(entry['routes'])} routes: {list(entry['routes'])[:8]}")
        print(f"       at {entry['where']}")
        if entry["raised_at"] != entry["where"]:
            print(f"       raised {entry['raised_at']}")
        if entry["request"]:
            r = entry["request"]
            if "raw" in r:
                print(f"       request: {r['raw']}")
            else:
                print(
                    f"       request: {r['method']} {r['target'][:200]} headers={r['headers']} "
                    f"body={r['body'][:300]}"
                )
    for line in internal["first_error_lines"]:
        print(f"  stderr: {line[:300]}")
    print(f"hangs: {res['hangs']}")
    for hang in res["hang_examples"][:5]:
        print(f"  {json.dumps(hang)[:400]}")
    rss = res["rss"]
    print(
        f"child RSS: after warm-up {rss['after_warmup_mib']} MiB, end {rss['end_mib']} MiB, "
        f"growth {rss['growth_pct']}%, since the first batch "
        f"{rss['growth_after_first_batch_pct']}% (per batch: {rss['per_batch_mib']})"
    )
    print(
        f"canaries: {res['canaries']['passed']} passed, {len(res['canaries']['failures'])} "
        f"failed {res['canaries']['failures'][:5]}"
    )
    dev = res["device_port"]
    print(
        f"device port: {sum(dev['sessions'].values())} sessions; good handshakes after each "
        f"batch {dev['good_handshakes']} ok, failures {dev['good_failures'][:5]}; server "
        f"stayed up: {dev['server_stayed_up']}"
    )
    for outcome, count in sorted(dev["outcomes"].items()):
        print(f"  {count:6d}  {outcome}")
    if res["non_json_4xx"]:
        print("4xx replies without a JSON error body (not a goal; for information):")
        for key, count in res["non_json_4xx"].items():
            print(f"  {count:6d}  {key}")
    for line in report["missed"]:
        print(f"MISSED: {line}")
    if not report["missed"]:
        print("all goals met")


def round1(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def judge(report: dict[str, Any], args: argparse.Namespace) -> list[str]:
    res = report["results"]
    missed = []
    if res["http_500"]:
        missed.append(f"{res['http_500']} HTTP 5xx replies")
    internal = res["internal_errors"]
    if internal["traceback_lines"] or internal["error_lines"]:
        missed.append(
            f"child stderr: {internal['traceback_lines']} Traceback, "
            f"{internal['error_lines']} ERROR lines"
        )
    if res["hangs"]:
        missed.append(f"{res['hangs']} requests hung (> {args.request_timeout} s)")
    growth = res["rss"]["growth_pct"]
    if growth is None or growth >= args.max_rss_growth:
        missed.append(f"RSS growth {growth}% >= {args.max_rss_growth}%")
    if res["canaries"]["failures"]:
        missed.append(f"{len(res['canaries']['failures'])} canary failures")
    if not res["device_port"]["server_stayed_up"]:
        missed.append("the device server no longer completes a good handshake")
    if res["requests"] < args.requests:
        missed.append(f"only {res['requests']} of {args.requests} requests within {args.seconds} s")
    return missed
