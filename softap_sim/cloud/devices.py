"""Devices, claim codes, functions, variables and events (cloud-api.md §5-§7).

The module has moto's split in one file (house-style.md §5): **models** are synchronous
functions of a ``sqlite3.Connection`` (time comes in as ``now``, nothing here reads a
clock), **handlers** only authenticate, parse, call a model through ``cloud.db.run``
and serialise, and ``ROUTES`` is the route table that ``app.py`` mounts.

Routes::

    POST   /v1/device_claims                              claim code (user or customer)
    POST   /v1/products/{product}/device_claims           claim code (that product's customer)
    GET    /v1/devices                                    the caller's devices
    POST   /v1/devices                                    claim an online, unowned device by id
    GET    /v1/devices/events[/{prefix}]                  SSE: the caller's devices
    GET    /v1/events/{prefix}                            SSE: public events + the caller's
    GET    /v1/devices/{id}/events[/{prefix}]             SSE: one device
    GET    /v1/devices/{id}                               one device (detail view)
    DELETE /v1/devices/{id}                               unclaim
    GET    /v1/devices/{id}/{variable}                    variable read
    POST   /v1/devices/{id}/{function}                    function call
    GET    /v1/products/{product}/devices                 paginated product list
    GET    /v1/products/{product}/devices/{id}            one product device
    DELETE /v1/products/{product}/devices/{id}/owner      unclaim a product device
    GET    /v1/products/{product}/devices/{id}/{variable}
    POST   /v1/products/{product}/devices/{id}/{function}

Who sees what (the rules the tests pin):

* a **customer** token sees only devices that customer owns;
* a **user** token sees devices the user owns, and every device of a product the user
  owns (``products.owner_user_id``); ``GET /v1/devices`` lists only owned devices, as
  Particle does (product devices are listed by the product route);
* a **client** token (a product client with no owner user) sees its product's devices,
  and ``GET /v1/devices`` lists them.

An unknown device id and a device the caller may not see get the *same* 403 on the
``/v1/devices/...`` routes, so the API is no oracle for which ids exist (Particle answers
"Permission Denied" for both too). On product routes a product administrator gets 404
for a device that is not in the product; anyone else gets that same 403.

Devices become known through :func:`register_device` (id + public key), which the device
emulator calls; the device link (TCP 5683) looks keys up with :func:`device_public_key`,
reports sessions with :func:`set_device_online`, hands claim codes to
:func:`consume_claim_code` and publishes events built by :func:`make_event` /
:func:`device_event` through ``cloud.publish``. Functions and variables go through
``cloud.link`` (:class:`~softap_sim.cloud.core.DeviceLink`); today that is
:class:`~softap_sim.cloud.core.OfflineLink`, so every call honestly answers 404
``{"ok":false,"error":"Device is offline"}``. Claim codes are never logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives import serialization

from softap_sim.cloud import hashing
from softap_sim.cloud.core import (
    CLAIM_CODE_LIFETIME_S,
    CLOUD_KEY,
    Cloud,
    Principal,
    cloud_of,
    find_product,
    json_response,
    read_params,
)
from softap_sim.cloud.errors import (
    Conflict,
    DeviceError,
    DeviceOffline,
    DeviceTimeout,
    Forbidden,
    InvalidRequest,
    NotFound,
)

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Row = sqlite3.Row | Mapping[str, Any]

PHOTON_PLATFORM_ID = 6
#: firmware buffer for a function argument: 63 bytes + NUL (cloud-api.md §6.2)
MAX_FUNCTION_ARG_BYTES = 63
DEFAULT_PER_PAGE = 25
MAX_PER_PAGE = 100
DEFAULT_EVENT_TTL_S = 60
#: how often an idle SSE stream checks whether its client went away
SSE_POLL_S = 0.5
#: events queued for one slow SSE client before its stream is closed
SSE_MAX_QUEUED = 1000
VARIABLE_TYPES = frozenset({"int32", "double", "string", "bool"})

_DEVICE_ID_RE = re.compile(r"[0-9a-f]{24}")
_PERMISSION_DENIED = (
    "Permission denied: no device with that ID or name is visible to this access token"
)
_OWNED_ELSEWHERE = "That belongs to someone else."


class DeviceOwnedElsewhere(DeviceError):
    """Claim of a device another account owns: 403, with particle-cli's ``errors`` list.

    particle-cli's ``claimDevice`` rejects on ``body.error || body.errors``, so both are
    set. The wording is the one remembered from particle-cli's transfer prompt; it is not
    verified against the live cloud. Transfers are not emulated.
    """

    status = 403

    def __init__(self, description: str = _OWNED_ELSEWHERE) -> None:
        super().__init__(description)

    def body(self) -> dict[str, Any]:
        return {"ok": False, "error": self.description, "errors": [self.description]}


# ---------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------
def iso_time(ts: float | None) -> str | None:
    """Particle's timestamp form: ISO 8601, UTC, milliseconds, ``Z``."""
    if ts is None:
        return None
    stamp = datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def normalise_device_id(device_id: str) -> str:
    """24 hex digits, lower-cased; anything else is ``invalid_request``."""
    value = device_id.strip().lower()
    if not _DEVICE_ID_RE.fullmatch(value):
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


