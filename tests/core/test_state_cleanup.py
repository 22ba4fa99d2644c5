"""Stale temporaries of interrupted writes are removed on start, and only they (issue 11).

``atomic_write`` writes ``.{name}.XXXXXXXX.tmp`` (``tempfile.mkstemp``) next to its
target and renames it over the target; a ``kill -9`` in between left the temporary,
with the Wi-Fi password and the claim code in it, for ever.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from softap_sim.atomic import (
    MKSTEMP_RANDOM,
    TEMP_SUFFIX,
    remove_stale_temporaries,
    temp_prefix,
    temporary_name_pattern,
)
from softap_sim.store import StateStore

SECRET = b'{"claim_code": "stale-secret-claim-code"}'


def _ours(directory: Path, name: str) -> Path:
    """A temporary exactly as ``atomic_write`` makes one, left behind."""
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(name), suffix=TEMP_SUFFIX, dir=directory)
    os.write(fd, SECRET)
    os.close(fd)
    return Path(tmp)


def _look_alikes(directory: Path) -> list[Path]:
    names = [
        ".device.json.tmp",  # no random part
        "device.json.x.tmp",  # no leading dot
        "device.json.abcdefgh.tmp",
        ".device.json.abcdefg.tmp",  # 7 random characters
        ".device.json.abcdefghi.tmp",  # 9
        ".device.json.ABCDEFGH.tmp",  # not mkstemp's alphabet
        ".device.json.abc.efgh.tmp",
        ".device.json.abcdefgh.tmp~",
        ".device.json.abcdefgh.tmpx",
        "x.device.json.abcdefgh.tmp",
        ".device.jsonXabcdefgh.tmp",  # the dot of the name is literal
        ".device_key.pem.abcdefgh.temp",
        ".other.json.abcdefgh.tmp",  # another target's temporary
        ".cloud-credentials.json.abcdefgh.tmp",  # the cloud's (not the device store's)
        "notes.txt",  # another program's file
        "device.json.bak",
    ]
    paths = []
    for name in names:
        p = directory / name
        p.write_bytes(b"keep me")
        paths.append(p)
    # a directory and a symlink with our exact pattern are not ours either
    d = directory / ".device.json.dirdirdi.tmp"
    d.mkdir()
    (d / "inside").write_bytes(b"keep me")
    target = directory / "notes.txt"
    link = directory / ".device.json.symlink1.tmp"
    link.symlink_to(target)
    return [*paths, d, d / "inside", link]


def test_mkstemp_names_match_the_pattern(tmp_path: Path) -> None:
    # the pattern pins tempfile's private naming: fail loudly if Python changes it
    assert MKSTEMP_RANDOM == "[a-z0-9_]{8}"
    pattern = temporary_name_pattern(["device.json"])
    for _ in range(200):
        p = _ours(tmp_path, "device.json")
        assert pattern.fullmatch(p.name), p.name
        p.unlink()
    assert re.fullmatch(r"\.device\.json\.[a-z0-9_]{8}\.tmp", ".device.json.ab_d0fgh.tmp")


def test_opening_the_store_removes_only_our_stale_temporaries(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    dct, _key, created = store.load_or_create(rng=random.Random(1))
    assert created
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    stale = [_ours(tmp_path, "device.json") for _ in range(9)]
    stale += [_ours(tmp_path, "device_key.pem") for _ in range(2)]
    keep = _look_alikes(tmp_path)
    assert all(p.exists() for p in stale)
    dct2, _key2, created2 = StateStore(tmp_path).load_or_create(rng=random.Random(2))
    assert not created2
    assert dct2.identity == dct.identity
    assert [p.name for p in stale if p.exists()] == []
    assert [str(p) for p in keep if not p.is_symlink() and not p.exists()] == []
    assert (tmp_path / ".device.json.symlink1.tmp").is_symlink()
    for name, data in before.items():
        assert (tmp_path / name).read_bytes() == data  # the real state is untouched
    assert not any(SECRET in p.read_bytes() for p in tmp_path.iterdir() if p.is_file())


def test_helper_touches_only_the_named_targets(tmp_path: Path) -> None:
    a = _ours(tmp_path, "a.json")
    b = _ours(tmp_path, "b.json")
    assert remove_stale_temporaries(tmp_path, ["a.json"]) == [a]
    assert not a.exists()
    assert b.exists()
    assert remove_stale_temporaries(tmp_path, []) == []
    assert b.exists()
    assert remove_stale_temporaries(tmp_path / "missing", ["b.json"]) == []


@pytest.mark.timeout(120)
def test_kill_9_leftovers_are_gone_after_restart(tmp_path: Path) -> None:
    """kill -9 a writer repeatedly; the temporaries it leaves go at the next start."""
    StateStore(tmp_path).load_or_create(rng=random.Random(1))
    child = textwrap.dedent(
        f"""
        import random, sys
        from pathlib import Path
        from softap_sim.store import StateStore
        store = StateStore(Path({str(tmp_path)!r}))
        dct, _key, _ = store.load_or_create(rng=random.Random(1))
        print("ready", flush=True)
        i = 0
        while True:
            dct.set_claim_code(b"KILLED-CODE-%08d" % i)
            store.save(dct)
            i += 1
        """
    )
    left = 0
    for _ in range(30):
        proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        # let it write for a moment (thousands of saves), then kill it mid-write
        time.sleep(0.02)
        proc.kill()
        proc.wait()
        proc.stdout.close()
        left = max(left, len(list(tmp_path.glob(".device.json.*.tmp"))))
        if left:
            break
    if not left:
        # the kills all fell between writes: make the leftover by hand, as a kill would
        _ours(tmp_path, "device.json")
    StateStore(tmp_path).load_or_create(rng=random.Random(1))
    assert list(tmp_path.glob(".*.tmp")) == []
    assert json.loads((tmp_path / "device.json").read_bytes())  # still a good state


@pytest.mark.asyncio
async def test_the_cloud_removes_its_stale_temporaries_on_open(tmp_path: Path) -> None:
    from softap_sim.cloud.service import CREDENTIALS_FILE, SERVER_KEY_FILE, CloudService

    stale = [tmp_path / f".{name}.abcd1234.tmp" for name in (CREDENTIALS_FILE, SERVER_KEY_FILE)]
    keep = tmp_path / f".{CREDENTIALS_FILE}.tmp"
    for path in [*stale, keep]:
        path.write_text("secret")
    service = CloudService(tmp_path)
    await service.open()
    await service.close()
    assert not any(p.exists() for p in stale)
    assert keep.exists()
