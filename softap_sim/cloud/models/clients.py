"""OAuth clients (cloud-api.md §2): creation, lookup, update, deletion, secret checks.

``client_id`` defaults to ``<slug of name>-<8 hex>``; generated secrets (160 random bits)
are stored as SHA-256, caller-chosen ones (``particle``/``particle``, CLI-given) with
scrypt. Deleting a client deletes every token it issued.
"""

from __future__ import annotations

import re
import secrets
import sqlite3
from typing import Any

from softap_sim.cloud import hashing, validate
from softap_sim.cloud.errors import InvalidRequest, NotFound
from softap_sim.cloud.policy import CLIENT_ID_RE, CLIENT_PRESETS, CLIENT_TYPES, normalize_scope


def secret_matches(secret: str, stored: str) -> bool:
    """Constant-time check of a client secret: scrypt for chosen, SHA-256 for generated."""
    if stored.startswith("scrypt$"):
        return hashing.verify_password(secret, stored)
    return hashing.same_digest(secret, stored)


def client_dict(row: Any) -> dict[str, Any]:
    """Every column but the secret hash."""
    return {
        "id": row["id"],
        "name": row["name"],
        "type": row["type"],
        "redirect_uri": row["redirect_uri"],
        "scope": row["scope"],
        "product_id": row["product_id"],
        "owner_user_id": row["owner_user_id"],
        "created_at": row["created_at"],
    }