def _get_row(conn: sqlite3.Connection, device_id: str) -> sqlite3.Row | None:
    row: sqlite3.Row | None = conn.execute(
        "SELECT * FROM devices WHERE id = ?", (device_id,)
    ).fetchone()
    return row


def _functions(row: Row) -> list[str]:
    try:
        value = json.loads(row["functions"] or "[]")
    except json.JSONDecodeError:
        return []
    return [str(v) for v in value] if isinstance(value, list) else []


def _variables(row: Row) -> dict[str, str]:
    try:
        value = json.loads(row["variables"] or "{}")
    except json.JSONDecodeError:
        return {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


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


def can_see(
    principal: Principal,
    admin_products: frozenset[int],
    *,
    owner_user_id: str | None,
    owner_customer_id: str | None,
    product_id: int | None,
) -> bool:
    """The visibility rule of the module docstring, for a device or an event."""
    if principal.is_customer:
        return owner_customer_id is not None and owner_customer_id == principal.customer_id
    if (
        principal.kind == "user"
        and owner_user_id is not None
        and owner_user_id == principal.user_id
    ):
        return True
    return product_id is not None and product_id in admin_products


def _row_visible(principal: Principal, admin_products: frozenset[int], row: Row) -> bool:
    return can_see(
        principal,
        admin_products,
        owner_user_id=row["owner_user_id"],
        owner_customer_id=row["owner_customer_id"],
        product_id=row["product_id"],
    )


def _owner_name(conn: sqlite3.Connection, row: Row) -> str | None:
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


def _visible_device(conn: sqlite3.Connection, principal: Principal, id_or_name: str) -> sqlite3.Row:
    """The device behind ``:id`` (an id, or the name of a device the caller sees).

    Unknown and invisible devices are the same 403.
    """
    admin = admin_product_ids(conn, principal)
    candidate = id_or_name.strip().lower()
    row = _get_row(conn, candidate) if _DEVICE_ID_RE.fullmatch(candidate) else None
    if row is not None:
        if _row_visible(principal, admin, row):
            return row
        raise Forbidden(_PERMISSION_DENIED)
    for named in conn.execute(
        "SELECT * FROM devices WHERE name = ? ORDER BY created_at, id", (id_or_name,)
    ):
        if _row_visible(principal, admin, named):
            return named  # type: ignore[no-any-return]
    raise Forbidden(_PERMISSION_DENIED)


def _product_or_404(conn: sqlite3.Connection, product: str) -> sqlite3.Row:
    row: sqlite3.Row | None = find_product(conn, product)
    if row is None:
        raise NotFound("Product not found")
    return row


def _visible_product_device(
    conn: sqlite3.Connection, principal: Principal, product: str, device: str
) -> sqlite3.Row:
    """``/v1/products/:p/devices/:id``: 404 product; admins 404 outside; others 403."""
    prod = _product_or_404(conn, product)
    product_id = int(prod["id"])
    if product_id in admin_product_ids(conn, principal):
        candidate = device.strip().lower()
        row = _get_row(conn, candidate) if _DEVICE_ID_RE.fullmatch(candidate) else None
        if row is None:
            row = conn.execute(
                "SELECT * FROM devices WHERE name = ? AND product_id = ? ORDER BY created_at, id",
                (device, product_id),
            ).fetchone()
        if row is None or row["product_id"] != product_id:
            raise NotFound("Device not found in this product")
        return row
    row = _visible_device(conn, principal, device)
    if row["product_id"] != product_id:
        raise Forbidden(_PERMISSION_DENIED)
    return row


# ---------------------------------------------------------------------------------
# views
# ---------------------------------------------------------------------------------
def device_view(
    row: Row, online: bool, *, detail: bool = False, owner: str | None = None
) -> dict[str, Any]:
    """The device JSON of cloud-api.md §6.1.

    ``product_id`` is the platform id (6) for a developer device, as on Particle.
    ``detail=True`` (``GET /v1/devices/:id`` and the product routes) adds ``owner``,
    ``firmware_updates_enabled/forced`` and, for product devices, the product fields.
    """
    view: dict[str, Any] = {
        "id": row["id"],
        "name": row["name"],
        "last_ip_address": row["last_ip_address"],
        "last_heard": iso_time(row["last_heard"]),
        "last_handshake_at": iso_time(row["last_handshake_at"]),
        "product_id": row["product_id"] if row["product_id"] is not None else row["platform_id"],
        "online": online,
        "connected": online,
        "platform_id": row["platform_id"],
        "cellular": False,
        "notes": None,
        "functions": _functions(row),
        "variables": _variables(row),
        "status": "normal",
        "serial_number": None,
        "system_firmware_version": row["system_firmware_version"],
    }
    if detail:
        view["owner"] = owner
        view["firmware_updates_enabled"] = True
        view["firmware_updates_forced"] = False
        if row["product_id"] is not None:
            view.update(
                firmware_product_id=row["product_id"],
                development=False,
                quarantined=False,
                denied=False,
                groups=[],
                targeted_firmware_release_version=None,
            )
    return view


# ---------------------------------------------------------------------------------
# models: the registry
# ---------------------------------------------------------------------------------
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
    existing = _get_row(conn, device_id)
    if existing is not None:
        if _normalise_public_key(existing["public_key_pem"]) != pem:
            raise Conflict(f"device {device_id} is registered with a different public key")
        return dict(existing)
    if product_id is not None and find_product(conn, str(product_id)) is None:
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
    row = _get_row(conn, device_id)
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
    if _get_row(conn, device_id) is None:
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
    row = _get_row(conn, device_id)
    assert row is not None
    return dict(row)


# ---------------------------------------------------------------------------------
# models: claim codes and ownership
# ---------------------------------------------------------------------------------
def _owned_device_ids(conn: sqlite3.Connection, principal: Principal) -> list[str]:
    if principal.is_customer:
        sql, key = "owner_customer_id = ?", principal.customer_id
    else:
        sql, key = "owner_user_id = ?", principal.user_id
    if key is None:
        return []
    rows = conn.execute(f"SELECT id FROM devices WHERE {sql} ORDER BY created_at, id", (key,))
    return [str(r[0]) for r in rows]


def create_claim_code(
    conn: sqlite3.Connection,
    principal: Principal,
    *,
    product_id: int | None = None,
    now: float,
) -> tuple[str, list[str]]:
    """A fresh 63-character claim code for the caller, and the ids of their devices.

    Only the SHA-256 of the code is stored; it expires ``CLAIM_CODE_LIFETIME_S`` (1 h)
    after ``now``. With ``product_id`` (the product route, already resolved to an id)
    the caller must be a customer of that product, else :class:`Forbidden`. Without
    it a user token makes a code for the user and a customer token one for the customer
    (in the customer's product); a client token (no user, no customer) is refused.
    """
    if product_id is not None and not (
        principal.is_customer and principal.product_id == product_id
    ):
        raise Forbidden("This product's claim codes need an access token of one of its customers")
    if principal.is_customer:
        if not principal.customer_id:
            raise Forbidden("This access token has no customer")
        user_id, customer_id, code_product = None, principal.customer_id, principal.product_id
    elif principal.kind == "user" and principal.user_id:
        user_id, customer_id, code_product = principal.user_id, None, None
    else:
        raise Forbidden("A claim code needs a user or customer access token")
    code = hashing.new_claim_code()
    conn.execute(
        "INSERT INTO claim_codes (hash, user_id, customer_id, product_id, created_at, "
        "expires_at) VALUES (?, ?, ?, ?, ?, ?)",
        (
            hashing.digest(code),
            user_id,
            customer_id,
            code_product,
            now,
            now + CLAIM_CODE_LIFETIME_S,
        ),
    )
    return code, _owned_device_ids(conn, principal)


def _owner_info(device_id: str, row: Row) -> dict[str, Any]:
    return {
        "device_id": device_id,
        "user_id": row["owner_user_id"],
        "customer_id": row["owner_customer_id"],
        "product_id": row["product_id"],
    }


def consume_claim_code(
    conn: sqlite3.Connection,
    code: str,
    device_id: str,
    now: float,
    *,
    allow_takeover: bool = False,
) -> dict[str, Any] | None:
    """Process ``spark/device/claim/code`` from a device (cloud-api.md §7.4).

    Returns ``{"device_id","user_id","customer_id","product_id"}`` (the owner after the
    claim) when the claim succeeds, so the link sends ``spark/device/claim/confirm``;
    ``None`` when it does not (the link then sends nothing). Rules:

    * unknown code, unregistered device, expired code (``now >= expires_at``) → None;
    * a code already used by *another* device → None; used by *this* device (the
      device re-sends its code after every handshake until it sees the confirm, so a
      lost confirm must be repeatable) → the current owner info, nothing changes,
      provided the device still belongs to the code's creator;
    * a device owned by someone other than the code's creator is **not** taken over:
      None, and the code stays unused (``allow_takeover=True`` models the old
      "physical possession wins" behaviour, pain-points.md §7);
    * otherwise the creator (user, or customer) becomes the owner, a product code also
      puts the device into that product, and the code is marked used by this device.
    """
    row = conn.execute(
        "SELECT * FROM claim_codes WHERE hash = ?", (hashing.digest(code),)
    ).fetchone()
    device = _get_row(conn, device_id)
    if row is None or device is None:
        return None
    user_id, customer_id = row["user_id"], row["customer_id"]
    is_creator = (customer_id is not None and device["owner_customer_id"] == customer_id) or (
        user_id is not None and device["owner_user_id"] == user_id
    )
    if row["used_at"] is not None:
        if row["device_id"] == device_id and is_creator:
            return _owner_info(device_id, device)
        return None
    if now >= row["expires_at"]:
        return None
    owned = device["owner_user_id"] is not None or device["owner_customer_id"] is not None
    if owned and not is_creator and not allow_takeover:
        log.info("cloud: claim of %s refused: it belongs to another account", device_id)
        return None
    product_id = row["product_id"] if row["product_id"] is not None else device["product_id"]
    conn.execute(
        "UPDATE devices SET owner_user_id = ?, owner_customer_id = ?, product_id = ? WHERE id = ?",
        (user_id, customer_id, product_id, device_id),
    )
    conn.execute(
        "UPDATE claim_codes SET used_at = ?, device_id = ? WHERE hash = ?",
        (now, device_id, row["hash"]),
    )
    log.info("cloud: device %s claimed by a claim code", device_id)
    updated = _get_row(conn, device_id)
    assert updated is not None
    return _owner_info(device_id, updated)


def claim_device_by_id(
    conn: sqlite3.Connection,
    principal: Principal,
    device_id: str,
    *,
    online: bool,
    request_transfer: bool = False,
) -> dict[str, Any]:
    """``POST /v1/devices``: claim an online, unowned device; the reply body (§5).

    ``online`` comes from ``cloud.link.is_online``. Unknown device → 404 "Device not
    found"; offline → 404 "Device is offline"; owned by another account → 403
    "That belongs to someone else." (transfers are not emulated, so
    ``request_transfer`` changes only the wording); already the caller's → success
    again. A customer claims into the customer's product; a device already in another
    product cannot be claimed by a customer (403). Client tokens cannot own devices.
    """
    device_id = normalise_device_id(device_id)
    row = _get_row(conn, device_id)
    if row is None:
        raise DeviceError("Device not found", status=404)
    if not online:
        raise DeviceOffline()
    if principal.is_customer:
        owner_user, owner_customer = None, principal.customer_id
        mine = owner_customer is not None and row["owner_customer_id"] == owner_customer
    elif principal.kind == "user" and principal.user_id:
        owner_user, owner_customer = principal.user_id, None
        mine = row["owner_user_id"] == owner_user
    else:
        raise Forbidden("Only a user or a customer can own a device")
    if not mine:
        if row["owner_user_id"] is not None or row["owner_customer_id"] is not None:
            if request_transfer:
                raise DeviceOwnedElsewhere(
                    f"{_OWNED_ELSEWHERE} Ownership transfers are not emulated."
                )
            raise DeviceOwnedElsewhere()
        product_id = row["product_id"]
        if principal.is_customer:
            if product_id is not None and product_id != principal.product_id:
                raise DeviceError("That device belongs to another product", status=403)
            product_id = principal.product_id
        conn.execute(
            "UPDATE devices SET owner_user_id = ?, owner_customer_id = ?, product_id = ? "
            "WHERE id = ?",
            (owner_user, owner_customer, product_id, device_id),
        )
        log.info("cloud: device %s claimed by id", device_id)
    return {"ok": True, "deviceID": device_id, "claimed": True}


def unclaim_device(
    conn: sqlite3.Connection,
    principal: Principal,
    device: str,
    *,
    product: str | None = None,
) -> dict[str, Any]:
    """Remove the owner: ``DELETE /v1/devices/:id`` (owner only) or, with ``product``,
    ``DELETE /v1/products/:p/devices/:id/owner`` (product admins, or the owner).

    The device stays registered and stays in its product. Reply ``{"ok":true}``.
    """
    if product is not None:
        row = _visible_product_device(conn, principal, product, device)
        allowed = True
    else:
        row = _visible_device(conn, principal, device)
        if principal.is_customer:
            allowed = row["owner_customer_id"] == principal.customer_id
        else:
            allowed = principal.user_id is not None and row["owner_user_id"] == principal.user_id
    if not allowed:
        raise Forbidden("Only the owner can unclaim this device")
    conn.execute(
        "UPDATE devices SET owner_user_id = NULL, owner_customer_id = NULL WHERE id = ?",
        (row["id"],),
    )
    log.info("cloud: device %s unclaimed", row["id"])
    return {"ok": True}


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
    prod = _product_or_404(conn, product)
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
        owners[row["id"]] = _owner_name(conn, row)
        cid = row["owner_customer_id"]
        if cid and cid not in customers:
            customers[cid] = {"id": cid, "username": owners[row["id"]]}
    return rows, list(customers.values()), math.ceil(total / per_page), owners


# ---------------------------------------------------------------------------------
# events
# ---------------------------------------------------------------------------------
def make_event(
    name: str,
    data: str | None,
    *,
    coreid: str,
    now: float,
    ttl: int = DEFAULT_EVENT_TTL_S,
    private: bool = True,
    owner_user_id: str | None = None,
    owner_customer_id: str | None = None,
    product_id: int | None = None,
) -> dict[str, Any]:
    """The event dict that ``cloud.publish`` carries to every SSE subscriber.

    Shape::

        {"name": str,               # event name; CR/LF removed (one SSE line)
         "data": str | None,        # payload text as published
         "ttl": int,                # seconds (device default 60)
         "published_at": str,       # ISO 8601 UTC with milliseconds, "Z"
         "coreid": str,             # the publishing device id
         "private": bool,           # private events reach only the owner's streams
         "owner_user_id": str | None,      # owners *at publish time*: subscribers
         "owner_customer_id": str | None,  # filter on these, never on the database
         "product_id": int | None}

    Only ``data``, ``ttl``, ``published_at`` and ``coreid`` go on the wire.
    """
    return {
        "name": name.replace("\r", "").replace("\n", ""),
        "data": data,
        "ttl": int(ttl),
        "published_at": iso_time(now),
        "coreid": coreid,
        "private": bool(private),
        "owner_user_id": owner_user_id,
        "owner_customer_id": owner_customer_id,
        "product_id": product_id,
    }


def device_event(
    row: Row,
    name: str,
    data: str | None,
    *,
    now: float,
    ttl: int = DEFAULT_EVENT_TTL_S,
    private: bool = True,
) -> dict[str, Any]:
    """:func:`make_event` for a device row (owners and product filled in from it)."""
    return make_event(
        name,
        data,
        coreid=row["id"],
        now=now,
        ttl=ttl,
        private=private,
        owner_user_id=row["owner_user_id"],
        owner_customer_id=row["owner_customer_id"],
        product_id=row["product_id"],
    )


def encode_sse(event: Mapping[str, Any]) -> bytes:
    """One SSE frame; the JSON sits on a single ``data:`` line (particle-api-js)."""
    name = str(event.get("name", "")).replace("\r", "").replace("\n", "")
    payload = {
        "data": event.get("data"),
        "ttl": event.get("ttl", DEFAULT_EVENT_TTL_S),
        "published_at": event.get("published_at"),
        "coreid": event.get("coreid"),
    }
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    return f"event: {name}\ndata: {body}\n\n".encode()


class EventStream:
    """One SSE connection's subscription: a filter and a queue of encoded frames.

    Instances are the callables registered in ``cloud.subscribers``; ``cloud.publish``
    must be called on the event loop. A client that falls ``max_queued`` frames
    behind is disconnected (its queue is dropped) rather than silently losing events.
    """

    def __init__(
        self,
        principal: Principal,
        admin_products: frozenset[int],
        *,
        device_id: str | None = None,
        prefix: str | None = None,
        public: bool = False,
        max_queued: int = SSE_MAX_QUEUED,
    ) -> None:
        self.principal = principal
        self.admin_products = admin_products
        self.device_id = device_id
        self.prefix = prefix or None
        self.public = public
        self.max_queued = max_queued
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.closed = False

    def wants(self, event: Mapping[str, Any]) -> bool:
        if self.prefix is not None and not str(event.get("name", "")).startswith(self.prefix):
            return False
        if self.device_id is not None and event.get("coreid") != self.device_id:
            return False
        if self.public and not event.get("private", True):
            return True
        return can_see(
            self.principal,
            self.admin_products,
            owner_user_id=event.get("owner_user_id"),
            owner_customer_id=event.get("owner_customer_id"),
            product_id=event.get("product_id"),
        )

    def __call__(self, event: dict[str, Any]) -> None:
        if self.closed or not self.wants(event):
            return
        if self.queue.qsize() >= self.max_queued:
            log.warning("cloud: an event stream fell %d events behind; closing it", self.max_queued)
            self.close()
            return
        self.queue.put_nowait(encode_sse(event))

    def close(self) -> None:
        """End the stream: drop what is queued, then the end marker."""
        if self.closed:
            return
        self.closed = True
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)


