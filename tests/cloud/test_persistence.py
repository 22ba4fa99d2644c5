"""The cloud database survives kill -9: every acknowledged write is there afterwards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from softap_sim.cloud import hashing
from softap_sim.cloud.db import Database
from softap_sim.errors import StateError

CHILD = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from softap_sim.cloud import hashing, models
    from softap_sim.cloud.principal import Principal
    from softap_sim.cloud.db import Database

    db = Database(Path(sys.argv[1]))
    db.open_sync()
    now = time.time()
    db.run_sync(lambda c: models.seed.bootstrap(c, now))
    product = db.run_sync(lambda c: dict(c.execute("SELECT * FROM products").fetchone()))
    client = db.run_sync(lambda c: dict(c.execute(
        "SELECT * FROM clients WHERE product_id = ? AND scope = ''", (product["id"],)).fetchone()))
    for i in range(100000):
        def burst(conn, i=i):
            customer = models.customers.create_customer(
                conn, product["id"], f"Person{i}@Example.com", None, now)
            tokens = models.tokens.issue_tokens(
                conn, client_id=client["id"], customer_id=customer["id"],
                product_id=product["id"], now=now)
            principal = Principal("customer", hashing.digest(tokens["access_token"]),
                                  client["id"], customer_id=customer["id"],
                                  product_id=product["id"])
            code, _ids = models.claims.create_claim_code(
                conn, principal, product_id=product["id"], now=now)
            return customer["id"], tokens["access_token"], code
        cid, token, code = db.run_sync(burst)
        print(json.dumps([i, cid, token, code]), flush=True)
    """
)


def test_kill_9_during_a_burst_of_writes_loses_no_acknowledged_write(tmp_path: Path) -> None:
    path = tmp_path / "cloud.sqlite3"
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    acked: list[list[object]] = []
    for line in proc.stdout:
        acked.append(json.loads(line))
        if len(acked) >= 60:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    assert len(acked) >= 60

    db = Database(path)
    db.open_sync()
    try:
        assert db.integrity_check() == "ok"
        for _i, customer_id, token, code in acked:
            row = db.run_sync(
                lambda c, cid=customer_id: c.execute(
                    "SELECT * FROM customers WHERE id = ?", (cid,)
                ).fetchone()
            )
            assert row is not None
            tok = db.run_sync(
                lambda c, t=token: c.execute(
                    "SELECT * FROM tokens WHERE hash = ?", (hashing.digest(str(t)),)
                ).fetchone()
            )
            assert tok is not None
            assert tok["customer_id"] == customer_id
            claim = db.run_sync(
                lambda c, k=code: c.execute(
                    "SELECT * FROM claim_codes WHERE hash = ?", (hashing.digest(str(k)),)
                ).fetchone()
            )
            assert claim is not None
        # nothing is stored in plain text
        dump = "\n".join(db.run_sync(lambda c: list(c.iterdump())))
        for _i, _cid, token, code in acked[:5]:
            assert str(token) not in dump
            assert str(code) not in dump
    finally:
        db.close_sync()


def test_corrupt_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "cloud.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    db = Database(path)
    with pytest.raises(StateError, match=r"cloud\.sqlite3"):
        db.open_sync()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cloud.sqlite3"
    db = Database(path)
    db.open_sync()
    db.run_sync(lambda c: c.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'"))
    db.close_sync()
    with pytest.raises(StateError, match="newer softap-sim"):
        Database(path).open_sync()
