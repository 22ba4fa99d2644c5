"""The device registry and what the REST API reads of it (cloud-api.md §6.1).

Devices become known through :func:`register_device` (id + public key); the device
server looks keys up with :func:`device_public_key` and reports sessions with
:func:`set_device_online`. Lookups for the REST API go through :func:`visible_device` /
:func:`visible_product_device`, which apply :mod:`~softap_sim.cloud.policy`'s visibility
rule. An unknown device id and a device the caller may not see get the *same* 403 on the
``/v1/devices/...`` routes, so the API is no oracle for which ids exist (Particle answers
"Permission Denied" for both too). On product routes a product administrator gets 404
for a device that is not in the product; anyone else gets that same 403.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
from collections.abc import Iterable, Mapping
from typing import Any

from cryptography.hazmat.primitives import serialization

from softap_sim.cloud import validate
from softap_sim.cloud.errors import Conflict, Forbidden, InvalidRequest, NotFound
from softap_sim.cloud.models.accounts import find_product
from softap_sim.cloud.policy import row_visible
from softap_sim.cloud.principal import Principal
from softap_sim.cloud.views import Row

log = logging.getLogger(__name__)

PHOTON_PLATFORM_ID = 6
DEFAULT_PER_PAGE = 25
MAX_PER_PAGE = 100
VARIABLE_TYPES = frozenset({"int32", "double", "string", "bool"})
PERMISSION_DENIED = (
    "Permission denied: no device with that ID or name is visible to this access token"
)


def normalise_device_id(device_id: str) -> str:
    """24 hex digits, lower-cased; anything else is ``invalid_request``."""
    value = validate.device_id(device_id)
    if value is None:
        raise InvalidRequest("A device ID is 24 hexadecimal characters")
    return value


def _normalise_public_key(pem: str) -> str:
    """The key re-serialised as SPKI PEM, so PKCS#1 and SPKI spellings compare equal."""
    try:
        key = serialization.load_pem_public_key(pem.strip().encode("ascii"))
    except (ValueError, TypeError, UnicodeEncodeError):
        raise InvalidRequest("public_key_pem is not a PEM public key") from None
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def get_row(conn: sqlite3.Connection, device_id: str) -> sqlite3.Row | None:
    row: sqlite3.Row | None = conn.execute(
        "SELECT * FROM devices WHERE id = ?", (device_id,)
    ).fetchone()
    return row


def admin_product_ids(conn: sqlite3.Connection, principal: Principal) -> frozenset[int]:
    """Products whose devices this (non-customer) token may see and administer.

    A user token: the products that user owns. A client token: the product of the
    client that issued it. Customers administer nothing.
    """
    if principal.is_customer:
        return frozenset()
    ids: set[int] = set()
    if principal.kind == "client" and principal.product_id is not None:
        ids.add(int(principal.product_id))
    if principal.user_id:
        ids.update(
            int(r[0])
            for r in conn.execute(
                "SELECT id FROM products WHERE owner_user_id = ?", (principal.user_id,)
            )
        )
    return frozenset(ids)


def owner_name(conn: sqlite3.Connection, row: Row) -> str | None:
    """The owner's username (email) for the detail view."""
    found: sqlite3.Row | None = None
    if row["owner_customer_id"]:
        found = conn.execute(
            "SELECT email FROM customers WHERE id = ?", (row["owner_customer_id"],)
        ).fetchone()
    elif row["owner_user_id"]:
        found = conn.execute(
            "SELECT email FROM users WHERE id = ?", (row["owner_user_id"],)
        ).fetchone()
    return None if found is None else str(found[0])


def visible_device(conn: sqlite3.Connection, principal: Principal, id_or_name: str) -> sqlite3.Row:
    """The device behind ``:id`` (an id, or the name of a device the caller sees).

    Unknown and invisible devices are the same 403.
    """
    admin = admin_product_ids(conn, principal)
    candidate = id_or_name.strip().lower()
    row = get_row(conn, candidate) if validate.DEVICE_ID_RE.match(candidate) else None
    if row is not None:
        if row_visible(principal, admin, row):
            return row
        raise Forbidden(PERMISSION_DENIED)
    for named in conn.execute(
        "SELECT * FROM devices WHERE name = ? ORDER BY created_at, id", (id_or_name,)
    ):
        if row_visible(principal, admin, named):
            return named  # type: ignore[no-any-return]
    raise Forbidden(PERMISSION_DENIED)


