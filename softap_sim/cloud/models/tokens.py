"""Access and refresh tokens (cloud-api.md §4): minted, looked up, rotated, revoked.

Only SHA-256 digests are stored; each row's ``pair_hash`` names the other of its pair.
Refresh tokens live 14 days from issue, are **rotated** on use (the old one is deleted, as
the library's ``revokeRefreshToken`` does) and are not issued for never-expiring access
tokens (``lib/grant.js`` ``saveRefreshToken``). ``GET /v1/access_tokens`` cannot show
plain tokens: its ``token`` field is the token's SHA-256 hex digest.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from softap_sim.cloud import hashing
from softap_sim.cloud.errors import InvalidGrant, InvalidRequest
from softap_sim.cloud.views import iso_time

#: token lifetimes (cloud-api.md §4): 90 days, refresh tokens 14 days
ACCESS_TOKEN_LIFETIME_S = 7_776_000
REFRESH_TOKEN_LIFETIME_S = 1_209_600


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
    lifetime, access_expires = _access_lifetime(expires_in, expires_at, now)
    access = hashing.new_token()
    access_hash = hashing.digest(access)
    refresh = hashing.new_token() if with_refresh and access_expires is not None else None
    refresh_hash = hashing.digest(refresh) if refresh is not None else None
    owner = (client_id, user_id, customer_id, product_id, scope)
    conn.execute(_INSERT, (access_hash, "access", *owner, access_expires, now, refresh_hash))
    if refresh_hash is not None:
        expires = now + REFRESH_TOKEN_LIFETIME_S
        conn.execute(_INSERT, (refresh_hash, "refresh", *owner, expires, now, access_hash))
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


_INSERT = (
    "INSERT INTO tokens (hash, kind, client_id, user_id, customer_id, product_id, scope, "
    "expires_at, created_at, pair_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _access_lifetime(
    expires_in: int | None, expires_at: float | None, now: float
) -> tuple[float, float | None]:
    """(lifetime in seconds, expiry or None for never) from the request's two options."""
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
    return lifetime, access_expires


def revoke_token(conn: sqlite3.Connection, token: str) -> bool:
    """Delete an access token and its paired refresh token; False if it is unknown."""
    token_hash = hashing.digest(token)
    row = conn.execute(
        "SELECT hash, pair_hash FROM tokens WHERE hash = ? AND kind = 'access'", (token_hash,)
    ).fetchone()
    if row is None:
        return False
    delete_token_pair(conn, row["hash"], row["pair_hash"])
    return True


def delete_token_pair(conn: sqlite3.Connection, token_hash: str, pair_hash: str | None) -> None:
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


def access_token_row(conn: sqlite3.Connection, token_hash: str) -> sqlite3.Row | None:
    """The stored access token with this digest, or None."""
    row: sqlite3.Row | None = conn.execute(
        "SELECT * FROM tokens WHERE hash = ? AND kind = 'access'", (token_hash,)
    ).fetchone()
    return row


def delete_access_token(conn: sqlite3.Connection, token_hash: str) -> None:
    """Delete an access token (by digest) and its paired refresh token."""
    row = conn.execute("SELECT pair_hash FROM tokens WHERE hash = ?", (token_hash,)).fetchone()
    delete_token_pair(conn, token_hash, None if row is None else row["pair_hash"])


def rotate_refresh_token(
    conn: sqlite3.Connection,
    refresh: str,
    client_id: str,
    *,
    expires_in: int | None,
    expires_at: float | None,
    now: float,
) -> dict[str, Any]:
    """The ``refresh_token`` grant: delete the used refresh token, issue a new pair."""
    refresh_hash = hashing.digest(refresh)
    row = conn.execute(
        "SELECT * FROM tokens WHERE hash = ? AND kind = 'refresh'", (refresh_hash,)
    ).fetchone()
    if row is None or row["revoked"] or row["client_id"].lower() != client_id.lower():
        raise InvalidGrant("Invalid refresh token")
    if row["expires_at"] is not None and row["expires_at"] <= now:
        raise InvalidGrant("Refresh token has expired")
    conn.execute("DELETE FROM tokens WHERE hash = ?", (refresh_hash,))
    conn.execute("UPDATE tokens SET pair_hash = NULL WHERE hash = ?", (row["pair_hash"],))
    return issue_tokens(
        conn,
        client_id=client_id,
        user_id=row["user_id"],
        customer_id=row["customer_id"],
        product_id=row["product_id"],
        scope=row["scope"],
        expires_in=expires_in,
        expires_at=expires_at,
        now=now,
    )
