"""Crash-safe file writes, shared by the device state and the cloud.

A neutral module (no firmware model, no cloud) so that both sides can use it without
importing each other: ``softap_sim.cloud`` imports nothing from ``firmware_model``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old or the new content.

    Temporary file in the same directory, fsync, rename over the old file, fsync of the
    directory: a ``kill -9`` (or a power cut, with a journaling file system) at any
    moment leaves one complete version.
    """
    directory = path.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
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
