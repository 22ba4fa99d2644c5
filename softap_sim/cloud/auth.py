"""OAuth clients, users, products, customers and tokens (cloud-api.md §2-§4).

Two layers, as house-style.md §5 asks:

* **Model functions** take a ``sqlite3.Connection`` and do pure SQL + hashing (time comes
  from their ``now`` argument), so the CLI (``db.run_sync``) and the device side reuse
  them. They raise :class:`~softap_sim.cloud.errors.CloudError` subclasses.
* **Handlers** only parse, call (``await cloud.db.run(...)``) and serialise. Slow KDF
  checks (scrypt) run on a worker thread, never on the single database thread.

Storage: client secrets, passwords and tokens are stored only as hashes. Generated
secrets and tokens (160 random bits) are stored as SHA-256; passwords and caller-chosen
client secrets (``particle``/``particle``, CLI-given secrets) go through scrypt. Every
comparison is constant-time. Nothing secret is logged.

Choices where cloud-api.md is silent (each also noted where it is implemented):

* Scopes of a client: ``customers:create`` and the Photon-era ``create_customer`` are the
  same scope; ``*:*`` (full control) behaves like no scope (two-legged). A client whose
  scopes are only customer creation ("simple auth") may create customers of its product
  and log *those customers* in (``password`` and ``refresh_token`` grants, which is what
  particle-api-js ``login()`` does for simple-auth apps), and nothing else: its
  ``client_credentials`` grant is ``invalid_client`` "The grant type is unauthorised for
  this client_id" (the OAuth library's ``grantTypeAllowed`` hook, ``lib/grant.js``).
* ``refresh_token`` works only with product clients (api-service.json: "Refresh tokens
  only work for product tokens"); other clients get the same ``invalid_client``. Refresh
  tokens are still returned to every client (the docs' example with ``particle:particle``
  has one), live 14 days from issue, are **rotated** on use (the old one is deleted, as
  the library's ``revokeRefreshToken`` does) and are not issued for never-expiring access
  tokens (``lib/grant.js`` ``saveRefreshToken``). The previous access token stays valid.
* ``client_credentials`` without a scope: a product client gets a token of kind
  ``client`` bound to its product (``Principal.product_id``); a user's own client gets a
  token of that user; a client with no owner (``particle``, ``particle-api``) gets
  ``invalid_grant`` "Client credentials are invalid" (§4 table). With
  ``scope=customer=<email>`` the client must be a product client and the customer must
  exist in that product, else ``invalid_scope``.
* Customers: duplicate email → 400 ``invalid_request`` "Customer already exists"; a
  client that is not a client of the product → ``invalid_client``; unknown product → 404
  ``not_found``. Either ``password`` or ``no_password=true`` is required (not both).
  Implicit creation (``response_type=token`` + client id, web clients only) answers 201
  with the token JSON (no refresh token, as in the library's implicit grant) and a
  ``Location: <redirect_uri>#access_token=…&token_type=bearer&expires_in=…`` header
  (RFC 6749 §4.2.2 fragment; ``&state=`` is appended when given).
* Deleting a customer deletes their access/refresh tokens and pending (unused) claim
  codes and releases their devices (``owner_customer_id`` cleared); used claim codes stay.
  Deleting a client deletes every token it issued.
* ``POST …/clients`` answers 201. ``GET /v1/access_tokens`` cannot show plain tokens
  (only hashes are stored): its ``token`` field is the token's SHA-256 hex digest.
* Product administration (client and customer management, customer creation by bearer
  token) is allowed to the product owner's user token and to a product-bound client token
  (``client_credentials`` of a two-legged product client); anything else is 403.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
import re
import secrets
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import quote

from aiohttp import web

from softap_sim.cloud import hashing
from softap_sim.cloud.core import (
    ACCESS_TOKEN_LIFETIME_S,
    REFRESH_TOKEN_LIFETIME_S,
    Cloud,
    Principal,
    cloud_of,
    find_product,
    json_response,
    read_params,
)
from softap_sim.cloud.errors import (
    CloudError,
    Forbidden,
    InvalidClient,
    InvalidGrant,
    InvalidRequest,
    InvalidScope,
    InvalidToken,
    NotFound,
)

_T = TypeVar("_T")
log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: OAuth client ids (``lib/oauth2server.js``), case-insensitive
CLIENT_ID_RE = re.compile(r"^[a-z0-9-_]{3,40}$", re.IGNORECASE)
CLIENT_TYPES = ("installed", "web")
#: both spellings of the customer-creation scope (current docs / Photon-era guide)
CUSTOMER_CREATE_SCOPES = frozenset({"customers:create", "create_customer"})
FULL_SCOPE = "*:*"
CLIENT_SCOPES = CUSTOMER_CREATE_SCOPES | {FULL_SCOPE}
#: console presets (cloud-apis/authentication.md): preset -> (type, scope)
CLIENT_PRESETS: dict[str, tuple[str, str]] = {
    "simple-auth-mobile": ("installed", "customers:create"),
    "simple-auth-web": ("web", "customers:create"),
    "two-legged": ("installed", ""),
}
GRANT_TYPES = ("password", "client_credentials", "refresh_token")
PRODUCT_ID_BASE = 10000
PRODUCT_SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
MAX_EMAIL_LENGTH = 254
MAX_NAME_LENGTH = 100
#: tokens may be asked for at most ten years ahead
MAX_EXPIRES_IN_S = 10 * 365 * 86400

DEFAULT_DEVELOPER_EMAIL = "developer@softap-sim.test"
DEFAULT_PRODUCT_NAME = "softap-sim product"
DEFAULT_PRODUCT_SLUG = "softap-sim"
#: well-known public developer clients: (id = secret, name)
DEVELOPER_CLIENTS = (
    ("particle-api", "particle-api-js default client"),
    ("particle", "Particle developer client"),
)

TOKEN_HEADERS = {"Cache-Control": "no-store", "Pragma": "no-cache"}
FORM_ONLY = "Method must be POST with application/x-www-form-urlencoded encoding"
BAD_CLIENT = "Client credentials are invalid"
UNAUTHORISED_GRANT = "The grant type is unauthorised for this client_id"
BAD_USER = "User credentials are invalid"


# ---------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------
def _new_id() -> str:
    """24 hex characters, the shape of Particle's user/customer ids (Mongo ObjectIds)."""
    return secrets.token_hex(12)