def close_event_streams(cloud: Cloud) -> None:
    """End every open SSE stream of ``cloud`` (server shutdown)."""
    for subscriber in list(cloud.subscribers):
        if isinstance(subscriber, EventStream):
            subscriber.close()


async def on_shutdown(app: web.Application) -> None:
    """``app.on_shutdown`` hook: without it an open SSE stream holds server close
    until aiohttp's shutdown timeout (60 s)."""
    close_event_streams(app[CLOUD_KEY])


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _serve_stream(request: web.Request, stream: EventStream) -> web.StreamResponse:
    cloud = cloud_of(request)
    response = web.StreamResponse(headers={"Cache-Control": "no-cache"})
    response.content_type = "text/event-stream"
    await response.prepare(request)
    cloud.subscribers.add(stream)
    try:
        await response.write(b":ok\n\n")
        while True:
            try:
                frame = await asyncio.wait_for(stream.queue.get(), SSE_POLL_S)
            except TimeoutError:
                if _client_gone(request):
                    break
                continue
            if frame is None:
                break
            await response.write(frame)
    except ConnectionError:
        log.debug("cloud: event stream client went away")
    finally:
        cloud.subscribers.discard(stream)
        stream.closed = True
    return response


# ---------------------------------------------------------------------------------
# handlers
# ---------------------------------------------------------------------------------
async def _begin(request: web.Request) -> tuple[Cloud, dict[str, str], Principal]:
    cloud = cloud_of(request)
    params = await read_params(request)
    principal = await cloud.authenticate(request, params)
    return cloud, params, principal


