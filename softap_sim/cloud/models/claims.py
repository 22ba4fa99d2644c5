"""Claim codes and ownership (cloud-api.md §5, §7): create, consume, claim, unclaim.

Claim codes are 63 characters, single use, valid for an hour, stored as SHA-256 only and
never logged. :func:`consume_claim_code` is what the device server runs when a device
publishes ``spark/device/claim/code``.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

from softap_sim.cloud import hashing
from softap_sim.cloud.errors import DeviceError, DeviceOffline, Forbidden
from softap_sim.cloud.models.devices import (
    get_row,
    normalise_device_id,
    visible_device,
    visible_product_device,
)
from softap_sim.cloud.principal import Principal
from softap_sim.cloud.views import Row

log = logging.getLogger(__name__)

CLAIM_CODE_LIFETIME_S = 3600
OWNED_ELSEWHERE = "That belongs to someone else."


class DeviceOwnedElsewhere(DeviceError):
    """Claim of a device another account owns: 403, with particle-cli's ``errors`` list.

    particle-cli's ``claimDevice`` rejects on ``body.error || body.errors``, so both are
    set. The wording is the one remembered from particle-cli's transfer prompt; it is not
    verified against the live cloud. Transfers are not emulated.
    """

    status = 403

    def __init__(self, description: str = OWNED_ELSEWHERE) -> None:
        super().__init__(description)

    def body(self) -> dict[str, Any]:
        return {"ok": False, "error": self.description, "errors": [self.description]}


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
    device = get_row(conn, device_id)
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
    updated = get_row(conn, device_id)
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
    row = get_row(conn, device_id)
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
                    f"{OWNED_ELSEWHERE} Ownership transfers are not emulated."
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
        row = visible_product_device(conn, principal, product, device)
        allowed = True
    else:
        row = visible_device(conn, principal, device)
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
