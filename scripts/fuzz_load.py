"""fuzz_cloud's REST load: closed-loop keep-alive connections and what their replies say.

Each connection sends one mutated request at a time and waits for its reply, so a
request without a reply or close within ``--request-timeout`` is a hang, attributable to
that request. Each 5xx is recorded (the first ``MAX_RECORDED_500``) with its ``X-Fuzz-Id``
for the report to join with the child's tracebacks.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final

from fuzz_http import Connection, ProtocolFailure, Reply, Request, read_reply
from fuzz_mutate import Mutator
from fuzz_routes import TokenBucket, World

MAX_RECORDED_500: Final = 2000
MAX_REPORTED: Final = 50


@dataclass
class Stats:
    sent: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    by_route: Counter[str] = field(default_factory=Counter)
    r500: dict[str, dict[str, Any]] = field(default_factory=dict)  # fuzz id → request
    r500_count: int = 0
    r500_by_route: Counter[str] = field(default_factory=Counter)
    hangs: list[dict[str, Any]] = field(default_factory=list)
    hang_count: int = 0
    non_json_4xx: Counter[str] = field(default_factory=Counter)
    parser_400: Counter[str] = field(default_factory=Counter)
    non_json_examples: dict[str, dict[str, Any]] = field(default_factory=dict)
    protocol: Counter[str] = field(default_factory=Counter)
    reconnects: int = 0
    kdf_requests: int = 0
    sse: int = 0


def _error_body_ok(reply: Reply) -> bool:
    try:
        data = json.loads(reply.body)
    except ValueError:
        return False
    return isinstance(data, dict) and ("error" in data or data.get("ok") is False)


class Load:
    def __init__(self, port: int, world: World, args: argparse.Namespace) -> None:
        self.port = port
        self.world = world
        self.args = args
        self.stats = Stats()
        self.kdf = TokenBucket(args.kdf_rate)
        self.next_id = 1
        self.rngs = [random.Random(args.seed * 1000 + i) for i in range(args.connections)]

    async def run(self, count: int, deadline: float) -> int:
        left = count
        done = 0

        async def worker(index: int) -> None:
            nonlocal left, done
            mut = Mutator(self.world, self.rngs[index], self.kdf, self.args.raw_share)
            conn = Connection(self.port)
            try:
                while left > 0 and time.monotonic() < deadline:
                    left -= 1
                    req = mut.next()
                    await self.one(conn, req)
                    done += 1
            finally:
                conn.drop()
                self.stats.reconnects += conn.connects

        await asyncio.gather(*(worker(i) for i in range(self.args.connections)))
        return done

    async def one(self, conn: Connection, req: Request) -> None:
        st = self.stats
        fuzz_id = self.next_id
        self.next_id += 1
        st.sent += 1
        st.kdf_requests += req.kdf
        raw = req.raw is not None
        if raw:
            conn.drop()  # malformed HTTP on a fresh connection of its own
        try:
            async with asyncio.timeout(self.args.request_timeout):
                reader, writer = await conn.ensure()
                writer.write(req.wire(fuzz_id))
                if raw and writer.can_write_eof():
                    writer.write_eof()
                reply = await read_reply(reader, req.method == "HEAD")
        except TimeoutError:
            conn.drop()
            st.hang_count += 1
            st.statuses["hang"] += 1
            if len(st.hangs) < MAX_REPORTED:
                st.hangs.append({"fuzz_id": fuzz_id, **req.describe()})
            return
        except ProtocolFailure as err:
            conn.drop()
            st.protocol[f"{'raw' if raw else 'route'}: {err}"] += 1
            st.statuses["no reply (closed)"] += 1
            return
        except (ConnectionError, OSError) as err:
            conn.drop()
            st.protocol[f"{'raw' if raw else 'route'}: {type(err).__name__}"] += 1
            st.statuses["no reply (reset)"] += 1
            return
        if reply.close or reply.sse or raw:
            conn.drop()
        st.statuses[str(reply.status)] += 1
        st.by_route[f"{req.template} {reply.status}"] += 1
        if reply.sse:
            st.sse += 1
        if reply.status >= 500:
            st.r500_count += 1
            st.r500_by_route[f"{req.method} {req.template}"] += 1
            if len(st.r500) < MAX_RECORDED_500:
                st.r500[str(fuzz_id)] = {
                    "fuzz_id": fuzz_id,
                    "status": reply.status,
                    **req.describe(),
                    "reply": reply.body[:300].decode("utf-8", "replace"),
                }
        elif reply.status == 400 and reply.content_type.startswith(b"text/plain"):
            st.parser_400[req.template if not raw else "raw"] += 1  # aiohttp's parser
        elif (
            400 <= reply.status < 500
            and not raw
            and req.method != "HEAD"
            and not (_error_body_ok(reply))
        ):
            key = f"{req.method} {req.template} {reply.status}"
            st.non_json_4xx[key] += 1
            if key not in st.non_json_examples and len(st.non_json_examples) < 20:
                st.non_json_examples[key] = {
                    **req.describe(),
                    "reply": reply.body[:200].decode("utf-8", "replace"),
                    "content_type": reply.content_type.decode("latin-1"),
                }