def _flag(params: Mapping[str, str], name: str) -> bool:
    value = params.get(name, "").strip().lower()
    if value in ("", "false", "0", "no"):
        return False
    if value in ("true", "1", "yes"):
        return True
    raise InvalidRequest(f"{name} must be true or false")


async def post_device_claims(request: web.Request) -> web.StreamResponse:
    cloud, params, principal = await _begin(request)
    product = request.match_info.get("product")
    if params.get("iccid") or params.get("imei"):
        raise InvalidRequest("Cellular claim codes (iccid/imei) are not emulated: send no body")
    now = cloud.now()

    def work(conn: sqlite3.Connection) -> tuple[str, list[str]]:
        product_id = None if product is None else int(_product_or_404(conn, product)["id"])
        return create_claim_code(conn, principal, product_id=product_id, now=now)

    code, device_ids = await cloud.db.run(work)
    return json_response({"claim_code": code, "device_ids": device_ids})


async def get_devices(request: web.Request) -> web.StreamResponse:
    cloud, _params, principal = await _begin(request)
    rows = await cloud.db.run(lambda conn: list_devices(conn, principal))
    return json_response([device_view(r, cloud.link.is_online(r["id"])) for r in rows])


async def post_devices(request: web.Request) -> web.StreamResponse:
    cloud, params, principal = await _begin(request)
    device_id = params.get("id", "").strip().lower()
    if not _DEVICE_ID_RE.fullmatch(device_id):
        raise DeviceError("Please specify a device ID (id): 24 hexadecimal characters")
    transfer = _flag(params, "request_transfer")
    online = cloud.link.is_online(device_id)
    reply = await cloud.db.run(
        lambda conn: claim_device_by_id(
            conn, principal, device_id, online=online, request_transfer=transfer
        )
    )
    return json_response(reply)


