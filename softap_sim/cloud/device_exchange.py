"""The device server's side of CoAP requests to a device: ids, tokens, replies.

A base of :class:`~.device_session.Session`: it sends requests (Describe, function calls,
variable reads) with a fresh message id and one-byte token and matches piggybacked and
separate responses to them; it also sends events to the device.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from softap_sim.cloud.device_messages import (
    FUNCTION_NOT_FOUND,
    VARIABLE_NOT_FOUND,
    code_text,
    decode_variable,
    is_success,
    path,
)
from softap_sim.cloud.errors import DeviceError, DeviceOffline, DeviceTimeout
from softap_sim.protocol.coap import CoapMessage, CoapType, Code, Option, encode
from softap_sim.protocol.lightssl import Channel

if TYPE_CHECKING:
    from softap_sim.cloud.backend import CloudBackend

log = logging.getLogger("softap_sim.cloud.device_server")

#: a device that stops reading while this much is queued for it is disconnected
MAX_WRITE_BUFFER_BYTES = 256 * 1024


@dataclass(slots=True)
class Pending:
    future: asyncio.Future[CoapMessage]
    message_id: int
    token: bytes


class CoapExchange:
    """Outgoing messages of one device session (see the module docstring)."""

    backend: CloudBackend
    writer: asyncio.StreamWriter
    device_id: str | None
    variables: dict[str, str]
    finished: asyncio.Event
    _channel: Channel | None
    _mid: int
    _next_token: int
    _by_mid: dict[int, Pending]
    _by_token: dict[bytes, Pending]

    def abort(self, reason: str) -> None:
        raise NotImplementedError  # Session

    # -- outgoing --------------------------------------------------------------------
    def _new_mid(self) -> int:
        self._mid = (self._mid + 1) & 0xFFFF
        return self._mid

    def _new_token(self) -> bytes:
        for _ in range(256):
            self._next_token = (self._next_token + 1) & 0xFF
            token = bytes([self._next_token])
            if token not in self._by_token:
                return token
        raise DeviceError("Too many requests in flight to this device", status=429)

    def _send(self, msg: CoapMessage) -> None:
        """Encrypt and queue one message; encrypt+write is atomic, so IVs chain in order."""
        if self._channel is None or self.writer.is_closing():
            return
        self.writer.write(self._channel.encrypt(encode(msg)))
        if self.writer.transport.get_write_buffer_size() > MAX_WRITE_BUFFER_BYTES:
            self.abort("the device stopped reading")

    def send_event(self, name: str, data: str | None, *, private: bool = True) -> None:
        """An event to the device: CON POST ``E``/``e`` ‖ name (its ACK is not awaited)."""
        options = [path(b"E" if private else b"e"), path(name.encode("utf-8"))]
        payload = data.encode("utf-8") if data else b""
        self._send(CoapMessage(CoapType.CON, Code.POST, self._new_mid(), b"", options, payload))

    async def request(self, msg: CoapMessage, timeout_s: float) -> CoapMessage:
        """Send a CON request with a fresh id and 1-byte token; the response message.

        Piggybacked (ACK with a code) and separate (empty ACK, then NON/CON with the
        token) responses both resolve it; an RST resolves it too (code 0).
        """
        if self._channel is None or self.writer.is_closing() or self.finished.is_set():
            raise DeviceOffline()
        token = self._new_token()
        mid = self._new_mid()
        future: asyncio.Future[CoapMessage] = asyncio.get_running_loop().create_future()
        pending = Pending(future, mid, token)
        self._by_mid[mid] = pending
        self._by_token[token] = pending
        try:
            self._send(
                CoapMessage(CoapType.CON, msg.code, mid, token, list(msg.options), msg.payload)
            )
            async with asyncio.timeout(timeout_s):
                return await future
        except TimeoutError:
            raise DeviceTimeout() from None
        finally:
            if self._by_mid.get(mid) is pending:
                del self._by_mid[mid]
            if self._by_token.get(token) is pending:
                del self._by_token[token]

    def _on_reply(self, msg: CoapMessage) -> None:
        if msg.type in (CoapType.ACK, CoapType.RST):
            pending = self._by_mid.pop(msg.message_id, None)
            if pending is None:
                return  # the ACK of a ping, a Hello, an event: nothing waits for it
            if msg.type == CoapType.ACK and msg.code == Code.EMPTY:
                return  # a separate response with the token follows
        else:
            pending = self._by_token.get(msg.token)
            if pending is None:
                log.debug("device server: response with an unknown token from %s", self.device_id)
                return
        self._by_token.pop(pending.token, None)
        self._by_mid.pop(pending.message_id, None)
        if not pending.future.done():
            pending.future.set_result(msg)

    # -- what the REST API asks for --------------------------------------------------
    async def call_function(self, name: str, arg: str, timeout_s: float) -> int:
        options = [path(b"f"), path(name.encode("utf-8")), (Option.URI_QUERY, arg.encode())]
        reply = await self.request(
            CoapMessage(CoapType.CON, Code.POST, 0, options=options), timeout_s
        )
        if reply.code == Code.NOT_FOUND:
            raise DeviceError(FUNCTION_NOT_FOUND, status=404)
        if not is_success(reply.code):
            raise DeviceError(f"The function call failed ({code_text(reply.code)})", status=500)
        if len(reply.payload) != 4:
            raise DeviceError("The device sent a malformed function result", status=500)
        return int.from_bytes(reply.payload, "big", signed=True)

    async def get_variable(self, name: str, timeout_s: float) -> Any:
        var_type = self.variables.get(name)
        if var_type is None:
            device_id = self.device_id
            assert device_id is not None
            row = await self.backend.device_row(device_id)
            if row is not None:
                try:
                    var_type = json.loads(row["variables"] or "{}").get(name)
                except (json.JSONDecodeError, AttributeError):
                    var_type = None
        options = [path(b"v"), path(name.encode("utf-8"))]
        reply = await self.request(
            CoapMessage(CoapType.CON, Code.GET, 0, options=options), timeout_s
        )
        if reply.code == Code.NOT_FOUND:
            raise DeviceError(VARIABLE_NOT_FOUND, status=404)
        if not is_success(reply.code):
            raise DeviceError(f"The variable read failed ({code_text(reply.code)})", status=500)
        return decode_variable(var_type, reply.payload)
