"""The cloud database's worker: group commit with one savepoint per job."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from softap_sim.cloud.db import Database
from softap_sim.errors import StateError


def _insert(value: int):  # type: ignore[no-untyped-def]
    def job(conn: sqlite3.Connection) -> int:
        conn.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (f"k{value}", str(value)))
        return value

    return job


def _failing(conn: sqlite3.Connection) -> None:
    conn.execute("INSERT INTO meta (key, value) VALUES ('bad', 'x')")
    raise ValueError("this job fails after writing")


def _keys(conn: sqlite3.Connection) -> list[str]:
    return [r[0] for r in conn.execute("SELECT key FROM meta WHERE key != 'schema_version'")]


@pytest.mark.asyncio
async def test_jobs_queued_together_commit_together_and_a_failure_stays_alone(
    tmp_path: Path,
) -> None:
    db = Database(tmp_path / "c.sqlite3")
    await db.open()
    try:
        gate = threading.Event()
        # the blocker holds the worker while the three jobs queue behind it (each task
        # submits its job in its first step: sleep(0) lets those steps run)
        blocker = asyncio.ensure_future(db.run(lambda conn: gate.wait(10)))
        await asyncio.sleep(0)
        jobs = [db.run(_insert(1)), db.run(_failing), db.run(_insert(2))]
        futures = [asyncio.ensure_future(j) for j in jobs]
        await asyncio.sleep(0)
        gate.set()
        results = await asyncio.gather(*futures, return_exceptions=True)
        await blocker
        assert results[0] == 1
        assert isinstance(results[1], ValueError)
        assert results[2] == 2
        assert sorted(await db.run(_keys)) == ["k1", "k2"]  # the failed job's write is gone
        assert db.stats.jobs >= 4
        assert db.stats.transactions < db.stats.jobs  # at least one batch held several jobs
    finally:
        await db.close()
    # a second connection sees exactly what was acknowledged
    conn = sqlite3.connect(tmp_path / "c.sqlite3")
    assert sorted(_keys(conn)) == ["k1", "k2"]
    conn.close()


@pytest.mark.asyncio
async def test_run_sync_from_another_thread_and_the_loop_share_the_worker(tmp_path: Path) -> None:
    db = Database(tmp_path / "c.sqlite3")
    await db.open()
    try:
        sync_result = await asyncio.to_thread(db.run_sync, _insert(7))
        assert sync_result == 7
        assert await db.run(_keys) == ["k7"]
        with pytest.raises(ValueError, match="fails after writing"):
            await asyncio.to_thread(db.run_sync, _failing)
        assert db.integrity_check() == "ok"
    finally:
        await db.close()


@pytest.mark.asyncio
async def test_closed_database_refuses_work(tmp_path: Path) -> None:
    db = Database(tmp_path / "c.sqlite3")
    await db.open()
    await db.close()
    await db.close()  # idempotent
    with pytest.raises(StateError, match="not open"):
        await db.run(_keys)