async def get_device(request: web.Request) -> web.StreamResponse:
    cloud, _params, principal = await _begin(request)
    product = request.match_info.get("product")
    device = request.match_info["device"]

    def work(conn: sqlite3.Connection) -> tuple[sqlite3.Row, str | None]:
        if product is None:
            row = _visible_device(conn, principal, device)
        else:
            row = _visible_product_device(conn, principal, product, device)
        return row, _owner_name(conn, row)

    row, owner = await cloud.db.run(work)
    return json_response(
        device_view(row, cloud.link.is_online(row["id"]), detail=True, owner=owner)
    )


async def delete_device(request: web.Request) -> web.StreamResponse:
    cloud, _params, principal = await _begin(request)
    product = request.match_info.get("product")
    device = request.match_info["device"]
    reply = await cloud.db.run(
        lambda conn: unclaim_device(conn, principal, device, product=product)
    )
    return json_response(reply)


def _positive_int(query: Mapping[str, str], *names: str, default: int) -> int:
    for name in names:
        if name in query:
            text = query[name].strip()
            if not text.isdigit() or int(text) < 1:
                raise InvalidRequest(f"{name} must be a positive integer")
            return int(text)
    return default


async def get_product_devices(request: web.Request) -> web.StreamResponse:
    cloud, _params, principal = await _begin(request)
    product = request.match_info["product"]
    page = _positive_int(request.query, "page", default=1)
    per_page = min(
        _positive_int(request.query, "per_page", "perPage", default=DEFAULT_PER_PAGE), MAX_PER_PAGE
    )
    rows, customers, total_pages, owners = await cloud.db.run(
        lambda conn: list_product_devices(
            conn,
            principal,
            product,
            page=page,
            per_page=per_page,
            device_id=request.query.get("deviceId"),
            device_name=request.query.get("deviceName"),
        )
    )
    devices = [
        device_view(r, cloud.link.is_online(r["id"]), detail=True, owner=owners[r["id"]])
        for r in rows
    ]
    return json_response(
        {"devices": devices, "customers": customers, "meta": {"total_pages": total_pages}}
    )