def product_or_404(conn: sqlite3.Connection, product: str | int) -> sqlite3.Row:
    row: sqlite3.Row | None = find_product(conn, product)
    if row is None:
        raise NotFound("Product not found")
    return row


def visible_product_device(
    conn: sqlite3.Connection, principal: Principal, product: str, device: str
) -> sqlite3.Row:
    """``/v1/products/:p/devices/:id``: 404 product; admins 404 outside; others 403."""
    prod = product_or_404(conn, product)
    product_id = int(prod["id"])
    if product_id in admin_product_ids(conn, principal):
        candidate = device.strip().lower()
        row = get_row(conn, candidate) if validate.DEVICE_ID_RE.match(candidate) else None
        if row is None:
            row = conn.execute(
                "SELECT * FROM devices WHERE name = ? AND product_id = ? ORDER BY created_at, id",
                (device, product_id),
            ).fetchone()
        if row is None or row["product_id"] != product_id:
            raise NotFound("Device not found in this product")
        return row
    row = visible_device(conn, principal, device)
    if row["product_id"] != product_id:
        raise Forbidden(PERMISSION_DENIED)
    return row


# ---------------------------------------------------------------------------------
# views


def register_device(
    conn: sqlite3.Connection,
    *,
    device_id: str,
    public_key_pem: str,
    name: str | None = None,
    product_id: int | None = None,
    now: float,
) -> dict[str, Any]:
    """Put a device (id + public key) into the registry; the device row as a dict.

    Idempotent: registering the same id with the same key changes nothing (not even
    ``name``/``product_id``). The same id with a different key raises :class:`Conflict`:
    the registry is what the device link checks the handshake against, so a key swap
    must be deliberate (delete the row). Keys compare as SPKI PEM, so a PKCS#1 spelling
    of the same key matches. The default name is ``photon_<last 6 hex digits>``.
    """
    device_id = normalise_device_id(device_id)
    pem = _normalise_public_key(public_key_pem)
    existing = get_row(conn, device_id)
    if existing is not None:
        if _normalise_public_key(existing["public_key_pem"]) != pem:
            raise Conflict(f"device {device_id} is registered with a different public key")
        return dict(existing)
    if product_id is not None and find_product(conn, product_id) is None:
        raise InvalidRequest(f"no product {product_id}")
    if name is not None and not name.strip():
        raise InvalidRequest("a device name must not be empty")
    conn.execute(
        "INSERT INTO devices (id, public_key_pem, name, product_id, platform_id, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (
            device_id,
            pem,
            name if name is not None else f"photon_{device_id[-6:]}",
            product_id,
            PHOTON_PLATFORM_ID,
            now,
        ),
    )
    row = get_row(conn, device_id)
    assert row is not None
    log.info("cloud: registered device %s", device_id)
    return dict(row)


def device_public_key(conn: sqlite3.Connection, device_id: str) -> str | None:
    """The registered SPKI PEM of a device, or None (the handshake then closes)."""
    row = conn.execute("SELECT public_key_pem FROM devices WHERE id = ?", (device_id,)).fetchone()
    return None if row is None else str(row[0])


