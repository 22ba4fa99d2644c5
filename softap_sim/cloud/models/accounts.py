"""Users (developer accounts) and products, as plain functions over a connection.

Model functions take a ``sqlite3.Connection`` inside the backend's transaction, do SQL
and hashing, take the time as ``now`` and raise :class:`~softap_sim.cloud.errors.CloudError`
subclasses (house-style.md §5: moto's models). Only :class:`CloudBackend` calls them.
"""

from __future__ import annotations

import re
import secrets
import sqlite3
from typing import Any

from softap_sim.cloud import hashing, validate
from softap_sim.cloud.errors import InvalidRequest, NotFound

PRODUCT_ID_BASE = 10000
PRODUCT_SLUG_RE = re.compile(r"\A[a-z0-9][a-z0-9-]{0,62}\Z")


def new_id() -> str:
    """24 hex characters, the shape of Particle's user/customer ids (Mongo ObjectIds)."""
    return secrets.token_hex(12)


def _user_dict(row: Any) -> dict[str, Any]:
    return {"id": row["id"], "email": row["email"], "created_at": row["created_at"]}


def create_user(conn: sqlite3.Connection, email: str, password: str, now: float) -> dict[str, Any]:
    """A developer account; the password is stored as scrypt only."""
    email = validate.email(email)
    password_hash = hashing.hash_password(validate.password(password))
    if conn.execute("SELECT 1 FROM users WHERE email = ?", (email,)).fetchone():
        raise InvalidRequest("User already exists")
    user_id = new_id()
    conn.execute(
        "INSERT INTO users (id, email, password_hash, created_at) VALUES (?, ?, ?, ?)",
        (user_id, email, password_hash, now),
    )
    return {"id": user_id, "email": email, "created_at": now}


def find_user(conn: sqlite3.Connection, email: str) -> dict[str, Any] | None:
    row = conn.execute("SELECT * FROM users WHERE email = ?", (email.strip(),)).fetchone()
    return None if row is None else _user_dict(row)


def get_user(conn: sqlite3.Connection, user_id: str) -> dict[str, Any] | None:
    row = conn.execute("SELECT * FROM users WHERE id = ?", (user_id,)).fetchone()
    return None if row is None else _user_dict(row)


def _product_dict(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "slug": row["slug"],
        "name": row["name"],
        "owner_user_id": row["owner_user_id"],
        "created_at": row["created_at"],
    }


def create_product(
    conn: sqlite3.Connection, name: str, slug: str, owner_user_id: str | None, now: float
) -> dict[str, Any]:
    """A product; ids start above :data:`PRODUCT_ID_BASE` (10001, 10002, …).

    The slug is lower-case letters, digits and dashes and not all digits (an all-digit
    slug would be shadowed by a product id in ``:productIdOrSlug``).
    """
    name = validate.name(name)
    slug = validate.text(slug, "slug", max_length=validate.MAX_SLUG_LENGTH + 64).strip().lower()
    if not PRODUCT_SLUG_RE.match(slug) or validate.int64(slug) is not None or slug.isdigit():
        raise InvalidRequest(
            f"Invalid product slug {slug[:70]!r}: lower-case letters, digits and dashes, "
            "not only digits"
        )
    if (
        owner_user_id is not None
        and not conn.execute("SELECT 1 FROM users WHERE id = ?", (owner_user_id,)).fetchone()
    ):
        raise NotFound("User not found")
    if conn.execute("SELECT 1 FROM products WHERE slug = ?", (slug,)).fetchone():
        raise InvalidRequest(f"Product slug {slug!r} already exists")
    (top,) = conn.execute("SELECT MAX(id) FROM products").fetchone()
    product_id = max(int(top or 0), PRODUCT_ID_BASE) + 1
    conn.execute(
        "INSERT INTO products (id, slug, name, owner_user_id, created_at) VALUES (?, ?, ?, ?, ?)",
        (product_id, slug, name, owner_user_id, now),
    )
    return {
        "id": product_id,
        "slug": slug,
        "name": name,
        "owner_user_id": owner_user_id,
        "created_at": now,
    }


def get_product(conn: sqlite3.Connection, id_or_slug: str | int) -> dict[str, Any] | None:
    row = find_product(conn, id_or_slug)
    return None if row is None else _product_dict(row)


def find_product(conn: sqlite3.Connection, ref: int | str) -> sqlite3.Row | None:
    """``:productIdOrSlug`` (see :func:`validate.product_ref`): the row or None.

    A number is looked up as an id first, then as a slug (slugs are never all digits);
    anything that is neither a 64-bit id nor a slug is simply not found.
    """
    if isinstance(ref, int):
        if not 0 <= ref <= validate.MAX_INT64:
            return None
        row: sqlite3.Row | None = conn.execute(
            "SELECT * FROM products WHERE id = ?", (ref,)
        ).fetchone()
        return row
    try:
        parsed = validate.product_ref(ref)
    except NotFound:
        return None
    if isinstance(parsed, int):
        return find_product(conn, parsed)
    found: sqlite3.Row | None = conn.execute(
        "SELECT * FROM products WHERE slug = ?", (parsed,)
    ).fetchone()
    return found


def first_product(conn: sqlite3.Connection) -> dict[str, Any] | None:
    """The product with the lowest id (the default product of the first start)."""
    row = conn.execute("SELECT * FROM products ORDER BY id LIMIT 1").fetchone()
    return None if row is None else _product_dict(row)
