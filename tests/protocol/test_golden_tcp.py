"""Byte-exact TCP 5609 replies, from softap-protocol.md §2 and §10."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric import padding

from firmware_model import DeviceKey
from softap_sim import DeviceEmulator
from tests.conftest import SPEC_DEVICE_ID
from tests.wire import expect_silence, tcp_exchange

CLAIM_CODE = "MDMA" + "x" * 56 + "MDM"  # 63 chars like the upstream fixture


def encrypt(key: DeviceKey, plaintext: bytes) -> str:
    pub = key._key.public_key()
    return pub.encrypt(plaintext, padding.PKCS1v15()).hex()


def frame(name: str, body: bytes = b"") -> bytes:
    return name.encode() + b"\n" + str(len(body)).encode() + b"\n\n" + body


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("request_bytes", "expected"),
    [
        pytest.param(b"version\n0\n\n", b'\n\n{"v":2}', id="version"),
        pytest.param(
            b"device-id\n0\n\n",
            b'\n\n{"id":"' + SPEC_DEVICE_ID.encode() + b'","c":"0"}',
            id="device-id",
        ),
        pytest.param(
            b"scan-ap\n0\n\n",
            b'\n\n{"scans":[{"ssid":"guest","rssi":-52,"sec":4194310,"ch":6,"mdr":144400},'
            b'{"ssid":"Cafe","rssi":-71,"sec":0,"ch":11,"mdr":54000}]}',
            id="scan-ap-hidden-skipped",
        ),
        pytest.param(b'connect-ap\n9\n\n{"idx":0}', b'\n\n{"r":0}', id="connect-ap"),
        pytest.param(
            frame("set", b'{"k":"cc","v":"' + CLAIM_CODE.encode() + b'"}'), b'\n\n{"r":0}', id="set"
        ),
        pytest.param(frame("set", b'{"k":"xx","v":"y"}'), b'\n\n{"r":-1}', id="set-unknown-key"),
        pytest.param(frame("set", b'{"k":"cc","v":5}'), b"\n\n", id="set-number-no-json"),
        pytest.param(frame("set", b'{"k":"cc","v":"a","z":"1"}'), b"\n\n", id="unknown-json-key"),
        pytest.param(frame("set", b'{"k":"cc",'), b"\n\n", id="bad-json"),
        pytest.param(frame("set"), b"\n\n", id="empty-body"),
        pytest.param(b"provision-keys\n0\n\n", b"", id="unknown-command-zero-bytes"),
        pytest.param(b"signal\n0\n\n", b"", id="signal-zero-bytes"),
        pytest.param(b"version\r\n0\n\n", b"", id="cr-not-stripped"),
        pytest.param(b"ant-internal\n0\n\n", b"", id="antenna-silent"),
        pytest.param(b"version\n0\nXYZ\n\n", b'\n\n{"v":2}', id="blank-line-after-junk"),
        pytest.param(b"version\n5\n\n", b'\n\n{"v":2}', id="body-not-read-by-version"),
        pytest.param(b"version\x000\n\n", b'\n\n{"v":2}', id="nul-ends-name"),
        pytest.param(b"set\n99999999999\n\n", b"\n\n", id="huge-length-alloc-fails"),
        pytest.param(b"set\n-5\n\n", b"\n\n", id="negative-length"),
        pytest.param(
            b"version\n0\n\nversion\n0\n\n", b'\n\n{"v":2}', id="one-request-per-connection"
        ),
    ],
)
async def test_tcp_reply_bytes(
    emulator: DeviceEmulator, request_bytes: bytes, expected: bytes
) -> None:
    assert await tcp_exchange(emulator.tcp_address, request_bytes) == expected


@pytest.mark.asyncio
async def test_public_key_layout(emulator: DeviceEmulator) -> None:
    reply = await tcp_exchange(emulator.tcp_address, b"public-key\n0\n\n")
    assert len(reply) == 604
    doc = json.loads(reply)
    assert list(doc) == ["b", "r"]
    assert doc["r"] == 0
    b = doc["b"]
    assert len(b) == 588
    assert b == b.upper()
    assert b.startswith("30819F300D06092A864886F70D010101050003818D0030818902818100")
    assert b[58 + 256 : 58 + 256 + 10] == "0203010001"
    assert b.endswith("0" * 264)
    n = emulator.device.key._key.public_key().public_numbers().n
    assert int(b[58 : 58 + 256], 16) == n


@pytest.mark.asyncio
async def test_configure_ap_stores_decrypted_password(emulator: DeviceEmulator) -> None:
    key = emulator.device.key
    body = (
        '{"idx":0,"ssid":"guest","sec":4194310,"ch":7,"pwd":"%s"}' % encrypt(key, b"guest-password")
    ).encode()
    assert len(body) == 310  # the spec's example request
    assert await tcp_exchange(emulator.tcp_address, frame("configure-ap", body)) == b'\n\n{"r":0}'
    [cred] = emulator.device.dct.credentials
    assert cred.ssid == b"guest"
    assert cred.password.value == b"guest-password"
    assert cred.security == 4194310  # learned from the device's own scan
    assert cred.channel == 7


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("pwd", "expected_r"),
    [
        pytest.param("00ab", -16640, id="short-ciphertext-bad-padding"),
        pytest.param("ff" * 128, -17156, id="ciphertext-above-modulus"),
    ],
)
async def test_configure_ap_crypto_errors(
    emulator: DeviceEmulator, pwd: str, expected_r: int
) -> None:
    body = ('{"idx":0,"ssid":"guest","sec":4194310,"ch":7,"pwd":"%s"}' % pwd).encode()
    reply = await tcp_exchange(emulator.tcp_address, frame("configure-ap", body))
    assert reply == b'\n\n{"r":%d}' % expected_r
    assert len(emulator.device.dct.credentials) == 0


@pytest.mark.asyncio
async def test_non_ascii_ssid_length_in_utf16_units_truncates(emulator: DeviceEmulator) -> None:
    """Clients announce UTF-16 units; the device reads exactly LEN bytes (§2.4)."""
    body_text = '{"idx":0,"ssid":"Caf\u00e9","sec":0,"ch":1}'
    body = body_text.encode("utf-8")
    request = b"configure-ap\n" + str(len(body_text)).encode() + b"\n\n" + body
    assert await tcp_exchange(emulator.tcp_address, request) == b"\n\n"
    assert len(emulator.device.dct.credentials) == 0


@pytest.mark.asyncio
async def test_half_close_dispatches_partial_request(emulator: DeviceEmulator) -> None:
    """A read error (EOF) ends the header loops; the command still runs (§2.1)."""
    assert await tcp_exchange(emulator.tcp_address, b"version", half_close=True) == b'\n\n{"v":2}'
    assert await tcp_exchange(emulator.tcp_address, b"set\n10\n\n{", half_close=True) == b"\n\n"


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(b"version\n0\n", id="missing-blank-line"),
        pytest.param(b"version\r\n0\r\n\r\n", id="crlf-framing-never-ends-header"),
        pytest.param(b"set\n50\n\n{}", id="body-shorter-than-length"),
    ],
)
async def test_device_waits_without_timeout(emulator: DeviceEmulator, request_bytes: bytes) -> None:
    got, closed = await expect_silence(emulator.tcp_address, request_bytes)
    assert (got, closed) == (b"", False)


@pytest.mark.asyncio
async def test_stalled_client_blocks_other_clients(emulator: DeviceEmulator) -> None:
    """TCP clients are served one at a time: a partial request blocks the next (§2)."""
    import asyncio

    addr = emulator.tcp_address
    r1, w1 = await asyncio.open_connection(*addr)
    w1.write(b"set\n20\n\n{")  # waits for 19 more body bytes
    await w1.drain()
    second = asyncio.ensure_future(tcp_exchange(addr, b"version\n0\n\n"))
    done, _ = await asyncio.wait({second}, timeout=0.3)
    assert not done, "the second client must wait while the first holds the server"
    w1.write(b'"k":"cc","v":"abc"}')
    await w1.drain()
    assert await asyncio.wait_for(r1.read(), 5) == b'\n\n{"r":0}'
    w1.close()
    assert await second == b'\n\n{"v":2}'


@pytest.mark.asyncio
async def test_connect_ap_without_networks_returns_to_listening(emulator: DeviceEmulator) -> None:
    """With nothing stored the device leaves listening mode and comes straight back (§4.5)."""
    import asyncio

    from firmware_model import DeviceState

    reply = await tcp_exchange(emulator.tcp_address, b'connect-ap\n9\n\n{"idx":0}')
    assert reply == b'\n\n{"r":0}'
    await asyncio.wait_for(emulator.setup_complete.wait(), 5)
    await emulator.settle()
    assert emulator.device.state is DeviceState.LISTENING
    assert emulator.ap_up
    assert await tcp_exchange(emulator.tcp_address, b"version\n0\n\n") == b'\n\n{"v":2}'


@pytest.mark.asyncio
async def test_connect_ap_with_network_takes_access_point_down(emulator: DeviceEmulator) -> None:
    import asyncio

    from firmware_model import DeviceState

    body = (
        '{"idx":0,"ssid":"guest","sec":4194310,"ch":6,"pwd":"%s"}'
        % encrypt(emulator.device.key, b"guest-password")
    ).encode()
    assert await tcp_exchange(emulator.tcp_address, frame("configure-ap", body)) == b'\n\n{"r":0}'
    addr = emulator.tcp_address
    assert await tcp_exchange(addr, b'connect-ap\n9\n\n{"idx":0}') == b'\n\n{"r":0}'
    await asyncio.wait_for(emulator.setup_complete.wait(), 5)
    await emulator.wait_for_state(DeviceState.ONLINE)
    assert not emulator.ap_up
    with pytest.raises(OSError):
        await asyncio.open_connection(*addr)


@pytest.mark.asyncio
async def test_empty_connection_half_closed_gets_fin(emulator: DeviceEmulator) -> None:
    assert await tcp_exchange(emulator.tcp_address, b"", half_close=True) == b""
