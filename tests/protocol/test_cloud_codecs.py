"""Sans-IO codecs of the device-to-cloud protocol: handshake, channel, CoAP (cloud-api.md §8)."""

from __future__ import annotations

import hashlib
import hmac
import os

import pytest
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from softap_sim.protocol import coap
from softap_sim.protocol.lightssl import (
    Channel,
    ChannelError,
    DeviceHandshake,
    ServerHandshake,
)
from tests.conftest import seeded_key

DEVICE_ID = bytes.fromhex("320020001847333531323135")


@pytest.fixture(scope="module")
def server_key() -> rsa.RSAPrivateKey:
    return seeded_key(5683, 2048)._key


@pytest.fixture(scope="module")
def device_key() -> rsa.RSAPrivateKey:
    return seeded_key(1024)._key


def counter_random(seed: int) -> object:
    state = [seed]

    def rnd(n: int) -> bytes:
        out = b""
        while len(out) < n:
            state[0] += 1
            out += hashlib.sha256(state[0].to_bytes(8, "big")).digest()
        return out[:n]

    return rnd


def handshake(
    server_key: rsa.RSAPrivateKey, device_key: rsa.RSAPrivateKey
) -> tuple[ServerHandshake, DeviceHandshake]:
    srv = ServerHandshake(
        server_key,
        lambda i: device_key.public_key() if i == DEVICE_ID.hex() else None,
        counter_random(1),
    )  # type: ignore[arg-type]
    dev = DeviceHandshake(device_key, server_key.public_key(), DEVICE_ID)
    step2 = dev.receive_data(srv.hello_bytes())
    assert step2 is not None
    assert len(step2) == 256  # RSA-2048
    step3 = srv.receive_data(step2)
    assert step3 is not None
    assert len(step3) == 384  # 128 + 256
    assert dev.receive_data(step3) is None
    return srv, dev


def test_handshake_layout(server_key: rsa.RSAPrivateKey, device_key: rsa.RSAPrivateKey) -> None:
    srv, dev = handshake(server_key, device_key)
    assert len(srv.hello_bytes()) == 40
    assert srv.device_id == DEVICE_ID.hex()
    assert dev.session == srv.session
    assert dev.session is not None
    assert len(dev.session) == 40


def test_step2_plaintext_is_nonce_then_id(
    server_key: rsa.RSAPrivateKey, device_key: rsa.RSAPrivateKey
) -> None:
    srv = ServerHandshake(server_key, lambda i: None, os.urandom)
    dev = DeviceHandshake(device_key, server_key.public_key(), DEVICE_ID)
    step2 = dev.receive_data(srv.hello_bytes())
    assert step2 is not None
    plain = server_key.decrypt(step2, padding.PKCS1v15())
    assert plain == srv.hello_bytes() + DEVICE_ID  # exactly 52 bytes, as real firmware
    with pytest.raises(ChannelError, match="unknown device"):
        srv.receive_data(step2)


def test_step3_signature_is_raw_pkcs1_type1(
    server_key: rsa.RSAPrivateKey, device_key: rsa.RSAPrivateKey
) -> None:
    srv = ServerHandshake(server_key, lambda i: device_key.public_key(), os.urandom)
    dev = DeviceHandshake(device_key, server_key.public_key(), DEVICE_ID)
    step3 = srv.receive_data(dev.receive_data(srv.hello_bytes()) or b"")
    assert step3 is not None
    pub = server_key.public_key().public_numbers()
    em = pow(int.from_bytes(step3[128:], "big"), pub.e, pub.n).to_bytes(256, "big")
    session = device_key.decrypt(step3[:128], padding.PKCS1v15())
    mac = hmac.new(session, step3[:128], hashlib.sha1).digest()
    assert em == b"\x00\x01" + b"\xff" * (256 - 3 - 20) + b"\x00" + mac  # no DigestInfo


def test_tampered_server_reply_is_rejected(
    server_key: rsa.RSAPrivateKey, device_key: rsa.RSAPrivateKey
) -> None:
    srv = ServerHandshake(server_key, lambda i: device_key.public_key(), os.urandom)
    dev = DeviceHandshake(device_key, server_key.public_key(), DEVICE_ID)
    step3 = bytearray(srv.receive_data(dev.receive_data(srv.hello_bytes()) or b"") or b"")
    step3[-1] ^= 1
    with pytest.raises(ChannelError):
        dev.receive_data(bytes(step3))


