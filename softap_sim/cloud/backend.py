"""The cloud's backend: the one object that owns the database and does the work.

Handlers (``handlers/``), the device server (TCP 5683), the fleet registrar, the CLI and
the pytest plugin call its **verb methods** (house-style.md §5, moto's backends); the
verbs run model functions (``models/``) inside database transactions, apply the access
rules (:mod:`~softap_sim.cloud.policy`) and raise :class:`~softap_sim.cloud.errors.CloudError`
subclasses. Nothing else touches the database.

The verbs are grouped by area in mixins (:mod:`.backend_accounts`,
:mod:`.backend_clients`, :mod:`.backend_devices`) so that each module stays small;
:class:`CloudBackend` composes them with the shared core here: the database, the clock,
the device link, the event subscribers and the token cache.
"""

from __future__ import annotations

import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

from softap_sim.cloud import hashing
from softap_sim.cloud.backend_accounts import AccountVerbs
from softap_sim.cloud.backend_clients import ClientVerbs
from softap_sim.cloud.backend_devices import DeviceVerbs
from softap_sim.cloud.db import Database
from softap_sim.cloud.errors import InvalidToken
from softap_sim.cloud.events import EventStream, Subscriber
from softap_sim.cloud.models import clients, tokens
from softap_sim.cloud.principal import DeviceLink, OfflineLink, Principal
from softap_sim.cloud.validate import MAX_TOKEN_LENGTH, is_text

T = TypeVar("T")

#: access tokens remembered after a lookup (bounded: a flood of distinct tokens evicts)
PRINCIPAL_CACHE_SIZE = 4096
#: devices whose owners (and public key) are remembered
DEVICE_CACHE_SIZE = 65536
#: how long a remembered token is trusted without asking the database again: deletions
#: by this backend take effect at once; by another process (the CLI on the same file)
#: within this time
PRINCIPAL_CACHE_TTL_S = 2.0


