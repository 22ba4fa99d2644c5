#!/usr/bin/env python3
"""Hostile-input fuzzing of the embedded cloud: every REST route and the device port.

Issue text: "at least 1,000,000 mutated requests across every REST route, auth header
shapes and the device port ... never a 500, no hang, RSS growth < 20 % after warm-up,
and the server keeps serving valid requests after each batch".

Method
------
The cloud runs in a **child process** started from this script (hidden ``--serve``
mode, as in ``bench_cloud.py``): ``CloudService(<temp dir>)`` (file-backed SQLite in WAL
mode), the REST server and the device server (TCP protocol of cloud-api.md §8) on
127.0.0.1 port 0, and a handful of registered devices (RSA-1024 keys generated here and
handed over in a JSON file). The child prints one JSON line (pid, URL, device port,
credentials, server public key) and serves until its stdin closes. Its stderr goes to a
file; every log record with a traceback is also written, as one JSON line, to
``errors.jsonl`` with the exception, the innermost frames and the ``X-Fuzz-Id`` header
of the request being handled (read from the traceback's frames), so each internal error
is joined to the exact request that caused it.

Set-up through the REST API, by this script: a user token (password grant of the
developer user), product-client tokens (``client_credentials``), customers and their
tokens (``client_credentials`` with ``scope=customer=<email>``), claim codes, extra OAuth
clients and "sacrificial" customers/tokens/clients that destructive routes may delete
(so the fuzzer never deletes what it needs itself), an expired and a revoked token. Two
emulated devices stay **online** the whole run (full handshake, Hello, answering
Describe, function calls, variable reads and pings) and are claimed by a customer and by
the developer, so function/variable routes reach the device link.

Load: ``--connections`` keep-alive connections, each a closed loop of hand-built
HTTP/1.1 requests on asyncio streams (only the status line, Content-Length/chunked body
and Content-Type of each reply are parsed; an SSE reply is counted and the connection
dropped; a server close means reconnect). Each request starts from a *valid* request
for a route (right method, path, token of a suitable kind, body) and gets 0-4 mutations:
path parameters (ASCII and Unicode digits such as U+00B2 and U+0663, integers beyond 64
bits, negative, empty, percent-encoded lone surrogates ``%ED%A0%80``, overlong UTF-8,
NUL, 5 000-character strings, slugs, valid and invalid device ids), the query string
(repeated and odd keys, ``per_page``/``page``/``deviceId``/``format``/``access_token``),
the body (form, JSON with wrong types, nesting, huge numbers, ``1e400``, ``NaN``, lists,
``null``, invalid UTF-8, ``"\\ud800"`` escapes, truncated JSON, 70 KiB bodies, wrong
content types), the headers (``Authorization`` Bearer/Basic/garbage/empty/repeated,
base64 junk, non-ASCII bytes) and the method (GET/POST/PUT/DELETE/PATCH/HEAD/OPTIONS).
A share of the requests is raw malformed HTTP on a fresh connection (bad request lines,
bad header bytes, broken chunked encoding, Content-Length mismatches, bare LF) for
aiohttp's own parser. Requests that reach scrypt (password grants, scrypt client
secrets, customer passwords, Basic user logins) are rate-limited (``--kdf-rate``) so
the single KDF slot of a 2-core machine is not the bottleneck.

The device port gets ``--device-sessions`` sessions per batch: random bytes, truncated
and replayed handshake blocks, unknown device ids, silence, and a good handshake followed
by garbage (random bytes, bad frame lengths, bad padding, malformed CoAP, odd events,
claim-code events, bad descriptions, a second Hello).

After each batch (``--batch`` requests): a **canary** (a fresh customer-token grant,
``GET /v1/devices`` with it, and a good device handshake up to the server's Hello) must
succeed; the child's RSS (``VmRSS``) is read. The warm-up batch (``--warmup``) sets the
RSS baseline.

Goals (exit status 0 when all are met, 1 when one is missed, 2 when set-up failed): no
HTTP 500 and no ERROR/Traceback line in the child's stderr, no hang (a request without
a reply or close within ``--request-timeout``), RSS growth below ``--max-rss-growth``
percent after warm-up, every canary passes, the device server still completes good
handshakes. The report lists status counts, requests/s, every distinct internal error
(route, exception, the line it was raised at, a minimal request) and up to 50 recorded
500 requests (distinct by route and error).

The code is split by part, all in ``scripts/``: ``fuzz_serve`` (the child), ``fuzz_http``
(the raw client), ``fuzz_values``, ``fuzz_routes`` and ``fuzz_mutate`` (the requests),
``fuzz_device`` and ``fuzz_device_port`` (the device side), ``fuzz_setup`` (set-up and
canaries), ``fuzz_load`` and ``fuzz_report`` (goals and report). None imports
``softap_sim`` at import time, so ``--code-dir`` decides which checkout is fuzzed.

Examples::

    python scripts/fuzz_cloud.py                          # 1,000,000 requests, <= 900 s
    python scripts/fuzz_cloud.py --requests 200000 --seed 7
    python scripts/fuzz_cloud.py --requests 50000 --batch 10000 --json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import REPO_ROOT, BenchError, positive_float, positive_int, run_main
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fuzz_device import DeviceIdentity, FakeDevice
from fuzz_device_port import DeviceFuzzer
from fuzz_load import Load, Stats
from fuzz_report import judge, print_report, read_internal_errors, recorded_500s, round1
from fuzz_serve import loop_factory, serve_main
from fuzz_setup import Api, Child, build_world, canary, refresh_world


async def run_fuzz(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    deadline = started + args.seconds
    rng = random.Random(args.seed)
    keys = [rsa.generate_private_key(public_exponent=65537, key_size=1024) for _ in range(7)]
    ids = [f"{rng.getrandbits(96):024x}" for _ in keys]
    devices = [DeviceIdentity(i, k, product=True) for i, k in zip(ids[:5], keys[:5], strict=True)]
    devices.append(DeviceIdentity(ids[5], keys[5], product=False))  # a developer device
    unknown = DeviceIdentity(ids[6], keys[6], product=False)  # never registered
    online_ids = {devices[0].device_id: "customer", devices[1].device_id: "user"}
    with tempfile.TemporaryDirectory(prefix="fuzz-cloud-") as tmp_name:
        tmp = Path(tmp_name)
        setup_file = tmp / "setup.json"
        setup_file.write_text(
            json.dumps(
                {
                    "devices": [
                        {"id": d.device_id, "public_key_pem": d.pem(), "product": d.product}
                        for d in devices
                    ]
                }
            )
        )
        child = Child(tmp, setup_file, args.code_dir)
        child.tracemalloc = args.tracemalloc
        fakes: list[FakeDevice] = []
        try:
            info = await child.start()
            server_key = serialization.load_pem_public_key(info["server_public_key_pem"].encode())
            assert isinstance(server_key, rsa.RSAPublicKey)
            api = Api(int(info["url"].rsplit(":", 1)[1]))
            world = await build_world(api, info, devices)
            fakes = [FakeDevice(d, server_key, info["device_port"]) for d in devices[:2]]
            for fake in fakes:
                await fake.start()
            await refresh_world(api, world, online=online_ids)
            dev_fuzz = DeviceFuzzer(
                info["device_port"],
                server_key,
                devices[2:4],
                unknown,
                random.Random(args.seed + 1),
                world,
            )
            if await dev_fuzz.good_handshake() is not None:
                raise BenchError(
                    f"a good device handshake fails before fuzzing: {dev_fuzz.stats.good_failures}"
                )
            if (why := await canary(api, world)) is not None:
                raise BenchError(f"the canary fails before fuzzing: {why}")
            load = Load(api.conn.port, world, args)
            t0 = time.monotonic()
            # warm-up: the same mix, so caches, pools and the database reach their size
            warm = min(args.warmup or max(20_000, args.requests // 10), args.requests)
            done = await load.run(warm, deadline)
            await refresh_world(api, world, online=online_ids)
            rss_warm = child.rss_mib()
            await child.memory_mark()
            canaries_passed, canary_failures = 0, []
            per_batch_rss: list[float | None] = []
            total = done
            batches = 0
            while total < args.requests and time.monotonic() < deadline and child.running:
                count = min(args.batch, args.requests - total)
                results = await asyncio.gather(
                    load.run(count, deadline), dev_fuzz.batch(args.device_sessions)
                )
                total += results[0]
                batches += 1
                why = await canary(api, world) if child.running else "the child exited"
                dev_why = await dev_fuzz.good_handshake() if child.running else "child exited"
                if why is None and dev_why is None:
                    canaries_passed += 1
                else:
                    canary_failures.append(f"batch {batches}: {why or ''} {dev_why or ''}".strip())
                per_batch_rss.append(child.rss_mib())
                if child.running:
                    for fake in fakes:
                        if not fake.alive:
                            with contextlib.suppress(OSError, TimeoutError, ValueError):
                                await fake.start()
                    with contextlib.suppress(BenchError):
                        await refresh_world(api, world, online=online_ids)
                if not args.json:
                    st = load.stats
                    print(
                        f"batch {batches}: {total} requests, {time.monotonic() - t0:.0f} s, "
                        f"500s {st.r500_count}, hangs {st.hang_count}, RSS "
                        f"{per_batch_rss[-1]} MiB, canary {'ok' if why is None else 'FAILED'}",
                        file=sys.stderr,
                        flush=True,
                    )
            elapsed = time.monotonic() - t0
            rss_end = child.rss_mib()
            await child.memory_mark()
            stayed_up = child.running and await dev_fuzz.good_handshake() is None
            function_calls = sum(f.calls for f in fakes)
        except BenchError as err:
            tail = ""
            if child.errors_path.exists():
                tail = child.errors_path.read_text(errors="replace")[-3000:]
            raise BenchError(f"{err}\nchild errors:\n{tail}") from None
        finally:
            for fake in fakes:
                fake.stop()
            exit_code = await child.stop()
        internal = read_internal_errors(child, load.stats if "load" in locals() else Stats())
    st = load.stats
    growth = (rss_end - rss_warm) / rss_warm * 100 if rss_warm and rss_end is not None else None
    return {
        "config": {
            "requests": args.requests,
            "seconds_limit": args.seconds,
            "seed": args.seed,
            "batch": args.batch,
            "connections": args.connections,
            "warmup": args.warmup,
            "device_sessions_per_batch": args.device_sessions,
            "kdf_rate": args.kdf_rate,
            "raw_share": args.raw_share,
            "request_timeout_s": args.request_timeout,
            "cpus": os.cpu_count(),
        },
        "results": {
            "requests": st.sent,
            "seconds": elapsed,
            "requests_per_s": st.sent / elapsed if elapsed > 0 else 0.0,
            "batches": batches,
            "statuses": dict(st.statuses),
            "protocol": dict(st.protocol),
            "http_500": st.r500_count,
            "http_500_by_route": dict(st.r500_by_route),
            "internal_errors": internal,
            "recorded_500": recorded_500s(st, internal),
            "hangs": st.hang_count,
            "hang_examples": st.hangs,
            "rss": {
                "after_warmup_mib": round1(rss_warm),
                "end_mib": round1(rss_end),
                "growth_pct": round1(growth),
                "growth_after_first_batch_pct": round1(
                    (rss_end - per_batch_rss[0]) / per_batch_rss[0] * 100
                    if per_batch_rss and per_batch_rss[0] and rss_end is not None
                    else None
                ),
                "per_batch_mib": [round1(v) for v in per_batch_rss],
            },
            "canaries": {"passed": canaries_passed, "failures": canary_failures},
            "device_port": {
                "sessions": dict(dev_fuzz.stats.sessions),
                "outcomes": dict(dev_fuzz.stats.outcomes),
                "good_handshakes": dev_fuzz.stats.good_handshakes,
                "good_failures": dev_fuzz.stats.good_failures,
                "server_stayed_up": stayed_up,
                "function_and_variable_calls_answered": function_calls,
            },
            "non_json_4xx": dict(st.non_json_4xx),
            "parser_400": dict(st.parser_400),
            "non_json_4xx_examples": st.non_json_examples,
            "kdf_requests": st.kdf_requests,
            "sse_streams": st.sse,
            "connections_opened": st.reconnects,
            "by_route_status": dict(sorted(st.by_route.items())),
            "child_exit_status": exit_code,
        },
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Hostile-input fuzzing of the embedded cloud (REST routes and the device "
        "port) against a child process; loopback only, bounded in count and time.",
        epilog="Exit status: 0 all goals met, 1 a goal missed (5xx, ERROR/Traceback in the "
        "child's stderr, hang, RSS growth, canary, device server down, fewer requests than "
        "asked within --seconds), 2 set-up failure.",
    )
    parser.add_argument(
        "--requests",
        type=positive_int,
        default=1_000_000,
        help="mutated requests in total, warm-up included (default 1000000)",
    )
    parser.add_argument(
        "--seconds",
        type=positive_float,
        default=900.0,
        help="wall-time limit of the load (default 900)",
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument(
        "--batch",
        type=positive_int,
        default=50_000,
        help="requests between canaries and RSS readings (default 50000)",
    )
    parser.add_argument(
        "--warmup",
        type=positive_int,
        default=None,
        help="warm-up requests before the RSS baseline (default: a tenth of "
        "--requests, at least 20000; the scrypt and executor threads' malloc "
        "arenas take ~100k requests to reach their size)",
    )
    parser.add_argument(
        "--connections",
        type=positive_int,
        default=32,
        help="concurrent keep-alive connections (default 32)",
    )
    parser.add_argument(
        "--device-sessions",
        type=int,
        default=60,
        help="device-port fuzz sessions per batch (default 60)",
    )
    parser.add_argument(
        "--kdf-rate",
        type=positive_float,
        default=6.0,
        help="scrypt-reaching requests per second at most (default 6)",
    )
    parser.add_argument(
        "--raw-share",
        type=float,
        default=0.02,
        help="share of raw malformed-HTTP requests (default 0.02)",
    )
    parser.add_argument(
        "--request-timeout",
        type=positive_float,
        default=20.0,
        help="a request without a reply after this many seconds hangs (default 20)",
    )
    parser.add_argument(
        "--max-rss-growth",
        type=float,
        default=20.0,
        help="RSS growth goal in percent after warm-up (default 20)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--code-dir",
        default=str(REPO_ROOT),
        help="directory whose softap_sim package is fuzzed (default: this checkout), e.g. "
        "a 'git archive HEAD' snapshot while the working tree is being edited",
    )
    parser.add_argument(
        "--tracemalloc",
        metavar="PATH",
        help="diagnosis: trace the child's allocations (slower) and write the top growth "
        "from the end of the warm-up to the end of the run to PATH",
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--state-dir", help=argparse.SUPPRESS)
    parser.add_argument("--setup", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.code_dir and not args.serve:
        sys.path.insert(0, args.code_dir)  # the device-side codecs of the same code
    if args.serve:
        return serve_main(args)

    def run() -> int:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            report = runner.run(run_fuzz(args))
        missed = judge(report, args)
        report["missed"] = missed
        if args.json:
            print(json.dumps(report, indent=2, default=str))
        else:
            print_report(report)
        return 1 if missed else 0

    return run_main("fuzz_cloud", run)


if __name__ == "__main__":
    sys.exit(main())
