"""What the cloud sends one connected device, and the replies it awaits.

:class:`DeviceExchange` is the I/O half of a session's
:class:`~softap_sim.protocol.link.LinkConnection`: it encrypts and writes messages, turns a
request into a future that the matching :class:`~softap_sim.protocol.link.Response`
resolves (the link keeps the ids, tokens and deadlines; the exchange keeps the futures and
the timers), and maps what the device answers onto the REST API's errors.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from softap_sim.cloud.errors import DeviceError, DeviceOffline, DeviceTimeout
from softap_sim.protocol.coap import CoapMessage, Code, encode
from softap_sim.protocol.lightssl import Channel
from softap_sim.protocol.link import (
    LinkConnection,
    LinkError,
    Pending,
    Response,
    TokensExhaustedError,
    code_text,
    decode_function_result,
    decode_variable,
    function_request,
    is_success,
    variable_request,
)

#: a device that stops reading while this much is queued for it is disconnected
MAX_WRITE_BUFFER_BYTES = 256 * 1024

FUNCTION_NOT_FOUND = "Function not found"
VARIABLE_NOT_FOUND = "Variable not found"


def variable_value(var_type: str | None, payload: bytes) -> Any:
    """A variable reply's payload as the REST value; a malformed one is a ``DeviceError``."""
    try:
        return decode_variable(var_type, payload)
    except LinkError:
        raise DeviceError(f"The device sent a malformed {var_type} value", status=500) from None


class DeviceExchange:
    """Messages to one device; ``abort`` ends the session (the device stopped reading).

    Until the handshake sets ``channel`` nothing is sent and requests fail as offline.
    """

    def __init__(
        self, link: LinkConnection, writer: asyncio.StreamWriter, abort: Callable[[str], None]
    ) -> None:
        self.link = link
        self.channel: Channel | None = None
        self._writer = writer
        self._abort = abort
        self._waiting: dict[Pending, asyncio.Future[CoapMessage]] = {}
        self._closed = False

    def send(self, msg: CoapMessage | None) -> None:
        """Encrypt and queue one message; encrypt+write is atomic, so IVs chain in order."""
        if msg is None or self.channel is None or self._writer.is_closing():
            return
        self._writer.write(self.channel.encrypt(encode(msg)))
        if self._writer.transport.get_write_buffer_size() > MAX_WRITE_BUFFER_BYTES:
            self._abort("the device stopped reading")

    def send_event(self, name: str, data: str | None, *, private: bool = True) -> None:
        """An event to the device: CON POST ``E``/``e`` ‖ name (its ACK is not awaited)."""
        payload = data.encode("utf-8") if data else b""
        self.send(self.link.event(name, payload, private=private))

    async def request(self, template: CoapMessage, timeout_s: float) -> CoapMessage:
        """Send ``template`` as a CON request; the response message.

        Piggybacked (ACK with a code) and separate (empty ACK, then NON/CON with the
        token) responses both resolve it; an RST resolves it too (code 0).
        """
        if self._closed or self.channel is None or self._writer.is_closing():
            raise DeviceOffline()
        loop = asyncio.get_running_loop()
        try:
            pending = self.link.request(template, deadline=loop.time() + timeout_s)
        except TokensExhaustedError:
            raise DeviceError("Too many requests in flight to this device", status=429) from None
        future: asyncio.Future[CoapMessage] = loop.create_future()
        self._waiting[pending] = future
        try:
            self.send(pending.message)
            async with asyncio.timeout_at(pending.deadline):
                return await future
        except TimeoutError:
            raise DeviceTimeout() from None
        finally:
            del self._waiting[pending]
            self.link.forget(pending)

    def resolve(self, response: Response) -> None:
        future = self._waiting.get(response.pending)
        if future is not None and not future.done():
            future.set_result(response.message)

    def close(self) -> None:
        """The session ended: every waiting request fails with ``DeviceOffline``."""
        self._closed = True
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(DeviceOffline())

    # -- what the REST API asks for --------------------------------------------------
    async def call_function(self, name: str, arg: str, timeout_s: float) -> int:
        reply = await self.request(function_request(name, arg), timeout_s)
        if reply.code == Code.NOT_FOUND:
            raise DeviceError(FUNCTION_NOT_FOUND, status=404)
        if not is_success(reply.code):
            raise DeviceError(f"The function call failed ({code_text(reply.code)})", status=500)
        try:
            return decode_function_result(reply.payload)
        except LinkError:
            raise DeviceError("The device sent a malformed function result", status=500) from None

    async def get_variable(self, name: str, var_type: str | None, timeout_s: float) -> Any:
        """Read a variable, decoded per ``var_type`` (its described type, if known)."""
        reply = await self.request(variable_request(name), timeout_s)
        if reply.code == Code.NOT_FOUND:
            raise DeviceError(VARIABLE_NOT_FOUND, status=404)
        if not is_success(reply.code):
            raise DeviceError(f"The variable read failed ({code_text(reply.code)})", status=500)
        return variable_value(var_type, reply.payload)