def test_wrong_nonce_and_garbage_are_rejected(
    server_key: rsa.RSAPrivateKey, device_key: rsa.RSAPrivateKey
) -> None:
    srv = ServerHandshake(server_key, lambda i: device_key.public_key(), os.urandom)
    forged = server_key.public_key().encrypt(b"\x00" * 40 + DEVICE_ID, padding.PKCS1v15())
    with pytest.raises(ChannelError, match="nonce"):
        srv.receive_data(forged)
    srv = ServerHandshake(server_key, lambda i: device_key.public_key(), os.urandom)
    with pytest.raises(ChannelError):
        srv.receive_data(os.urandom(256))
    srv = ServerHandshake(server_key, lambda i: device_key.public_key(), os.urandom)
    with pytest.raises(ChannelError, match="after"):
        srv.receive_data(os.urandom(300))


def test_channel_iv_chaining_rule() -> None:
    """Next IV in a direction = first 16 bytes of the previous ciphertext (§8.3)."""
    session = bytes(range(40))
    a, b = Channel(session), Channel(session)
    f1 = a.encrypt(b"first")
    f2 = a.encrypt(b"second")
    key, iv = session[:16], session[16:32]
    ct1 = f1[2:]
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    assert ct1 == enc.update(b"first" + b"\x0b" * 11) + enc.finalize()
    enc = Cipher(algorithms.AES(key), modes.CBC(ct1[:16])).encryptor()
    assert f2[2:] == enc.update(b"second" + b"\x0a" * 10) + enc.finalize()
    assert f1[:2] == len(ct1).to_bytes(2, "big")
    # byte-at-a-time delivery decodes the same messages
    out: list[bytes] = []
    for byte in f1 + f2:
        out += b.receive_data(bytes([byte]))
    assert out == [b"first", b"second"]


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(b"\x00\x00", id="zero-length"),
        pytest.param(b"\x00\x11" + b"x" * 17, id="not-a-block-multiple"),
        pytest.param(b"\xff\xf0" + b"x" * 16, id="oversized"),
        pytest.param(b"\x00\x10" + b"x" * 16, id="bad-padding"),
    ],
)
def test_channel_rejects_bad_frames(frame: bytes) -> None:
    with pytest.raises(ChannelError):
        Channel(bytes(40)).receive_data(frame)


def test_coap_private_event_bytes() -> None:
    """The whole event name is ONE Uri-Path option after ``E`` (``event_name_uri_path``)."""
    msg = coap.CoapMessage(
        coap.CoapType.CON,
        coap.Code.POST,
        0x1234,
        b"\x07",
        [(coap.Option.URI_PATH, b"E"), (coap.Option.URI_PATH, b"spark/device/claim/code")],
        b"CODE",
    )
    data = coap.encode(msg)
    assert data == bytes.fromhex(
        "4102123407b1450d0a" + b"spark/device/claim/code".hex() + "ff" + b"CODE".hex()
    )
    back = coap.decode(data)
    assert back.uri_path == [b"E", b"spark/device/claim/code"]
    assert back.payload == b"CODE"


def test_coap_extended_option_lengths_round_trip() -> None:
    for n in (0, 12, 13, 268, 269, 1000):
        msg = coap.CoapMessage(
            coap.CoapType.NON,
            coap.Code.GET,
            1,
            b"",
            [(coap.Option.URI_PATH, b"v"), (coap.Option.URI_QUERY, b"a" * n)],
        )
        assert coap.decode(coap.encode(msg)).uri_query == [b"a" * n]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x41\x02",
        b"\x81\x02\x00\x00",
        b"\x49\x02\x00\x00",
        b"\x40\x02\x00\x01\xff",
        b"\x40\x02\x00\x01\xd1",
    ],
)
def test_coap_rejects_malformed(data: bytes) -> None:
    with pytest.raises(coap.CoapError):
        coap.decode(data)