def _email(value: str | None, what: str = "email") -> str:
    email = (value or "").strip().lower()
    if not email:
        raise InvalidRequest(f'The "{what}" parameter is required')
    if len(email) > MAX_EMAIL_LENGTH or any(ch.isspace() for ch in email):
        raise InvalidRequest(f'Invalid "{what}" parameter')
    return email


def _password(value: str | None) -> str:
    if not value:
        raise InvalidRequest('The "password" parameter is required')
    return value


def _name(value: str | None) -> str:
    name = (value or "").strip()
    if not name:
        raise InvalidRequest('The "name" parameter is required')
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidRequest(f'The "name" parameter is longer than {MAX_NAME_LENGTH} characters')
    return name


def _secret_matches(secret: str, stored: str) -> bool:
    """Constant-time check of a client secret: scrypt for chosen, SHA-256 for generated."""
    if stored.startswith("scrypt$"):
        return hashing.verify_password(secret, stored)
    return hashing.same_digest(secret, stored)


def iso_time(ts: float | None) -> str | None:
    """Particle's timestamp format: ``2014-04-27T06:31:08.991Z``."""
    if ts is None:
        return None
    text = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def normalize_scope(scope: str | None) -> str:
    """A client scope list: ``none``/empty → ``""``; only the spec's scopes are accepted."""
    parts = (scope or "").split()
    if parts == ["none"] or not parts:
        return ""
    out: list[str] = []
    for part in parts:
        if part not in CLIENT_SCOPES:
            raise InvalidScope(
                f"Invalid scope {part!r}: use customers:create (or create_customer), *:* or none"
            )
        if part not in out:
            out.append(part)
    return " ".join(out)


def is_customer_creation_only(scope: str) -> bool:
    """True for "simple auth" clients: customer creation (and their customers' logins) only."""
    parts = set(scope.split())
    return bool(parts & CUSTOMER_CREATE_SCOPES) and FULL_SCOPE not in parts


def may_create_customers(scope: str) -> bool:
    """Two-legged (no scope), full control, or a customer-creation scope."""
    parts = set(scope.split())
    return not parts or FULL_SCOPE in parts or bool(parts & CUSTOMER_CREATE_SCOPES)


def grant_allowed(client: Mapping[str, Any], grant_type: str) -> bool:
    """The ``grantTypeAllowed`` hook: which grants a client may use (module docstring)."""
    product_client = client["product_id"] is not None
    if grant_type == "refresh_token" and not product_client:
        return False
    if is_customer_creation_only(client["scope"]):
        if grant_type == "client_credentials":
            return False
        if grant_type == "password" and not product_client:
            return False
    return True


def is_product_admin(principal: Principal, product: Mapping[str, Any]) -> bool:
    """The product owner's user token, or a token bound to the product by its client."""
    if principal.kind == "user":
        return principal.user_id is not None and principal.user_id == product["owner_user_id"]
    if principal.kind == "client":
        return bool(principal.product_id == product["id"])
    return False


# ---------------------------------------------------------------------------------------
# model: users and products
# ---------------------------------------------------------------------------------------
def _user_dict(row: Any) -> dict[str, Any]:
    return {"id": row["id"], "email": row["email"], "created_at": row["created_at"]}


def create_user(conn: sqlite3.Connection, email: str, password: str, now: float) -> dict[str, Any]:
    """A developer account; the password is stored as scrypt only."""
    email = _email(email)
    password_hash = hashing.hash_password(_password(password))
    if conn.execute("SELECT 1 FROM users WHERE email = ?", (email,)).fetchone():
        raise InvalidRequest("User already exists")
    user_id = _new_id()
    conn.execute(
        "INSERT INTO users (id, email, password_hash, created_at) VALUES (?, ?, ?, ?)",
        (user_id, email, password_hash, now),
    )
    return {"id": user_id, "email": email, "created_at": now}