async def _device_for_call(request: web.Request, cloud: Cloud, principal: Principal) -> sqlite3.Row:
    product = request.match_info.get("product")
    device = request.match_info["device"]

    def work(conn: sqlite3.Connection) -> sqlite3.Row:
        if product is None:
            return _visible_device(conn, principal, device)
        return _visible_product_device(conn, principal, product, device)

    row = await cloud.db.run(work)
    if not cloud.link.is_online(row["id"]):
        raise DeviceOffline()
    return row


def _wants_raw(request: web.Request, params: Mapping[str, str]) -> bool:
    return (params.get("format") or request.query.get("format", "")).lower() == "raw"


async def _with_timeout(cloud: Cloud, call: Awaitable[Any]) -> Any:
    """The link gets the timeout too; this is the backstop if a link ignores it."""
    try:
        return await asyncio.wait_for(call, cloud.call_timeout_s)
    except TimeoutError:
        raise DeviceTimeout() from None


def function_argument(params: Mapping[str, str]) -> str:
    """``arg`` or ``args`` (particle-api-js); both given must agree; ≤ 63 UTF-8 bytes."""
    arg, args = params.get("arg"), params.get("args")
    if arg is not None and args is not None and arg != args:
        raise DeviceError("Send the argument as arg or args, not both")
    value = arg if arg is not None else (args or "")
    if len(value.encode("utf-8")) > MAX_FUNCTION_ARG_BYTES:
        raise DeviceError(
            f"The argument is longer than {MAX_FUNCTION_ARG_BYTES} bytes, "
            "the most a Photon function accepts"
        )
    return value


