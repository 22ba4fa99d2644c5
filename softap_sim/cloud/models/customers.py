"""Customers of a product (cloud-api.md §3): shadow (password-less) or with a password.

Emails are case-insensitive and stored lower-cased; a duplicate is ``invalid_request``
"Customer already exists". Deleting a customer deletes their access/refresh tokens and
pending (unused) claim codes and releases their devices; used claim codes stay.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from softap_sim.cloud import hashing, validate
from softap_sim.cloud.errors import InvalidRequest, NotFound
from softap_sim.cloud.models.accounts import new_id


def customer_dict(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "product_id": row["product_id"],
        "email": row["email"],
        "shadow": row["password_hash"] is None,
        "created_at": row["created_at"],
    }


def insert_customer(
    conn: sqlite3.Connection, product_id: int, email: str, password_hash: str | None, now: float
) -> dict[str, Any]:
    email = validate.email(email)
    if not conn.execute("SELECT 1 FROM products WHERE id = ?", (product_id,)).fetchone():
        raise NotFound("Product not found")
    if conn.execute(
        "SELECT 1 FROM customers WHERE product_id = ? AND email = ?", (product_id, email)
    ).fetchone():
        raise InvalidRequest("Customer already exists")
    customer_id = new_id()
    try:
        conn.execute(
            "INSERT INTO customers (id, product_id, email, password_hash, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (customer_id, product_id, email, password_hash, now),
        )
    except sqlite3.IntegrityError:
        raise InvalidRequest("Customer already exists") from None
    return {
        "id": customer_id,
        "product_id": product_id,
        "email": email,
        "shadow": password_hash is None,
        "created_at": now,
    }


def create_customer(
    conn: sqlite3.Connection, product_id: int, email: str, password: str | None, now: float
) -> dict[str, Any]:
    """A customer of the product; ``password=None`` makes a shadow (password-less) one.

    Emails are case-insensitive and stored lower-cased. A duplicate is ``invalid_request``
    "Customer already exists".
    """
    password_hash = None if password is None else hashing.hash_password(validate.password(password))
    return insert_customer(conn, product_id, email, password_hash, now)


def get_customer(conn: sqlite3.Connection, product_id: int, email: str) -> dict[str, Any] | None:
    row = conn.execute(
        "SELECT * FROM customers WHERE product_id = ? AND email = ?",
        (product_id, email.strip().lower()),
    ).fetchone()
    return None if row is None else customer_dict(row)


def list_customers(conn: sqlite3.Connection, product_id: int) -> dict[str, Any]:
    """The REST shape of §3: ``{customers:[{id,username,devices}], devices:[…], meta}``."""
    customers = conn.execute(
        "SELECT id, email FROM customers WHERE product_id = ? ORDER BY created_at, rowid",
        (product_id,),
    ).fetchall()
    devices = conn.execute(
        "SELECT id, product_id, last_ip_address, online, owner_customer_id FROM devices "
        "WHERE product_id = ? AND owner_customer_id IS NOT NULL ORDER BY id",
        (product_id,),
    ).fetchall()
    by_owner: dict[str, list[str]] = {}
    for dev in devices:
        by_owner.setdefault(dev["owner_customer_id"], []).append(dev["id"])
    return {
        "customers": [
            {"id": c["id"], "username": c["email"], "devices": by_owner.get(c["id"], [])}
            for c in customers
        ],
        "devices": [
            {
                "id": d["id"],
                "product_id": d["product_id"],
                "last_ip_address": d["last_ip_address"],
                "online": bool(d["online"]),
            }
            for d in devices
        ],
        "meta": {"total_pages": 1},
    }


def update_customer_hash(
    conn: sqlite3.Connection, product_id: int, email: str, password_hash: str
) -> None:
    cur = conn.execute(
        "UPDATE customers SET password_hash = ? WHERE product_id = ? AND email = ?",
        (password_hash, product_id, email.strip().lower()),
    )
    if cur.rowcount == 0:
        raise NotFound("Customer not found")


def set_customer_password(
    conn: sqlite3.Connection, product_id: int, email: str, password: str
) -> None:
    """Set (or, for a shadow customer, give) a password; existing tokens stay valid."""
    update_customer_hash(
        conn, product_id, email, hashing.hash_password(validate.password(password))
    )


def revoke_customer(conn: sqlite3.Connection, customer_id: str) -> None:
    """Delete the customer's tokens and pending claim codes; release their devices."""
    conn.execute("DELETE FROM tokens WHERE customer_id = ?", (customer_id,))
    conn.execute(
        "DELETE FROM claim_codes WHERE customer_id = ? AND used_at IS NULL", (customer_id,)
    )
    conn.execute(
        "UPDATE devices SET owner_customer_id = NULL WHERE owner_customer_id = ?", (customer_id,)
    )


def delete_customer(conn: sqlite3.Connection, product_id: int, email: str) -> None:
    customer = get_customer(conn, product_id, email)
    if customer is None:
        raise NotFound("Customer not found")
    revoke_customer(conn, customer["id"])
    conn.execute("DELETE FROM customers WHERE id = ?", (customer["id"],))


def customer_summaries(conn: sqlite3.Connection, product_id: int) -> list[dict[str, Any]]:
    """Each customer of the product: ``{id, email, shadow, devices: [ids]}``."""
    owned: dict[str, list[str]] = {}
    for dev in conn.execute(
        "SELECT id, owner_customer_id FROM devices WHERE owner_customer_id IS NOT NULL ORDER BY id"
    ):
        owned.setdefault(dev["owner_customer_id"], []).append(dev["id"])
    return [
        {
            "id": r["id"],
            "email": r["email"],
            "shadow": r["password_hash"] is None,
            "devices": owned.get(r["id"], []),
        }
        for r in conn.execute(
            "SELECT * FROM customers WHERE product_id = ? ORDER BY created_at, rowid",
            (product_id,),
        )
    ]
