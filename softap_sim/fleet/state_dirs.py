"""New devices' identities and the per-device state directories of a fleet.

``<state_dir>/devices/<i>/`` has the layout of ``softap-sim run`` (``device.json`` and
``device_key.pem``), so one fleet device can also be run alone. Thousands of devices are
created at once: the directories are written by a few threads, each into a temporary
directory renamed into place, so a crash leaves a device complete or absent, never half
made; identities are drawn so that device ids and SSIDs are unique in the fleet.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import shutil
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final

from firmware_model import Dct, DeviceIdentity, DeviceKey
from firmware_model.eras import ERAS
from softap_sim.atomic import atomic_write
from softap_sim.config import SimConfig
from softap_sim.errors import ConfigError, StateError
from softap_sim.store import DCT_FILE, KEY_FILE, StateStore

#: subdirectory of the state directory holding one directory per device
DEVICES_DIR: Final = "devices"


def device_seed(seed: int, index: int) -> int:
    """Device ``index``'s own seed from the fleet's one: reproducible, yet no two devices
    share fault jitter or identities."""
    return random.Random(f"softap-sim fleet {seed} {index}").getrandbits(63)


def unique_identities(
    configs: Sequence[SimConfig],
    codes: set[str],
    ids: set[bytes],
    *,
    only: Iterable[int] | None = None,
) -> dict[int, DeviceIdentity]:
    """New identities with device ids and SSIDs unique in the fleet (and vs ``codes``)."""
    fresh = random.Random()
    out: dict[int, DeviceIdentity] = {}
    seen = set(codes)
    for i in only if only is not None else range(len(configs)):
        cfg = configs[i]
        rng = fresh
        if cfg.seed is not None:
            rng = random.Random(f"softap-sim fleet identity {cfg.seed} {i}")
        length = ERAS[cfg.firmware].device_code_length
        for _attempt in range(1000):
            ident = DeviceIdentity.generate(rng, code_length=length, ssid_prefix=cfg.ssid_prefix)
            if ident.ssid not in seen and ident.device_id not in ids:
                break
        else:  # pragma: no cover - 4-char codes with more than ~a million devices
            raise ConfigError(f"cannot find a unique device code for device {i}")
        seen.add(ident.ssid)
        ids.add(ident.device_id)
        out[i] = ident
    return out


def scan_state(root: Path, dirs: list[Path]) -> tuple[list[int], set[str], set[bytes]]:
    """Which devices are new, and (if any are) the SSIDs and ids of the existing ones."""
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise StateError(
            f"cannot create {root}: {err.strerror}; choose another --state-dir"
        ) from None
    for leftover in root.glob(".new-*"):  # a crash while creating devices
        shutil.rmtree(leftover, ignore_errors=True)
    new = [
        i for i, d in enumerate(dirs) if not (d / DCT_FILE).exists() and not (d / KEY_FILE).exists()
    ]
    codes: set[str] = set()
    ids: set[bytes] = set()
    if new and len(new) < len(dirs):
        new_set = set(new)
        for i, d in enumerate(dirs):
            if i in new_set:
                continue
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                ident = Dct.from_json(json.loads((d / DCT_FILE).read_bytes())).identity
                codes.add(ident.ssid)
                ids.add(ident.device_id)
    return new, codes, ids


def create_device_dirs(
    root: Path, jobs: list[tuple[Path, DeviceIdentity, DeviceKey]], workers: int
) -> None:
    """Write each new device's key and DCT into a temporary directory, then rename it
    into place: a device directory is complete or absent, whatever happens."""

    def one(job: tuple[Path, DeviceIdentity, DeviceKey]) -> None:
        target, identity, key = job
        tmp = root / f".new-{target.name}-{secrets.token_hex(4)}"
        tmp.mkdir(mode=0o700)
        atomic_write(tmp / KEY_FILE, key.to_pem(), 0o600)
        StateStore(tmp).save(Dct(identity))
        if target.exists():
            with contextlib.suppress(OSError):
                target.rmdir()  # an empty leftover directory
        try:
            tmp.rename(target)
        except OSError:  # the directory holds other files: put the state files into it
            for name in (KEY_FILE, DCT_FILE):
                (tmp / name).rename(target / name)
            shutil.rmtree(tmp, ignore_errors=True)

    try:
        if workers <= 1:
            for job in jobs:
                one(job)
        else:
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(one, jobs))
        fd = os.open(root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as err:
        raise StateError(
            f"cannot create device state under {root}: {err.strerror or err}; "
            "choose another --state-dir"
        ) from None