class CloudBackend(AccountVerbs, ClientVerbs, DeviceVerbs):
    """Everything the cloud knows and does. One instance per cloud, no module globals.

    Args:
        db: the database (opened by the owner before the first verb).
        now: the clock, seconds since the epoch (tests pass a controlled one).
        link: how function calls and variable reads reach devices; the device server
            sets itself here (:class:`OfflineLink` until then).
        call_timeout_s: how long a function call or variable read may take.
    """

    def __init__(
        self,
        db: Database,
        now: Callable[[], float] = time.time,
        link: DeviceLink | None = None,
        call_timeout_s: float = 30.0,
    ) -> None:
        self.db = db
        self.now = now
        self.link: DeviceLink = link if link is not None else OfflineLink()
        self.call_timeout_s = call_timeout_s
        #: seconds a remembered token or client is trusted (0: every lookup asks the
        #: database, what ``bench_cloud.py --what-if no-caches`` measures)
        self.principal_cache_ttl_s = PRINCIPAL_CACHE_TTL_S
        #: SSE subscribers: each gets the event dict of ``events.make_event``
        self.subscribers: set[Subscriber] = set()
        #: token digest → (principal, monotonic time cached); see principal_for
        self._principals: OrderedDict[str, tuple[Principal, float]] = OrderedDict()
        #: bumped whenever tokens are deleted: a lookup that started before does not cache
        self._token_generation = 0
        #: client id (lower case) → (row with the secret hash, monotonic time cached)
        self._clients: OrderedDict[str, tuple[dict[str, Any], float]] = OrderedDict()
        self._client_generation = 0
        #: device id → its owners and product (what an event's visibility needs)
        self._owners: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._owner_generation = 0
        #: device id → registered public key PEM (a registered key never changes)
        self._public_keys: dict[str, str] = {}

    # -- transactions ------------------------------------------------------------------
    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self.db.run(fn)

    # -- events ------------------------------------------------------------------------
    def publish(self, event: dict[str, Any]) -> None:
        """Hand an event to every SSE subscriber (they filter by visibility)."""
        for subscriber in list(self.subscribers):
            subscriber(event)

    # -- authentication ----------------------------------------------------------------
    async def principal_for(self, token: str) -> Principal:
        """Who the access token belongs to; ``invalid_token`` (401) for unknown,
        revoked or expired tokens, and for anything that cannot be a token at all."""
        if not token or len(token) > MAX_TOKEN_LENGTH or not is_text(token):
            raise InvalidToken()
        token_hash = hashing.digest(token)
        cached = self._principals.get(token_hash)
        if cached is not None and time.monotonic() - cached[1] < self.principal_cache_ttl_s:
            principal = cached[0]
        else:
            generation = self._token_generation
            row = await self._run(lambda conn: tokens.access_token_row(conn, token_hash))
            if row is None or row["revoked"]:
                self._principals.pop(token_hash, None)
                raise InvalidToken()
            principal = _principal(row)
            if generation == self._token_generation:
                self._remember(principal)
        expires_at = principal.expires_at
        if expires_at is not None and expires_at <= self.now():
            raise InvalidToken("The access token provided has expired.")
        return principal

    def _remember(self, principal: Principal) -> None:
        cache = self._principals
        cache[principal.token_hash] = (principal, time.monotonic())
        cache.move_to_end(principal.token_hash)
        while len(cache) > PRINCIPAL_CACHE_SIZE:
            cache.popitem(last=False)

    def _forget_tokens(self, predicate: Callable[[Principal], bool]) -> None:
        """Tokens a verb deleted (call after the commit): drop their cached principals and
        close their open event streams, so nothing more reaches them."""
        self._token_generation += 1
        for token_hash in [h for h, (p, _t) in self._principals.items() if predicate(p)]:
            del self._principals[token_hash]
        for subscriber in list(self.subscribers):
            if isinstance(subscriber, EventStream) and predicate(subscriber.principal):
                subscriber.close()

    # -- clients ---------------------------------------------------------------------
    async def _client_row(self, client_id: str) -> dict[str, Any] | None:
        """The client's row (with its secret hash), remembered like tokens are."""
        key = client_id.lower()
        cached = self._clients.get(key)
        if cached is not None and time.monotonic() - cached[1] < self.principal_cache_ttl_s:
            return cached[0]
        generation = self._client_generation
        row = await self._run(lambda conn: clients.client_row_with_hash(conn, client_id))
        if row is None:
            return None
        found = dict(row)
        if generation == self._client_generation:
            self._clients[key] = (found, time.monotonic())
            self._clients.move_to_end(key)
            while len(self._clients) > PRINCIPAL_CACHE_SIZE:
                self._clients.popitem(last=False)
        return found

    def _forget_client(self, client_id: str) -> None:
        """A client was changed or deleted (call after the commit)."""
        self._client_generation += 1
        self._clients.pop(client_id.lower(), None)

    # -- device owners -----------------------------------------------------------------
    def _remember_owners(self, row: dict[str, Any] | None, generation: int) -> None:
        """Cache a device's owners from a row read by a job that started at ``generation``."""
        if row is None or generation != self._owner_generation:
            return
        device_id = row["id"]
        self._owners[device_id] = {
            "id": device_id,
            "owner_user_id": row["owner_user_id"],
            "owner_customer_id": row["owner_customer_id"],
            "product_id": row["product_id"],
        }
        self._owners.move_to_end(device_id)
        while len(self._owners) > DEVICE_CACHE_SIZE:
            self._owners.popitem(last=False)

    def _forget_owners(self, device_id: str | None = None) -> None:
        """Ownership changed (one device, or ``None``: any); call after the commit."""
        self._owner_generation += 1
        if device_id is None:
            self._owners.clear()
        else:
            self._owners.pop(device_id, None)


def _principal(row: sqlite3.Row) -> Principal:
    if row["customer_id"]:
        kind = "customer"
    elif row["user_id"]:
        kind = "user"
    else:
        kind = "client"
    return Principal(
        kind,
        row["hash"],
        row["client_id"],
        row["user_id"],
        row["customer_id"],
        row["product_id"],
        frozenset(row["scope"].split()),
        row["expires_at"],
    )