def _slugify(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug[:30].strip("-") or "client"


def _check_redirect_uri(type_: str, redirect_uri: str | None) -> str | None:
    uri = (redirect_uri or "").strip() or None
    if type_ == "web":
        if uri is None:
            raise InvalidRequest('A web client needs a "redirect_uri"')
        if not re.match(r"^https?://[^\s#]+$", uri):
            raise InvalidRequest('The "redirect_uri" must be an http(s) URL without a fragment')
        return uri
    if uri is not None:
        raise InvalidRequest('Only web clients take a "redirect_uri"')
    return None


def create_client(
    conn: sqlite3.Connection,
    *,
    name: str,
    type: str,
    scope: str | None,
    product_id: int | None = None,
    owner_user_id: str | None = None,
    redirect_uri: str | None = None,
    client_id: str | None = None,
    secret: str | None = None,
    now: float,
) -> tuple[dict[str, Any], str]:
    """An OAuth client; returns its public row and the plain secret (shown once).

    ``client_id`` defaults to ``<slug of name>-<8 hex>``; a given id must match
    ``^[a-z0-9-_]{3,40}$``. ``secret`` defaults to 160 random bits (stored as SHA-256); a
    caller-chosen secret may be weak, so it is stored with scrypt.
    """
    name = validate.name(name)
    if type not in CLIENT_TYPES:
        raise InvalidRequest('Invalid "type" parameter: installed or web')
    scope = normalize_scope(scope)
    uri = _check_redirect_uri(type, redirect_uri)
    _check_refs(conn, product_id, owner_user_id)
    client_id = _client_id(conn, name, client_id)
    if secret is None:
        secret = hashing.new_client_secret()
        secret_hash = hashing.digest(secret)
    else:
        if not secret:
            raise InvalidRequest("A client secret cannot be empty")
        secret_hash = hashing.hash_password(secret)
    conn.execute(
        "INSERT INTO clients (id, secret_hash, name, type, redirect_uri, scope, product_id, "
        "owner_user_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (client_id, secret_hash, name, type, uri, scope, product_id, owner_user_id, now),
    )
    row = conn.execute("SELECT * FROM clients WHERE id = ?", (client_id,)).fetchone()
    return client_dict(row), secret


def _check_refs(conn: sqlite3.Connection, product_id: int | None, user_id: str | None) -> None:
    """The product and the owning user a new client names must exist."""
    if (
        product_id is not None
        and not conn.execute("SELECT 1 FROM products WHERE id = ?", (product_id,)).fetchone()
    ):
        raise NotFound("Product not found")
    if (
        user_id is not None
        and not conn.execute("SELECT 1 FROM users WHERE id = ?", (user_id,)).fetchone()
    ):
        raise NotFound("User not found")


def _client_id(conn: sqlite3.Connection, name: str, client_id: str | None) -> str:
    """The given id, checked, or a fresh ``<slug of name>-<8 hex>``."""
    if client_id is None:
        base = _slugify(name)
        while True:
            client_id = f"{base}-{secrets.token_hex(4)}"
            if not conn.execute("SELECT 1 FROM clients WHERE id = ?", (client_id,)).fetchone():
                return client_id
    if not CLIENT_ID_RE.match(client_id):
        raise InvalidRequest(f"Invalid client id {client_id!r}: must match ^[a-z0-9-_]{{3,40}}$")
    if conn.execute("SELECT 1 FROM clients WHERE id = ?", (client_id,)).fetchone():
        raise InvalidRequest(f"Client {client_id!r} already exists")
    return client_id


def create_preset_client(
    conn: sqlite3.Connection,
    preset: str,
    *,
    name: str,
    product_id: int | None,
    owner_user_id: str | None = None,
    redirect_uri: str | None = None,
    client_id: str | None = None,
    now: float,
) -> tuple[dict[str, Any], str]:
    """A console preset (:data:`CLIENT_PRESETS`): ``simple-auth-mobile`` (installed,
    ``customers:create``), ``simple-auth-web`` (web + redirect URI, ``customers:create``),
    ``two-legged`` (installed, no scope)."""
    try:
        type_, scope = CLIENT_PRESETS[preset]
    except KeyError:
        raise InvalidRequest(
            f"Unknown client preset {preset!r}: {', '.join(CLIENT_PRESETS)}"
        ) from None
    return create_client(
        conn,
        name=name,
        type=type_,
        scope=scope,
        product_id=product_id,
        owner_user_id=owner_user_id,
        redirect_uri=redirect_uri,
        client_id=client_id,
        now=now,
    )


def get_client(conn: sqlite3.Connection, client_id: str) -> dict[str, Any] | None:
    row = conn.execute("SELECT * FROM clients WHERE id = ?", (client_id,)).fetchone()
    return None if row is None else client_dict(row)


def client_row_with_hash(conn: sqlite3.Connection, client_id: str) -> Any:
    return conn.execute("SELECT * FROM clients WHERE id = ?", (client_id,)).fetchone()


def list_clients(
    conn: sqlite3.Connection, *, product_id: int | None = None, owner_user_id: str | None = None
) -> list[dict[str, Any]]:
    """A product's clients, or a user's own (non-product) clients, or all with no filter."""
    if product_id is not None:
        rows = conn.execute(
            "SELECT * FROM clients WHERE product_id = ? ORDER BY created_at, rowid", (product_id,)
        )
    elif owner_user_id is not None:
        rows = conn.execute(
            "SELECT * FROM clients WHERE owner_user_id = ? AND product_id IS NULL "
            "ORDER BY created_at, rowid",
            (owner_user_id,),
        )
    else:
        rows = conn.execute("SELECT * FROM clients ORDER BY created_at, rowid")
    return [client_dict(row) for row in rows]


def update_client(
    conn: sqlite3.Connection, client_id: str, *, name: str | None = None, scope: str | None = None
) -> dict[str, Any]:
    """Change the name and/or the scope (``scope="none"`` removes every scope)."""
    if get_client(conn, client_id) is None:
        raise NotFound("Client not found")
    if name is None and scope is None:
        raise InvalidRequest('Nothing to update: send "name" and/or "scope"')
    if name is not None:
        conn.execute("UPDATE clients SET name = ? WHERE id = ?", (validate.name(name), client_id))
    if scope is not None:
        conn.execute(
            "UPDATE clients SET scope = ? WHERE id = ?", (normalize_scope(scope), client_id)
        )
    client = get_client(conn, client_id)
    assert client is not None
    return client


def delete_client(conn: sqlite3.Connection, client_id: str) -> bool:
    """Remove the client and every token it issued; False if there is no such client."""
    client = get_client(conn, client_id)
    if client is None:
        return False
    conn.execute("DELETE FROM tokens WHERE client_id = ?", (client["id"],))
    conn.execute("DELETE FROM clients WHERE id = ?", (client["id"],))
    return True


def authenticate_client(
    conn: sqlite3.Connection, client_id: str, secret: str
) -> dict[str, Any] | None:
    """The client if the secret matches (constant time), else None (for CLI/sync use)."""
    row = client_row_with_hash(conn, client_id)
    if row is None:
        hashing.same_digest(secret, "0" * 64)
        return None
    return client_dict(row) if secret_matches(secret, row["secret_hash"]) else None
