"""Carrying out a :class:`~softap_sim.dispatch.Delivery` on an asyncio transport."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

from softap_sim.dispatch import Delivery


def deliver_now(
    transport: asyncio.Transport, out: bytes, delivery: Delivery, *, close_after: bool
) -> bool:
    """Write ``out`` as ``delivery`` says; returns whether the connection stays usable."""
    mode = delivery.mode
    if mode == "normal":
        if out:
            transport.write(out)
        if close_after:
            transport.close()
            return False
        return True
    if mode in ("no-reply", "half-open"):
        return False  # nothing is written and nothing closes
    if mode == "reply-then-hang":
        if out:
            transport.write(out)
        return False
    if mode == "close-without-reply":
        transport.close()
        return False
    if mode == "drop-mid-reply":
        n = delivery.nbytes if delivery.nbytes is not None else len(out) // 2
        if out[:n]:
            transport.write(out[:n])
        reset_transport(transport)
        return False
    if mode == "reset":
        reset_transport(transport)
        return False
    raise ValueError(f"unknown delivery mode {mode!r}")  # pragma: no cover


def reset_transport(transport: asyncio.Transport) -> None:
    """Close with an RST (SO_LINGER 0): the client sees ECONNRESET, not a clean end."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