async def call_function(request: web.Request) -> web.StreamResponse:
    cloud, params, principal = await _begin(request)
    name = request.match_info["name"]
    arg = function_argument(params)
    row = await _device_for_call(request, cloud, principal)
    if name not in _functions(row):
        raise DeviceError("Function not found", status=404)
    value = int(
        await _with_timeout(
            cloud, cloud.link.call_function(row["id"], name, arg, cloud.call_timeout_s)
        )
    )
    if _wants_raw(request, params):
        return web.Response(text=str(value), content_type="text/plain")
    return json_response(
        {"id": row["id"], "name": row["name"], "connected": True, "return_value": value}
    )


def _raw_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value)


async def get_variable(request: web.Request) -> web.StreamResponse:
    cloud, params, principal = await _begin(request)
    name = request.match_info["name"]
    row = await _device_for_call(request, cloud, principal)
    if name not in _variables(row):
        raise DeviceError("Variable not found", status=404)
    value = await _with_timeout(
        cloud, cloud.link.get_variable(row["id"], name, cloud.call_timeout_s)
    )
    if _wants_raw(request, params):
        return web.Response(text=_raw_text(value), content_type="text/plain")
    return json_response(
        {
            "name": name,
            "result": value,
            "coreInfo": {
                "name": row["name"],
                "deviceID": row["id"],
                "connected": True,
                "last_handshake_at": iso_time(row["last_handshake_at"]),
            },
        }
    )


