"""Crash-safe file writes, shared by the device state and the cloud.

A neutral module (no firmware model, no cloud) so that both sides can use it without
importing each other: ``softap_sim.cloud`` imports nothing from ``firmware_model``.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

#: the random part ``tempfile.mkstemp`` puts in a name: 8 of these characters
#: (``tempfile._RandomNameSequence``; tests/core/test_state_cleanup.py checks it still is)
MKSTEMP_RANDOM = "[a-z0-9_]{8}"
TEMP_SUFFIX = ".tmp"


def temp_prefix(name: str) -> str:
    """The prefix of :func:`atomic_write`'s temporary files for a target called ``name``."""
    return f".{name}."


def temporary_name_pattern(names: Iterable[str]) -> re.Pattern[str]:
    """Exactly the names :func:`atomic_write` gives its temporaries for these targets."""
    alternatives = "|".join(re.escape(temp_prefix(n)) for n in names)
    return re.compile(f"(?:{alternatives}){MKSTEMP_RANDOM}{re.escape(TEMP_SUFFIX)}")


def remove_stale_temporaries(directory: Path, names: Iterable[str]) -> list[Path]:
    """Remove what an interrupted :func:`atomic_write` left in ``directory``.

    A ``kill -9`` between ``mkstemp`` and the rename leaves ``.{name}.XXXXXXXX.tmp``
    behind, with the secrets of the new content in it. Only regular files whose name is
    exactly that, for one of the target ``names``, are removed: nothing else (another
    program's file, a look-alike name, a symlink, a directory) is touched. Call it
    before this process writes to the directory (a temporary another live process is
    writing would be removed too). Returns the paths removed.
    """
    names = list(names)
    if not names:
        return []
    pattern = temporary_name_pattern(names)
    removed: list[Path] = []
    try:
        entries = os.scandir(directory)
    except FileNotFoundError:
        return []
    with entries:
        for entry in entries:
            if pattern.fullmatch(entry.name) is None:
                continue
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                Path(entry.path).unlink()
            except FileNotFoundError:
                continue
            except OSError as err:
                log.warning("cannot remove stale temporary %s: %s", entry.path, err.strerror)
                continue
            removed.append(Path(entry.path))
    if removed:
        log.info(
            "removed %d stale temporary file(s) of an interrupted write in %s: %s",
            len(removed),
            directory,
            ", ".join(sorted(p.name for p in removed)),
        )
    return removed


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old or the new content.

    Temporary file in the same directory, fsync, rename over the old file, fsync of the
    directory: a ``kill -9`` (or a power cut, with a journaling file system) at any
    moment leaves one complete version.
    """
    directory = path.parent
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=TEMP_SUFFIX, dir=directory)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
