"""Devices, claim codes, functions, variables and events of the local cloud.

Models are tested synchronously on a plain SQLite connection; routes through the real
``CloudServer`` on port 0 with a fake :class:`DeviceLink`. Users, products, customers
and tokens are inserted with SQL (tokens hashed with ``hashing.digest``), so nothing
here depends on ``auth.py``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import string
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from softap_sim.cloud import events, hashing, models, routes, views
from softap_sim.cloud.app import CloudServer, make_app
from softap_sim.cloud.backend import CloudBackend
from softap_sim.cloud.db import SCHEMA, Database
from softap_sim.cloud.errors import (
    CloudError,
    Conflict,
    DeviceTimeout,
    Forbidden,
    InvalidRequest,
    NotFound,
)
from softap_sim.cloud.handlers import events as handlers_events
from softap_sim.cloud.models.claims import CLAIM_CODE_LIFETIME_S
from softap_sim.cloud.principal import OfflineLink, Principal

T0 = 1_700_000_000.0
T0_ISO = "2023-11-14T22:13:20.000Z"

# -- the world every test starts from -------------------------------------------------
ALICE, BOB, OWNER = "u-alice", "u-bob", "u-owner"
CAROL, DAVE = "c-carol", "c-dave"  # customers of WIDGET and GADGET
WIDGET, GADGET = 101, 202  # WIDGET is owned by OWNER, GADGET by nobody

DEV_ALICE = "0123456789abcdef000000a1"
DEV_BOB = "0123456789abcdef000000b1"
DEV_CAROL = "0123456789abcdef000000c1"  # in WIDGET, owned by CAROL
DEV_FREE = "0123456789abcdef000000f1"  # no product, unowned
DEV_WIDGET = "0123456789abcdef000000f2"  # in WIDGET, unowned
UNKNOWN = "0123456789abcdef00000000"

TOK_ALICE = "a" * 40
TOK_BOB = "b" * 40
TOK_OWNER = "0" * 40
TOK_CAROL = "c" * 40
TOK_DAVE = "d" * 40
TOK_WIDGET_CLIENT = "e" * 40  # client credentials of WIDGET's client (no owner user)
TOK_EXPIRED = "f" * 40

FUNCTIONS = ["led", "digitalwrite"]
VARIABLES = {"temp": "double", "count": "int32", "label": "string", "on": "bool"}

P_ALICE = Principal("user", "h", "particle", user_id=ALICE)
P_BOB = Principal("user", "h", "particle", user_id=BOB)
P_OWNER = Principal("user", "h", "particle", user_id=OWNER)
P_CAROL = Principal("customer", "h", "widget-app", customer_id=CAROL, product_id=WIDGET)
P_DAVE = Principal("customer", "h", "gadget-app", customer_id=DAVE, product_id=GADGET)
P_CLIENT = Principal("client", "h", "widget-app", product_id=WIDGET)


def _pem(key: rsa.RSAPrivateKey, fmt: serialization.PublicFormat) -> str:
    return key.public_key().public_bytes(serialization.Encoding.PEM, fmt).decode()


_KEY_1 = rsa.generate_private_key(public_exponent=65537, key_size=1024)
_KEY_2 = rsa.generate_private_key(public_exponent=65537, key_size=1024)
KEY = _pem(_KEY_1, serialization.PublicFormat.SubjectPublicKeyInfo)
KEY_PKCS1 = _pem(_KEY_1, serialization.PublicFormat.PKCS1)
OTHER_KEY = _pem(_KEY_2, serialization.PublicFormat.SubjectPublicKeyInfo)


def seed(conn: sqlite3.Connection) -> None:
    """Users, products, customers, tokens and five devices (see the constants)."""
    for uid in (ALICE, BOB, OWNER):
        conn.execute(
            "INSERT INTO users (id, email, created_at) VALUES (?, ?, ?)",
            (uid, f"{uid[2:]}@example.com", T0),
        )
    conn.execute(
        "INSERT INTO products (id, slug, name, owner_user_id, created_at) VALUES (?,?,?,?,?)",
        (WIDGET, "widget", "Widget", OWNER, T0),
    )
    conn.execute(
        "INSERT INTO products (id, slug, name, owner_user_id, created_at) VALUES (?,?,?,?,?)",
        (GADGET, "gadget", "Gadget", None, T0),
    )
    conn.execute(
        "INSERT INTO customers (id, product_id, email, created_at) VALUES (?,?,?,?)",
        (CAROL, WIDGET, "carol@example.com", T0),
    )
    conn.execute(
        "INSERT INTO customers (id, product_id, email, created_at) VALUES (?,?,?,?)",
        (DAVE, GADGET, "dave@example.com", T0),
    )
    tokens: list[tuple[str, str, str | None, str | None, int | None, float | None]] = [
        (TOK_ALICE, "particle", ALICE, None, None, None),
        (TOK_BOB, "particle", BOB, None, None, None),
        (TOK_OWNER, "particle", OWNER, None, None, None),
        (TOK_CAROL, "widget-app", None, CAROL, WIDGET, None),
        (TOK_DAVE, "gadget-app", None, DAVE, GADGET, None),
        (TOK_WIDGET_CLIENT, "widget-app", None, None, WIDGET, None),
        (TOK_EXPIRED, "particle", ALICE, None, None, T0 - 1),
    ]
    for token, client, user, customer, product, expires in tokens:
        conn.execute(
            "INSERT INTO tokens (hash, kind, client_id, user_id, customer_id, product_id, "
            "expires_at, created_at) VALUES (?, 'access', ?, ?, ?, ?, ?, ?)",
            (hashing.digest(token), client, user, customer, product, expires, T0),
        )
    for i, (dev, product, user, customer) in enumerate(
        [
            (DEV_ALICE, None, ALICE, None),
            (DEV_BOB, None, BOB, None),
            (DEV_CAROL, WIDGET, None, CAROL),
            (DEV_FREE, None, None, None),
            (DEV_WIDGET, WIDGET, None, None),
        ]
    ):
        models.devices.register_device(
            conn, device_id=dev, public_key_pem=KEY, product_id=product, now=T0 + i
        )
        conn.execute(
            "UPDATE devices SET owner_user_id = ?, owner_customer_id = ?, functions = ?, "
            "variables = ? WHERE id = ?",
            (user, customer, json.dumps(FUNCTIONS), json.dumps(VARIABLES), dev),
        )


def snapshot(conn: sqlite3.Connection) -> list[list[Any]]:
    """Every device and claim-code row, to show that a refused request changed nothing."""
    rows = conn.execute("SELECT * FROM devices ORDER BY id").fetchall()
    codes = conn.execute("SELECT * FROM claim_codes ORDER BY hash").fetchall()
    return [list(r) for r in rows] + [list(r) for r in codes]


@pytest.fixture
def conn() -> Iterator[sqlite3.Connection]:
    """A seeded in-memory database for the synchronous model functions."""
    db = sqlite3.connect(":memory:", isolation_level=None)
    db.executescript(SCHEMA)
    db.row_factory = sqlite3.Row
    seed(db)
    yield db
    db.close()


def device(conn: sqlite3.Connection, device_id: str) -> sqlite3.Row:
    row: sqlite3.Row = conn.execute("SELECT * FROM devices WHERE id = ?", (device_id,)).fetchone()
    return row


# =====================================================================================
# models: registry
# =====================================================================================
def test_register_device_creates_a_row_with_defaults(conn: sqlite3.Connection) -> None:
    row = models.devices.register_device(
        conn, device_id="ABCDEF0123456789ABCDEF01", public_key_pem=KEY, now=T0
    )
    assert row["id"] == "abcdef0123456789abcdef01"
    assert row["name"] == "photon_cdef01"
    assert row["platform_id"] == 6
    assert row["online"] == 0
    assert row["product_id"] is None
    assert row["owner_user_id"] is None
    assert row["public_key_pem"] == KEY
    assert row["created_at"] == T0
    assert models.devices.device_public_key(conn, "abcdef0123456789abcdef01") == KEY
    assert models.devices.device_public_key(conn, UNKNOWN) is None


def test_register_device_is_idempotent_for_the_same_key(conn: sqlite3.Connection) -> None:
    before = snapshot(conn)
    again = models.devices.register_device(
        conn, device_id=DEV_FREE, public_key_pem=KEY_PKCS1, name="renamed", now=T0 + 99
    )
    assert again["name"] == "photon_0000f1"
    assert again["created_at"] == T0 + 3
    assert snapshot(conn) == before


def test_register_device_refuses_a_different_key(conn: sqlite3.Connection) -> None:
    before = snapshot(conn)
    with pytest.raises(Conflict) as err:
        models.devices.register_device(conn, device_id=DEV_FREE, public_key_pem=OTHER_KEY, now=T0)
    assert err.value.status == 400
    assert err.value.body() == {
        "error": "conflict",
        "error_description": f"device {DEV_FREE} is registered with a different public key",
    }
    assert snapshot(conn) == before


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"device_id": "xyz"}, "A device ID is 24 hexadecimal characters", id="id"),
        pytest.param(
            {"device_id": "0" * 25}, "A device ID is 24 hexadecimal characters", id="id-long"
        ),
        pytest.param(
            {"public_key_pem": "not a key"}, "public_key_pem is not a PEM public key", id="pem"
        ),
        pytest.param({"product_id": 999}, "no product 999", id="product"),
        pytest.param({"name": "  "}, "a device name must not be empty", id="name"),
    ],
)
def test_register_device_rejects_malformed_input(
    conn: sqlite3.Connection, kwargs: dict[str, Any], message: str
) -> None:
    before = snapshot(conn)
    args: dict[str, Any] = {"device_id": "1" * 24, "public_key_pem": KEY, "now": T0}
    args.update(kwargs)
    with pytest.raises(InvalidRequest, match=message):
        models.devices.register_device(conn, **args)
    assert snapshot(conn) == before


def test_register_device_into_a_product_with_a_name(conn: sqlite3.Connection) -> None:
    row = models.devices.register_device(
        conn, device_id="2" * 24, public_key_pem=KEY, name="kitchen", product_id=WIDGET, now=T0
    )
    assert (row["name"], row["product_id"]) == ("kitchen", WIDGET)


def test_set_device_online_and_offline(conn: sqlite3.Connection) -> None:
    row = models.devices.set_device_online(
        conn, DEV_FREE, True, T0 + 50, ip="192.0.2.7", functions=["f"], variables={"v": "bool"}
    )
    assert row["online"] == 1
    assert row["last_handshake_at"] == T0 + 50
    assert row["last_heard"] == T0 + 50
    assert row["last_ip_address"] == "192.0.2.7"
    assert json.loads(row["functions"]) == ["f"]
    assert json.loads(row["variables"]) == {"v": "bool"}
    row = models.devices.set_device_online(conn, DEV_FREE, True, T0 + 60)  # keeps what it knew
    assert (row["last_ip_address"], json.loads(row["functions"])) == ("192.0.2.7", ["f"])
    row = models.devices.set_device_online(conn, DEV_FREE, False, T0 + 70)
    assert (row["online"], row["last_heard"], row["last_handshake_at"]) == (0, T0 + 70, T0 + 60)


def test_set_device_online_rejects_bad_input_and_unknown_devices(
    conn: sqlite3.Connection,
) -> None:
    before = snapshot(conn)
    with pytest.raises(InvalidRequest):
        models.devices.set_device_online(conn, DEV_FREE, True, T0, variables={"v": "float"})
    with pytest.raises(InvalidRequest):
        models.devices.set_device_online(conn, DEV_FREE, True, T0, functions=[""])
    with pytest.raises(NotFound):
        models.devices.set_device_online(conn, UNKNOWN, True, T0)
    assert snapshot(conn) == before


# =====================================================================================
# models: claim codes
# =====================================================================================
CLAIM_ALPHABET = set(string.ascii_letters + string.digits + "+/")


def test_claim_code_shape_storage_and_device_ids(conn: sqlite3.Connection) -> None:
    code, ids = models.claims.create_claim_code(conn, P_ALICE, now=T0)
    assert len(code) == 63
    assert set(code) <= CLAIM_ALPHABET
    assert ids == [DEV_ALICE]
    row = conn.execute("SELECT * FROM claim_codes").fetchone()
    assert dict(row) == {
        "hash": hashing.digest(code),
        "user_id": ALICE,
        "customer_id": None,
        "product_id": None,
        "created_at": T0,
        "expires_at": T0 + CLAIM_CODE_LIFETIME_S,
        "used_at": None,
        "device_id": None,
    }
    dump = "\n".join(conn.iterdump())
    assert code not in dump  # only the hash is stored


def test_claim_codes_are_distinct(conn: sqlite3.Connection) -> None:
    codes = {models.claims.create_claim_code(conn, P_ALICE, now=T0)[0] for _ in range(20)}
    assert len(codes) == 20


def test_product_claim_code_for_its_customer(conn: sqlite3.Connection) -> None:
    code, ids = models.claims.create_claim_code(conn, P_CAROL, product_id=WIDGET, now=T0)
    assert ids == [DEV_CAROL]
    row = conn.execute("SELECT * FROM claim_codes").fetchone()
    assert (row["user_id"], row["customer_id"], row["product_id"]) == (None, CAROL, WIDGET)
    assert row["hash"] == hashing.digest(code)


def test_customer_claim_code_on_the_user_route_is_the_customers(
    conn: sqlite3.Connection,
) -> None:
    _code, ids = models.claims.create_claim_code(conn, P_DAVE, now=T0)
    assert ids == []
    row = conn.execute("SELECT * FROM claim_codes").fetchone()
    assert (row["customer_id"], row["product_id"]) == (DAVE, GADGET)


@pytest.mark.parametrize(
    ("principal", "product_id"),
    [
        pytest.param(P_ALICE, WIDGET, id="user-on-product-route"),
        pytest.param(P_OWNER, WIDGET, id="product-owner-on-product-route"),
        pytest.param(P_DAVE, WIDGET, id="other-products-customer"),
        pytest.param(P_CLIENT, WIDGET, id="client-on-product-route"),
        pytest.param(P_CLIENT, None, id="client-on-user-route"),
    ],
)
def test_claim_code_refused(
    conn: sqlite3.Connection, principal: Principal, product_id: int | None
) -> None:
    with pytest.raises(Forbidden):
        models.claims.create_claim_code(conn, principal, product_id=product_id, now=T0)
    assert conn.execute("SELECT COUNT(*) FROM claim_codes").fetchone()[0] == 0


def test_consume_claim_code_makes_the_creator_the_owner(conn: sqlite3.Connection) -> None:
    code, _ = models.claims.create_claim_code(conn, P_ALICE, now=T0)
    info = models.claims.consume_claim_code(conn, code, DEV_FREE, T0 + 10)
    assert info == {
        "device_id": DEV_FREE,
        "user_id": ALICE,
        "customer_id": None,
        "product_id": None,
    }
    assert device(conn, DEV_FREE)["owner_user_id"] == ALICE
    row = conn.execute("SELECT used_at, device_id FROM claim_codes").fetchone()
    assert tuple(row) == (T0 + 10, DEV_FREE)
    _, ids = models.claims.create_claim_code(conn, P_ALICE, now=T0 + 20)
    assert ids == [DEV_ALICE, DEV_FREE]


def test_consume_product_code_makes_the_customer_owner_and_joins_the_product(
    conn: sqlite3.Connection,
) -> None:
    code, _ = models.claims.create_claim_code(conn, P_DAVE, product_id=GADGET, now=T0)
    info = models.claims.consume_claim_code(conn, code, DEV_FREE, T0 + 1)
    assert info == {
        "device_id": DEV_FREE,
        "user_id": None,
        "customer_id": DAVE,
        "product_id": GADGET,
    }
    row = device(conn, DEV_FREE)
    assert (row["owner_user_id"], row["owner_customer_id"], row["product_id"]) == (
        None,
        DAVE,
        GADGET,
    )


def test_claim_code_is_single_use(conn: sqlite3.Connection) -> None:
    code, _ = models.claims.create_claim_code(conn, P_CAROL, product_id=WIDGET, now=T0)
    assert models.claims.consume_claim_code(conn, code, DEV_WIDGET, T0 + 1) is not None
    before = snapshot(conn)
    assert models.claims.consume_claim_code(conn, code, DEV_FREE, T0 + 2) is None
    assert snapshot(conn) == before
    assert device(conn, DEV_FREE)["owner_customer_id"] is None


def test_same_device_resending_a_used_code_gets_the_owner_again(
    conn: sqlite3.Connection,
) -> None:
    """The device re-sends its code after every handshake until it sees the confirm."""
    code, _ = models.claims.create_claim_code(conn, P_ALICE, now=T0)
    first = models.claims.consume_claim_code(conn, code, DEV_FREE, T0 + 1)
    before = snapshot(conn)
    assert models.claims.consume_claim_code(conn, code, DEV_FREE, T0 + 7200) == first
    assert snapshot(conn) == before
    models.claims.unclaim_device(conn, P_ALICE, DEV_FREE)  # after an unclaim the old code is dead
    assert models.claims.consume_claim_code(conn, code, DEV_FREE, T0 + 7201) is None


def test_claim_code_expires_after_one_hour(conn: sqlite3.Connection) -> None:
    code, _ = models.claims.create_claim_code(conn, P_ALICE, now=T0)
    before = snapshot(conn)
    assert (
        models.claims.consume_claim_code(conn, code, DEV_FREE, T0 + CLAIM_CODE_LIFETIME_S) is None
    )
    assert snapshot(conn) == before
    code2, _ = models.claims.create_claim_code(conn, P_ALICE, now=T0)
    assert models.claims.consume_claim_code(conn, code2, DEV_FREE, T0 + 3599.9) is not None


def test_unknown_code_or_unregistered_device(conn: sqlite3.Connection) -> None:
    code, _ = models.claims.create_claim_code(conn, P_ALICE, now=T0)
    before = snapshot(conn)
    assert models.claims.consume_claim_code(conn, "x" * 63, DEV_FREE, T0) is None
    assert models.claims.consume_claim_code(conn, code, UNKNOWN, T0) is None
    assert snapshot(conn) == before


def test_device_owned_by_someone_else_is_not_taken_over(conn: sqlite3.Connection) -> None:
    code, _ = models.claims.create_claim_code(conn, P_ALICE, now=T0)
    before = snapshot(conn)
    assert models.claims.consume_claim_code(conn, code, DEV_BOB, T0 + 1) is None
    assert snapshot(conn) == before  # Bob still owns it and the code is still unused
    assert models.claims.consume_claim_code(conn, code, DEV_FREE, T0 + 2) is not None


def test_takeover_only_when_allowed(conn: sqlite3.Connection) -> None:
    code, _ = models.claims.create_claim_code(conn, P_ALICE, now=T0)
    info = models.claims.consume_claim_code(conn, code, DEV_BOB, T0 + 1, allow_takeover=True)
    assert info is not None
    assert device(conn, DEV_BOB)["owner_user_id"] == ALICE


def test_claiming_a_device_already_yours_uses_the_code(conn: sqlite3.Connection) -> None:
    code, _ = models.claims.create_claim_code(conn, P_ALICE, now=T0)
    assert models.claims.consume_claim_code(conn, code, DEV_ALICE, T0 + 1) == {
        "device_id": DEV_ALICE,
        "user_id": ALICE,
        "customer_id": None,
        "product_id": None,
    }
    assert conn.execute("SELECT used_at FROM claim_codes").fetchone()[0] == T0 + 1


# =====================================================================================
# models: views, claim by id, unclaim, events
# =====================================================================================
def test_device_view_list_and_detail_shapes(conn: sqlite3.Connection) -> None:
    models.devices.set_device_online(conn, DEV_CAROL, True, T0, ip="198.51.100.4")
    row = device(conn, DEV_CAROL)
    base = {
        "id": DEV_CAROL,
        "name": "photon_0000c1",
        "last_ip_address": "198.51.100.4",
        "last_heard": T0_ISO,
        "last_handshake_at": T0_ISO,
        "product_id": WIDGET,
        "online": True,
        "connected": True,
        "platform_id": 6,
        "cellular": False,
        "notes": None,
        "functions": FUNCTIONS,
        "variables": VARIABLES,
        "status": "normal",
        "serial_number": None,
        "system_firmware_version": "",
    }
    assert views.device_view(row, True) == base
    assert views.device_view(row, True, detail=True, owner="carol@example.com") == {
        **base,
        "owner": "carol@example.com",
        "firmware_updates_enabled": True,
        "firmware_updates_forced": False,
        "firmware_product_id": WIDGET,
        "development": False,
        "quarantined": False,
        "denied": False,
        "groups": [],
        "targeted_firmware_release_version": None,
    }
    dev = views.device_view(device(conn, DEV_FREE), False)
    assert (dev["product_id"], dev["online"], dev["last_heard"]) == (6, False, None)


def test_claim_device_by_id_rules(conn: sqlite3.Connection) -> None:
    with pytest.raises(CloudError) as err:
        models.claims.claim_device_by_id(conn, P_ALICE, UNKNOWN, online=True)
    assert (err.value.status, err.value.body()) == (404, {"ok": False, "error": "Device not found"})
    with pytest.raises(CloudError) as err:
        models.claims.claim_device_by_id(conn, P_ALICE, DEV_FREE, online=False)
    assert (err.value.status, err.value.body()) == (
        404,
        {"ok": False, "error": "Device is offline"},
    )
    with pytest.raises(CloudError) as err:
        models.claims.claim_device_by_id(conn, P_ALICE, DEV_BOB, online=True)
    assert (err.value.status, err.value.body()) == (
        403,
        {
            "ok": False,
            "error": "That belongs to someone else.",
            "errors": ["That belongs to someone else."],
        },
    )
    with pytest.raises(Forbidden):
        models.claims.claim_device_by_id(conn, P_CLIENT, DEV_FREE, online=True)
    with pytest.raises(CloudError) as err:  # a customer cannot take a device of another product
        models.claims.claim_device_by_id(conn, P_DAVE, DEV_WIDGET, online=True)
    assert err.value.status == 403
    assert device(conn, DEV_FREE)["owner_user_id"] is None
    ok = {"ok": True, "deviceID": DEV_FREE, "claimed": True}
    assert models.claims.claim_device_by_id(conn, P_ALICE, DEV_FREE.upper(), online=True) == ok
    assert models.claims.claim_device_by_id(conn, P_ALICE, DEV_FREE, online=True) == ok  # again
    assert device(conn, DEV_FREE)["owner_user_id"] == ALICE


def test_customer_claim_by_id_joins_their_product(conn: sqlite3.Connection) -> None:
    models.claims.claim_device_by_id(conn, P_DAVE, DEV_FREE, online=True)
    row = device(conn, DEV_FREE)
    assert (row["owner_customer_id"], row["product_id"]) == (DAVE, GADGET)


def test_unclaim_rules(conn: sqlite3.Connection) -> None:
    before = snapshot(conn)
    with pytest.raises(Forbidden):
        models.claims.unclaim_device(conn, P_BOB, DEV_ALICE)
    with pytest.raises(Forbidden):  # the product owner sees it but does not own it
        models.claims.unclaim_device(conn, P_OWNER, DEV_CAROL)
    assert snapshot(conn) == before
    assert models.claims.unclaim_device(conn, P_ALICE, DEV_ALICE) == {"ok": True}
    assert device(conn, DEV_ALICE)["owner_user_id"] is None
    assert models.claims.unclaim_device(conn, P_OWNER, DEV_CAROL, product="widget") == {"ok": True}
    row = device(conn, DEV_CAROL)
    assert (row["owner_customer_id"], row["product_id"]) == (None, WIDGET)


def test_make_event_and_sse_frame() -> None:
    event = events.make_event(
        "spark/status\n", "online", coreid=DEV_ALICE, now=T0, owner_user_id=ALICE
    )
    assert event == {
        "name": "spark/status",
        "data": "online",
        "ttl": 60,
        "published_at": T0_ISO,
        "coreid": DEV_ALICE,
        "private": True,
        "owner_user_id": ALICE,
        "owner_customer_id": None,
        "product_id": None,
    }
    assert events.encode_sse(event) == (
        b"event: spark/status\n"
        b'data: {"data":"online","ttl":60,"published_at":"2023-11-14T22:13:20.000Z",'
        b'"coreid":"0123456789abcdef000000a1"}\n\n'
    )
    multi = events.encode_sse(events.make_event("t", "a\nb\r\n\u00e9", coreid="x", now=T0))
    assert multi.count(b"\n") == 3  # event line, one data line, blank line
    assert "é".encode() in multi


def test_device_event_takes_owners_from_the_row(conn: sqlite3.Connection) -> None:
    event = events.device_event(device(conn, DEV_CAROL), "temp", "21.5", now=T0, private=False)
    assert (event["owner_customer_id"], event["product_id"], event["private"]) == (
        CAROL,
        WIDGET,
        False,
    )


@pytest.mark.parametrize(
    ("principal", "admin", "event_owner", "expected"),
    [
        pytest.param(P_ALICE, frozenset(), {"owner_user_id": ALICE}, True, id="user-own"),
        pytest.param(P_ALICE, frozenset(), {"owner_user_id": BOB}, False, id="user-other"),
        pytest.param(P_CAROL, frozenset(), {"owner_customer_id": CAROL}, True, id="cust-own"),
        pytest.param(
            P_CAROL,
            frozenset(),
            {"owner_customer_id": "c-x", "product_id": WIDGET},
            False,
            id="cust-other-same-product",
        ),
        pytest.param(P_OWNER, frozenset({WIDGET}), {"product_id": WIDGET}, True, id="admin"),
        pytest.param(P_CLIENT, frozenset({WIDGET}), {"product_id": GADGET}, False, id="client"),
        pytest.param(P_ALICE, frozenset(), {}, False, id="unowned"),
    ],
)
def test_event_visibility(
    principal: Principal, admin: frozenset[int], event_owner: dict[str, Any], expected: bool
) -> None:
    event = events.make_event("x", None, coreid=DEV_FREE, now=T0, **event_owner)
    assert events.EventStream(principal, admin).wants(event) is expected


def test_admin_products(conn: sqlite3.Connection) -> None:
    assert models.devices.admin_product_ids(conn, P_OWNER) == {WIDGET}
    assert models.devices.admin_product_ids(conn, P_CLIENT) == {WIDGET}
    assert models.devices.admin_product_ids(conn, P_ALICE) == frozenset()
    assert models.devices.admin_product_ids(conn, P_CAROL) == frozenset()


# =====================================================================================
# HTTP
# =====================================================================================
class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@dataclass
class FakeLink:
    """A DeviceLink whose devices, results and failures the test sets."""

    online: set[str] = field(default_factory=set)
    result: int = 42
    values: dict[str, Any] = field(default_factory=dict)
    fail: BaseException | None = None
    hang: bool = False
    calls: list[tuple[str, ...]] = field(default_factory=list)

    def is_online(self, device_id: str) -> bool:
        return device_id in self.online

    async def call_function(self, device_id: str, name: str, arg: str, timeout_s: float) -> int:
        self.calls.append(("f", device_id, name, arg))
        await self._maybe_fail()
        return self.result

    async def get_variable(self, device_id: str, name: str, timeout_s: float) -> Any:
        self.calls.append(("v", device_id, name))
        await self._maybe_fail()
        return self.values[name]

    async def _maybe_fail(self) -> None:
        if self.hang:
            await asyncio.Event().wait()
        if self.fail is not None:
            raise self.fail


@dataclass
class Env:
    cloud: CloudBackend
    link: FakeLink
    clock: Clock
    http: aiohttp.ClientSession

    async def call(
        self,
        method: str,
        path: str,
        token: str | None = None,
        **kwargs: Any,
    ) -> tuple[int, Any]:
        headers = dict(kwargs.pop("headers", {}))
        if token:
            headers["Authorization"] = f"Bearer {token}"
        async with self.http.request(method, path, headers=headers, **kwargs) as resp:
            text = await resp.text()
            if resp.content_type == "application/json":
                return resp.status, json.loads(text)
            return resp.status, text

    async def snapshot(self) -> list[list[Any]]:
        return await self.cloud.db.run(snapshot)

    async def sql(self, query: str, *args: Any) -> list[sqlite3.Row]:
        return await self.cloud.db.run(lambda c: c.execute(query, args).fetchall())


@pytest_asyncio.fixture
async def env() -> AsyncIterator[Env]:
    """The real CloudServer on port 0 over a seeded in-memory database."""
    db = Database(None)
    await db.open()
    await db.run(seed)
    link = FakeLink()
    clock = Clock(T0)
    cloud = CloudBackend(db, now=clock, link=link, call_timeout_s=5.0)
    try:
        async with CloudServer(cloud) as server, aiohttp.ClientSession(server.url) as http:
            try:
                yield Env(cloud, link, clock, http)
            finally:
                events.close_event_streams(
                    cloud.subscribers
                )  # what the app's on_shutdown hook does
    finally:
        await db.close()


FORBIDDEN = {
    "error": "forbidden",
    "error_description": (
        "Permission denied: no device with that ID or name is visible to this access token"
    ),
}
OFFLINE = {"ok": False, "error": "Device is offline"}


# -- claim codes ----------------------------------------------------------------------
@pytest.mark.asyncio
async def test_http_claim_code_for_a_user(env: Env) -> None:
    status, body = await env.call("POST", "/v1/device_claims", TOK_ALICE, json={})
    assert status == 200
    assert set(body) == {"claim_code", "device_ids"}
    assert len(body["claim_code"]) == 63
    assert set(body["claim_code"]) <= CLAIM_ALPHABET
    assert body["device_ids"] == [DEV_ALICE]
    rows = await env.sql("SELECT hash, expires_at FROM claim_codes")
    assert [tuple(r) for r in rows] == [(hashing.digest(body["claim_code"]), T0 + 3600)]


@pytest.mark.asyncio
@pytest.mark.parametrize("product", ["101", "widget", "WIDGET"])
async def test_http_product_claim_code_for_its_customer(env: Env, product: str) -> None:
    status, body = await env.call(
        "POST", f"/v1/products/{product}/device_claims", TOK_CAROL, json={}
    )
    assert status == 200
    assert body["device_ids"] == [DEV_CAROL]
    rows = await env.sql("SELECT customer_id, product_id FROM claim_codes")
    assert [tuple(r) for r in rows] == [(CAROL, WIDGET)]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("path", "token", "status", "error"),
    [
        pytest.param("/v1/products/widget/device_claims", TOK_ALICE, 403, "forbidden", id="user"),
        pytest.param("/v1/products/widget/device_claims", TOK_OWNER, 403, "forbidden", id="owner"),
        pytest.param(
            "/v1/products/widget/device_claims", TOK_DAVE, 403, "forbidden", id="other-customer"
        ),
        pytest.param("/v1/products/nope/device_claims", TOK_CAROL, 404, "not_found", id="404"),
        pytest.param("/v1/device_claims", TOK_WIDGET_CLIENT, 403, "forbidden", id="client"),
        pytest.param("/v1/device_claims", TOK_EXPIRED, 401, "invalid_token", id="expired"),
        pytest.param("/v1/device_claims", "9" * 40, 401, "invalid_token", id="unknown-token"),
        pytest.param("/v1/device_claims", None, 400, "invalid_request", id="no-token"),
    ],
)
async def test_http_claim_code_refusals(
    env: Env, path: str, token: str | None, status: int, error: str
) -> None:
    got, body = await env.call("POST", path, token, json={})
    assert (got, body["error"]) == (status, error)
    assert set(body) == {"error", "error_description"}
    assert await env.sql("SELECT * FROM claim_codes") == []


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        pytest.param(
            {"data": b"{oops", "headers": {"Content-Type": "application/json"}}, 400, id="json"
        ),
        pytest.param({"json": [1, 2]}, 400, id="array"),
        pytest.param({"json": {"iccid": "89014103211118510720"}}, 400, id="iccid"),
        pytest.param({"data": b"x", "headers": {"Content-Type": "text/csv"}}, 415, id="ctype"),
    ],
)
async def test_http_claim_code_malformed_body(
    env: Env, kwargs: dict[str, Any], status: int
) -> None:
    before = await env.snapshot()
    got, body = await env.call("POST", "/v1/device_claims", TOK_ALICE, **kwargs)
    assert (got, body["error"]) == (status, "invalid_request")
    assert await env.snapshot() == before


# -- device lists and details -----------------------------------------------------------
@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("token", "ids"),
    [
        pytest.param(TOK_ALICE, [DEV_ALICE], id="user"),
        pytest.param(TOK_OWNER, [], id="product-owner-owns-none"),
        pytest.param(TOK_CAROL, [DEV_CAROL], id="customer"),
        pytest.param(TOK_DAVE, [], id="customer-without-devices"),
        pytest.param(TOK_WIDGET_CLIENT, [DEV_CAROL, DEV_WIDGET], id="product-client"),
    ],
)
async def test_http_list_devices_per_principal(env: Env, token: str, ids: list[str]) -> None:
    status, body = await env.call("GET", "/v1/devices", token)
    assert status == 200
    assert [d["id"] for d in body] == ids


@pytest.mark.asyncio
async def test_http_list_devices_reports_the_links_online_state(env: Env) -> None:
    _, body = await env.call("GET", "/v1/devices", TOK_ALICE)
    assert (body[0]["online"], body[0]["connected"]) == (False, False)
    env.link.online.add(DEV_ALICE)
    _, body = await env.call("GET", "/v1/devices", TOK_ALICE)
    assert (body[0]["online"], body[0]["connected"]) == (True, True)
    assert "owner" not in body[0]


@pytest.mark.asyncio
async def test_http_get_device_detail(env: Env) -> None:
    status, body = await env.call("GET", f"/v1/devices/{DEV_ALICE.upper()}", TOK_ALICE)
    assert status == 200
    assert body["id"] == DEV_ALICE
    assert body["owner"] == "alice@example.com"
    assert body["firmware_updates_enabled"] is True
    assert body["product_id"] == 6
    assert "firmware_product_id" not in body
    by_name = await env.call("GET", "/v1/devices/photon_0000a1", TOK_ALICE)
    assert by_name == (200, body)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("token", "dev", "status"),
    [
        pytest.param(TOK_BOB, DEV_ALICE, 403, id="other-users-device"),
        pytest.param(TOK_BOB, UNKNOWN, 403, id="unknown-id-same-403"),
        pytest.param(TOK_BOB, "photon_0000a1", 403, id="other-users-device-by-name"),
        pytest.param(TOK_CAROL, DEV_ALICE, 403, id="customer-on-users-device"),
        pytest.param(TOK_CAROL, DEV_WIDGET, 403, id="customer-on-unowned-product-device"),
        pytest.param(TOK_DAVE, DEV_CAROL, 403, id="customer-on-other-customers-device"),
        pytest.param(TOK_WIDGET_CLIENT, DEV_ALICE, 403, id="client-outside-product"),
        pytest.param(TOK_OWNER, DEV_CAROL, 200, id="product-owner"),
        pytest.param(TOK_WIDGET_CLIENT, DEV_WIDGET, 200, id="product-client"),
        pytest.param(TOK_CAROL, DEV_CAROL, 200, id="customer-own"),
    ],
)
async def test_http_get_device_visibility(env: Env, token: str, dev: str, status: int) -> None:
    got, body = await env.call("GET", f"/v1/devices/{dev}", token)
    assert got == status
    if status == 403:
        assert body == FORBIDDEN
    else:
        assert body["id"] == dev


@pytest.mark.asyncio
async def test_http_product_device_detail(env: Env) -> None:
    status, body = await env.call("GET", f"/v1/products/widget/devices/{DEV_CAROL}", TOK_OWNER)
    assert status == 200
    assert (body["owner"], body["firmware_product_id"]) == ("carol@example.com", WIDGET)
    status, body = await env.call("GET", f"/v1/products/101/devices/{DEV_CAROL}", TOK_CAROL)
    assert status == 200
    status, body = await env.call("GET", f"/v1/products/widget/devices/{DEV_FREE}", TOK_OWNER)
    assert (status, body["error"]) == (404, "not_found")
    status, body = await env.call("GET", f"/v1/products/widget/devices/{UNKNOWN}", TOK_OWNER)
    assert (status, body["error"]) == (404, "not_found")
    status, body = await env.call("GET", f"/v1/products/widget/devices/{DEV_CAROL}", TOK_ALICE)
    assert (status, body) == (403, FORBIDDEN)
    status, body = await env.call("GET", f"/v1/products/gadget/devices/{DEV_CAROL}", TOK_CAROL)
    assert (status, body) == (403, FORBIDDEN)
    status, body = await env.call("GET", f"/v1/products/nope/devices/{DEV_CAROL}", TOK_CAROL)
    assert (status, body) == (404, {"error": "not_found", "error_description": "Product not found"})


# -- product list -----------------------------------------------------------------------
async def _add_widget_devices(env: Env, n: int) -> list[str]:
    ids = [f"{0xB00000 + i:024x}" for i in range(n)]

    def add(conn: sqlite3.Connection) -> None:
        for i, dev in enumerate(ids):
            models.devices.register_device(
                conn, device_id=dev, public_key_pem=KEY, product_id=WIDGET, now=T0 + 100 + i
            )

    await env.cloud.db.run(add)
    return ids


@pytest.mark.asyncio
async def test_http_product_devices_pagination(env: Env) -> None:
    extra = await _add_widget_devices(env, 28)  # 30 in WIDGET with the two seeded ones
    everything = [DEV_CAROL, DEV_WIDGET, *extra]
    status, body = await env.call("GET", "/v1/products/widget/devices", TOK_OWNER)
    assert status == 200
    assert set(body) == {"devices", "customers", "meta"}
    assert [d["id"] for d in body["devices"]] == everything[:25]
    assert body["meta"] == {"total_pages": 2}
    assert body["customers"] == [{"id": CAROL, "username": "carol@example.com"}]
    assert body["devices"][0]["owner"] == "carol@example.com"
    _, body = await env.call("GET", "/v1/products/101/devices?page=2", TOK_WIDGET_CLIENT)
    assert [d["id"] for d in body["devices"]] == everything[25:]
    assert body["customers"] == []
    _, body = await env.call("GET", "/v1/products/widget/devices?perPage=7&page=3", TOK_OWNER)
    assert [d["id"] for d in body["devices"]] == everything[14:21]
    assert body["meta"] == {"total_pages": 5}
    _, body = await env.call("GET", "/v1/products/widget/devices?per_page=1000", TOK_OWNER)
    assert len(body["devices"]) == 30  # clamped to 100
    _, body = await env.call("GET", "/v1/products/widget/devices?page=9", TOK_OWNER)
    assert (body["devices"], body["meta"]) == ([], {"total_pages": 2})


@pytest.mark.asyncio
async def test_http_product_devices_filters_and_empty_product(env: Env) -> None:
    _, body = await env.call("GET", "/v1/products/widget/devices?deviceId=00C1", TOK_OWNER)
    assert [d["id"] for d in body["devices"]] == [DEV_CAROL]
    _, body = await env.call("GET", "/v1/products/widget/devices?deviceName=0000f", TOK_OWNER)
    assert [d["id"] for d in body["devices"]] == [DEV_WIDGET]
    _, body = await env.call("GET", "/v1/products/widget/devices?deviceName=%25", TOK_OWNER)
    assert body["devices"] == []  # LIKE wildcards are literal
    await env.sql("UPDATE products SET owner_user_id = ? WHERE id = ?", ALICE, GADGET)
    _, body = await env.call("GET", "/v1/products/gadget/devices", TOK_ALICE)
    assert body == {"devices": [], "customers": [], "meta": {"total_pages": 0}}


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("query", "token", "status", "error"),
    [
        pytest.param("", TOK_CAROL, 403, "forbidden", id="customer"),
        pytest.param("", TOK_ALICE, 403, "forbidden", id="stranger"),
        pytest.param("?per_page=0", TOK_OWNER, 400, "invalid_request", id="per-page-0"),
        pytest.param("?perPage=x", TOK_OWNER, 400, "invalid_request", id="per-page-text"),
        pytest.param("?page=-1", TOK_OWNER, 400, "invalid_request", id="page-negative"),
    ],
)
async def test_http_product_devices_refusals(
    env: Env, query: str, token: str, status: int, error: str
) -> None:
    got, body = await env.call("GET", f"/v1/products/widget/devices{query}", token)
    assert (got, body["error"]) == (status, error)
    got, body = await env.call("GET", "/v1/products/nope/devices", TOK_OWNER)
    assert (got, body["error"]) == (404, "not_found")


# -- unclaim and claim by id ------------------------------------------------------------
@pytest.mark.asyncio
async def test_http_unclaim(env: Env) -> None:
    before = await env.snapshot()
    status, body = await env.call("DELETE", f"/v1/devices/{DEV_ALICE}", TOK_BOB)
    assert (status, body) == (403, FORBIDDEN)
    status, body = await env.call("DELETE", f"/v1/devices/{DEV_CAROL}", TOK_OWNER)
    assert (status, body["error"]) == (403, "forbidden")
    assert await env.snapshot() == before
    status, body = await env.call("DELETE", f"/v1/devices/{DEV_ALICE}", TOK_ALICE)
    assert (status, body) == (200, {"ok": True})
    assert await env.call("GET", "/v1/devices", TOK_ALICE) == (200, [])
    # particle-cli sends the token in a form body on DELETE
    status, body = await env.call(
        "DELETE", f"/v1/devices/{DEV_CAROL}", data={"id": DEV_CAROL, "access_token": TOK_CAROL}
    )
    assert (status, body) == (200, {"ok": True})


@pytest.mark.asyncio
async def test_http_product_unclaim_by_the_product_owner(env: Env) -> None:
    status, body = await env.call(
        "DELETE", f"/v1/products/widget/devices/{DEV_CAROL}/owner", TOK_OWNER
    )
    assert (status, body) == (200, {"ok": True})
    assert await env.call("GET", "/v1/devices", TOK_CAROL) == (200, [])


NO_ID = "Please specify a device ID (id): 24 hexadecimal characters"


@pytest.mark.asyncio
async def test_http_claim_by_id_bad_transfer_flag(env: Env) -> None:
    env.link.online.add(DEV_FREE)
    before = await env.snapshot()
    status, body = await env.call(
        "POST", "/v1/devices", TOK_ALICE, json={"id": DEV_FREE, "request_transfer": "maybe"}
    )
    assert (status, body) == (
        400,
        {"error": "invalid_request", "error_description": "request_transfer must be true or false"},
    )
    assert await env.snapshot() == before


@pytest.mark.asyncio
async def test_http_claim_by_id(env: Env) -> None:
    status, body = await env.call("POST", "/v1/devices", TOK_ALICE, json={"id": DEV_FREE})
    assert (status, body) == (404, OFFLINE)
    env.link.online.add(DEV_FREE)
    status, body = await env.call(
        "POST", "/v1/devices", TOK_ALICE, json={"id": DEV_FREE, "request_transfer": False}
    )
    assert (status, body) == (200, {"ok": True, "deviceID": DEV_FREE, "claimed": True})
    _, listed = await env.call("GET", "/v1/devices", TOK_ALICE)
    assert [d["id"] for d in listed] == [DEV_ALICE, DEV_FREE]
    env.link.online.add(DEV_BOB)
    status, body = await env.call(
        "POST", "/v1/devices", data={"id": DEV_BOB, "access_token": TOK_ALICE}
    )
    assert (status, body["errors"]) == (403, ["That belongs to someone else."])


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("payload", "status", "message"),
    [
        pytest.param({}, 400, NO_ID, id="missing-id"),
        pytest.param({"id": "nothex"}, 400, NO_ID, id="bad-id"),
        pytest.param({"id": UNKNOWN}, 404, "Device not found", id="unknown"),
    ],
)
async def test_http_claim_by_id_malformed(
    env: Env, payload: dict[str, str], status: int, message: str
) -> None:
    env.link.online.add(DEV_FREE)
    before = await env.snapshot()
    got, body = await env.call("POST", "/v1/devices", TOK_ALICE, json=payload)
    assert got == status
    assert body == {"ok": False, "error": message}
    assert await env.snapshot() == before


# -- functions and variables ----------------------------------------------------------
@pytest.mark.asyncio
async def test_http_function_call_offline_link(env: Env) -> None:
    env.cloud.link = OfflineLink()
    status, body = await env.call("POST", f"/v1/devices/{DEV_ALICE}/led", TOK_ALICE, json={})
    assert (status, body) == (404, OFFLINE)
    status, body = await env.call("GET", f"/v1/devices/{DEV_ALICE}/temp", TOK_ALICE)
    assert (status, body) == (404, OFFLINE)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"json": {"args": "on"}}, id="json-args"),
        pytest.param({"json": {"arg": "on"}}, id="json-arg"),
        pytest.param({"data": {"args": "on"}}, id="form-args"),
        pytest.param({"data": {"arg": "on"}}, id="form-arg"),
        pytest.param({"json": {"arg": "on", "args": "on"}}, id="both-equal"),
    ],
)
async def test_http_function_call(env: Env, kwargs: dict[str, Any]) -> None:
    env.link.online.add(DEV_ALICE)
    env.link.result = -2147483648
    status, body = await env.call("POST", f"/v1/devices/{DEV_ALICE}/led", TOK_ALICE, **kwargs)
    assert (status, body) == (
        200,
        {"id": DEV_ALICE, "name": "photon_0000a1", "connected": True, "return_value": -2147483648},
    )
    assert env.link.calls == [("f", DEV_ALICE, "led", "on")]


@pytest.mark.asyncio
async def test_http_function_call_raw_and_product_route(env: Env) -> None:
    env.link.online.update({DEV_ALICE, DEV_CAROL})
    status, text = await env.call(
        "POST", f"/v1/devices/{DEV_ALICE}/led", TOK_ALICE, data={"arg": "", "format": "raw"}
    )
    assert (status, text) == (200, "42")
    status, text = await env.call(
        "POST", f"/v1/devices/{DEV_ALICE}/led?format=raw", TOK_ALICE, json={}
    )
    assert (status, text) == (200, "42")
    status, body = await env.call(
        "POST",
        f"/v1/products/widget/devices/{DEV_CAROL}/digitalwrite",
        TOK_CAROL,
        json={"args": "D7"},
    )
    assert (status, body["return_value"]) == (200, 42)
    assert env.link.calls[-1] == ("f", DEV_CAROL, "digitalwrite", "D7")


@pytest.mark.asyncio
async def test_http_function_argument_limit(env: Env) -> None:
    env.link.online.add(DEV_ALICE)
    status, _ = await env.call(
        "POST", f"/v1/devices/{DEV_ALICE}/led", TOK_ALICE, json={"arg": "x" * 63}
    )
    assert status == 200
    status, body = await env.call(
        "POST", f"/v1/devices/{DEV_ALICE}/led", TOK_ALICE, json={"args": "x" * 64}
    )
    assert (status, body) == (
        400,
        {
            "ok": False,
            "error": "The argument is longer than 63 bytes, the most a Photon function accepts",
        },
    )
    status, _ = await env.call(
        "POST", f"/v1/devices/{DEV_ALICE}/led", TOK_ALICE, json={"args": "é" * 32}
    )
    assert status == 400  # 64 UTF-8 bytes
    status, body = await env.call(
        "POST", f"/v1/devices/{DEV_ALICE}/led", TOK_ALICE, json={"arg": "a", "args": "b"}
    )
    assert (status, body) == (
        400,
        {"ok": False, "error": "Send the argument as arg or args, not both"},
    )
    assert len(env.link.calls) == 1


@pytest.mark.asyncio
async def test_http_function_errors(env: Env) -> None:
    env.link.online.add(DEV_ALICE)
    status, body = await env.call("POST", f"/v1/devices/{DEV_ALICE}/nope", TOK_ALICE, json={})
    assert (status, body) == (404, {"ok": False, "error": "Function not found"})
    status, body = await env.call("POST", f"/v1/devices/{DEV_BOB}/led", TOK_ALICE, json={})
    assert (status, body) == (403, FORBIDDEN)
    env.link.fail = DeviceTimeout()
    status, body = await env.call("POST", f"/v1/devices/{DEV_ALICE}/led", TOK_ALICE, json={})
    assert (status, body) == (408, {"error": "Timed out."})
    assert [c[2] for c in env.link.calls] == ["led"]


@pytest.mark.asyncio
async def test_http_function_timeout_backstop(env: Env) -> None:
    """A link that never answers still ends in 408 after ``cloud.call_timeout_s``."""
    env.link.online.add(DEV_ALICE)
    env.link.hang = True
    env.cloud.call_timeout_s = 0.05
    status, body = await env.call("POST", f"/v1/devices/{DEV_ALICE}/led", TOK_ALICE, json={})
    assert (status, body) == (408, {"error": "Timed out."})
    status, body = await env.call("GET", f"/v1/devices/{DEV_ALICE}/temp", TOK_ALICE)
    assert (status, body) == (408, {"error": "Timed out."})


@pytest.mark.asyncio
async def test_http_variable_read(env: Env) -> None:
    await env.cloud.db.run(lambda c: models.devices.set_device_online(c, DEV_ALICE, True, T0))
    env.link.online.add(DEV_ALICE)
    env.link.values = {"temp": 21.5, "count": 7, "label": "hi", "on": True}
    status, body = await env.call("GET", f"/v1/devices/{DEV_ALICE}/temp", TOK_ALICE)
    assert (status, body) == (
        200,
        {
            "name": "temp",
            "result": 21.5,
            "coreInfo": {
                "name": "photon_0000a1",
                "deviceID": DEV_ALICE,
                "connected": True,
                "last_handshake_at": T0_ISO,
            },
        },
    )
    raw = {}
    for name in ("temp", "count", "label", "on"):
        status, raw[name] = await env.call(
            "GET", f"/v1/devices/{DEV_ALICE}/{name}?format=raw", TOK_ALICE
        )
        assert status == 200
    assert raw == {"temp": "21.5", "count": "7", "label": "hi", "on": "true"}


@pytest.mark.asyncio
async def test_http_variable_errors_and_product_route(env: Env) -> None:
    env.link.online.update({DEV_ALICE, DEV_CAROL})
    env.link.values = {"count": 3}
    status, body = await env.call("GET", f"/v1/devices/{DEV_ALICE}/nope", TOK_ALICE)
    assert (status, body) == (404, {"ok": False, "error": "Variable not found"})
    status, body = await env.call(
        "GET", f"/v1/products/widget/devices/{DEV_CAROL}/count", TOK_OWNER
    )
    assert (status, body["result"]) == (200, 3)
    status, body = await env.call("GET", f"/v1/devices/{DEV_CAROL}/count", TOK_DAVE)
    assert (status, body) == (403, FORBIDDEN)
    env.link.fail = DeviceTimeout()
    status, body = await env.call("GET", f"/v1/devices/{DEV_ALICE}/count", TOK_ALICE)
    assert (status, body) == (408, {"error": "Timed out."})


# -- server-sent events ---------------------------------------------------------------
class Stream:
    """An open SSE response read frame by frame."""

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.resp = resp

    async def frame(self) -> bytes:
        return await asyncio.wait_for(self.resp.content.readuntil(b"\n\n"), 5)

    async def event(self) -> tuple[str, dict[str, Any]]:
        frame = await self.frame()
        lines = frame.decode().split("\n")
        assert lines[0].startswith("event: ")
        assert lines[1].startswith("data: ")
        assert lines[2:] == ["", ""]
        return lines[0][7:], json.loads(lines[1][6:])


async def open_stream(env: Env, path: str, token: str) -> Stream:
    resp = await env.http.get(path, headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/event-stream"
    assert resp.headers["Cache-Control"] == "no-cache"
    stream = Stream(resp)
    assert await stream.frame() == b":ok\n\n"
    return stream


def ev(name: str, coreid: str, data: str = "d", **owners: Any) -> dict[str, Any]:
    return events.make_event(name, data, coreid=coreid, now=T0, **owners)


async def wait_until_no_subscribers(cloud: CloudBackend) -> None:
    """Poll: the server notices a vanished client on its own schedule."""
    async with asyncio.timeout(5):
        while cloud.subscribers:  # noqa: ASYNC110 - there is no event to wait on
            await asyncio.sleep(0.01)


@pytest.mark.asyncio
async def test_sse_user_stream_filters_by_visibility(env: Env) -> None:
    stream = await open_stream(env, "/v1/devices/events?nonce=12345", TOK_ALICE)
    assert len(env.cloud.subscribers) == 1
    env.cloud.publish(ev("temp", DEV_BOB, owner_user_id=BOB))
    env.cloud.publish(ev("temp", DEV_BOB, owner_user_id=BOB, private=False))
    env.cloud.publish(ev("temp", DEV_CAROL, owner_customer_id=CAROL, product_id=WIDGET))
    env.cloud.publish(ev("temp", DEV_ALICE, "21.5", owner_user_id=ALICE))
    assert await stream.frame() == (
        b"event: temp\n"
        b'data: {"data":"21.5","ttl":60,"published_at":"2023-11-14T22:13:20.000Z",'
        b'"coreid":"0123456789abcdef000000a1"}\n\n'
    )
    stream.resp.close()


@pytest.mark.asyncio
async def test_sse_prefix_filter(env: Env) -> None:
    stream = await open_stream(env, "/v1/devices/events/spark/st", TOK_ALICE)
    env.cloud.publish(ev("temp", DEV_ALICE, owner_user_id=ALICE))
    env.cloud.publish(ev("spark/hardware", DEV_ALICE, owner_user_id=ALICE))
    env.cloud.publish(ev("spark/status", DEV_ALICE, "online", owner_user_id=ALICE))
    assert await stream.event() == (
        "spark/status",
        {"data": "online", "ttl": 60, "published_at": T0_ISO, "coreid": DEV_ALICE},
    )
    stream.resp.close()


@pytest.mark.asyncio
async def test_sse_device_stream(env: Env) -> None:
    await env.sql("UPDATE devices SET owner_user_id = ? WHERE id = ?", ALICE, DEV_FREE)
    stream = await open_stream(env, f"/v1/devices/{DEV_ALICE}/events/t", TOK_ALICE)
    env.cloud.publish(ev("temp", DEV_FREE, owner_user_id=ALICE))
    env.cloud.publish(ev("humidity", DEV_ALICE, owner_user_id=ALICE))
    env.cloud.publish(ev("temp", DEV_ALICE, "1", owner_user_id=ALICE))
    assert await stream.event() == (
        "temp",
        {"data": "1", "ttl": 60, "published_at": T0_ISO, "coreid": DEV_ALICE},
    )
    stream.resp.close()
    other = await open_stream(env, f"/v1/devices/{DEV_ALICE}/events", TOK_ALICE)
    env.cloud.publish(ev("humidity", DEV_ALICE, "2", owner_user_id=ALICE))
    assert (await other.event())[0] == "humidity"
    other.resp.close()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("path", "token"),
    [
        pytest.param(f"/v1/devices/{DEV_ALICE}/events", TOK_BOB, id="others-device"),
        pytest.param(f"/v1/devices/{UNKNOWN}/events", TOK_BOB, id="unknown-device"),
        pytest.param(f"/v1/devices/{DEV_CAROL}/events", TOK_DAVE, id="customer"),
    ],
)
async def test_sse_device_stream_refused(env: Env, path: str, token: str) -> None:
    status, body = await env.call("GET", path, token)
    assert (status, body) == (403, FORBIDDEN)
    assert not env.cloud.subscribers


@pytest.mark.asyncio
async def test_sse_needs_a_valid_token(env: Env) -> None:
    status, body = await env.call("GET", "/v1/devices/events", "9" * 40)
    assert (status, body["error"]) == (401, "invalid_token")
    status, body = await env.call("GET", "/v1/devices/events")
    assert (status, body["error"]) == (400, "invalid_request")


@pytest.mark.asyncio
async def test_sse_customer_and_product_client_streams(env: Env) -> None:
    carol = await open_stream(env, "/v1/devices/events", TOK_CAROL)
    client = await open_stream(env, "/v1/devices/events", TOK_WIDGET_CLIENT)
    env.cloud.publish(ev("a", DEV_ALICE, owner_user_id=ALICE))
    env.cloud.publish(ev("b", DEV_WIDGET, product_id=WIDGET))
    env.cloud.publish(ev("c", DEV_CAROL, owner_customer_id=CAROL, product_id=WIDGET))
    assert (await carol.event())[0] == "c"
    assert (await client.event())[0] == "b"
    assert (await client.event())[0] == "c"
    carol.resp.close()
    client.resp.close()


@pytest.mark.asyncio
async def test_sse_public_prefix_stream(env: Env) -> None:
    stream = await open_stream(env, "/v1/events/temp", TOK_ALICE)
    env.cloud.publish(ev("temp", DEV_BOB, "private", owner_user_id=BOB))
    env.cloud.publish(ev("other", DEV_BOB, "public", owner_user_id=BOB, private=False))
    env.cloud.publish(ev("temp", DEV_BOB, "public", owner_user_id=BOB, private=False))
    env.cloud.publish(ev("temp", DEV_ALICE, "mine", owner_user_id=ALICE))
    assert (await stream.event())[1]["data"] == "public"
    assert (await stream.event())[1]["data"] == "mine"
    stream.resp.close()


@pytest.mark.asyncio
async def test_sse_owner_change_is_followed(env: Env) -> None:
    """Events carry the owners at publish time; an unclaimed device's events stop."""
    stream = await open_stream(env, "/v1/devices/events", TOK_ALICE)
    env.cloud.publish(ev("x", DEV_ALICE, "before", owner_user_id=ALICE))
    env.cloud.publish(ev("x", DEV_ALICE, "after-unclaim"))
    env.cloud.publish(ev("x", DEV_FREE, "claimed", owner_user_id=ALICE))
    assert (await stream.event())[1]["data"] == "before"
    assert (await stream.event())[1]["data"] == "claimed"
    stream.resp.close()


