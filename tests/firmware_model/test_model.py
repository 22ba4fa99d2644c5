"""The firmware model without sockets: commands, validation, storage rules."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.asymmetric import padding
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_model import (
    AccessPoint,
    CredentialStore,
    Dct,
    Device,
    DeviceIdentity,
    DeviceKey,
    FirmwareEra,
    RadioEnvironment,
    ReplyKind,
    Secret,
    WifiCredential,
)
from firmware_model import security as sec
from firmware_model.device import DctChanged, SoftApShutdown
from firmware_model.identity import device_code_from_random
from firmware_model.jsmn import TokenType, parse_json_request


def enc(key: DeviceKey, plaintext: bytes) -> str:
    return key._key.public_key().encrypt(plaintext, padding.PKCS1v15()).hex()


def configure(device: Device, **fields: object) -> bytes:
    parts = []
    for k, v in fields.items():
        parts.append(f'"{k}":"{v}"' if isinstance(v, str) else f'"{k}":{v}')
    return device.execute("configure-ap", ("{" + ",".join(parts) + "}").encode()).body


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param(
            {"ssid": "guest", "sec": 4194310, "pw": b"guest-password"},
            b'{"r":0}',
            id="wpa2-in-range",
        ),
        pytest.param(
            {"ssid": "guest", "sec": 4194310, "pw": b"guest"}, b'{"r":-4}', id="wpa2-short-key"
        ),
        pytest.param(
            {"ssid": "guest", "sec": 4194310, "pw": b"x" * 65}, b'{"r":-4}', id="wpa2-long-key"
        ),
        pytest.param(
            {"ssid": "nowhere", "sec": 4194310, "pw": b"guest"},
            b'{"r":-2}',
            id="wpa2-not-in-range-before-key-check",
        ),
        pytest.param(
            {"ssid": "Hidden", "sec": 4194308, "pw": b"hidden-password"},
            b'{"r":-2}',
            id="hidden-wpa2-cannot-be-configured",
        ),
        pytest.param({"sec": 0}, b'{"r":-3}', id="missing-ssid"),
        pytest.param({"ssid": "x" * 33, "sec": 0}, b'{"r":-3}', id="ssid-too-long"),
        pytest.param({"ssid": "Cafe"}, b'{"r":0}', id="open-without-sec"),
        pytest.param({"ssid": "anything", "sec": 1, "pw": b"abcd"}, b'{"r":-4}', id="wep-short"),
        pytest.param(
            {"ssid": "anything", "sec": 1, "pw": b"abcde"}, b'{"r":0}', id="wep-no-sniffing"
        ),
    ],
)
def test_configure_ap_validation(
    device: Device, fields: dict[str, object], expected: bytes
) -> None:
    f = dict(fields)
    pw = f.pop("pw", None)
    if isinstance(pw, bytes):
        f["pwd"] = enc(device.key, pw)
    f = {"idx": 0, **f}
    assert configure(device, **f) == expected
    assert len(device.dct.credentials) == (1 if expected == b'{"r":0}' else 0)


def test_configure_ap_learns_security_from_scan(device: Device) -> None:
    assert (
        configure(device, ssid="guest", sec=4194304, pwd=enc(device.key, b"guest-password"))
        == b'{"r":0}'
    )
    assert device.dct.credentials[0].security == sec.WPA2_MIXED_PSK


def test_configure_ap_null_channel_and_idx_ignored(device: Device) -> None:
    body = b'{"idx":3,"ssid":"Cafe","sec":0,"ch":null}'
    assert device.execute("configure-ap", body).body == b'{"r":0}'
    assert device.dct.credentials[0].channel == 0


def test_configure_ap_non_ascii_password(device: Device) -> None:
    pw = "p\u00e4ssw\u00f6rd-\u00fc\u20ac".encode()
    assert configure(device, ssid="guest", sec=4194310, pwd=enc(device.key, pw)) == b'{"r":0}'
    assert device.dct.credentials[0].password.value == pw


def raw_encrypt(key: DeviceKey, em: bytes) -> str:
    """The RSA public operation on a chosen encoded message (any padding, valid or not)."""
    pub = key._key.public_key().public_numbers()
    return pow(int.from_bytes(em, "big"), pub.e, pub.n).to_bytes(128, "big").hex()


@pytest.mark.parametrize(
    ("em", "expected"),
    [
        pytest.param(
            b"\x00\x01" + b"\xff" * 117 + b"\x00" + b"password",
            b'{"r":-16640}',
            id="signature-block-type",
        ),
        pytest.param(
            b"\x00\x02" + b"\x11" * 5 + b"\x00" + b"p" * 120,
            b'{"r":-16640}',
            id="padding-shorter-than-8",
        ),
        pytest.param(b"\x00\x02" + b"\x11" * 126, b'{"r":-16640}', id="no-separator"),
        pytest.param(
            b"\x00\x02" + b"\x11" * 8 + b"\x00" + b"guest-password".rjust(117, b"g"),
            b'{"r":-4}',
            id="valid-117-byte-password-too-long-for-wpa",
        ),
    ],
)
def test_configure_ap_padding_rules(device: Device, em: bytes, expected: bytes) -> None:
    """mbedTLS 2.x ``rsa_rsaes_pkcs1_v15_decrypt`` padding checks (spec §4.4)."""
    assert len(em) == 128
    pwd = raw_encrypt(device.key, em)
    assert configure(device, ssid="guest", sec=4194310, pwd=pwd) == expected


def test_configure_ap_one_char_password_used_literally(device: Device) -> None:
    assert configure(device, ssid="OpenNet", sec=0, pwd="x") == b'{"r":0}'
    assert device.dct.credentials[0].password.value == b"x"


def test_configure_ap_effects(device: Device) -> None:
    reply = device.execute("configure-ap", b'{"ssid":"Cafe","sec":0}')
    assert reply.effects == (DctChanged(),)
    assert device.credentials_changed


def test_credential_store_newest_first_overwrite_and_limit() -> None:
    store = CredentialStore()
    for i in range(6):
        store.add(WifiCredential(f"net{i}".encode(), Secret(b"p"), 0, i))
    assert [c.ssid for c in store] == [b"net5", b"net4", b"net3", b"net2", b"net1"]
    store.add(WifiCredential(b"net3", Secret(b"new"), 0, 9))
    assert [c.ssid for c in store] == [b"net5", b"net4", b"net3", b"net2", b"net1"]
    assert store[2].password.value == b"new"


def test_only_one_enterprise_network() -> None:
    store = CredentialStore()
    store.add(WifiCredential(b"corp1", Secret(b"p"), sec.WPA2_AES_ENT, 1))
    store.add(WifiCredential(b"home", Secret(b"p"), 0, 1))
    store.add(WifiCredential(b"corp2", Secret(b"p"), sec.WPA2_AES_ENT, 1))
    assert [c.ssid for c in store] == [b"home", b"corp2"]


@pytest.mark.parametrize(
    ("body", "expected", "stored"),
    [
        pytest.param(b'{"k":"cc","v":"CODE"}', b'{"r":0}', b"CODE", id="plain"),
        pytest.param(b'{"k":"ccX","v":"CODE"}', b'{"r":0}', b"CODE", id="key-cut-to-2"),
        pytest.param(
            b'{"k":"cc","v":"' + b"A" * 70 + b'"}', b'{"r":0}', b"A" * 63, id="value-cut-to-63"
        ),
        pytest.param(b'{k:"cc",v:"CODE"}', b'{"r":0}', b"CODE", id="unquoted-keys-accepted"),
        pytest.param(b"{k:cc,v:CODE}", b"", b"", id="unquoted-value-is-primitive"),
        pytest.param(b'{"k":"cc","v":"a\\/b"}', b'{"r":0}', b"a\\/b", id="escapes-kept-raw"),
        pytest.param(b'{"k":"","v":"x"}', b'{"r":-1}', b"", id="empty-key"),
        pytest.param(b'{"k":"cc","v":""}', b'{"r":-1}', b"", id="empty-value"),
        pytest.param(b'"just a string"', b'{"r":-1}', b"", id="top-level-string"),
        pytest.param(b"{}", b'{"r":-1}', b"", id="empty-object"),
        pytest.param(b'{"k":"cc","v":["x"]}', b"", b"", id="array-value-no-json"),
        pytest.param(b'{"K":"cc","v":"x"}', b"", b"", id="keys-case-sensitive"),
        pytest.param(b'{"k":"cc","v":"x\\q"}', b"", b"", id="invalid-escape"),
        pytest.param(b'{"k":"cc"', b"", b"", id="unterminated"),
        pytest.param(b'{"k":"cc","v":"CODE"}\x00garbage', b'{"r":0}', b"CODE", id="nul-ends-body"),
    ],
)
def test_set_command(device: Device, body: bytes, expected: bytes, stored: bytes) -> None:
    reply = device.execute("set", body)
    assert reply.body == expected
    assert (reply.kind is ReplyKind.NO_JSON) == (expected == b"")
    assert device.dct.claim_code == stored


def test_device_id_claimed_is_string(device: Device) -> None:
    assert device.execute("device-id").body.endswith(b'"c":"0"}')
    device.dct.set_claim_code(b"X" * 63)
    device.dct.mark_claimed()
    assert device.execute("device-id").body.endswith(b'"c":"1"}')
    assert device.dct.claim_code == b""


def test_connect_ap_effect(device: Device) -> None:
    reply = device.execute("connect-ap", b"anything at all")
    assert reply.body == b'{"r":0}'
    assert reply.effects == (SoftApShutdown(),)


def test_scan_ssid_raw_and_cut(device_key: DeviceKey) -> None:
    radio = RadioEnvironment(
        [
            AccessPoint(b'say "hi"\\', sec.OPEN, 1, -40, 54000),
            AccessPoint(b"x" * 40, sec.OPEN, 1, -40, 54000),
            AccessPoint(b"nul\x00tail", sec.OPEN, 1, -40, 54000),
        ]
    )
    d = Device(Dct(DeviceIdentity(bytes(12), "ABCDEF")), device_key, radio)
    body = d.execute("scan-ap").body
    assert b'"ssid":"say "hi"\\"' in body  # unescaped, as the firmware writes it
    assert b'"ssid":"' + b"x" * 32 + b'"' in body
    assert b'"ssid":"nul"' in body


def test_empty_scan(device_key: DeviceKey) -> None:
    d = Device(Dct(DeviceIdentity(bytes(12), "ABCDEF")), device_key, RadioEnvironment())
    assert d.execute("scan-ap").body == b'{"scans":[]}'


def test_legacy_era_configure(device: Device) -> None:
    device.profile = replace(device.profile, enterprise_keys=False)
    legacy = Device(device.dct, device.key, device.radio, FirmwareEra.V0_5_0)
    body = (
        '{"idx":0,"ssid":"nowhere","sec":4194310,"ch":7,"pwd":"%s"}' % enc(device.key, b"x")
    ).encode()
    assert legacy.execute("configure-ap", body).body == b'{"r":0}'  # no validation
    assert legacy.dct.credentials[0].security == 4194310  # verbatim
    eap = b'{"ssid":"x","eap":25}'
    assert legacy.execute("configure-ap", eap).kind is ReplyKind.NO_JSON
    bad = b'{"ssid":"x","pwd":"00ab"}'
    assert legacy.execute("configure-ap", bad).body == b'{"r":-1040}'  # tropicssl


def test_enterprise_peap(device: Device) -> None:
    body = (
        '{"idx":0,"ssid":"Corp","sec":37748740,"eap":25,"ii":"alice","oi":"anon",'
        '"pwd":"%s"}' % enc(device.key, b"alice-pw")
    ).encode()
    # WPA2-Enterprise needs the network in range
    device.radio.access_points.append(AccessPoint(b"Corp", sec.WPA2_AES_ENT, 1, -50, 54000))
    assert device.execute("configure-ap", body).body == b'{"r":0}'
    cred = device.dct.credentials[0]
    assert cred.enterprise is not None
    assert cred.enterprise.inner_identity == b"alice"
    missing = b'{"ssid":"Corp","sec":37748740,"eap":25}'
    assert device.execute("configure-ap", missing).body == b'{"r":1}'


def test_enterprise_tls_private_key_decrypted(device: Device) -> None:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    device.radio.access_points.append(AccessPoint(b"Corp", sec.WPA2_AES_ENT, 1, -50, 54000))
    aes_key, iv = bytes(range(16)), bytes(range(16, 32))
    pem = b"-----BEGIN PRIVATE KEY-----\nMII...\n-----END PRIVATE KEY-----\n"
    padded = pem + bytes([16 - len(pem) % 16]) * (16 - len(pem) % 16)
    ct = Cipher(algorithms.AES(aes_key), modes.CBC(iv)).encryptor().update(padded)
    body = (
        '{"ssid":"Corp","sec":37748740,"eap":13,"crt":"-----BEGIN CERT-----\\nabc\\n",'
        '"key":"%s","ek":"%s"}' % (ct.hex(), enc(device.key, aes_key + iv))
    ).encode()
    assert device.execute("configure-ap", body).body == b'{"r":0}'
    ent = device.dct.credentials[0].enterprise
    assert ent is not None
    assert ent.private_key.value == padded  # the device does not unpad
    assert ent.client_certificate == b"-----BEGIN CERT-----\nabc\n"


def test_jsmn_walk_rules() -> None:
    keys, types = (b"k", b"v"), (TokenType.STRING, TokenType.STRING)
    assert parse_json_request(b'{"k":"a","k":"b"}', keys, types).last(0) == b"b"  # type: ignore[union-attr]
    assert parse_json_request(b'{"k"}', keys, types) is None
    assert parse_json_request(b"", keys, types) is None
    assert parse_json_request(b"[1,2]", keys, types) is None


def test_device_code_alphabet_and_bits() -> None:
    assert device_code_from_random(0) == "222222"
    assert device_code_from_random(1) == "322222"
    assert device_code_from_random(31 << 5, 4) == "2Z22"
    ident = DeviceIdentity.generate(random.Random(7))
    assert ident.ssid.startswith("Photon-")
    assert len(ident.device_code) == 6


def test_secret_repr_hides_value() -> None:
    s = Secret(b"hunter2-password")
    assert "hunter2" not in repr(s)
    cred = WifiCredential(b"x", s, 0, 0)
    assert "hunter2" not in repr(cred)


@pytest.mark.parametrize(
    ("text", "era"),
    [
        ("1.5.2", FirmwareEra.CURRENT),
        ("0.7.0", FirmwareEra.CURRENT),
        ("3.3.1", FirmwareEra.CURRENT),
        ("0.6.4", FirmwareEra.V0_5_0),
        ("0.4.9", FirmwareEra.V0_4_4),
        ("0.4.1", FirmwareEra.V0_4_0),
        ("current", FirmwareEra.CURRENT),
    ],
)
def test_era_parse(text: str, era: FirmwareEra) -> None:
    assert FirmwareEra.parse(text) is era


@pytest.mark.parametrize("text", ["4.0.0", "0.3.9", "banana"])
def test_era_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        FirmwareEra.parse(text)


def test_dct_round_trip(device: Device) -> None:
    configure(device, ssid="guest", sec=4194310, pwd=enc(device.key, b"guest-password"))
    device.execute("set", b'{"k":"cc","v":"CODE"}')
    again = Dct.from_json(device.dct.to_json())
    assert again.to_json() == device.dct.to_json()
    assert again.credentials[0].password.value == b"guest-password"


@given(st.integers(min_value=0))
@settings(max_examples=60, deadline=None)
def test_private_op_matches_the_textbook_exponent(device_key: DeviceKey, raw: int) -> None:
    """The CRT private op (GMP when gmpy2 is installed, else ``pow``) is exactly ``c^d mod n``."""
    priv = device_key._key.private_numbers()
    c = raw % priv.public_numbers.n
    assert device_key._private_op(c) == pow(c, priv.d, priv.public_numbers.n)


def test_both_powmod_paths_agree(device_key: DeviceKey) -> None:
    """gmpy2 (a runtime dependency) is in use and gives the builtin's integers."""
    from firmware_model import keys

    gmp = keys._load_powmod()
    assert gmp is not pow
    rng = random.Random(7)
    priv = device_key._key.private_numbers()
    for _ in range(20):
        base, exp, mod = rng.getrandbits(1024), priv.dmp1, priv.p
        assert gmp(base, exp, mod) == pow(base, exp, mod)
        assert type(gmp(base, exp, mod)) is int