async def get_events(request: web.Request) -> web.StreamResponse:
    """``/v1/devices/events[/{prefix}]``: every event of the caller's devices."""
    cloud, _params, principal = await _begin(request)
    admin = await cloud.db.run(lambda conn: admin_product_ids(conn, principal))
    prefix = request.match_info.get("prefix")
    return await _serve_stream(request, EventStream(principal, admin, prefix=prefix))


async def get_public_events(request: web.Request) -> web.StreamResponse:
    """``/v1/events/{prefix}``: public events of any device plus the caller's own."""
    cloud, _params, principal = await _begin(request)
    admin = await cloud.db.run(lambda conn: admin_product_ids(conn, principal))
    prefix = request.match_info.get("prefix")
    return await _serve_stream(request, EventStream(principal, admin, prefix=prefix, public=True))


async def get_device_events(request: web.Request) -> web.StreamResponse:
    """``/v1/devices/{id}/events[/{prefix}]``: one visible device's events."""
    cloud, _params, principal = await _begin(request)
    device = request.match_info["device"]

    def work(conn: sqlite3.Connection) -> tuple[str, frozenset[int]]:
        row = _visible_device(conn, principal, device)
        return str(row["id"]), admin_product_ids(conn, principal)

    device_id, admin = await cloud.db.run(work)
    prefix = request.match_info.get("prefix")
    stream = EventStream(principal, admin, device_id=device_id, prefix=prefix)
    return await _serve_stream(request, stream)


# Order matters: aiohttp tries resources registered under the same path prefix in
# registration order, so the literal ``events`` routes come before ``{device}/{name}``.
ROUTES: list[tuple[str, str, Handler]] = [
    ("POST", "/v1/device_claims", post_device_claims),
    ("POST", "/v1/products/{product}/device_claims", post_device_claims),
    ("GET", "/v1/devices", get_devices),
    ("POST", "/v1/devices", post_devices),
    ("GET", "/v1/devices/events", get_events),
    ("GET", "/v1/devices/events/{prefix:.+}", get_events),
    ("GET", "/v1/events/{prefix:.+}", get_public_events),
    ("GET", "/v1/events", get_public_events),
    ("GET", "/v1/devices/{device}/events", get_device_events),
    ("GET", "/v1/devices/{device}/events/{prefix:.+}", get_device_events),
    ("GET", "/v1/devices/{device}", get_device),
    ("DELETE", "/v1/devices/{device}", delete_device),
    ("GET", "/v1/devices/{device}/{name}", get_variable),
    ("POST", "/v1/devices/{device}/{name}", call_function),
    ("GET", "/v1/products/{product}/devices", get_product_devices),
    ("GET", "/v1/products/{product}/devices/{device}", get_device),
    ("DELETE", "/v1/products/{product}/devices/{device}/owner", delete_device),
    ("GET", "/v1/products/{product}/devices/{device}/{name}", get_variable),
    ("POST", "/v1/products/{product}/devices/{device}/{name}", call_function),
]

__all__ = [
    "ROUTES",
    "DeviceOwnedElsewhere",
    "EventStream",
    "admin_product_ids",
    "can_see",
    "claim_device_by_id",
    "close_event_streams",
    "consume_claim_code",
    "create_claim_code",
    "device_event",
    "device_public_key",
    "device_view",
    "encode_sse",
    "function_argument",
    "iso_time",
    "list_devices",
    "list_product_devices",
    "make_event",
    "normalise_device_id",
    "on_shutdown",
    "register_device",
    "set_device_online",
    "unclaim_device",
]
