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
import logging
import os
import stat
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from firmware_model.jsmn import Token, TokenType, tokenize

log = logging.getLogger(__name__)


#: bytes that are never part of a jsmn string or primitive (kept when masking whole)
_STRUCTURE = frozenset(b'{}[]:,"\r\n\t \x00')
#: the methods the device's HTTP server accepts (``softap_sim.protocol.http.METHODS``)
_HTTP_METHODS = (b"GET ", b"POST ", b"PUT ")
#: ``char name[30]`` of ``SimpleProtocolDispatcher::handle``
_TCP_NAME_BYTES = 30
_SET_KEEP = frozenset((b"k", b"v"))
_SECRET_KEYS = frozenset((b"pwd", b"ek", b"key"))


def _tcp_body(request: bytes) -> tuple[int, int, bytes] | None:
    """``(start, length, name)`` of a raw TCP request, parsed as the device does.

    Mirrors :class:`softap_sim.protocol.tcp.TcpConnection`: a name ended by LF or NUL
    (or cut at 30 bytes), a length folded digit by digit, then a blank-line loop whose
    "previous byte was LF" flag starts true. ``None`` when the head never ends.
    """
    n = len(request)
    i = 0
    while i < n and i < _TCP_NAME_BYTES:
        if request[i] in (0x0A, 0x00):
            break
        i += 1
    name = request[:i]
    if i < _TCP_NAME_BYTES:
        if i >= n:
            return None
        i += 1  # the terminator
    length = 0
    while True:
        if i >= n:
            return None
        c = request[i]
        i += 1
        if c == 0x0A:
            break
        length = (length * 10 + c - 0x30) & 0xFFFF_FFFF
    if length >= 1 << 31:
        length -= 1 << 32
    seen_newline = True
    while True:
        if i >= n:
            return None
        c = request[i]
        i += 1
        if c == 0x0A:
            if seen_newline:
                return i, max(length, 0), name
            seen_newline = True
        else:
            seen_newline = False


def _atoi(text: bytes) -> int:
    n = 0
    for ch in text.lstrip(b" "):
        if not 0x30 <= ch <= 0x39:
            break
        n = n * 10 + ch - 0x30
    return n


def _http_body(request: bytes) -> tuple[int, int] | None:
    """``(start, length)`` of a raw HTTP request's body, as the device's server cuts it.

    Mirrors :meth:`softap_sim.protocol.http.HttpConnection.receive_segment`: the head
    ends at the first CR LF CR LF; ``Content-Length`` bytes follow (a chunked body is
    passed on raw, so it is all the rest). ``None`` when this is no HTTP request.
    """
    if not request.startswith(_HTTP_METHODS) or b" HTTP/1.1" not in request:
        return None
    head_end = request.find(b"\r\n\r\n")
    if head_end < 0:
        return None
    head = request[: head_end + 2]
    start = head_end + 4
    at = head.find(b"Content-Length: ")
    if at >= 0:
        value_end = head.find(b"\r\n", at)
        return start, _atoi(head[at + 16 : value_end])
    if b"Transfer-Encoding: chunked" in head:
        return start, len(request) - start
    return start, 0


def _body_span(request: bytes, transport: str | None) -> tuple[int, int]:
    """Where the body the device parses lies in a recorded request: ``(start, end)``.

    ``transport`` (``"tcp"``/``"http"``) says how to parse the framing; without it an
    HTTP request is recognised by its request line, a TCP one by a ``set`` head, and
    anything else is taken for a bare body.
    """
    if transport != "tcp":
        http = _http_body(request)
        if http is not None:
            return http[0], min(len(request), http[0] + http[1])
        if transport == "http":
            return len(request), len(request)  # no body: mask everything after the head
    tcp = _tcp_body(request)
    if tcp is not None and (transport == "tcp" or tcp[2].strip(b" \r\n/").lower() == b"set"):
        return tcp[0], min(len(request), tcp[0] + tcp[1])
    if transport == "tcp":
        return len(request), len(request)
    return 0, len(request)


def _leaf_roles(tokens: list[Token]) -> dict[int, bool]:
    """The tokens ``parse_json_request`` visits as a key (``True``) or a value (``False``).

    The firmware's parser is positional (token 0, then key, value, key, value ...
    while its container count lasts), not jsmn's ``size``: this walk is its loop.
    """
    roles: dict[int, bool] = {}
    state = 0  # 0 start, 1 key, 2 value
    i = 0
    j = 1
    while j > 0 and i < len(tokens):
        t = tokens[i]
        if t.type in (TokenType.ARRAY, TokenType.OBJECT):
            j += t.size * 2
        if state == 0:
            state = 1
        elif state == 1:
            roles[i] = True
            state = 2
        else:
            roles[i] = False
            state = 1
        i += 1
        j -= 1
    return roles


def _is_leaf(tok: Token) -> bool:
    return tok.type in (TokenType.STRING, TokenType.PRIMITIVE) and 0 <= tok.start <= tok.end


