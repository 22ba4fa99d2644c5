"""Transcripts: every exchange (and every lifecycle change) as JSON lines.

Each record has the model time since the emulator started, the transport, a
per-transport connection number, the peer, the request and reply bytes and the
device state before and after. Claim codes are masked with ``*`` of the same length
(so a replayed ``set`` keeps its framing); the ``pwd``/``ek`` ciphertexts are kept, since
only the device's own key can decrypt them and a replay needs them.
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

_CLAIM = re.compile(rb'("v"\s*:\s*")([^"]*)')


def mask_claim_code(request: bytes) -> bytes:
    """Replace the value of ``v`` (the claim code of ``set``) by as many ``*``."""
    return _CLAIM.sub(lambda m: m.group(1) + b"*" * len(m.group(2)), request)


def _text(b: bytes) -> str:
    """Bytes as JSON-safe text: latin-1 keeps every byte value round-trippable."""
    return b.decode("latin-1")


def _bytes(s: str) -> bytes:
    return s.encode("latin-1")


class Transcript:
    """An in-memory ring of records, optionally mirrored to a JSON-lines file."""

    def __init__(
        self, path: Path | None = None, *, enabled: bool = True, max_records: int = 10_000
    ) -> None:
        self.enabled = enabled
        self.records: deque[dict[str, Any]] = deque(maxlen=max_records)
        self.seq = 0
        self._path = path
        self._fh: IO[str] | None = None
        if path is not None and enabled:
            self._fh = path.open("a", encoding="utf-8")

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def _add(self, record: dict[str, Any]) -> None:
        self.seq += 1
        record["seq"] = self.seq
        self.records.append(record)
        if self._fh is not None:
            self._fh.write(json.dumps(record, ensure_ascii=True, sort_keys=True) + "\n")
            self._fh.flush()

    def exchange(
        self,
        *,
        t: float,
        transport: str,
        conn: int,
        peer: str,
        command: str,
        request: bytes,
        reply: bytes,
        delivery: str,
        state_before: str,
        state_after: str,
    ) -> None:
        if not self.enabled:
            return
        self._add(
            {
                "type": "exchange",
                "t": round(t, 6),
                "transport": transport,
                "conn": conn,
                "peer": peer,
                "command": command,
                "request": _text(mask_claim_code(request) if command == "set" else request),
                "reply": _text(reply),
                "delivery": delivery,
                "state_before": state_before,
                "state_after": state_after,
            }
        )

    def state(
        self, *, t: float, old: str, new: str, cause: str, led: str, detail: dict[str, Any]
    ) -> None:
        if not self.enabled:
            return
        self._add(
            {
                "type": "state",
                "t": round(t, 6),
                "old": old,
                "new": new,
                "cause": cause,
                "led": led,
                "detail": detail,
            }
        )

    def since(self, seq: int = 0) -> list[dict[str, Any]]:
        return [r for r in self.records if r["seq"] > seq]


def read_transcript(path: Path) -> Iterator[dict[str, Any]]:
    """Records of a transcript file; ``ValueError`` names the bad line."""
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{n}: not JSON ({err.msg})") from None
            if not isinstance(rec, dict) or "type" not in rec:
                raise ValueError(f"{path}:{n}: not a transcript record")
            yield rec


def record_bytes(record: dict[str, Any], key: str) -> bytes:
    return _bytes(str(record[key]))