def find_user(conn: sqlite3.Connection, email: str) -> dict[str, Any] | None:
    row = conn.execute("SELECT * FROM users WHERE email = ?", (email.strip(),)).fetchone()
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
    name = _name(name)
    slug = (slug or "").strip().lower()
    if not PRODUCT_SLUG_RE.match(slug) or slug.isdigit():
        raise InvalidRequest(
            f"Invalid product slug {slug!r}: lower-case letters, digits and dashes, not only digits"
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
    row = find_product(conn, str(id_or_slug))
    return None if row is None else _product_dict(row)


# ---------------------------------------------------------------------------------------
# model: OAuth clients
# ---------------------------------------------------------------------------------------
def _client_dict(row: Any) -> dict[str, Any]:
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


def client_json(client: Mapping[str, Any], secret: str | None = None) -> dict[str, Any]:
    """The REST shape (§2): ``{name, type, id[, secret][, redirect_uri]}``."""
    out: dict[str, Any] = {"name": client["name"], "type": client["type"], "id": client["id"]}
    if secret is not None:
        out["secret"] = secret
    if client["type"] == "web":
        out["redirect_uri"] = client["redirect_uri"]
    return out


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
    name = _name(name)
    if type not in CLIENT_TYPES:
        raise InvalidRequest('Invalid "type" parameter: installed or web')
    scope = normalize_scope(scope)
    uri = _check_redirect_uri(type, redirect_uri)
    if (
        product_id is not None
        and not conn.execute("SELECT 1 FROM products WHERE id = ?", (product_id,)).fetchone()
    ):
        raise NotFound("Product not found")
    if (
        owner_user_id is not None
        and not conn.execute("SELECT 1 FROM users WHERE id = ?", (owner_user_id,)).fetchone()
    ):
        raise NotFound("User not found")
    if client_id is None:
        base = _slugify(name)
        while True:
            client_id = f"{base}-{secrets.token_hex(4)}"
            if not conn.execute("SELECT 1 FROM clients WHERE id = ?", (client_id,)).fetchone():
                break
    else:
        if not CLIENT_ID_RE.match(client_id):
            raise InvalidRequest(
                f"Invalid client id {client_id!r}: must match ^[a-z0-9-_]{{3,40}}$"
            )
        if conn.execute("SELECT 1 FROM clients WHERE id = ?", (client_id,)).fetchone():
            raise InvalidRequest(f"Client {client_id!r} already exists")
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
    return _client_dict(row), secret


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
    return None if row is None else _client_dict(row)


def _client_row_with_hash(conn: sqlite3.Connection, client_id: str) -> Any:
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
    return [_client_dict(row) for row in rows]


def update_client(
    conn: sqlite3.Connection, client_id: str, *, name: str | None = None, scope: str | None = None
) -> dict[str, Any]:
    """Change the name and/or the scope (``scope="none"`` removes every scope)."""
    if get_client(conn, client_id) is None:
        raise NotFound("Client not found")
    if name is None and scope is None:
        raise InvalidRequest('Nothing to update: send "name" and/or "scope"')
    if name is not None:
        conn.execute("UPDATE clients SET name = ? WHERE id = ?", (_name(name), client_id))
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
    row = _client_row_with_hash(conn, client_id)
    if row is None:
        hashing.same_digest(secret, "0" * 64)
        return None
    return _client_dict(row) if _secret_matches(secret, row["secret_hash"]) else None


# ---------------------------------------------------------------------------------------
# model: customers
# ---------------------------------------------------------------------------------------
def _customer_dict(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "product_id": row["product_id"],
        "email": row["email"],
        "shadow": row["password_hash"] is None,
        "created_at": row["created_at"],
    }


def _insert_customer(
    conn: sqlite3.Connection, product_id: int, email: str, password_hash: str | None, now: float
) -> dict[str, Any]:
    email = _email(email)
    if not conn.execute("SELECT 1 FROM products WHERE id = ?", (product_id,)).fetchone():
        raise NotFound("Product not found")
    if conn.execute(
        "SELECT 1 FROM customers WHERE product_id = ? AND email = ?", (product_id, email)
    ).fetchone():
        raise InvalidRequest("Customer already exists")
    customer_id = _new_id()
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
    password_hash = None if password is None else hashing.hash_password(_password(password))
    return _insert_customer(conn, product_id, email, password_hash, now)


def get_customer(conn: sqlite3.Connection, product_id: int, email: str) -> dict[str, Any] | None:
    row = conn.execute(
        "SELECT * FROM customers WHERE product_id = ? AND email = ?",
        (product_id, email.strip().lower()),
    ).fetchone()
    return None if row is None else _customer_dict(row)


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


def _update_customer_hash(
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
    _update_customer_hash(conn, product_id, email, hashing.hash_password(_password(password)))


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


# ---------------------------------------------------------------------------------------
# model: tokens
# ---------------------------------------------------------------------------------------
def issue_tokens(
    conn: sqlite3.Connection,
    *,
    client_id: str,
    user_id: str | None = None,
    customer_id: str | None = None,
    product_id: int | None = None,
    scope: str = "",
    expires_in: int | None = None,
    expires_at: float | None = None,
    with_refresh: bool = True,
    now: float,
) -> dict[str, Any]:
    """Mint an access token (and a linked refresh token); returns the token JSON (§4).

    ``expires_in`` (seconds, ``0`` = never) or ``expires_at`` (epoch seconds); neither →
    90 days. The refresh token lives 14 days and is not issued for a never-expiring access
    token. Only SHA-256 digests are stored; each row's ``pair_hash`` names the other.
    """
    if expires_in is not None and expires_at is not None:
        raise InvalidRequest("Send expires_in or expires_at, not both")
    if expires_at is not None:
        if expires_at <= now:
            raise InvalidRequest("expires_at is in the past")
        lifetime: float = expires_at - now
        access_expires: float | None = expires_at
    elif expires_in is not None:
        if expires_in < 0:
            raise InvalidRequest("Invalid expires_in parameter")
        lifetime = expires_in
        access_expires = now + expires_in if expires_in > 0 else None
    else:
        lifetime = ACCESS_TOKEN_LIFETIME_S
        access_expires = now + ACCESS_TOKEN_LIFETIME_S
    access = hashing.new_token()
    access_hash = hashing.digest(access)
    refresh = hashing.new_token() if with_refresh and access_expires is not None else None
    refresh_hash = hashing.digest(refresh) if refresh is not None else None
    insert = (
        "INSERT INTO tokens (hash, kind, client_id, user_id, customer_id, product_id, scope, "
        "expires_at, created_at, pair_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    conn.execute(
        insert,
        (
            access_hash,
            "access",
            client_id,
            user_id,
            customer_id,
            product_id,
            scope,
            access_expires,
            now,
            refresh_hash,
        ),
    )
    if refresh_hash is not None:
        conn.execute(
            insert,
            (
                refresh_hash,
                "refresh",
                client_id,
                user_id,
                customer_id,
                product_id,
                scope,
                now + REFRESH_TOKEN_LIFETIME_S,
                now,
                access_hash,
            ),
        )
    body: dict[str, Any] = {
        "token_type": "bearer",
        "access_token": access,
        "expires_in": round(lifetime),
    }
    if refresh is not None:
        body["refresh_token"] = refresh
    if scope:
        body["scope"] = scope
    return body


def revoke_token(conn: sqlite3.Connection, token: str) -> bool:
    """Delete an access token and its paired refresh token; False if it is unknown."""
    token_hash = hashing.digest(token)
    row = conn.execute(
        "SELECT hash, pair_hash FROM tokens WHERE hash = ? AND kind = 'access'", (token_hash,)
    ).fetchone()
    if row is None:
        return False
    _delete_token_pair(conn, row["hash"], row["pair_hash"])
    return True


def _delete_token_pair(conn: sqlite3.Connection, token_hash: str, pair_hash: str | None) -> None:
    conn.execute("DELETE FROM tokens WHERE hash = ?", (token_hash,))
    if pair_hash is not None:
        conn.execute("DELETE FROM tokens WHERE hash = ?", (pair_hash,))


def list_user_tokens(conn: sqlite3.Connection, user_id: str, now: float) -> list[dict[str, Any]]:
    """``GET /v1/access_tokens``: live access tokens of a user (``token`` = SHA-256 hex)."""
    rows = conn.execute(
        "SELECT hash, expires_at, client_id FROM tokens WHERE user_id = ? AND kind = 'access' "
        "AND revoked = 0 AND (expires_at IS NULL OR expires_at > ?) ORDER BY created_at, rowid",
        (user_id, now),
    ).fetchall()
    return [
        {"token": r["hash"], "expires_at": iso_time(r["expires_at"]), "client": r["client_id"]}
        for r in rows
    ]


# ---------------------------------------------------------------------------------------
# model: first start
# ---------------------------------------------------------------------------------------
def bootstrap(conn: sqlite3.Connection, now: float) -> dict[str, Any] | None:
    """Seed an empty database; returns the plain credentials once, else None.

    Creates the developer user (:data:`DEFAULT_DEVELOPER_EMAIL`, random password), the
    product "softap-sim product" (slug ``softap-sim``) owned by that user, a two-legged
    client of the product, and the public developer clients ``particle-api``/
    ``particle-api`` and ``particle``/``particle`` (hashed like any other secret)::

        {"user": {"id", "email", "password"},
         "product": {"id", "slug", "name"},
         "client": {"id", "secret"},
         "developer_clients": [{"id", "secret"}, ...]}
    """
    if conn.execute("SELECT 1 FROM users LIMIT 1").fetchone() is not None:
        return None
    password = secrets.token_urlsafe(16)
    user = create_user(conn, DEFAULT_DEVELOPER_EMAIL, password, now)
    product = create_product(conn, DEFAULT_PRODUCT_NAME, DEFAULT_PRODUCT_SLUG, user["id"], now)
    client, secret = create_preset_client(
        conn, "two-legged", name="softap-sim server", product_id=product["id"], now=now
    )
    developer = []
    for client_id, name in DEVELOPER_CLIENTS:
        if get_client(conn, client_id) is None:
            create_client(
                conn,
                name=name,
                type="installed",
                scope="",
                client_id=client_id,
                secret=client_id,
                now=now,
            )
        developer.append({"id": client_id, "secret": client_id})
    return {
        "user": {"id": user["id"], "email": user["email"], "password": password},
        "product": {"id": product["id"], "slug": product["slug"], "name": product["name"]},
        "client": {"id": client["id"], "secret": secret},
        "developer_clients": developer,
    }


# ---------------------------------------------------------------------------------------
# request parsing
# ---------------------------------------------------------------------------------------
def basic_credentials(request: web.Request) -> tuple[str, str] | None:
    """``Authorization: Basic`` as (name, password), or None (as the ``basic-auth`` module)."""
    header = request.headers.get("Authorization")
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    if ":" not in decoded:
        return None
    name, _, password = decoded.partition(":")
    return name, password


def client_credentials(
    request: web.Request, params: Mapping[str, str]
) -> tuple[str | None, str | None]:
    """Client id and secret: HTTP Basic wins over the body (``lib/grant.js``)."""
    basic = basic_credentials(request)
    if basic is not None:
        return basic[0] or None, basic[1] or None
    return params.get("client_id") or None, params.get("client_secret") or None


def _parse_expiry(params: Mapping[str, str], now: float) -> tuple[int | None, float | None]:
    """``expires_in`` (seconds, 0 = never) or ``expires_at`` (ISO 8601)."""
    raw_in = (params.get("expires_in") or "").strip()
    raw_at = (params.get("expires_at") or "").strip()
    if raw_in and raw_at:
        raise InvalidRequest("Send expires_in or expires_at, not both")
    if raw_in:
        try:
            value = float(raw_in)
        except ValueError:
            raise InvalidRequest("Invalid expires_in parameter") from None
        if not value.is_integer() or not 0 <= value <= MAX_EXPIRES_IN_S:
            raise InvalidRequest("Invalid expires_in parameter")
        return int(value), None
    if raw_at:
        try:
            when = datetime.fromisoformat(raw_at)
        except ValueError:
            raise InvalidRequest("Invalid expires_at parameter: use ISO 8601") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        ts = when.timestamp()
        if ts <= now:
            raise InvalidRequest("expires_at is in the past")
        if ts - now > MAX_EXPIRES_IN_S:
            raise InvalidRequest("Invalid expires_at parameter")
        return None, ts
    return None, None


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("true", "1", "yes", "on")


#: scrypt runs at most this many at once: more would only starve the event loop thread
#: of CPU (about 30 ms of CPU each) without finishing sooner on a 2-core machine
_KDF_SLOTS = threading.BoundedSemaphore(max(1, (os.cpu_count() or 2) - 1))


def _throttled(fn: Callable[..., _T], *args: Any) -> _T:
    with _KDF_SLOTS:  # waits in the worker thread, never on the event loop
        return fn(*args)


async def _kdf(fn: Callable[..., _T], *args: Any) -> _T:
    return await asyncio.to_thread(_throttled, fn, *args)


async def _verify_secret(secret: str, stored: str | None) -> bool:
    """Constant time; a generated secret (SHA-256) is checked inline, a chosen one (scrypt)
    off the event loop and off the database thread."""
    if stored is None:
        hashing.same_digest(secret, "0" * 64)
        return False
    if not stored.startswith("scrypt$"):
        return _secret_matches(secret, stored)
    return await _kdf(_secret_matches, secret, stored)


async def _verify_password(password: str, stored: str | None) -> bool:
    return await _kdf(hashing.verify_password, password, stored)


async def _load_client(cloud: Cloud, client_id: str, secret: str) -> dict[str, Any]:
    """The client for id + secret, or ``invalid_client`` "Client credentials are invalid"."""
    row = await cloud.db.run(lambda c: _client_row_with_hash(c, client_id))
    ok = await _verify_secret(secret, None if row is None else row["secret_hash"])
    if row is None or not ok:
        raise InvalidClient(BAD_CLIENT)
    return _client_dict(row)


# ---------------------------------------------------------------------------------------
# POST /oauth/token
# ---------------------------------------------------------------------------------------
async def oauth_token(request: web.Request) -> web.StreamResponse:
    """The token endpoint: form-encoded only; ``password``, ``client_credentials``
    (with or without ``scope=customer=<email>``) and ``refresh_token`` (module docstring)."""
    try:
        body = await _grant(request)
    except CloudError as err:
        err.headers = {**err.headers, **TOKEN_HEADERS}
        raise
    return json_response(body, headers=TOKEN_HEADERS)


async def _grant(request: web.Request) -> dict[str, Any]:
    cloud = cloud_of(request)
    if request.method != "POST" or request.content_type != "application/x-www-form-urlencoded":
        raise InvalidRequest(FORM_ONLY)
    params = await read_params(request)
    grant_type = params.get("grant_type", "")
    if grant_type not in GRANT_TYPES:
        raise InvalidRequest("Invalid or missing grant_type parameter")
    # a Bearer header next to form credentials is ignored here (cloud-api.md §10.3)
    client_id, secret = client_credentials(request, params)
    if not client_id or not CLIENT_ID_RE.match(client_id):
        raise InvalidClient("Invalid or missing client_id parameter")
    if not secret:
        raise InvalidClient("Missing client_secret parameter")
    client = await _load_client(cloud, client_id, secret)
    if not grant_allowed(client, grant_type):
        raise InvalidClient(UNAUTHORISED_GRANT)
    if grant_type == "password":
        body = await _password_grant(cloud, client, params)
    elif grant_type == "client_credentials":
        body = await _client_credentials_grant(cloud, client, params)
    else:
        body = await _refresh_grant(cloud, client, params)
    log.info("cloud: token issued (grant %s, client %s)", grant_type, client["id"])
    return body


async def _password_grant(
    cloud: Cloud, client: dict[str, Any], params: Mapping[str, str]
) -> dict[str, Any]:
    """Users log in with non-product clients, customers with their product's clients."""
    username = (params.get("username") or "").strip().lower()
    password = params.get("password") or ""
    if not username or not password:
        raise InvalidClient('Missing parameters. "username" and "password" are required')
    if params.get("scope"):
        raise InvalidScope("Invalid scope")
    now = cloud.now()
    expires_in, expires_at = _parse_expiry(params, now)
    product_id = client["product_id"]

    def lookup(conn: sqlite3.Connection) -> Any:
        if product_id is None:
            return conn.execute("SELECT * FROM users WHERE email = ?", (username,)).fetchone()
        return conn.execute(
            "SELECT * FROM customers WHERE product_id = ? AND email = ?", (product_id, username)
        ).fetchone()

    row = await cloud.db.run(lookup)
    ok = await _verify_password(password, None if row is None else row["password_hash"])
    if row is None or not ok:
        raise InvalidGrant(BAD_USER)
    subject_id = row["id"]

    def issue(conn: sqlite3.Connection) -> dict[str, Any]:
        table = "users" if product_id is None else "customers"
        if not conn.execute(f"SELECT 1 FROM {table} WHERE id = ?", (subject_id,)).fetchone():
            raise InvalidGrant(BAD_USER)
        return issue_tokens(
            conn,
            client_id=client["id"],
            user_id=subject_id if product_id is None else None,
            customer_id=subject_id if product_id is not None else None,
            product_id=product_id,
            expires_in=expires_in,
            expires_at=expires_at,
            now=now,
        )

    return await cloud.db.run(issue)


async def _client_credentials_grant(
    cloud: Cloud, client: dict[str, Any], params: Mapping[str, str]
) -> dict[str, Any]:
    scope = (params.get("scope") or "").strip()
    now = cloud.now()
    expires_in, expires_at = _parse_expiry(params, now)
    product_id = client["product_id"]

    if not scope:
        if product_id is None and client["owner_user_id"] is None:
            raise InvalidGrant(BAD_CLIENT)

        def owner_token(conn: sqlite3.Connection) -> dict[str, Any]:
            return issue_tokens(
                conn,
                client_id=client["id"],
                user_id=client["owner_user_id"] if product_id is None else None,
                product_id=product_id,
                expires_in=expires_in,
                expires_at=expires_at,
                now=now,
            )

        return await cloud.db.run(owner_token)

    if not scope.startswith("customer=") or product_id is None:
        raise InvalidScope("Invalid scope")
    email = scope.removeprefix("customer=").strip().lower()
    if not email:
        raise InvalidScope("Invalid scope")

    def customer_token(conn: sqlite3.Connection) -> dict[str, Any]:
        customer = get_customer(conn, product_id, email)
        if customer is None:
            raise InvalidScope("Customer not found")
        return issue_tokens(
            conn,
            client_id=client["id"],
            customer_id=customer["id"],
            product_id=product_id,
            scope=f"customer={customer['email']}",
            expires_in=expires_in,
            expires_at=expires_at,
            now=now,
        )

    return await cloud.db.run(customer_token)


async def _refresh_grant(
    cloud: Cloud, client: dict[str, Any], params: Mapping[str, str]
) -> dict[str, Any]:
    """Rotates: the used refresh token is deleted and a new pair is issued."""
    refresh = params.get("refresh_token") or ""
    if not refresh:
        raise InvalidRequest('No "refresh_token" parameter')
    refresh_hash = hashing.digest(refresh)
    now = cloud.now()
    expires_in, expires_at = _parse_expiry(params, now)

    def rotate(conn: sqlite3.Connection) -> dict[str, Any]:
        row = conn.execute(
            "SELECT * FROM tokens WHERE hash = ? AND kind = 'refresh'", (refresh_hash,)
        ).fetchone()
        if row is None or row["revoked"] or row["client_id"].lower() != client["id"].lower():
            raise InvalidGrant("Invalid refresh token")
        if row["expires_at"] is not None and row["expires_at"] <= now:
            raise InvalidGrant("Refresh token has expired")
        conn.execute("DELETE FROM tokens WHERE hash = ?", (refresh_hash,))
        conn.execute("UPDATE tokens SET pair_hash = NULL WHERE hash = ?", (row["pair_hash"],))
        return issue_tokens(
            conn,
            client_id=client["id"],
            user_id=row["user_id"],
            customer_id=row["customer_id"],
            product_id=row["product_id"],
            scope=row["scope"],
            expires_in=expires_in,
            expires_at=expires_at,
            now=now,
        )

    return await cloud.db.run(rotate)


# ---------------------------------------------------------------------------------------
# customers
# ---------------------------------------------------------------------------------------
async def _product_or_404(cloud: Cloud, ref: str) -> dict[str, Any]:
    product = await cloud.db.run(lambda c: get_product(c, ref))
    if product is None:
        raise NotFound("Product not found")
    return product


async def _admin_product(request: web.Request, params: Mapping[str, str]) -> dict[str, Any]:
    """Authenticate, find ``:product`` (404) and require a product administrator (403)."""
    cloud = cloud_of(request)
    principal = await cloud.authenticate(request, params)
    product = await _product_or_404(cloud, request.match_info["product"])
    if not is_product_admin(principal, product):
        raise Forbidden("This token cannot administer this product")
    return product


async def create_customer_handler(request: web.Request) -> web.StreamResponse:
    """``POST /v1/products/:p/customers``: client credentials (Basic or form), implicit
    (client id + ``response_type=token``, web clients) or a product administrator's token.

    201 + token JSON (create + log in). A duplicate email is 400 ``invalid_request``
    "Customer already exists"; a client not of this product is ``invalid_client``.
    """
    cloud = cloud_of(request)
    params = await read_params(request)
    product = await _product_or_404(cloud, request.match_info["product"])
    client_id, secret = client_credentials(request, params)
    implicit = params.get("response_type") == "token" and client_id is not None
    now = cloud.now()
    redirect: str | None = None

    if implicit:
        assert client_id is not None
        client = await _implicit_client(cloud, client_id, product, params)
        token_client = client["id"]
        redirect = client["redirect_uri"]
        with_refresh = False
    elif client_id is not None:
        if not CLIENT_ID_RE.match(client_id):
            raise InvalidClient("Invalid or missing client_id parameter")
        if not secret:
            raise InvalidClient("Missing client_secret parameter")
        client = await _load_client(cloud, client_id, secret)
        if client["product_id"] != product["id"]:
            raise InvalidClient("The client is not a client of this product")
        if not may_create_customers(client["scope"]):
            raise InvalidScope("This client may not create customers")
        token_client = client["id"]
        with_refresh = True
    else:
        principal = await cloud.authenticate(request, params)
        if not is_product_admin(principal, product):
            raise Forbidden("This token cannot create customers of this product")
        token_client = principal.client_id
        with_refresh = True

    email = _email(params.get("email"))
    password = _password(params.get("password")) if implicit else _customer_password(params)
    expires_in, expires_at = _parse_expiry(params, now)
    password_hash = None
    if password is not None:
        password_hash = await _kdf(hashing.hash_password, password)

    def create(conn: sqlite3.Connection) -> dict[str, Any]:
        customer = _insert_customer(conn, product["id"], email, password_hash, now)
        return issue_tokens(
            conn,
            client_id=token_client,
            customer_id=customer["id"],
            product_id=product["id"],
            expires_in=expires_in,
            expires_at=expires_at,
            with_refresh=with_refresh,
            now=now,
        )

    body = await cloud.db.run(create)
    log.info("cloud: customer created in product %s (client %s)", product["id"], token_client)
    headers = dict(TOKEN_HEADERS)
    if redirect is not None:
        fragment = (
            f"access_token={body['access_token']}&token_type=bearer&expires_in={body['expires_in']}"
        )
        if params.get("state"):
            fragment += f"&state={quote(params['state'], safe='')}"
        headers["Location"] = f"{redirect}#{fragment}"
    return json_response(body, status=201, headers=headers)


def _customer_password(params: Mapping[str, str]) -> str | None:
    """``password`` or ``no_password=true`` (a shadow customer), exactly one of them."""
    no_password = _truthy(params.get("no_password"))
    password = params.get("password") or None
    if no_password and password is not None:
        raise InvalidRequest('Send "password" or "no_password=true", not both')
    if not no_password and password is None:
        raise InvalidRequest('The "password" parameter is required (or "no_password=true")')
    return password


async def _implicit_client(
    cloud: Cloud, client_id: str, product: Mapping[str, Any], params: Mapping[str, str]
) -> dict[str, Any]:
    """The implicit variant: a web client of the product, identified by its id alone."""
    client = None
    if CLIENT_ID_RE.match(client_id):
        client = await cloud.db.run(lambda c: get_client(c, client_id))
    if client is None:
        raise InvalidClient("Invalid client credentials")
    if client["type"] != "web" or client["product_id"] != product["id"]:
        raise InvalidClient("The implicit flow needs a web client of this product")
    if not may_create_customers(client["scope"]):
        raise InvalidScope("This client may not create customers")
    uri = params.get("redirect_uri")
    if uri and uri != client["redirect_uri"]:
        raise InvalidRequest("redirect_uri does not match")
    return client


async def list_customers_handler(request: web.Request) -> web.StreamResponse:
    params = await read_params(request)
    product = await _admin_product(request, params)
    body = await cloud_of(request).db.run(lambda c: list_customers(c, product["id"]))
    return json_response(body)


async def update_customer_handler(request: web.Request) -> web.StreamResponse:
    """``PUT …/customers/:email`` with ``password`` → ``{"ok":true}``."""
    params = await read_params(request)
    product = await _admin_product(request, params)
    email = request.match_info["email"]
    password = _password(params.get("password"))
    cloud = cloud_of(request)
    if await cloud.db.run(lambda c: get_customer(c, product["id"], email)) is None:
        raise NotFound("Customer not found")
    password_hash = await _kdf(hashing.hash_password, password)
    await cloud.db.run(lambda c: _update_customer_hash(c, product["id"], email, password_hash))
    return json_response({"ok": True})


async def delete_customer_handler(request: web.Request) -> web.StreamResponse:
    """``DELETE …/customers/:email``: also revokes tokens and pending claim codes."""
    params = await read_params(request)
    product = await _admin_product(request, params)
    email = request.match_info["email"]
    await cloud_of(request).db.run(lambda c: delete_customer(c, product["id"], email))
    log.info("cloud: customer deleted from product %s", product["id"])
    return json_response({"ok": True})


# ---------------------------------------------------------------------------------------
# OAuth clients
# ---------------------------------------------------------------------------------------
async def _user_principal(request: web.Request, params: Mapping[str, str]) -> Principal:
    principal = await cloud_of(request).authenticate(request, params)
    if principal.kind != "user" or principal.user_id is None:
        raise Forbidden("Only a user's token can manage that user's OAuth clients")
    return principal


async def create_client_handler(request: web.Request) -> web.StreamResponse:
    """``POST /v1/clients`` and ``POST /v1/products/:p/clients`` → 201
    ``{"ok":true,"client":{name,type,id,secret[,redirect_uri]}}`` (the secret is shown once)."""
    params = await read_params(request)
    cloud = cloud_of(request)
    if "product" in request.match_info:
        product = await _admin_product(request, params)
        product_id: int | None = product["id"]
        owner: str | None = None
    else:
        principal = await _user_principal(request, params)
        product_id, owner = None, principal.user_id
    now = cloud.now()

    def create(conn: sqlite3.Connection) -> tuple[dict[str, Any], str]:
        return create_client(
            conn,
            name=params.get("name", ""),
            type=params.get("type", ""),
            scope=params.get("scope"),
            product_id=product_id,
            owner_user_id=owner,
            redirect_uri=params.get("redirect_uri"),
            now=now,
        )

    client, secret = await cloud.db.run(create)
    log.info("cloud: OAuth client %s created", client["id"])
    return json_response({"ok": True, "client": client_json(client, secret)}, status=201)


async def list_clients_handler(request: web.Request) -> web.StreamResponse:
    params = await read_params(request)
    cloud = cloud_of(request)
    if "product" in request.match_info:
        product = await _admin_product(request, params)
        clients = await cloud.db.run(lambda c: list_clients(c, product_id=product["id"]))
    else:
        principal = await _user_principal(request, params)
        clients = await cloud.db.run(lambda c: list_clients(c, owner_user_id=principal.user_id))
    return json_response({"ok": True, "clients": [client_json(c) for c in clients]})


async def _managed_client(request: web.Request, params: Mapping[str, str]) -> dict[str, Any]:
    """The client of the route, if the caller may manage it (else 404/403)."""
    cloud = cloud_of(request)
    client_id = request.match_info["client_id"]
    if "product" in request.match_info:
        product = await _admin_product(request, params)
        client = await cloud.db.run(lambda c: get_client(c, client_id))
        if client is None or client["product_id"] != product["id"]:
            raise NotFound("Client not found")
        return client
    principal = await _user_principal(request, params)
    client = await cloud.db.run(lambda c: get_client(c, client_id))
    if client is None:
        raise NotFound("Client not found")
    client_product: int | None = client["product_id"]
    if client_product is not None:
        owning = await cloud.db.run(lambda c: get_product(c, client_product))
        if owning is None or not is_product_admin(principal, owning):
            raise NotFound("Client not found")
    elif client["owner_user_id"] != principal.user_id:
        raise NotFound("Client not found")
    return client


async def update_client_handler(request: web.Request) -> web.StreamResponse:
    """``PUT …/clients/:id`` with ``name`` and/or ``scope`` (``none`` clears)."""
    params = await read_params(request)
    client = await _managed_client(request, params)
    name = params.get("name")
    scope = params.get("scope")
    updated = await cloud_of(request).db.run(
        lambda c: update_client(c, client["id"], name=name, scope=scope)
    )
    return json_response({"ok": True, "client": client_json(updated)})


async def delete_client_handler(request: web.Request) -> web.StreamResponse:
    """``DELETE …/clients/:id`` → 204; the client's tokens go with it."""
    params = await read_params(request)
    client = await _managed_client(request, params)
    if not await cloud_of(request).db.run(lambda c: delete_client(c, client["id"])):
        raise NotFound("Client not found")
    log.info("cloud: OAuth client %s deleted", client["id"])
    return web.Response(status=204)


# ---------------------------------------------------------------------------------------
# access tokens
# ---------------------------------------------------------------------------------------
async def current_token_handler(request: web.Request) -> web.StreamResponse:
    """``GET /v1/access_tokens/current`` → ``{expires_at, client, scopes, orgs}``."""
    params = await read_params(request)
    principal = await cloud_of(request).authenticate(request, params)
    return json_response(
        {
            "expires_at": iso_time(principal.expires_at),
            "client": principal.client_id,
            "scopes": sorted(principal.scopes),
            "orgs": [],
        }
    )


async def delete_current_token_handler(request: web.Request) -> web.StreamResponse:
    """``DELETE /v1/access_tokens/current`` → ``{"ok":true}``; its refresh token goes too."""
    params = await read_params(request)
    cloud = cloud_of(request)
    principal = await cloud.authenticate(request, params)

    def delete(conn: sqlite3.Connection) -> None:
        row = conn.execute(
            "SELECT pair_hash FROM tokens WHERE hash = ?", (principal.token_hash,)
        ).fetchone()
        _delete_token_pair(conn, principal.token_hash, None if row is None else row["pair_hash"])

    await cloud.db.run(delete)
    return json_response({"ok": True})


async def delete_token_handler(request: web.Request) -> web.StreamResponse:
    """``DELETE /v1/access_tokens/:token``: the token itself is the credential (particle-api-js
    sends no auth); unknown or already deleted → 401 ``invalid_token``."""
    token = request.match_info["token"]
    if not await cloud_of(request).db.run(lambda c: revoke_token(c, token)):
        raise InvalidToken()
    return json_response({"ok": True})


async def list_tokens_handler(request: web.Request) -> web.StreamResponse:
    """``GET /v1/access_tokens`` with Basic ``user:password`` → ``[{token,expires_at,client}]``."""
    cloud = cloud_of(request)
    basic = basic_credentials(request)
    if basic is None or not basic[0] or not basic[1]:
        raise InvalidRequest("Send the account's username and password with HTTP Basic")
    email = basic[0].strip().lower()
    row = await cloud.db.run(
        lambda c: c.execute("SELECT * FROM users WHERE email = ?", (email,)).fetchone()
    )
    ok = await _verify_password(basic[1], None if row is None else row["password_hash"])
    if row is None or not ok:
        raise InvalidGrant(BAD_USER)
    user_id = row["id"]
    now = cloud.now()
    return json_response(await cloud.db.run(lambda c: list_user_tokens(c, user_id, now)))


ROUTES: list[tuple[str, str, Handler]] = [
    # any method: the library answers a non-POST with its invalid_request
    ("*", "/oauth/token", oauth_token),
    ("POST", "/v1/clients", create_client_handler),
    ("GET", "/v1/clients", list_clients_handler),
    ("PUT", "/v1/clients/{client_id}", update_client_handler),
    ("DELETE", "/v1/clients/{client_id}", delete_client_handler),
    ("POST", "/v1/products/{product}/clients", create_client_handler),
    ("GET", "/v1/products/{product}/clients", list_clients_handler),
    ("PUT", "/v1/products/{product}/clients/{client_id}", update_client_handler),
    ("DELETE", "/v1/products/{product}/clients/{client_id}", delete_client_handler),
    ("POST", "/v1/products/{product}/customers", create_customer_handler),
    ("GET", "/v1/products/{product}/customers", list_customers_handler),
    ("PUT", "/v1/products/{product}/customers/{email}", update_customer_handler),
    ("DELETE", "/v1/products/{product}/customers/{email}", delete_customer_handler),
    ("GET", "/v1/access_tokens", list_tokens_handler),
    # "current" before the dynamic {token} route: aiohttp matches in order
    ("GET", "/v1/access_tokens/current", current_token_handler),
    ("DELETE", "/v1/access_tokens/current", delete_current_token_handler),
    ("DELETE", "/v1/access_tokens/{token}", delete_token_handler),
]

__all__ = [
    "CLIENT_PRESETS",
    "DEFAULT_DEVELOPER_EMAIL",
    "ROUTES",
    "authenticate_client",
    "bootstrap",
    "create_client",
    "create_customer",
    "create_preset_client",
    "create_product",
    "create_user",
    "delete_client",
    "delete_customer",
    "get_client",
    "get_customer",
    "get_product",
    "is_product_admin",
    "issue_tokens",
    "list_clients",
    "list_customers",
    "revoke_customer",
    "revoke_token",
    "set_customer_password",
    "update_client",
]
