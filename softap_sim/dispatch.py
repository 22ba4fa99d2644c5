"""The one command dispatch both transports call, so TCP and HTTP cannot drift apart.

It runs the model, decides how the reply is delivered (delivery faults, the time a
scan blocks the server), logs the exchange with secrets redacted, records it in the
transcript and hands the reply's effects to the emulator.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from firmware_model import Device, DeviceState, Effect, FaultKind, Reply, ReplyKind
from firmware_model.faults import DELIVERY_KINDS
from softap_sim.log import sanitize
from softap_sim.transcript import Transcript

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Delivery:
    """How the transport hands the reply to the client."""

    #: seconds before anything is written (latency faults, blocking scans)
    delay_s: float = 0.0
    #: normal, no-reply, reply-then-hang, close-without-reply, half-open, drop-mid-reply, reset
    mode: str = "normal"
    #: for drop-mid-reply: how many bytes get out first (None: half)
    nbytes: int | None = None


NORMAL = Delivery()
_STATE_NAMES = {s: s.value for s in DeviceState}
_NO_REPLY = Reply(ReplyKind.UNKNOWN)


@dataclass(slots=True)
class Exchange:
    """The request a connection is serving, as the dispatcher saw it.

    Each connection owns one and the dispatcher fills it in per request
    (:meth:`CommandDispatcher.dispatch`, or :meth:`CommandDispatcher.begin` for requests
    that run no command, e.g. an HTTP 404); :meth:`CommandDispatcher.record` takes it.
    Reusing it keeps a keep-alive HTTP connection's hot path free of allocations.
    """

    transport: str
    conn: int
    peer: str
    #: the command name, or the HTTP path when no command ran
    command: str = ""
    state_before: DeviceState = DeviceState.OFF
    reply: Reply = _NO_REPLY
    delivery: Delivery = NORMAL


class CommandDispatcher:
    """Runs commands on a :class:`~firmware_model.Device` for any transport."""

    __slots__ = ("_interned", "_now", "_on_effect", "device", "served", "transcript")

    def __init__(
        self,
        device: Device,
        on_effect: Callable[[Effect], None],
        transcript: Transcript | None = None,
        now: Callable[[], float] = lambda: 0.0,
    ) -> None:
        self.device = device
        self._on_effect = on_effect
        self.transcript = transcript
        self._now = now
        #: commands served so far, per transport
        self.served: dict[str, int] = {"tcp": 0, "http": 0}
        self._interned: dict[bytes, bytes] = {}

    def begin(self, exchange: Exchange, label: str) -> Exchange:
        """A request that runs no command (recorded all the same)."""
        exchange.command = label
        exchange.state_before = self.device.lifecycle.state
        exchange.reply = _NO_REPLY
        exchange.delivery = NORMAL
        return exchange

    def dispatch(self, exchange: Exchange, name: str, body: bytes | None) -> Exchange:
        """Run command ``name``; ``exchange`` then holds its reply and how to deliver it."""
        device = self.device
        transport = exchange.transport
        exchange.command = name
        exchange.state_before = device.lifecycle.state
        scans_before = device.scans
        reply = device.execute(name, body)
        self.served[transport] += 1
        if device.faults.faults or device.scans != scans_before:
            delivery = self._delivery(transport, name, device.scans - scans_before)
        else:
            delivery = NORMAL
        if log.isEnabledFor(logging.INFO):
            shown = reply.body if name != "public-key" else b"<public key>"
            extra = "" if delivery is NORMAL else f" [{delivery.mode} +{delivery.delay_s:.3f}s]"
            peer = exchange.peer
            log.info(
                "%s %s %s -> %s %s%s",
                transport,
                peer,
                name,
                reply.kind.value,
                shown[:120].decode("utf-8", "replace"),
                extra,
            )
            if log.isEnabledFor(logging.DEBUG) and body:
                log.debug("%s %s %s request body %r", transport, peer, name, sanitize(name, body))
        for effect in reply.effects:
            self._on_effect(effect)
        exchange.reply = reply
        exchange.delivery = delivery
        return exchange

    def _delivery(self, transport: str, name: str, scans: int) -> Delivery:
        device = self.device
        delay = scans * device.timing.scan_s
        faults = device.faults.take(DELIVERY_KINDS, name, transport) if device.faults.faults else []
        if not faults and delay == 0:
            return NORMAL
        mode = "normal"
        nbytes: int | None = None
        for fault in faults:
            if fault.kind is FaultKind.LATENCY:
                delay += device.faults.delay_s(fault)
            elif mode == "normal":
                mode = fault.kind.value
                nbytes = fault.nbytes
        return Delivery(delay, mode, nbytes)

    def record(self, exchange: Exchange, request: bytes, reply: bytes) -> None:
        """Add the exchange with its raw bytes to the transcript (a tuple append)."""
        transcript = self.transcript
        if transcript is not None and transcript.enabled:
            # Clients repeat the same requests and the device the same replies: the ring
            # keeps one bytes object per distinct one. Besides memory, this lets each new
            # reply buffer be freed at once and its memory reused while still in cache
            # (10,000 kept replies of a few KB each otherwise stream through fresh memory).
            interned = self._interned
            request = interned.setdefault(request, request)
            reply = interned.setdefault(reply, reply)
            if len(interned) > 4096:
                interned.clear()
            transcript.exchange(
                self._now(),
                exchange.transport,
                exchange.conn,
                exchange.peer,
                exchange.command,
                request,
                reply,
                exchange.delivery.mode,
                exchange.state_before,
                self.device.lifecycle.state,
            )
