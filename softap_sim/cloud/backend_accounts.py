"""Backend verbs for accounts: token grants, OAuth clients, customers, access tokens.

A mixin of :class:`~softap_sim.cloud.backend.CloudBackend` (the core there supplies
``_run``, ``now``, ``principal_for`` and the token cache). Choices where cloud-api.md is
silent are in :mod:`~softap_sim.cloud.policy` and the model modules; the ones made here:

* ``client_credentials`` without a scope: a product client gets a token of kind
  ``client`` bound to its product; a user's own client gets a token of that user; a
  client with no owner (``particle``, ``particle-api``) gets ``invalid_grant`` "Client
  credentials are invalid" (§4 table). With ``scope=customer=<email>`` the client must be
  a product client and the customer must exist in that product, else ``invalid_scope``.
* Customers: a client that is not a client of the product → ``invalid_client``; unknown
  product → 404 ``not_found``. Implicit creation (web clients) issues no refresh token.
* Secrets and passwords are checked in constant time; scrypt runs off the loop
  (:mod:`~softap_sim.cloud.kdf`). Nothing secret is logged.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from softap_sim.cloud import kdf, validate
from softap_sim.cloud.errors import (
    Forbidden,
    InvalidClient,
    InvalidGrant,
    InvalidRequest,
    InvalidScope,
    InvalidToken,
    NotFound,
)
from softap_sim.cloud.models import accounts, clients, customers, seed, tokens
from softap_sim.cloud.models.accounts import find_product
from softap_sim.cloud.policy import CLIENT_ID_RE, is_product_admin, may_create_customers
from softap_sim.cloud.principal import Principal

if TYPE_CHECKING:
    from softap_sim.cloud.db import Database

T = TypeVar("T")
log = logging.getLogger(__name__)

BAD_CLIENT = "Client credentials are invalid"
BAD_USER = "User credentials are invalid"
Expiry = tuple[int | None, float | None]


class AccountVerbs:
    """Token grants, clients, customers and access tokens (see the module docstring)."""

    db: Database
    now: Callable[[], float]

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        raise NotImplementedError  # CloudBackend

    async def principal_for(self, token: str) -> Principal:
        raise NotImplementedError  # CloudBackend

    def _forget_tokens(self, predicate: Callable[[Principal], bool]) -> None:
        raise NotImplementedError  # CloudBackend

    async def _client_row(self, client_id: str) -> dict[str, Any] | None:
        raise NotImplementedError  # CloudBackend

    def _forget_owners(self, device_id: str | None = None) -> None:
        raise NotImplementedError  # CloudBackend

    # -- first start -----------------------------------------------------------------
    async def bootstrap(self) -> dict[str, Any] | None:
        """Seed an empty database; the plain credentials once, else None (``models.seed``)."""
        now = self.now()
        return await self._run(lambda conn: seed.bootstrap(conn, now))

    async def current_user(self, principal: Principal) -> dict[str, Any]:
        """``GET /v1/user``: the developer behind a user token (403 for other tokens)."""
        user_id = principal.user_id
        if principal.kind != "user" or user_id is None:
            raise Forbidden("The access token was not created for a user")
        user = await self._run(lambda conn: accounts.get_user(conn, user_id))
        if user is None:
            raise InvalidToken()
        return user

    # -- products --------------------------------------------------------------------
    async def product(self, ref: str | int) -> dict[str, Any]:
        """The product behind ``:productIdOrSlug``, or 404 ``not_found``."""
        found = await self._run(lambda c: accounts.get_product(c, ref))
        if found is None:
            raise NotFound("Product not found")
        return found

    async def admin_product(self, principal: Principal, ref: str | int) -> dict[str, Any]:
        """The product, if ``principal`` administers it (404 unknown, 403 not allowed)."""
        found = await self.product(ref)
        if not is_product_admin(principal, found):
            raise Forbidden("This token cannot administer this product")
        return found

    async def create_product_with_client(
        self, name: str, slug: str, owner_user_id: str | None
    ) -> tuple[dict[str, Any], dict[str, Any], str]:
        """A product and its two-legged client in one transaction: (product, client, secret)."""
        now = self.now()

        def work(conn: sqlite3.Connection) -> tuple[dict[str, Any], dict[str, Any], str]:
            product = accounts.create_product(conn, name, slug, owner_user_id, now)
            client, secret = clients.create_preset_client(
                conn, "two-legged", name=f"{name} server", product_id=product["id"], now=now
            )
            return product, client, secret

        return await self._run(work)

    # -- client authentication -------------------------------------------------------
    async def authenticate_client(
        self, client_id: str | None, secret: str | None
    ) -> dict[str, Any]:
        """The client for id + secret (constant time), or ``invalid_client``."""
        if not client_id or not CLIENT_ID_RE.match(client_id):
            raise InvalidClient("Invalid or missing client_id parameter")
        if not secret:
            raise InvalidClient("Missing client_secret parameter")
        if len(secret) > validate.MAX_SECRET_LENGTH or not validate.is_text(secret):
            raise InvalidClient(BAD_CLIENT)
        row = await self._client_row(client_id)
        ok = await kdf.verify_secret(secret, None if row is None else row["secret_hash"])
        if row is None or not ok:
            raise InvalidClient(BAD_CLIENT)
        return clients.client_dict(row)

    # -- grants ----------------------------------------------------------------------
    async def password_grant(
        self, client: dict[str, Any], username: str, password: str, expiry: Expiry
    ) -> dict[str, Any]:
        """Users log in with non-product clients, customers with their product's clients."""
        product_id = client["product_id"]

        def lookup(conn: sqlite3.Connection) -> Any:
            if product_id is None:
                return conn.execute("SELECT * FROM users WHERE email = ?", (username,)).fetchone()
            return conn.execute(
                "SELECT * FROM customers WHERE product_id = ? AND email = ?", (product_id, username)
            ).fetchone()

        row = await self._run(lookup)
        ok = await kdf.verify_password(password, None if row is None else row["password_hash"])
        if row is None or not ok:
            raise InvalidGrant(BAD_USER)
        subject_id = row["id"]
        now = self.now()

        def issue(conn: sqlite3.Connection) -> dict[str, Any]:
            table = "users" if product_id is None else "customers"
            if not conn.execute(f"SELECT 1 FROM {table} WHERE id = ?", (subject_id,)).fetchone():
                raise InvalidGrant(BAD_USER)  # deleted while the password was checked
            return tokens.issue_tokens(
                conn,
                client_id=client["id"],
                user_id=subject_id if product_id is None else None,
                customer_id=subject_id if product_id is not None else None,
                product_id=product_id,
                expires_in=expiry[0],
                expires_at=expiry[1],
                now=now,
            )

        return await self._run(issue)

    async def client_credentials_grant(
        self, client: dict[str, Any], scope: str, expiry: Expiry
    ) -> dict[str, Any]:
        """The client's own token, or with ``scope=customer=<email>`` a customer's."""
        now = self.now()
        product_id = client["product_id"]
        if not scope:
            if product_id is None and client["owner_user_id"] is None:
                raise InvalidGrant(BAD_CLIENT)
            return await self._run(
                lambda conn: tokens.issue_tokens(
                    conn,
                    client_id=client["id"],
                    user_id=client["owner_user_id"] if product_id is None else None,
                    product_id=product_id,
                    expires_in=expiry[0],
                    expires_at=expiry[1],
                    now=now,
                )
            )
        if not scope.startswith("customer=") or product_id is None:
            raise InvalidScope("Invalid scope")
        email = scope.removeprefix("customer=").strip().lower()
        if not email:
            raise InvalidScope("Invalid scope")

        def customer_token(conn: sqlite3.Connection) -> dict[str, Any]:
            customer = customers.get_customer(conn, product_id, email)
            if customer is None:
                raise InvalidScope("Customer not found")
            return tokens.issue_tokens(
                conn,
                client_id=client["id"],
                customer_id=customer["id"],
                product_id=product_id,
                scope=f"customer={customer['email']}",
                expires_in=expiry[0],
                expires_at=expiry[1],
                now=now,
            )

        return await self._run(customer_token)

    async def refresh_grant(
        self, client: dict[str, Any], refresh: str, expiry: Expiry
    ) -> dict[str, Any]:
        """Rotates: the used refresh token is deleted and a new pair is issued."""
        now = self.now()
        return await self._run(
            lambda conn: tokens.rotate_refresh_token(
                conn, refresh, client["id"], expires_in=expiry[0], expires_at=expiry[1], now=now
            )
        )

    # -- customers -------------------------------------------------------------------
    async def create_customer(
        self,
        product: dict[str, Any],
        email: str,
        password: str | None,
        *,
        token_client: str,
        expiry: Expiry = (None, None),
        with_refresh: bool = True,
    ) -> dict[str, Any]:
        """Create the customer and log them in: the token JSON (§3)."""
        password_hash = None if password is None else await kdf.hash_password(password)
        now = self.now()

        def create(conn: sqlite3.Connection) -> dict[str, Any]:
            customer = customers.insert_customer(conn, product["id"], email, password_hash, now)
            return tokens.issue_tokens(
                conn,
                client_id=token_client,
                customer_id=customer["id"],
                product_id=product["id"],
                expires_in=expiry[0],
                expires_at=expiry[1],
                with_refresh=with_refresh,
                now=now,
            )

        body = await self._run(create)
        log.info("cloud: customer created in product %s (client %s)", product["id"], token_client)
        return body

    async def customer_client(self, client: dict[str, Any], product: dict[str, Any]) -> None:
        """May this (authenticated) client create customers of the product?"""
        if client["product_id"] != product["id"]:
            raise InvalidClient("The client is not a client of this product")
        if not may_create_customers(client["scope"]):
            raise InvalidScope("This client may not create customers")

    async def implicit_client(
        self, client_id: str, product: dict[str, Any], redirect_uri: str | None
    ) -> dict[str, Any]:
        """The implicit variant: a web client of the product, identified by its id alone."""
        client = None
        if CLIENT_ID_RE.match(client_id):
            client = await self._run(lambda c: clients.get_client(c, client_id))
        if client is None:
            raise InvalidClient("Invalid client credentials")
        if client["type"] != "web" or client["product_id"] != product["id"]:
            raise InvalidClient("The implicit flow needs a web client of this product")
        await self.customer_client(client, product)
        if redirect_uri and redirect_uri != client["redirect_uri"]:
            raise InvalidRequest("redirect_uri does not match")
        return client

    async def create_customer_with_token(
        self, product_id: int, client_id: str, email: str, password: str | None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """A customer and a ``scope=customer=`` token of ``client_id`` (fixtures, benches)."""
        (created,) = await self.create_customers_with_tokens(
            product_id, client_id, [email], password
        )
        return created

    async def create_customers_with_tokens(
        self,
        product_id: int,
        client_id: str,
        emails: list[str],
        password: str | None = None,
    ) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """Customers (all with ``password``, or shadow ones) and a ``scope=customer=`` token
        of ``client_id`` each, in one transaction: (customer, token JSON) pairs in order."""
        hashes = [None if password is None else await kdf.hash_password(password) for _ in emails]
        now = self.now()

        def work(conn: sqlite3.Connection) -> list[tuple[dict[str, Any], dict[str, Any]]]:
            out = []
            for email, password_hash in zip(emails, hashes, strict=True):
                customer = customers.insert_customer(conn, product_id, email, password_hash, now)
                body = tokens.issue_tokens(
                    conn,
                    client_id=client_id,
                    customer_id=customer["id"],
                    product_id=product_id,
                    scope=f"customer={customer['email']}",
                    now=now,
                )
                out.append((customer, body))
            return out

        return await self._run(work)

    async def list_customers(self, product_id: int) -> dict[str, Any]:
        return await self._run(lambda c: customers.list_customers(c, product_id))

    async def set_customer_password(self, product_id: int, email: str, password: str) -> None:
        """Set (or give a shadow customer) a password; 404 for an unknown customer."""
        if await self._run(lambda c: customers.get_customer(c, product_id, email)) is None:
            raise NotFound("Customer not found")
        password_hash = await kdf.hash_password(password)
        await self._run(
            lambda c: customers.update_customer_hash(c, product_id, email, password_hash)
        )

    async def delete_customer(self, product_id: int, email: str) -> None:
        """Delete the customer, their tokens and pending claim codes; release devices."""
        customer = await self._run(lambda c: customers.get_customer(c, product_id, email))
        await self._run(lambda c: customers.delete_customer(c, product_id, email))
        if customer is not None:
            self._forget_tokens(lambda p: p.customer_id == customer["id"])
            self._forget_owners()  # the customer's devices were released
        log.info("cloud: customer deleted from product %s", product_id)

    async def first_product(self) -> dict[str, Any] | None:
        """The product created first (the default one), or None."""
        return await self._run(accounts.first_product)

    async def customer_summaries(self, product_id: int) -> list[dict[str, Any]]:
        """The product's customers for the CLI: ``{id, email, shadow, devices}``."""
        return await self._run(lambda c: customers.customer_summaries(c, product_id))

    async def product_row(self, ref: str | int) -> dict[str, Any] | None:
        """The product or None (CLI, fixtures)."""
        return await self._run(lambda c: None if (r := find_product(c, ref)) is None else dict(r))
