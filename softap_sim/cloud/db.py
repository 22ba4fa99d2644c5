"""SQLite storage of the cloud: WAL mode, a versioned schema, all I/O off the event loop.

Every job runs on one dedicated worker thread (SQLite connections are not shared across
threads), so a handler awaits its database work and the event loop never blocks on disk.

**Group commit.** The worker takes every job that is waiting (up to
:attr:`Database.max_batch`) into one transaction, each job inside its own ``SAVEPOINT``:
a job that raises is rolled back alone and gets its exception, the others are unaffected,
exactly as if each had its own transaction. Results are handed back only after the
``COMMIT``, so an acknowledged write survives a ``kill -9`` (WAL with
``synchronous=NORMAL``: the OS holds the WAL; ``durable=True`` selects ``FULL`` for
power-loss safety at a higher cost). Under load this turns N commits and N cross-thread
wake-ups into one of each; an idle cloud still commits every job at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

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


@dataclass
class DbStats:
    """Counters of the worker thread (benchmarks read them; they cost two clock reads a batch)."""

    #: transactions committed (one per batch)
    transactions: int = 0
    #: jobs run
    jobs: int = 0
    #: wall time the worker spent inside transactions
    busy_s: float = 0.0


class _Job:
    __slots__ = ("deliver", "error", "fn", "result")

    def __init__(self, fn: Callable[[sqlite3.Connection], Any], deliver: Callable[[_Job], None]):
        self.fn = fn
        self.deliver = deliver
        self.result: Any = None
        self.error: BaseException | None = None


_STOP = object()


class Database:
    """One SQLite file (or ``:memory:``) behind a single worker thread with group commit."""

    def __init__(self, path: Path | None, *, durable: bool = False, max_batch: int = 64) -> None:
        self.path = path
        self.durable = durable
        self.max_batch = max_batch
        self.stats = DbStats()
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    # -- lifecycle -----------------------------------------------------------------
    def open_sync(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            ready: concurrent.futures.Future[None] = concurrent.futures.Future()
            thread = threading.Thread(
                target=self._worker, args=(ready,), name="cloud-db", daemon=True
            )
            thread.start()
            try:
                ready.result()
            except BaseException:
                thread.join()
                raise
            self._thread = thread

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
        """Finish the queued jobs, close the connection, stop the worker."""
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is None:
                return
            self._jobs.put(_STOP)
            thread.join()

    async def close(self) -> None:
        await asyncio.to_thread(self.close_sync)

    # -- the worker ----------------------------------------------------------------
    def _worker(self, ready: concurrent.futures.Future[None]) -> None:
        try:
            self._connect()
        except BaseException as err:
            ready.set_exception(err)
            return
        ready.set_result(None)
        conn = self._conn
        assert conn is not None
        jobs = self._jobs
        try:
            while True:
                first = jobs.get()
                if first is _STOP:
                    return
                batch = [first]
                stop = False
                while len(batch) < self.max_batch:
                    try:
                        more = jobs.get_nowait()
                    except queue.Empty:
                        break
                    if more is _STOP:
                        stop = True
                        break
                    batch.append(more)
                self._run_batch(conn, batch)
                if stop:
                    return
        finally:
            conn.close()
            self._conn = None

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Job]) -> None:
        started = time.perf_counter()
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in batch:
                conn.execute("SAVEPOINT job")
                try:
                    job.result = job.fn(conn)
                except BaseException as err:  # handed to the caller, never lost
                    conn.execute("ROLLBACK TO job")
                    job.error = err
                conn.execute("RELEASE job")
            conn.execute("COMMIT")
        except sqlite3.Error as err:  # the commit itself failed: nothing of the batch stands
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for job in batch:
                job.result, job.error = None, err
        stats = self.stats
        stats.transactions += 1
        stats.jobs += len(batch)
        stats.busy_s += time.perf_counter() - started
        for job in batch:
            job.deliver(job)

    # -- work ----------------------------------------------------------------------
    def _submit(self, job: _Job) -> None:
        if self._thread is None:
            raise StateError("the cloud database is not open")
        self._jobs.put(job)

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` on the database thread, in a transaction of its own (as far as
        it can tell: see the module docstring), and return its result after the commit."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def settle(job: _Job) -> None:
            if future.cancelled():
                return
            if job.error is not None:
                future.set_exception(job.error)
            else:
                future.set_result(job.result)

        def deliver(job: _Job) -> None:  # on the worker thread
            loop.call_soon_threadsafe(settle, job)

        self._submit(_Job(fn, deliver))
        return await future

    def run_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """The same, for callers on other threads (the handshake worker, CLI tools)."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def deliver(job: _Job) -> None:
            if job.error is not None:
                future.set_exception(job.error)
            else:
                future.set_result(job.result)

        self._submit(_Job(fn, deliver))
        return future.result()

    def integrity_check(self) -> str:
        return str(self.run_sync(lambda c: c.execute("PRAGMA integrity_check").fetchone()[0]))
