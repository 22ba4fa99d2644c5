"""Transcripts: every exchange (and every lifecycle change) as JSON lines.

Each record has the model time since the emulator started, the transport, a
per-transport connection number, the peer, the request and reply bytes and the
device state before and after. Claim codes are masked with ``*`` of the same length
(so a replayed ``set`` keeps its framing); the ``pwd``/``ek`` ciphertexts are kept, since
only the device's own key can decrypt them and a replay needs them.
"""

from __future__ import annotations

import enum
import json
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from firmware_model.jsmn import TokenType, tokenize


def _body_start(request: bytes) -> int:
    """Where the body starts: after the HTTP head, or after the TCP ``name\\nLEN\\n\\n``."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        at = request.find(sep)
        if at >= 0:
            return at + len(sep)
    return 0


def mask_claim_code(request: bytes) -> bytes:
    """Mask a ``set`` request's claim code with as many ``*`` (framing stays valid).

    The body is tokenised as the device does (jsmn), so quoted, unquoted and escaped
    values are found. Every string or primitive is masked except the keys ``k``/``v``
    and the value of ``k``; a body jsmn cannot parse is masked whole (structure aside).
    """
    start = _body_start(request)
    body = request[start:]
    tokens, ret = tokenize(body.split(b"\x00", 1)[0])
    masked = bytearray(request)
    if ret < 0:
        for i in range(start, len(masked)):
            if masked[i] not in b'{}[]:,"\r\n ':
                masked[i] = 0x2A
        return bytes(masked)
    keep_next = False
    for tok in tokens:
        if tok.type not in (TokenType.STRING, TokenType.PRIMITIVE):
            continue
        text = body[tok.start : tok.end]
        is_key = tok.size >= 1
        if (is_key and text in (b"k", b"v")) or keep_next:
            keep_next = is_key and text == b"k"
            continue
        keep_next = False
        for i in range(start + tok.start, start + tok.end):
            masked[i] = 0x2A
    return bytes(masked)


def _text(b: bytes) -> str:
    """Bytes as JSON-safe text: latin-1 keeps every byte value round-trippable."""
    return b.decode("latin-1")


def _bytes(s: str) -> bytes:
    return s.encode("latin-1")


def _is_set(command: str) -> bool:
    """``set`` over TCP, or any request for the ``/set`` path (even a gated 404)."""
    return command == "set" or (
        "set" in command.lower() and command.strip(" \r\n/").lower() == "set"
    )


class Transcript:
    """An in-memory ring of records, optionally mirrored to a JSON-lines file.

    Records are kept as compact tuples and turned into dicts only when read (the hot
    path of every command must stay cheap); the file, if any, gets each line at once.
    Claim codes are masked in everything read or written (records, the file), never
    kept masked in the ring itself.
    """

    def __init__(
        self,
        path: Path | None = None,
        *,
        enabled: bool = True,
        max_records: int = 10_000,
        t0: float = 0.0,
    ) -> None:
        self.enabled = enabled
        #: clock reading of time 0: record times are stored raw and reported relative to it
        self.t0 = t0
        self._ring: deque[tuple[Any, ...]] = deque(maxlen=max_records)
        self.seq = 0
        self._path = path
        self._fh: IO[str] | None = None
        if path is not None and enabled:
            self._fh = path.open("a", encoding="utf-8")

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    @property
    def records(self) -> list[dict[str, Any]]:
        """Every record still in the ring, oldest first (fresh dicts)."""
        return [_materialise(r, self.t0) for r in self._ring]

    def _add(self, record: tuple[Any, ...]) -> None:
        self._ring.append(record)
        if self._fh is not None:
            self._write(record)

    def _write(self, record: tuple[Any, ...]) -> None:
        assert self._fh is not None
        self._fh.write(json.dumps(_materialise(record, self.t0), ensure_ascii=True) + "\n")
        self._fh.flush()

    def exchange(
        self,
        t: float,
        transport: str,
        conn: int,
        peer: str,
        command: str,
        request: bytes,
        reply: bytes,
        delivery: str,
        state_before: object,
        state_after: object,
    ) -> None:
        """One exchange; ``t`` is a raw clock reading, states may be enums or strings."""
        if not self.enabled:
            return
        self.seq += 1
        # a set request carries the claim code: masked whenever the record is read or
        # written out (tokenising it here would cost every set a second jsmn run)
        record = (
            "x",
            self.seq,
            t,
            transport,
            conn,
            peer,
            command,
            request,
            reply,
            delivery,
            state_before,
            state_after,
            _is_set(command),
        )
        self._ring.append(record)  # _add, inlined: this runs for every command
        if self._fh is not None:
            self._write(record)

    def state(
        self, *, t: float, old: str, new: str, cause: str, led: str, detail: dict[str, Any]
    ) -> None:
        if not self.enabled:
            return
        self.seq += 1
        self._add(("s", self.seq, t, old, new, cause, led, detail))

    def since(self, seq: int = 0) -> list[dict[str, Any]]:
        """Records after ``seq`` as fresh dicts (callers cannot change the transcript)."""
        return [_materialise(r, self.t0) for r in self._ring if r[1] > seq]


def _name(state: object) -> str:
    return str(state.value) if isinstance(state, enum.Enum) else str(state)


def _materialise(r: tuple[Any, ...], t0: float) -> dict[str, Any]:
    if r[0] == "x":
        (
            _,
            seq,
            t,
            transport,
            conn,
            peer,
            command,
            request,
            reply,
            delivery,
            before,
            after,
            secret,
        ) = r
        if secret:
            request = mask_claim_code(request)
        return {
            "type": "exchange",
            "seq": seq,
            "t": round(t - t0, 6),
            "transport": transport,
            "conn": conn,
            "peer": peer,
            "command": command,
            "request": _text(request),
            "reply": _text(reply),
            "delivery": delivery,
            "state_before": _name(before),
            "state_after": _name(after),
        }
    _, seq, t, old, new, cause, led, detail = r
    return {
        "type": "state",
        "seq": seq,
        "t": round(t - t0, 6),
        "old": old,
        "new": new,
        "cause": cause,
        "led": led,
        "detail": dict(detail),
    }


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
