"""Tiny clients of a device's two SoftAP transports, async and blocking.

Both speak through :mod:`softap_sim.protocol.client` (request bytes, reply parsing, the
provisioning steps) and differ only in how they move bytes: asyncio streams for
``async def`` tests, blocking sockets for plain ones. One connection per request, as the
setup apps do; every read is bounded by ``timeout_s``.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from softap_sim.protocol.client import (
    Body,
    HttpReplyParser,
    decode_http_reply,
    decode_tcp_reply,
    encode_http_request,
    encode_tcp_request,
    provision_steps,
)

#: seconds a client waits for a device's reply
DEFAULT_CLIENT_TIMEOUT_S = 5.0
_RECV_BYTES = 65536


class SoftapTarget(Protocol):
    """Anything with device addresses: a DeviceEmulator or a ThreadedEmulator."""

    @property
    def tcp_address(self) -> tuple[str, int]: ...

    @property
    def http_address(self) -> tuple[str, int]: ...


def _check_transport(transport: str) -> None:
    if transport not in ("tcp", "http"):
        raise ValueError(f"transport must be 'tcp' or 'http', got {transport!r}")


class SoftapClient:
    """A tiny async client of both SoftAP transports (one connection per request).

    ``await client.tcp("device-id")`` → ``{"id": ..., "c": "0"}``; ``None`` when the device
    answers with silence or without JSON. ``await client.http("set", body={...})`` is the
    same over HTTP (GET without a body, POST with one; a non-200 status raises
    :class:`~softap_sim.protocol.client.SoftapClientError`). ``tcp_raw`` / ``http_raw``
    return the exact bytes. Every read is bounded by ``timeout_s``.
    """

    def __init__(self, device: SoftapTarget, *, timeout_s: float = DEFAULT_CLIENT_TIMEOUT_S):
        self.device = device
        self.timeout_s = timeout_s

    def for_device(self, device: SoftapTarget) -> SoftapClient:
        """A client of another device (e.g. one of ``softap_fleet``)."""
        return SoftapClient(device, timeout_s=self.timeout_s)

    async def tcp_raw(self, command: str, body: Body = None) -> bytes:
        """Send one request on port 5609's protocol; every byte until the device closes."""
        reader, writer = await asyncio.open_connection(*self.device.tcp_address)
        try:
            writer.write(encode_tcp_request(command, body))
            await writer.drain()
            async with asyncio.timeout(self.timeout_s):
                return await reader.read()
        finally:
            writer.close()

    async def tcp(self, command: str, body: Body = None) -> Any:
        return decode_tcp_reply(await self.tcp_raw(command, body))

    async def http_raw(
        self, command: str, body: Body = None, *, method: str | None = None
    ) -> bytes:
        """One HTTP request; the complete response (head and body) as bytes."""
        address = self.device.http_address
        reader, writer = await asyncio.open_connection(*address)
        try:
            writer.write(encode_http_request(address, command, body, method=method))
            await writer.drain()
            parser = HttpReplyParser()
            async with asyncio.timeout(self.timeout_s):
                while chunk := await reader.read(_RECV_BYTES):
                    if (reply := parser.feed(chunk)) is not None:
                        return reply.raw
            return parser.received  # closed: a reply ended by the close, or what came
        finally:
            writer.close()

    async def http(self, command: str, body: Body = None, *, method: str | None = None) -> Any:
        return decode_http_reply(await self.http_raw(command, body, method=method), command)

    async def provision(
        self,
        ssid: str,
        password: str = "",
        *,
        security: str | int = "wpa2_aes",
        channel: int = 1,
        claim_code: str | None = None,
        transport: str = "tcp",
    ) -> None:
        """Set the device up like a setup app: public-key, set, configure-ap, connect-ap.

        Raises:
            SoftapClientError: a step did not answer ``{"r": 0}``.
        """
        _check_transport(transport)
        send: Callable[[str, Body], Awaitable[Any]] = self.tcp if transport == "tcp" else self.http
        steps = provision_steps(
            ssid, password, security=security, channel=channel, claim_code=claim_code
        )
        request = next(steps)
        while True:
            reply = await send(*request)
            try:
                request = steps.send(reply)
            except StopIteration:
                return


class SoftapSyncClient:
    """:class:`SoftapClient` for plain tests (blocking sockets, same codec and methods)."""

    def __init__(self, device: SoftapTarget, *, timeout_s: float = DEFAULT_CLIENT_TIMEOUT_S):
        self.device = device
        self.timeout_s = timeout_s

    def for_device(self, device: SoftapTarget) -> SoftapSyncClient:
        return SoftapSyncClient(device, timeout_s=self.timeout_s)

    def tcp_raw(self, command: str, body: Body = None) -> bytes:
        with socket.create_connection(self.device.tcp_address, timeout=self.timeout_s) as sock:
            sock.sendall(encode_tcp_request(command, body))
            chunks = []
            while chunk := sock.recv(_RECV_BYTES):
                chunks.append(chunk)
            return b"".join(chunks)

    def tcp(self, command: str, body: Body = None) -> Any:
        return decode_tcp_reply(self.tcp_raw(command, body))

    def http_raw(self, command: str, body: Body = None, *, method: str | None = None) -> bytes:
        address = self.device.http_address
        with socket.create_connection(address, timeout=self.timeout_s) as sock:
            sock.sendall(encode_http_request(address, command, body, method=method))
            parser = HttpReplyParser()
            while chunk := sock.recv(_RECV_BYTES):
                if (reply := parser.feed(chunk)) is not None:
                    return reply.raw
            return parser.received

    def http(self, command: str, body: Body = None, *, method: str | None = None) -> Any:
        return decode_http_reply(self.http_raw(command, body, method=method), command)

    def provision(
        self,
        ssid: str,
        password: str = "",
        *,
        security: str | int = "wpa2_aes",
        channel: int = 1,
        claim_code: str | None = None,
        transport: str = "tcp",
    ) -> None:
        """See :meth:`SoftapClient.provision`."""
        _check_transport(transport)
        send: Callable[[str, Body], Any] = self.tcp if transport == "tcp" else self.http
        steps = provision_steps(
            ssid, password, security=security, channel=channel, claim_code=claim_code
        )
        request = next(steps)
        while True:
            reply = send(*request)
            try:
                request = steps.send(reply)
            except StopIteration:
                return
