"""Carrying out a :class:`~softap_sim.dispatch.Delivery` on an asyncio transport."""

from __future__ import annotations

import asyncio

from softap_sim.dispatch import Delivery
from softap_sim.net import reset_transport


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


#: What one connection may hold that the device has not consumed yet (a TCP connection
#: queued behind the one being served, or HTTP segments waiting for the busy event
#: thread) before its transport stops reading and TCP pushes back on the client. A
#: Photon has a few KB of socket buffer per connection; the bound is larger so that no
#: legitimate request waits on it: the biggest ones are configure-ap / set bodies, which
#: the device copies into ``malloc(length + 1)`` from a heap of 60 KB after boot
#: (``DEFAULT_HEAP_AFTER_BOOT_BYTES``), plus a head of a few dozen bytes. Going past it
#: loses nothing: the bytes wait in the kernel until the device reads on.
MAX_QUEUED_BYTES = 64 * 1024
#: the most one ``data_received`` carries (asyncio's and uvloop's read size): a paused
#: connection holds at most ``MAX_QUEUED_BYTES`` plus one such read
MAX_READ_BYTES = 256 * 1024


def pause(transport: asyncio.Transport | None) -> bool:
    """Stop reading: the client's data stays in the kernel and TCP pushes back."""
    if transport is None or transport.is_closing():
        return False
    transport.pause_reading()
    return True


def resume(transport: asyncio.Transport | None) -> None:
    if transport is not None and not transport.is_closing():
        transport.resume_reading()
