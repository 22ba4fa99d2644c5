"""The one command dispatch both transports call, so TCP and HTTP cannot drift apart.

It runs the model, logs the exchange with secrets redacted and hands the reply's
effects to the emulator.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from firmware_model import Device, DeviceEffect, Reply
from softap_sim.log import sanitize

log = logging.getLogger(__name__)


class CommandDispatcher:
    """Runs commands on a :class:`~firmware_model.Device` for any transport."""

    __slots__ = ("_on_effect", "device", "served")

    def __init__(self, device: Device, on_effect: Callable[[DeviceEffect], None]) -> None:
        self.device = device
        self._on_effect = on_effect
        #: commands served so far, per transport
        self.served: dict[str, int] = {"tcp": 0, "http": 0}

    def dispatch(self, transport: str, peer: str, name: str, body: bytes | None) -> Reply:
        reply = self.device.execute(name, body)
        self.served[transport] += 1
        if log.isEnabledFor(logging.INFO):
            shown = reply.body if name != "public-key" else b"<public key>"
            log.info(
                "%s %s %s -> %s %s",
                transport,
                peer,
                name,
                reply.kind.value,
                shown[:120].decode("utf-8", "replace"),
            )
            if log.isEnabledFor(logging.DEBUG) and body:
                log.debug("%s %s %s request body %r", transport, peer, name, sanitize(name, body))
        for effect in reply.effects:
            self._on_effect(effect)
        return reply
