"""SQLite storage of the cloud: WAL mode, a versioned schema, all I/O off the event loop.

Every call runs on one dedicated worker thread (SQLite connections are not shared
across threads) inside its own transaction, so a handler awaits its database work and
the event loop never blocks on disk. WAL with ``synchronous=NORMAL`` keeps every
committed transaction across a crash or ``kill -9`` of the process (the OS holds the
WAL); ``durable=True`` selects ``FULL`` for power-loss safety at a higher cost.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from softap_sim.errors import StateError

T = TypeVar("T")

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE COLLATE NOCASE,
    password_hash TEXT,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS products (
    id INTEGER PRIMARY KEY,
    slug TEXT NOT NULL UNIQUE COLLATE NOCASE,
    name TEXT NOT NULL,
    owner_user_id TEXT REFERENCES users(id),
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS clients (
    id TEXT PRIMARY KEY COLLATE NOCASE,
    secret_hash TEXT NOT NULL,
    name TEXT NOT NULL,
    type TEXT NOT NULL,
    redirect_uri TEXT,
    scope TEXT NOT NULL DEFAULT '',
    product_id INTEGER REFERENCES products(id) ON DELETE CASCADE,
    owner_user_id TEXT REFERENCES users(id),
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS customers (
    id TEXT PRIMARY KEY,
    product_id INTEGER NOT NULL REFERENCES products(id) ON DELETE CASCADE,
    email TEXT NOT NULL COLLATE NOCASE,
    password_hash TEXT,
    created_at REAL NOT NULL,
    UNIQUE (product_id, email)
);
CREATE TABLE IF NOT EXISTS tokens (
    hash TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('access', 'refresh')),
    client_id TEXT NOT NULL,
    user_id TEXT,
    customer_id TEXT,
    product_id INTEGER,
    scope TEXT NOT NULL DEFAULT '',
    expires_at REAL,
    created_at REAL NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0,
    pair_hash TEXT
);
CREATE INDEX IF NOT EXISTS tokens_customer ON tokens (customer_id);
CREATE INDEX IF NOT EXISTS tokens_user ON tokens (user_id);
CREATE TABLE IF NOT EXISTS claim_codes (
    hash TEXT PRIMARY KEY,
    user_id TEXT,
    customer_id TEXT,
    product_id INTEGER,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    used_at REAL,
    device_id TEXT
);
CREATE INDEX IF NOT EXISTS claim_codes_customer ON claim_codes (customer_id);
CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY,
    public_key_pem TEXT NOT NULL,
    name TEXT NOT NULL,
    product_id INTEGER,
    owner_user_id TEXT,
    owner_customer_id TEXT,
    platform_id INTEGER NOT NULL DEFAULT 6,
    online INTEGER NOT NULL DEFAULT 0,
    last_heard REAL,
    last_handshake_at REAL,
    last_ip_address TEXT,
    functions TEXT NOT NULL DEFAULT '[]',
    variables TEXT NOT NULL DEFAULT '{}',
    system_firmware_version TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL
);
"""


class Database:
    """One SQLite file (or ``:memory:``) behind a single worker thread."""

    def __init__(self, path: Path | None, *, durable: bool = False) -> None:
        self.path = path
        self.durable = durable
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    # -- lifecycle -----------------------------------------------------------------
    def open_sync(self) -> None:
        if self._executor is not None:
            return
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="cloud-db")
        try:
            self._executor.submit(self._connect).result()
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise

    async def open(self) -> None:
        await asyncio.to_thread(self.open_sync)

    def _connect(self) -> None:
        target = str(self.path) if self.path is not None else ":memory:"
        try:
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                if not self.path.exists():
                    # customer e-mails live here: owner-only, like the device key
                    os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
            conn = sqlite3.connect(target, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as err:
            raise StateError(f"cannot open the cloud database {target}: {err}") from None
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={'FULL' if self.durable else 'NORMAL'}")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=5000")
            conn.executescript(SCHEMA)
            row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
                )
            elif int(row[0]) > SCHEMA_VERSION:
                raise StateError(
                    f"{target} was written by a newer softap-sim (schema {row[0]} > "
                    f"{SCHEMA_VERSION}); upgrade softap-sim or use another --state-dir"
                )
        except sqlite3.DatabaseError as err:
            conn.close()
            raise StateError(
                f"{target} is not a usable SQLite database ({err}); move it away to start "
                "with an empty cloud"
            ) from None
        except BaseException:
            conn.close()
            raise
        conn.row_factory = sqlite3.Row
        self._conn = conn

    def close_sync(self) -> None:
        if self._executor is None:
            return
        conn = self._conn
        if conn is not None:
            self._executor.submit(conn.close).result()
        self._executor.shutdown(wait=True)
        self._executor = None
        self._conn = None

    async def close(self) -> None:
        await asyncio.to_thread(self.close_sync)

    # -- work ----------------------------------------------------------------------
    def _transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` in one transaction on the database thread."""
        if self._executor is None:
            raise StateError("the cloud database is not open")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._transaction, fn)

    def run_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """The same, for synchronous callers (CLI tools)."""
        if self._executor is None:
            raise StateError("the cloud database is not open")
        return self._executor.submit(self._transaction, fn).result()

    def integrity_check(self) -> str:
        return str(self.run_sync(lambda c: c.execute("PRAGMA integrity_check").fetchone()[0]))