def mask_body(body: bytes, keep: frozenset[bytes] = _SET_KEEP) -> bytes:
    """A ``set`` body with everything but its structure masked by ``*`` (same length).

    The body is cut at its first NUL and tokenised by the device's own jsmn, then walked
    like ``parse_json_request``: only the keys named in ``keep`` (``k``/``v``) and the
    plain value of a ``k`` key survive, so the token the device stores as the claim code
    (the value of ``v``) is always masked. A body jsmn cannot parse, and anything the
    parser never reaches (after the NUL, after the top-level value), is masked whole,
    structure aside.
    """
    masked = bytearray(body)
    js = body.split(b"\x00", 1)[0]
    tokens, ret = tokenize(js)
    keep_from = len(js)
    if ret < 0:
        keep_from = 0
    else:
        roles = _leaf_roles(tokens)
        key = b""
        kept: set[int] = set()
        for i, is_key in roles.items():
            tok = tokens[i]
            text = js[tok.start : tok.end] if _is_leaf(tok) else b""
            if is_key:
                key = text
                if text in keep:
                    kept.add(i)
            elif key == b"k" and b"k" in keep and _is_leaf(tok):
                kept.add(i)
        for i, tok in enumerate(tokens):
            if i not in kept:
                if _is_leaf(tok):
                    masked[tok.start : tok.end] = b"*" * (tok.end - tok.start)
                elif tok.type in (TokenType.STRING, TokenType.PRIMITIVE):
                    keep_from = 0  # an unfinished token: mask the whole body
    for i in range(keep_from, len(masked)):
        if masked[i] not in _STRUCTURE:
            masked[i] = 0x2A
    return bytes(masked)


def redact_secrets(body: bytes) -> bytes:
    """A ``configure-ap`` body with the values of ``pwd``/``ek``/``key`` masked by ``*``.

    Walked like the device parses it (jsmn, then ``parse_json_request`` positions), so
    unquoted values and any whitespace between the tokens are handled; a body jsmn cannot
    parse is masked whole (structure aside).
    """
    masked = bytearray(body)
    js = body.split(b"\x00", 1)[0]
    tokens, ret = tokenize(js)
    if ret < 0:
        return mask_body(body, frozenset())
    key = b""
    for i, is_key in _leaf_roles(tokens).items():
        tok = tokens[i]
        if is_key:
            key = js[tok.start : tok.end] if _is_leaf(tok) else b""
        elif key in _SECRET_KEYS and _is_leaf(tok):
            masked[tok.start : tok.end] = b"*" * (tok.end - tok.start)
    return bytes(masked)


def mask_claim_code(request: bytes, transport: str | None = None) -> bytes:
    """Mask a recorded ``set`` request's claim code with as many ``*`` (framing stays valid).

    The framing is parsed as the device's transport parses it (``transport`` is
    ``"tcp"`` or ``"http"``; guessed when ``None``, see :func:`_body_span`) and the
    body the device parsed is masked by :func:`mask_body`; bytes after that body (which
    the device never read) are masked too, structure aside.
    """
    start, end = _body_span(request, transport)
    masked = bytearray(request)
    masked[start:end] = mask_body(request[start:end])
    for i in range(end, len(masked)):
        if masked[i] not in _STRUCTURE:
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
            self._fh = _open_private(path)

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

    def event(self, *, t: float, direction: str, name: str, data: str, private: bool) -> None:
        """An event over the cloud link: ``out`` (published) or ``in`` (from the cloud).

        The claim code the device publishes (``spark/device/claim/code``) is masked.
        """
        if not self.enabled:
            return
        self.seq += 1
        if name == CLAIM_CODE_EVENT:
            data = "*" * len(data)
        self._add(("e", self.seq, t, direction, name, data, private))

    def since(self, seq: int = 0) -> list[dict[str, Any]]:
        """Records after ``seq`` as fresh dicts (callers cannot change the transcript)."""
        return [_materialise(r, self.t0) for r in self._ring if r[1] > seq]


#: the event that carries the claim code to the cloud (masked in every record)
CLAIM_CODE_EVENT = "spark/device/claim/code"


def _open_private(path: Path) -> IO[str]:
    """Open ``path`` for appending, mode 0600 like the rest of the state.

    A new file is created 0600 (whatever the umask); an existing regular file that
    others can read is tightened to 0600 (a FIFO or a terminal is left as it is).
    """
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) & 0o077:
            try:
                os.fchmod(fd, 0o600)
            except OSError as err:
                log.warning("cannot make %s private (mode 0600): %s", path, err.strerror)
        return os.fdopen(fd, "a", encoding="utf-8")
    except BaseException:
        os.close(fd)
        raise


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
            request = mask_claim_code(request, transport)
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
    if r[0] == "e":
        _, seq, t, direction, name, data, private = r
        return {
            "type": "event",
            "seq": seq,
            "t": round(t - t0, 6),
            "direction": direction,
            "name": name,
            "data": data,
            "private": private,
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
