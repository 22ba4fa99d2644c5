"""The first start: an empty database gets a developer, a product and its clients."""

from __future__ import annotations

import secrets
import sqlite3
from typing import Any

from softap_sim.cloud.models.accounts import create_product, create_user
from softap_sim.cloud.models.clients import create_client, create_preset_client, get_client

DEFAULT_DEVELOPER_EMAIL = "developer@softap-sim.test"
DEFAULT_PRODUCT_NAME = "softap-sim product"
DEFAULT_PRODUCT_SLUG = "softap-sim"
#: well-known public developer clients: (id, secret, name). particle-cli logs in as
#: ``CLI2`` and creates tokens as ``user``, both with ``client_secret_here``
#: (settings.js, src/lib/api-client.js, src/cmd/token.js), which the real cloud accepts.
DEVELOPER_CLIENTS = (
    ("particle-api", "particle-api", "particle-api-js default client"),
    ("particle", "particle", "Particle developer client"),
    ("CLI2", "client_secret_here", "particle-cli"),
    ("user", "client_secret_here", "particle-cli token create"),
)


def ensure_developer_clients(conn: sqlite3.Connection, now: float) -> list[dict[str, str]]:
    """The public developer clients, added where missing (also to older databases)."""
    out = []
    for client_id, secret, name in DEVELOPER_CLIENTS:
        if get_client(conn, client_id) is None:
            create_client(
                conn,
                name=name,
                type="installed",
                scope="",
                client_id=client_id,
                secret=secret,
                now=now,
            )
        out.append({"id": client_id, "secret": secret})
    return out


def bootstrap(conn: sqlite3.Connection, now: float) -> dict[str, Any] | None:
    """Seed an empty database; returns the plain credentials once, else None.

    Creates the developer user (:data:`DEFAULT_DEVELOPER_EMAIL`, random password), the
    product "softap-sim product" (slug ``softap-sim``) owned by that user, a two-legged
    client of the product, and the public developer clients ``particle-api``/
    ``particle-api``, ``particle``/``particle`` and particle-cli's ``CLI2``/
    ``client_secret_here`` (hashed like any other secret). An existing database gets
    the developer clients it lacks and nothing else::

        {"user": {"id", "email", "password"},
         "product": {"id", "slug", "name"},
         "client": {"id", "secret"},
         "developer_clients": [{"id", "secret"}, ...]}
    """
    if conn.execute("SELECT 1 FROM users LIMIT 1").fetchone() is not None:
        ensure_developer_clients(conn, now)
        return None
    password = secrets.token_urlsafe(16)
    user = create_user(conn, DEFAULT_DEVELOPER_EMAIL, password, now)
    product = create_product(conn, DEFAULT_PRODUCT_NAME, DEFAULT_PRODUCT_SLUG, user["id"], now)
    client, secret = create_preset_client(
        conn, "two-legged", name="softap-sim server", product_id=product["id"], now=now
    )
    developer = ensure_developer_clients(conn, now)
    return {
        "user": {"id": user["id"], "email": user["email"], "password": password},
        "product": {"id": product["id"], "slug": product["slug"], "name": product["name"]},
        "client": {"id": client["id"], "secret": secret},
        "developer_clients": developer,
    }