def set_device_online(
    conn: sqlite3.Connection,
    device_id: str,
    online: bool,
    now: float,
    *,
    ip: str | None = None,
    functions: Iterable[str] | None = None,
    variables: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Record a session start (``online=True``) or end; the updated row as a dict.

    Going online stamps ``last_handshake_at`` and ``last_heard``, and stores the
    address and the described functions/variables when given (variable types are the
    REST names ``int32``/``double``/``string``/``bool``). Going offline stamps
    ``last_heard``. Unknown devices raise :class:`NotFound`.
    """
    fn_json = var_json = None
    if functions is not None:
        names = list(functions)
        if not all(isinstance(n, str) and n for n in names):
            raise InvalidRequest("function names must be non-empty strings")
        fn_json = json.dumps(names)
    if variables is not None:
        if not all(isinstance(t, str) and t in VARIABLE_TYPES for t in variables.values()):
            raise InvalidRequest(f"variable types must be one of {sorted(VARIABLE_TYPES)}")
        var_json = json.dumps(dict(variables))
    if get_row(conn, device_id) is None:
        raise NotFound(f"no device {device_id}")
    if online:
        conn.execute(
            "UPDATE devices SET online = 1, last_handshake_at = ?, last_heard = ?, "
            "last_ip_address = COALESCE(?, last_ip_address), "
            "functions = COALESCE(?, functions), variables = COALESCE(?, variables) "
            "WHERE id = ?",
            (now, now, ip, fn_json, var_json, device_id),
        )
    else:
        conn.execute("UPDATE devices SET online = 0, last_heard = ? WHERE id = ?", (now, device_id))
    row = get_row(conn, device_id)
    assert row is not None
    return dict(row)


# ---------------------------------------------------------------------------------


def list_devices(conn: sqlite3.Connection, principal: Principal) -> list[sqlite3.Row]:
    """``GET /v1/devices``: owned devices (customer/user), the product's (client)."""
    key: str | int | None
    if principal.is_customer:
        sql, key = "owner_customer_id = ?", principal.customer_id
    elif principal.kind == "user":
        sql, key = "owner_user_id = ?", principal.user_id
    elif principal.product_id is not None:
        sql, key = "product_id = ?", principal.product_id
    else:
        return []
    if key is None:
        return []
    return list(conn.execute(f"SELECT * FROM devices WHERE {sql} ORDER BY created_at, id", (key,)))


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def list_product_devices(
    conn: sqlite3.Connection,
    principal: Principal,
    product: str,
    *,
    page: int = 1,
    per_page: int = DEFAULT_PER_PAGE,
    device_id: str | None = None,
    device_name: str | None = None,
) -> tuple[list[sqlite3.Row], list[dict[str, Any]], int, dict[str, str | None]]:
    """``GET /v1/products/:p/devices``: (page rows, customers, total_pages, owner names).

    Product administrators only (customers and others: 403). ``deviceId`` and
    ``deviceName`` filter by case-insensitive substring. ``total_pages`` is
    ``ceil(total / per_page)``, so 0 for an empty product.
    """
    prod = product_or_404(conn, product)
    product_id = int(prod["id"])
    if product_id not in admin_product_ids(conn, principal):
        raise Forbidden("Listing a product's devices needs a product client or owner token")
    where: list[str] = ["product_id = ?"]
    args: list[Any] = [product_id]
    if device_id:
        where.append("id LIKE ? ESCAPE '\\'")
        args.append(f"%{_like_escape(device_id.lower())}%")
    if device_name:
        where.append("name LIKE ? ESCAPE '\\'")
        args.append(f"%{_like_escape(device_name)}%")
    clause = " AND ".join(where)
    total = int(conn.execute(f"SELECT COUNT(*) FROM devices WHERE {clause}", args).fetchone()[0])
    rows = list(
        conn.execute(
            f"SELECT * FROM devices WHERE {clause} ORDER BY created_at, id LIMIT ? OFFSET ?",
            [*args, per_page, (page - 1) * per_page],
        )
    )
    customers: dict[str, dict[str, Any]] = {}
    owners: dict[str, str | None] = {}
    for row in rows:
        owners[row["id"]] = owner_name(conn, row)
        cid = row["owner_customer_id"]
        if cid and cid not in customers:
            customers[cid] = {"id": cid, "username": owners[row["id"]]}
    return rows, list(customers.values()), math.ceil(total / per_page), owners


# ---------------------------------------------------------------------------------


def device_row(conn: sqlite3.Connection, device_id: str) -> dict[str, Any] | None:
    """The device row as a dict, or None."""
    row = get_row(conn, device_id)
    return None if row is None else dict(row)


def update_last_heard(conn: sqlite3.Connection, device_id: str, now: float) -> None:
    conn.execute("UPDATE devices SET last_heard = ? WHERE id = ?", (now, device_id))


def store_description(
    conn: sqlite3.Connection, device_id: str, functions: list[str], variables: dict[str, str]
) -> None:
    """The functions and variables a device described (Describe reply or post)."""
    conn.execute(
        "UPDATE devices SET functions = ?, variables = ? WHERE id = ?",
        (json.dumps(functions), json.dumps(variables), device_id),
    )
