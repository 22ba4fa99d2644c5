"""The emulated device's end of the cloud link (TCP 5683, cloud-api.md §8).

Started by the emulator on the model's ``ConnectCloud`` effect: handshake with the
server's RSA-2048 public key (as held in the device's DCT), Hello both ways, then what
``Spark_Handshake`` does right after a full handshake — publish the claim code if one is
stored, the ident/hardware events, subscribe to ``spark`` and ``particle`` — and from
then on answer Describe, function calls, variable reads and pings. A claim confirmation
(any ``spark/device/claim/*`` event) clears the code and sets claimed, through the model.
Any protocol error ends the session once and is reported to the model (blinking cyan,
retry with back-off).

Why it lives in ``transports/``: it is what that package holds, a thin asyncio adapter
moving bytes between a socket and the sans-IO codecs (:mod:`~softap_sim.protocol.lightssl`,
:mod:`~softap_sim.protocol.coap`, :mod:`~softap_sim.protocol.link`) on behalf of the
firmware model, as ``tcp_server.py`` does for SoftAP. It is the *device's* end, so it is
not under ``cloud/``: the cloud imports nothing from ``firmware_model``, and the device
may face another server (a real one) just as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from firmware_model import Device, Effect
from softap_sim.protocol import coap
from softap_sim.protocol.coap import CoapMessage, CoapType, Code
from softap_sim.protocol.lightssl import Channel, ChannelError, DeviceHandshake
from softap_sim.protocol.link import (
    CLAIM_CODE_EVENT,
    Hello,
    LinkConnection,
    Ping,
    Request,
    ack,
    encode_function_result,
    time_request,
)

log = logging.getLogger(__name__)

PLATFORM_ID = 6  # Photon
HELLO_FLAGS = 0
#: what the Photon says first: product id = platform id, firmware 0, no device id
HELLO = Hello(PLATFORM_ID, 0, HELLO_FLAGS, PLATFORM_ID)
CONNECT_TIMEOUT_S = 10.0
#: max_binary / ota_chunk_size the firmware reports (TCP, Photon)
SYSTEM_EVENTS = (
    ("spark/device/ident/0", b""),
    ("spark/hardware/max_binary", b"393216"),
    ("spark/hardware/ota_chunk_size", b"512"),
)


def load_server_key(pem: bytes) -> rsa.RSAPublicKey:
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("the server key must be an RSA public key")
    return key


class DeviceCloudClient:
    """One device-to-cloud session; ``on_up``/``on_down`` report to the emulator."""

    def __init__(
        self,
        device: Device,
        host: str,
        port: int,
        server_key: rsa.RSAPublicKey,
        *,
        on_up: Callable[[], None],
        on_down: Callable[[str], None],
        apply: Callable[[list[Effect]], None],
        call_later: Callable[[float, Callable[[], None]], object],
        on_event: Callable[[str, str, str, bool], None] | None = None,
    ) -> None:
        self.device = device
        self.host = host
        self.port = port
        self._server_key = server_key
        self._on_up = on_up
        self._on_down = on_down
        self._apply = apply
        self._call_later = call_later
        #: (direction "out"/"in", name, data, private) of every event sent or received
        self._on_event = on_event
        self._writer: asyncio.StreamWriter | None = None
        self._channel: Channel | None = None
        #: ids, tokens and the awaited time reply; the handshake's salt seeds the real one
        self._link = LinkConnection(0)
        self.up = False
        self.events_sent: list[str] = []

    # -- outgoing -------------------------------------------------------------------
    def _send(self, msg: CoapMessage) -> None:
        if self._writer is None or self._channel is None or self._writer.is_closing():
            return
        self._writer.write(self._channel.encrypt(coap.encode(msg)))

    def publish(self, name: str, data: bytes, *, private: bool = True, ttl: int = 60) -> None:
        """POST ``E``/``e`` with the whole name as one Uri-Path option; Max-Age if ttl != 60."""
        self._send(self._link.event(name, data, private=private, ttl_s=ttl))
        self.events_sent.append(name)
        if self._on_event is not None:
            self._on_event("out", name, data.decode("utf-8", "replace"), private)

    def _subscribe(self, prefix: str, *, mine: bool = True) -> None:
        """GET ``e`` ‖ prefix; ``?u`` = MY_DEVICES (cloud-api.md §8.4)."""
        self._send(self._link.subscribe(prefix, mine=mine))

    # -- the session ----------------------------------------------------------------
    async def run(self) -> None:
        reason = "closed"
        try:
            reason = await self._session()
        except (OSError, ChannelError, coap.CoapError, asyncio.IncompleteReadError) as err:
            reason = f"{type(err).__name__}: {err}"
        except TimeoutError:
            reason = "timed out"
        finally:
            if self._writer is not None:
                self._writer.close()
                with contextlib.suppress(Exception):
                    await self._writer.wait_closed()
            self._writer = None
        if reason:
            log.warning("cloud connection ended: %s", reason)
        self._on_down(reason)

    async def _session(self) -> str:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), CONNECT_TIMEOUT_S
        )
        self._writer = writer
        identity = self.device.dct.identity
        hs = DeviceHandshake(self.device.key.crypto_key, self._server_key, identity.device_id)
        while hs.session is None:
            data = await asyncio.wait_for(reader.read(4096), CONNECT_TIMEOUT_S)
            if not data:
                return "the server closed the connection during the handshake"
            out = hs.receive_data(data)
            if out:
                writer.write(out)
        channel = Channel(hs.session)
        self._channel = channel
        self._link = LinkConnection(int.from_bytes(channel.salt[:2], "big"))
        self._send(self._link.hello(HELLO.encode()))
        got_hello = False
        while True:
            data = await (
                asyncio.wait_for(reader.read(4096), CONNECT_TIMEOUT_S)
                if not got_hello
                else reader.read(4096)
            )
            if not data:
                return "the server closed the connection"
            for plain in channel.receive_data(data):
                msg = coap.decode(plain)
                if not got_hello and msg.code == Code.POST and msg.uri_path[:1] == [b"h"]:
                    got_hello = True
                    if msg.type is CoapType.CON:
                        self._send(ack(msg))
                    self._after_handshake()
                else:
                    self._handle(msg)

    def _after_handshake(self) -> None:
        """``Spark_Handshake``: claim code, system events, subscriptions, time."""
        self.up = True
        self._on_up()
        code = self.device.claim_code_to_publish()
        if code is not None:
            self.publish(CLAIM_CODE_EVENT, code)
        for name, data in SYSTEM_EVENTS:
            self.publish(name, data)
        self._subscribe("spark")
        self._subscribe("particle")
        for sub in self.device.app.subscriptions:  # Particle.subscribe() in setup()
            self._subscribe(sub.prefix, mine=sub.scope == "my_devices")
        self._send(self._link.request(time_request()).message)

    def _handle(self, msg: CoapMessage) -> None:
        event = self._link.receive(msg)  # acks of our events and subscriptions: None
        if isinstance(event, Request):
            self._request(msg)
        elif isinstance(event, Ping):
            self._send(ack(msg))
        elif event is not None and msg.type is CoapType.CON:
            # a confirmable separate response: the device has no use for one (its time
            # reply comes piggybacked) and answers 4.04 as to any request it cannot serve
            self._send(ack(msg, Code.NOT_FOUND))

    def _request(self, msg: CoapMessage) -> None:
        path = msg.uri_path
        head = path[0] if path else b""
        if msg.code == Code.POST and head in (b"E", b"e") and len(path) >= 2:
            if msg.type is CoapType.CON:
                self._send(ack(msg))
            name = path[1].decode("utf-8", "replace")
            data = msg.payload.decode("utf-8", "replace")
            if self._on_event is not None:
                self._on_event("in", name, data, head == b"E")
            self._apply(self.device.receive_cloud_event(name, data))
        elif msg.code == Code.GET and head == b"d":
            self._send(ack(msg, Code.CONTENT, self.device.app.describe()))
        elif msg.code == Code.POST and head == b"f" and len(path) >= 2:
            self._function(msg, path[1].decode("utf-8", "replace"))
        elif msg.code == Code.GET and head == b"v" and len(path) >= 2:
            spec = self.device.app.variables.get(path[1].decode("utf-8", "replace"))
            if spec is None:
                self._send(ack(msg, Code.NOT_FOUND))
            else:
                self._send(ack(msg, Code.CONTENT, spec.encode()))
        elif msg.type is CoapType.CON:
            self._send(ack(msg, Code.NOT_FOUND))

    def _function(self, msg: CoapMessage, name: str) -> None:
        spec = self.device.app.functions.get(name)
        if spec is None:
            self._send(ack(msg, Code.NOT_FOUND))
            return
        if spec.hang:
            return
        arg = b"".join(msg.uri_query).decode("utf-8", "replace")
        result = encode_function_result(spec.call(arg))
        if spec.delay_s > 0:
            # a slow function: a separate reply with the request's token, later
            self._send(ack(msg))
            reply = self._link.separate_response(msg, Code.CHANGED, result)
            self._call_later(spec.delay_s, lambda: self._send(reply))
        else:
            self._send(ack(msg, Code.CHANGED, result))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

    @property
    def describe(self) -> dict[str, Any]:
        return {
            "functions": sorted(self.device.app.functions),
            "variables": sorted(self.device.app.variables),
        }
