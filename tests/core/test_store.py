"""The state directory: creation, reuse across restarts, atomic writes, clear errors."""

from __future__ import annotations

import asyncio
import json
import os
import random
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from firmware_model import Dct
from softap_sim import DeviceEmulator, SimConfig, StateError
from softap_sim.store import StateStore
from tests.wire import tcp_exchange


def test_first_start_creates_state_with_private_key_mode(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "dev")
    dct, key, created = store.load_or_create(rng=random.Random(1))
    assert created
    assert stat.S_IMODE(store.key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.dct_path.stat().st_mode) == 0o600
    dct2, key2, created2 = StateStore(tmp_path / "dev").load_or_create(rng=random.Random(2))
    assert not created2
    assert dct2.identity == dct.identity
    assert key2.public_key_area == key.public_key_area


@pytest.mark.asyncio
async def test_state_survives_restart(tmp_path: Path) -> None:
    cfg = SimConfig(state_dir=tmp_path)
    async with DeviceEmulator(cfg) as emu:
        body = b'{"k":"cc","v":"PERSISTED-CODE"}'
        req = b"set\n%d\n\n" % len(body) + body
        assert await tcp_exchange(emu.tcp_address, req) == b'\n\n{"r":0}'
        first_id = emu.device.dct.identity
    async with DeviceEmulator(cfg) as emu:
        assert emu.device.dct.identity == first_id
        assert emu.device.dct.claim_code == b"PERSISTED-CODE"
        assert not emu.created


def test_claim_code_not_in_plain_text_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def run() -> None:
        async with DeviceEmulator(SimConfig(state_dir=tmp_path)) as emu:
            body = b'{"k":"cc","v":"SECRET-CLAIM-CODE-123"}'
            await tcp_exchange(emu.tcp_address, b"set\n%d\n\n" % len(body) + body)

    caplog.set_level("DEBUG")
    asyncio.run(run())
    assert "set" in caplog.text
    assert "SECRET-CLAIM-CODE-123" not in caplog.text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "corrupt or not a softap-sim state file"),
        (b'{"format":"something-else"}', "not a softap-sim device state file"),
        (b'{"format":"softap-sim/dct","version":99}', "unsupported state version"),
    ],
)
def test_corrupt_state_names_the_file(tmp_path: Path, content: bytes, message: str) -> None:
    store = StateStore(tmp_path)
    store.load_or_create(rng=random.Random(1))
    store.dct_path.write_bytes(content)
    with pytest.raises(StateError, match=message) as info:
        store.load_or_create(rng=random.Random(1))
    assert str(store.dct_path) in str(info.value)


def test_missing_key_file(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.load_or_create(rng=random.Random(1))
    store.key_path.unlink()
    with pytest.raises(StateError, match=r"device_key\.pem is missing"):
        store.load_or_create(rng=random.Random(1))


def test_foreign_key_file(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.load_or_create(rng=random.Random(1))
    store.key_path.write_text("hello")
    with pytest.raises(StateError, match=r"device_key\.pem"):
        store.load_or_create(rng=random.Random(1))


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_state_dir(tmp_path: Path) -> None:
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o500)
    with pytest.raises(StateError, match="not readable and writable"):
        StateStore(d).load_or_create(rng=random.Random(1))


def test_state_dir_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(StateError, match="cannot create state directory"):
        StateStore(f / "dev").load_or_create(rng=random.Random(1))


def test_kill_9_during_writes_loses_no_acknowledged_write(tmp_path: Path) -> None:
    """A writer killed with SIGKILL leaves the last acknowledged (or a newer) state."""
    StateStore(tmp_path).load_or_create(rng=random.Random(1))
    child = textwrap.dedent(
        f"""
        import random, sys
        from softap_sim.store import StateStore
        store = StateStore(__import__("pathlib").Path({str(tmp_path)!r}))
        dct, _key, _ = store.load_or_create(rng=random.Random(1))
        for i in range(100000):
            dct.set_claim_code(b"CODE-%08d" % i)
            store.save(dct)
            print(i, flush=True)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    acknowledged = -1
    for line in proc.stdout:
        acknowledged = int(line)
        if acknowledged >= 200:
            break
    proc.kill()
    proc.wait()
    proc.stdout.close()
    dct = Dct.from_json(json.loads((tmp_path / "device.json").read_bytes()))
    stored = int(dct.claim_code.removeprefix(b"CODE-"))
    assert stored >= acknowledged
    # a later start loads it without complaint (a stray temp file is ignored)
    StateStore(tmp_path).load_or_create(rng=random.Random(1))
