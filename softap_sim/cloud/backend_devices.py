"""Backend verbs for devices: registry, sessions, claim codes, ownership, calls.

A mixin of :class:`~softap_sim.cloud.backend.CloudBackend`. The REST handlers, the
device server (TCP 5683: keys, online/offline, descriptions, claim codes) and the fleet
registrar use these; the visibility rules are in :mod:`~softap_sim.cloud.policy` and
:mod:`~softap_sim.cloud.models.devices`. Functions and variables go through
``self.link`` (the device server, or :class:`~softap_sim.cloud.principal.OfflineLink`).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from softap_sim.cloud.errors import CloudError, DeviceError, DeviceOffline, DeviceTimeout
from softap_sim.cloud.models import claims
from softap_sim.cloud.models import devices as registry
from softap_sim.cloud.models.accounts import find_product
from softap_sim.cloud.principal import DeviceLink, Principal
from softap_sim.cloud.views import Row, functions_of, variables_of

if TYPE_CHECKING:
    from softap_sim.cloud.db import Database

T = TypeVar("T")
#: public keys remembered for handshakes
DEVICE_KEY_CACHE_SIZE = 65536
Owner = dict[str, Any]
DeviceRow = dict[str, Any]


class DeviceVerbs:
    """Devices as the REST API, the device server and the fleet see them."""

    db: Database
    now: Callable[[], float]
    link: DeviceLink
    call_timeout_s: float

    _owners: OrderedDict[str, dict[str, Any]]
    _owner_generation: int
    _public_keys: dict[str, str]

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        raise NotImplementedError  # CloudBackend

    def _remember_owners(self, row: dict[str, Any] | None, generation: int) -> None:
        raise NotImplementedError  # CloudBackend

    def _forget_owners(self, device_id: str | None = None) -> None:
        raise NotImplementedError  # CloudBackend

    # -- registry --------------------------------------------------------------------
    async def register_device(
        self,
        device_id: str,
        public_key_pem: str,
        *,
        name: str | None = None,
        product_id: int | None = None,
    ) -> DeviceRow:
        """Put a device (id + public key) into the registry (idempotent; see the model)."""
        now = self.now()
        row = await self._run(
            lambda conn: registry.register_device(
                conn,
                device_id=device_id.lower(),
                public_key_pem=public_key_pem,
                name=name,
                product_id=product_id,
                now=now,
            )
        )
        self._remember_key(row["id"], row["public_key_pem"])
        return row

    async def register_devices(self, batch: Iterable[tuple[str, str]]) -> list[str | None]:
        """Register many (id, public key PEM) pairs in one transaction.

        Returns one entry per pair: None when registered, else the reason (a key
        conflict or a bad id/key refuses that device only).
        """
        items = list(batch)
        now = self.now()

        registered: list[tuple[str, str]] = []

        def work(conn: sqlite3.Connection) -> list[str | None]:
            errors: list[str | None] = []
            for device_id, pem in items:
                conn.execute("SAVEPOINT one_device")
                try:
                    row = registry.register_device(
                        conn, device_id=device_id.lower(), public_key_pem=pem, now=now
                    )
                except CloudError as err:
                    conn.execute("ROLLBACK TO one_device")
                    errors.append(err.description)
                else:
                    errors.append(None)
                    registered.append((row["id"], row["public_key_pem"]))
                conn.execute("RELEASE one_device")
            return errors

        errors = await self._run(work)
        for device_id, pem in registered:
            self._remember_key(device_id, pem)
        return errors

    def _remember_key(self, device_id: str, pem: str) -> None:
        if len(self._public_keys) < DEVICE_KEY_CACHE_SIZE:
            self._public_keys[device_id] = pem

    def device_public_key_sync(self, device_id: str) -> str | None:
        """The registered SPKI PEM (for the handshake, which runs on a worker thread).

        Remembered at registration and once found: a registered key never changes (a
        different key for the same id is refused) and devices are not deleted, so a storm
        of handshakes from registered devices needs no database lookup.
        """
        pem = self._public_keys.get(device_id)
        if pem is None:
            pem = self.db.run_sync(lambda conn: registry.device_public_key(conn, device_id))
            if pem is not None:
                self._remember_key(device_id, pem)
        return pem

    async def device_row(self, device_id: str) -> DeviceRow | None:
        return await self._run(lambda conn: registry.device_row(conn, device_id))

    async def device_owners(self, device_id: str) -> dict[str, Any] | None:
        """``{id, owner_user_id, owner_customer_id, product_id}`` of a device, or None:
        what an event needs for its visibility, remembered between events."""
        cached = self._owners.get(device_id)
        if cached is not None:
            return cached
        generation = self._owner_generation
        row = await self.device_row(device_id)
        self._remember_owners(row, generation)
        return row

    async def device_owner(self, device_id: str) -> Owner | None:
        """``{"device_id","user_id","customer_id","product_id"}`` if owned, else None."""
        row = await self.device_row(device_id)
        if row is None or (row["owner_user_id"] is None and row["owner_customer_id"] is None):
            return None
        return {
            "device_id": device_id,
            "user_id": row["owner_user_id"],
            "customer_id": row["owner_customer_id"],
            "product_id": row["product_id"],
        }

    # -- sessions (the device server) ------------------------------------------------
    async def device_online(self, device_id: str, ip: str | None) -> DeviceRow:
        now = self.now()
        generation = self._owner_generation
        row = await self._run(
            lambda conn: registry.set_device_online(conn, device_id, True, now, ip=ip)
        )
        self._remember_owners(row, generation)
        return row

    async def device_offline(self, device_id: str) -> DeviceRow:
        now = self.now()
        return await self._run(lambda conn: registry.set_device_online(conn, device_id, False, now))

    async def device_heard(self, device_id: str) -> None:
        now = self.now()
        await self._run(lambda conn: registry.update_last_heard(conn, device_id, now))

    async def store_description(
        self, device_id: str, functions: list[str], variables: dict[str, str]
    ) -> None:
        await self._run(
            lambda conn: registry.store_description(conn, device_id, functions, variables)
        )

    async def claim_with_code(
        self, device_id: str, code: str
    ) -> tuple[DeviceRow | None, Owner | None, DeviceRow | None]:
        """A device's ``spark/device/claim/code``: (row before, owner after or None, row after)."""
        now = self.now()

        def work(
            conn: sqlite3.Connection,
        ) -> tuple[DeviceRow | None, Owner | None, DeviceRow | None]:
            before = registry.device_row(conn, device_id)
            owner = claims.consume_claim_code(conn, code, device_id, now)
            return before, owner, registry.device_row(conn, device_id)

        result = await self._run(work)
        if result[1] is not None:
            self._forget_owners(device_id)
        return result

    # -- claim codes and ownership (REST) --------------------------------------------
    async def create_claim_code(
        self, principal: Principal, product_ref: str | int | None = None
    ) -> tuple[str, list[str]]:
        """A fresh claim code for the caller and the ids of the devices they own."""
        now = self.now()

        def work(conn: sqlite3.Connection) -> tuple[str, list[str]]:
            product_id = None
            if product_ref is not None:
                product_id = int(registry.product_or_404(conn, product_ref)["id"])
            return claims.create_claim_code(conn, principal, product_id=product_id, now=now)

        return await self._run(work)

    async def create_claim_codes(
        self, principals: list[Principal], product_id: int | None = None
    ) -> list[str]:
        """A claim code for each principal, in one transaction (benchmarks, fleets)."""
        now = self.now()

        def work(conn: sqlite3.Connection) -> list[str]:
            return [
                claims.create_claim_code(conn, p, product_id=product_id, now=now)[0]
                for p in principals
            ]

        return await self._run(work)

    async def claim_device(
        self, principal: Principal, device_id: str, *, request_transfer: bool
    ) -> dict[str, Any]:
        """``POST /v1/devices``: claim an online, unowned device by id."""
        online = self.link.is_online(device_id)
        reply = await self._run(
            lambda conn: claims.claim_device_by_id(
                conn, principal, device_id, online=online, request_transfer=request_transfer
            )
        )
        self._forget_owners(device_id)
        return reply

    async def unclaim_device(
        self, principal: Principal, device: str, product_ref: str | None
    ) -> dict[str, Any]:
        reply = await self._run(
            lambda conn: claims.unclaim_device(conn, principal, device, product=product_ref)
        )
        self._forget_owners()  # ``device`` may be a name: forget them all (rare)
        return reply

    # -- device lists and lookups ----------------------------------------------------
    async def list_devices(self, principal: Principal) -> list[sqlite3.Row]:
        return await self._run(lambda conn: registry.list_devices(conn, principal))

    async def visible_device(
        self, principal: Principal, device: str, product_ref: str | None = None
    ) -> tuple[sqlite3.Row, str | None]:
        """The device behind ``:id`` for this caller, and its owner's username."""

        def work(conn: sqlite3.Connection) -> tuple[sqlite3.Row, str | None]:
            if product_ref is None:
                row = registry.visible_device(conn, principal, device)
            else:
                row = registry.visible_product_device(conn, principal, product_ref, device)
            return row, registry.owner_name(conn, row)

        return await self._run(work)

    async def rename_device(
        self, principal: Principal, device: str, name: str, product_ref: str | None = None
    ) -> sqlite3.Row:
        """``PUT /v1/devices/:id`` with ``name``: only who sees the device renames it."""

        def work(conn: sqlite3.Connection) -> sqlite3.Row:
            if product_ref is None:
                row = registry.visible_device(conn, principal, device)
            else:
                row = registry.visible_product_device(conn, principal, product_ref, device)
            conn.execute("UPDATE devices SET name = ? WHERE id = ?", (name, row["id"]))
            renamed = registry.get_row(conn, row["id"])
            assert renamed is not None
            return renamed

        row = await self._run(work)
        self._forget_owners(row["id"])
        return row

    async def list_product_devices(
        self,
        principal: Principal,
        product_ref: str,
        *,
        page: int,
        per_page: int,
        device_id: str | None,
        device_name: str | None,
    ) -> tuple[list[sqlite3.Row], list[dict[str, Any]], int, dict[str, str | None]]:
        return await self._run(
            lambda conn: registry.list_product_devices(
                conn,
                principal,
                product_ref,
                page=page,
                per_page=per_page,
                device_id=device_id,
                device_name=device_name,
            )
        )

    async def admin_product_ids(self, principal: Principal) -> frozenset[int]:
        return await self._run(lambda conn: registry.admin_product_ids(conn, principal))

    async def stream_target(
        self, principal: Principal, device: str | None
    ) -> tuple[str | None, frozenset[int]]:
        """For an event stream: the visible device's id (if one is named), the admin set."""

        def work(conn: sqlite3.Connection) -> tuple[str | None, frozenset[int]]:
            device_id = None
            if device is not None:
                device_id = str(registry.visible_device(conn, principal, device)["id"])
            return device_id, registry.admin_product_ids(conn, principal)

        return await self._run(work)

    async def product_exists(self, ref: str | int) -> bool:
        return await self._run(lambda conn: find_product(conn, ref) is not None)

    # -- functions and variables -----------------------------------------------------
    async def online_device(
        self, principal: Principal, device: str, product_ref: str | None
    ) -> sqlite3.Row:
        """A visible device that is online (404 ``Device is offline`` otherwise)."""
        row, _owner = await self.visible_device(principal, device, product_ref)
        if not self.link.is_online(row["id"]):
            raise DeviceOffline()
        return row

    async def call_function(self, row: Row, name: str, arg: str) -> int:
        """Run a described function on an online device: its int32 result."""
        if name not in functions_of(row):
            raise DeviceError("Function not found", status=404)
        value = await self._with_timeout(
            self.link.call_function(row["id"], name, arg, self.call_timeout_s)
        )
        return int(value)

    async def get_variable(self, row: Row, name: str) -> Any:
        """Read a described variable of an online device."""
        if name not in variables_of(row):
            raise DeviceError("Variable not found", status=404)
        return await self._with_timeout(
            self.link.get_variable(row["id"], name, self.call_timeout_s)
        )

    async def _with_timeout(self, call: Awaitable[Any]) -> Any:
        """The link gets the timeout too; this is the backstop if a link ignores it."""
        try:
            return await asyncio.wait_for(call, self.call_timeout_s)
        except TimeoutError:
            raise DeviceTimeout() from None
