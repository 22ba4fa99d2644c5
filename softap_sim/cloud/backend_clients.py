"""Backend verbs for OAuth clients and access tokens (cloud-api.md §2, §4.1).

A mixin of :class:`~softap_sim.cloud.backend.CloudBackend`. Deleting a client or a token
also drops it from the backend's token cache, so a revoked token stops working at once.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from softap_sim.cloud import hashing, kdf, validate
from softap_sim.cloud.errors import Forbidden, InvalidGrant, NotFound
from softap_sim.cloud.models import accounts, clients, tokens
from softap_sim.cloud.policy import is_product_admin
from softap_sim.cloud.principal import Principal

if TYPE_CHECKING:
    from softap_sim.cloud.db import Database

T = TypeVar("T")
log = logging.getLogger(__name__)

BAD_USER = "User credentials are invalid"


class ClientVerbs:
    """OAuth clients and access tokens."""

    db: Database
    now: Callable[[], float]

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        raise NotImplementedError  # CloudBackend

    async def admin_product(self, principal: Principal, ref: str | int) -> dict[str, Any]:
        raise NotImplementedError  # AccountVerbs

    def _forget_tokens(self, predicate: Callable[[Principal], bool]) -> None:
        raise NotImplementedError  # CloudBackend

    def _forget_client(self, client_id: str) -> None:
        raise NotImplementedError  # CloudBackend

    # -- OAuth clients ---------------------------------------------------------------
    async def create_client(
        self,
        *,
        name: str,
        type: str,
        scope: str | None,
        product_id: int | None = None,
        owner_user_id: str | None = None,
        redirect_uri: str | None = None,
        preset: str | None = None,
        client_id: str | None = None,
        secret: str | None = None,
    ) -> tuple[dict[str, Any], str]:
        """An OAuth client (or a console ``preset``): its public row and the plain secret."""
        now = self.now()

        def create(conn: sqlite3.Connection) -> tuple[dict[str, Any], str]:
            if preset is not None:
                return clients.create_preset_client(
                    conn,
                    preset,
                    name=name,
                    product_id=product_id,
                    owner_user_id=owner_user_id,
                    redirect_uri=redirect_uri,
                    client_id=client_id,
                    now=now,
                )
            return clients.create_client(
                conn,
                name=name,
                type=type,
                scope=scope,
                product_id=product_id,
                owner_user_id=owner_user_id,
                redirect_uri=redirect_uri,
                client_id=client_id,
                secret=secret,
                now=now,
            )

        client, plain = await self._run(create)
        log.info("cloud: OAuth client %s created", client["id"])
        return client, plain

    async def list_clients(
        self, *, product_id: int | None = None, owner_user_id: str | None = None
    ) -> list[dict[str, Any]]:
        return await self._run(
            lambda c: clients.list_clients(c, product_id=product_id, owner_user_id=owner_user_id)
        )

    async def managed_client(
        self, principal: Principal, client_id: str, product_ref: str | None
    ) -> dict[str, Any]:
        """The client, if ``principal`` may manage it (else 404; product routes: 403)."""
        if product_ref is not None:
            product = await self.admin_product(principal, product_ref)
            client = await self._run(lambda c: clients.get_client(c, client_id))
            if client is None or client["product_id"] != product["id"]:
                raise NotFound("Client not found")
            return client
        if principal.kind != "user" or principal.user_id is None:
            raise Forbidden("Only a user's token can manage that user's OAuth clients")
        client = await self._run(lambda c: clients.get_client(c, client_id))
        if client is None:
            raise NotFound("Client not found")
        owning_product: int | None = client["product_id"]
        if owning_product is not None:
            owning = await self._run(lambda c: accounts.get_product(c, owning_product))
            if owning is None or not is_product_admin(principal, owning):
                raise NotFound("Client not found")
        elif client["owner_user_id"] != principal.user_id:
            raise NotFound("Client not found")
        return client

    async def update_client(
        self, client_id: str, *, name: str | None, scope: str | None
    ) -> dict[str, Any]:
        updated = await self._run(
            lambda c: clients.update_client(c, client_id, name=name, scope=scope)
        )
        self._forget_client(client_id)
        return updated

    async def delete_client(self, client_id: str) -> bool:
        """Remove the client and every token it issued; False if there is no such client."""
        deleted = await self._run(lambda c: clients.delete_client(c, client_id))
        if deleted:
            self._forget_client(client_id)
            self._forget_tokens(lambda p: p.client_id.lower() == client_id.lower())
            log.info("cloud: OAuth client %s deleted", client_id)
        return deleted

    # -- access tokens ---------------------------------------------------------------
    async def delete_current_token(self, principal: Principal) -> None:
        """The caller's own token and its refresh token."""
        await self._run(lambda c: tokens.delete_access_token(c, principal.token_hash))
        self._forget_tokens(lambda p: p.token_hash == principal.token_hash)

    async def revoke_token(self, token: str) -> bool:
        """Delete an access token (and its refresh token); False if it is unknown."""
        if not validate.is_text(token) or len(token) > validate.MAX_TOKEN_LENGTH:
            return False
        revoked = await self._run(lambda c: tokens.revoke_token(c, token))
        if revoked:
            token_hash = hashing.digest(token)
            self._forget_tokens(lambda p: p.token_hash == token_hash)
        return revoked

    async def list_user_tokens(self, email: str, password: str) -> list[dict[str, Any]]:
        """``GET /v1/access_tokens``: the user's live tokens, after a password check."""
        row = await self._run(
            lambda c: c.execute("SELECT * FROM users WHERE email = ?", (email,)).fetchone()
        )
        ok = await kdf.verify_password(password, None if row is None else row["password_hash"])
        if row is None or not ok:
            raise InvalidGrant(BAD_USER)
        user_id = row["id"]
        now = self.now()
        return await self._run(lambda c: tokens.list_user_tokens(c, user_id, now))
