"""Request bytes for both transports, and the TCP reply (softap-protocol.md §2).

The bytes are those particle's setup apps send: the TCP framing ``cmd\\nlen\\n\\nbody``,
and an HTTP/1.1 request written in one piece, since the device parses only the first
segment of a request as its head.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from softap_sim.protocol.client.errors import SoftapClientError
from softap_sim.protocol.tcp import PREAMBLE

#: a request body: raw bytes, text, or a JSON object (serialised without spaces, as the apps do)
Body = str | bytes | Mapping[str, Any] | None
#: one request of a setup: the command name and its body
Request = tuple[str, Body]


def body_bytes(body: Body) -> bytes | None:
    """The bytes of a request body; ``None`` means no body at all (an HTTP GET)."""
    if body is None or isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    return json.dumps(dict(body), separators=(",", ":")).encode()


def encode_tcp_request(command: str, body: Body = None) -> bytes:
    """``<command>\\n<length>\\n\\n<body>`` (softap-protocol.md §2)."""
    data = body_bytes(body) or b""
    return b"%s\n%d\n\n%s" % (command.encode(), len(data), data)


def encode_http_request(
    address: tuple[str, int], command: str, body: Body = None, *, method: str | None = None
) -> bytes:
    """One HTTP/1.1 request, head and body in one write (the device parses one segment)."""
    data = body_bytes(body)
    verb = method or ("GET" if data is None else "POST")
    path = command if command.startswith("/") else "/" + command
    host, port = address
    head = f"{verb} {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
    if data is not None:
        head += f"Content-Length: {len(data)}\r\n"
    return head.encode() + b"\r\n" + (data or b"")


# ======================================================================================
# TCP replies
# ======================================================================================
def decode_tcp_reply(raw: bytes) -> Any:
    """The reply's JSON; ``None`` for silence (unknown command) or a reply without JSON."""
    if not raw:
        return None
    if not raw.startswith(PREAMBLE):
        raise SoftapClientError(f"not a SoftAP TCP reply: {raw[:80]!r}")
    text = raw[len(PREAMBLE) :]
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        raise SoftapClientError(f"the reply is not JSON: {raw[:80]!r}") from None