@pytest.mark.asyncio
async def test_sse_disconnect_removes_the_subscriber(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(handlers_events, "SSE_POLL_S", 0.02)
    streams = [await open_stream(env, "/v1/devices/events", TOK_ALICE) for _ in range(3)]
    assert len(env.cloud.subscribers) == 3
    for stream in streams:
        stream.resp.close()
    await wait_until_no_subscribers(env.cloud)
    env.cloud.publish(ev("x", DEV_ALICE, owner_user_id=ALICE))  # nobody left: no error


@pytest.mark.asyncio
async def test_sse_close_event_streams_ends_them(env: Env) -> None:
    stream = await open_stream(env, "/v1/devices/events", TOK_ALICE)
    env.cloud.publish(ev("x", DEV_ALICE, owner_user_id=ALICE))
    events.close_event_streams(env.cloud.subscribers)
    assert await asyncio.wait_for(stream.resp.content.read(), 5) == b""  # dropped, then EOF
    await wait_until_no_subscribers(env.cloud)
    stream.resp.close()


@pytest.mark.asyncio
async def test_sse_slow_client_is_disconnected(env: Env) -> None:
    stream = await open_stream(env, "/v1/devices/events", TOK_ALICE)
    (subscriber,) = env.cloud.subscribers
    assert isinstance(subscriber, events.EventStream)
    subscriber.max_queued = 3
    for i in range(5):  # published faster than the loop can write them
        env.cloud.publish(ev("x", DEV_ALICE, str(i), owner_user_id=ALICE))
    assert subscriber.closed
    assert await asyncio.wait_for(stream.resp.content.read(), 5) == b""
    stream.resp.close()


@pytest.mark.asyncio
async def test_sse_on_shutdown_hook_lets_the_server_close_promptly() -> None:
    db = Database(None)
    await db.open()
    await db.run(seed)
    cloud = CloudBackend(db, now=Clock(T0))
    app = make_app(cloud)
    app.on_shutdown.append(handlers_events.on_shutdown)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    await web.SockSite(runner, sock).start()
    try:
        async with aiohttp.ClientSession() as http:
            resp = await http.get(
                f"http://127.0.0.1:{port}/v1/devices/events",
                headers={"Authorization": f"Bearer {TOK_ALICE}"},
            )
            assert await resp.content.readuntil(b"\n\n") == b":ok\n\n"
            await asyncio.wait_for(runner.cleanup(), 5)
            assert await asyncio.wait_for(resp.content.read(), 5) == b""
            assert not cloud.subscribers
            resp.close()
    finally:
        await runner.cleanup()
        await db.close()


# -- routes ---------------------------------------------------------------------------
def test_every_route_resolves_to_its_handler() -> None:
    """In the real app no route of the table is shadowed by another."""
    app = make_app(CloudBackend(Database(None)))
    for table_method, path, handler in routes.ROUTES:
        method = "POST" if table_method == "*" else table_method
        concrete = (
            path.replace("{product}", "widget")
            .replace("{client_id}", "some-client")
            .replace("{email}", "a@example.com")
            .replace("{token}", "0" * 40)
            .replace("{device}", DEV_CAROL)
            .replace("{name}", "count")
            .replace("{prefix:.+}", "spark/device/x")
        )
        request = make_mocked_request(method, concrete, app=app)
        match = asyncio.run(app.router.resolve(request))
        assert match.handler is handler, (method, path)


@pytest.mark.asyncio
async def test_unknown_routes_and_methods_answer_json(env: Env) -> None:
    status, body = await env.call("PUT", "/v1/device_claims", TOK_ALICE)
    assert (status, body["error"]) == (405, "method_not_allowed")
    status, body = await env.call("GET", "/v1/no-such-route", TOK_ALICE)
    assert (status, body["error"]) == (404, "not_found")


@pytest.mark.asyncio
async def test_sse_idle_stream_gets_keepalives(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """An idle stream gets ``:ok`` comments (particle-cli reconnects after 13 s of silence
    and loses what is published meanwhile); events still arrive between them."""
    monkeypatch.setattr(handlers_events, "SSE_POLL_S", 0.01)
    monkeypatch.setattr(handlers_events, "SSE_KEEPALIVE_S", 0.02)
    stream = await open_stream(env, "/v1/devices/events", TOK_ALICE)
    assert await stream.frame() == b":ok\n\n"  # the first keepalive
    env.cloud.publish(ev("x", DEV_ALICE, "after", owner_user_id=ALICE))
    frame = await stream.frame()
    while frame == b":ok\n\n":  # more keepalives may come first
        frame = await stream.frame()
    assert json.loads(frame.decode().split("\n")[1][6:])["data"] == "after"
    stream.resp.close()
