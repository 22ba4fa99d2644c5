"""A reusable pool of pre-generated RSA device keys, shared safely between processes.

Generating an RSA-1024 key costs ~6 ms of CPU (measured: 165 keys/s on one core of the
reference machine), so 1,000 fresh devices would spend seconds in key generation before
the first one is ready. A fleet instead *takes* keys that were generated earlier: by
``softap-sim fleet --fill-pool N``, by a background refill after a fleet started, or by
another process.

Layout of the pool directory (mode 0700; ``<state_dir>/keypool`` by default)::

    rsa1024-<32 hex>.pem       a ready key: PKCS#8 PEM, mode 0600, never handed out twice
    .tmp-<pid>-<hex>.pem       a key being written (renamed to rsa<bits>-*.pem when complete)
    .taken-<pid>-<hex>-<n>.pem a key being taken (read, then unlinked at once)
    .fill.lock                 flock(2) held by the process that is filling the pool

How two processes never share a key: a key is claimed with ``rename(2)`` of its ready
name to a name private to the taker. For one source name exactly one rename succeeds;
the loser gets ``ENOENT`` and moves on to another file (the candidates are shuffled per
taker, so concurrent takers rarely collide). Writers never overwrite: each key gets a
fresh random name, is written to a temporary file and renamed into place only when
complete, so a taker never sees half a key. Keys are not fsynced (a pool is a cache):
a file torn by a power cut fails to parse when taken and is discarded. Filling holds an
exclusive ``flock`` on ``.fill.lock`` so two fillers do not both top the pool up;
``fill`` waits for the lock, a background refill skips when another process fills.
Leftover ``.tmp-``/``.taken-`` files of a crashed process are removed after an hour.

Key generation runs in threads, one per CPU: OpenSSL releases the GIL while it makes a
key, so threads scale like processes without their start-up cost (measured on the
2-CPU reference machine, 600 RSA-1024 keys: serial 162 keys/s, 2 threads 311 keys/s, 4
threads 325 keys/s; a 2-process ``ProcessPoolExecutor`` 299 keys/s). A *background*
refill (while a fleet runs) uses worker processes instead -- ``python -m
softap_sim.keypool fill ...`` children started with :mod:`subprocess` (not
:mod:`multiprocessing`, whose "spawn" re-imports the caller's main module and whose
"fork" is unsafe next to the event loop's threads) -- so that they can run at a lower
CPU priority (``nice``) and leave the fleet its cores; each writes its keys into the
pool itself, and they are terminated when the fleet stops (finished keys are kept).

Keys taken from the pool are parsed without OpenSSL's RSA consistency check
(``unsafe_skip_rsa_key_validation``): the check costs ~4 ms a key and holds the GIL
(two thirds of the cost of making the key), and pool keys were made by OpenSSL itself
and are readable only by their owner. A key that does not parse or has the wrong size
is discarded.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import fcntl
import logging
import os
import random
import re
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from softap_sim.errors import StateError

if TYPE_CHECKING:
    from firmware_model.keys import DeviceKey

log = logging.getLogger(__name__)

POOL_DIR_NAME = "keypool"
LOCK_NAME = ".fill.lock"
#: leftovers of a crashed writer or taker older than this are removed by ``fill``
STALE_AFTER_S = 3600.0
#: CPU priority of background refill workers (added to the current niceness)
BACKGROUND_NICE = 10

_READY = re.compile(r"^rsa(\d+)-[0-9a-f]{32}\.pem$")


def default_pool_dir() -> Path:
    """``$SOFTAP_SIM_KEY_POOL``, else ``$XDG_STATE_HOME/softap-sim/keypool``."""
    env = os.environ.get("SOFTAP_SIM_KEY_POOL")
    if env:
        return Path(env)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "softap-sim" / POOL_DIR_NAME


# -- key generation (also run in worker processes: keep it free of heavy imports) ------
def generate_pem(bits: int = 1024) -> bytes:
    """One new RSA private key (e = 65537) as unencrypted PKCS#8 PEM."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _publish(directory: Path, bits: int, pem: bytes) -> Path:
    """Write one key to a temporary name, then rename it to a fresh ready name."""
    name = secrets.token_hex(16)
    tmp = directory / f".tmp-{os.getpid()}-{name}.pem"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        final = directory / f"rsa{bits}-{name}.pem"
        tmp.rename(final)  # a fresh random name: never replaces another key
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return final


def _split(total: int, parts: int) -> list[int]:
    """``total`` as ``parts`` near-equal positive shares."""
    parts = max(1, min(parts, total))
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _workers(count: int, workers: int | None) -> int:
    return max(1, min(workers or os.cpu_count() or 1, count))


def _spawn(args: Sequence[str], nice: int = 0) -> subprocess.Popen[bytes]:
    """A worker: ``python -m softap_sim.keypool ARGS`` with this package importable."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return subprocess.Popen(
        [sys.executable, "-m", "softap_sim.keypool", *args, "--nice", str(nice)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        env=env,
    )


def _reap(procs: list[subprocess.Popen[bytes]], cancel: threading.Event | None) -> list[bytes]:
    """Wait for the workers, reading their output as it comes (no full pipe can block
    them); on ``cancel`` they are terminated. Their outputs."""
    outputs = [b""] * len(procs)

    def read(i: int) -> None:
        outputs[i] = procs[i].communicate()[0]

    readers = [threading.Thread(target=read, args=(i,), daemon=True) for i in range(len(procs))]
    for reader in readers:
        reader.start()
    try:
        while any(r.is_alive() for r in readers):
            if cancel is not None and cancel.is_set():
                for p in procs:
                    if p.poll() is None:
                        p.terminate()
                break
            readers[0].join(0.05) if readers[0].is_alive() else time.sleep(0.05)
        for reader in readers:
            reader.join()
        return outputs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def generate_pems(count: int, bits: int = 1024, *, workers: int | None = None) -> list[bytes]:
    """``count`` new keys, made by ``workers`` threads (default: one per CPU).

    OpenSSL releases the GIL while it generates a key, so threads scale like processes
    (measured: 162 keys/s serial, 311 with 2 threads on 2 CPUs) without their start-up
    cost.
    """
    if count <= 0:
        return []
    n = _workers(count, workers)
    if n == 1:
        return [generate_pem(bits) for _ in range(count)]
    with concurrent.futures.ThreadPoolExecutor(n, thread_name_prefix="keygen") as pool:
        return list(pool.map(lambda _i: generate_pem(bits), range(count)))


def worker_main(argv: Sequence[str]) -> int:
    """The background worker process: ``fill DIR BITS COUNT [--nice N]`` (keys into the
    pool, a dot per key to stdout)."""
    nice = 0
    args = list(argv)
    if "--nice" in args:
        i = args.index("--nice")
        nice = int(args[i + 1])
        del args[i : i + 2]
    if nice:
        with contextlib.suppress(OSError):
            os.nice(nice)
    out = sys.stdout.buffer
    try:
        if args and args[0] == "fill":
            directory, bits, count = Path(args[1]), int(args[2]), int(args[3])
            for _ in range(count):
                _publish(directory, bits, generate_pem(bits))
                out.write(b".")
                out.flush()
            return 0
    except KeyboardInterrupt:
        return 130
    except (OSError, ValueError) as err:
        print(f"softap-sim keypool worker: {err}", file=sys.stderr)
        return 1
    print("usage: python -m softap_sim.keypool fill DIR BITS COUNT [--nice N]")
    return 2


def load_pool_key(pem: bytes, bits: int | None = None) -> DeviceKey:
    """Parse a pool key without the slow RSA consistency check (see the module doc).

    Raises :class:`ValueError` when the PEM is not an RSA key (of ``bits``, if given).
    """
    from firmware_model.keys import DeviceKey

    try:
        key = serialization.load_pem_private_key(
            pem, password=None, unsafe_skip_rsa_key_validation=True
        )
    except (ValueError, TypeError) as err:
        raise ValueError(f"not a PEM private key ({err})") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("not an RSA private key")
    if bits is not None and key.key_size != bits:
        raise ValueError(f"an RSA-{key.key_size} key, not RSA-{bits}")
    return DeviceKey(key)


class KeyPool:
    """A directory of ready RSA keys; see the module documentation for the protocol.

    Every method is blocking (file I/O, key generation); from a coroutine use
    :meth:`obtain` or ``asyncio.to_thread``.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def __repr__(self) -> str:
        return f"KeyPool({str(self.directory)!r})"

    # -- the directory -----------------------------------------------------------------
    def ensure_dir(self) -> None:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as err:
            raise StateError(
                f"cannot create the key pool {self.directory}: {err.strerror}; "
                "choose another with --key-pool"
            ) from None
        if not os.access(self.directory, os.R_OK | os.W_OK | os.X_OK):
            raise StateError(
                f"key pool {self.directory} is not readable and writable; fix its "
                "permissions or choose another with --key-pool"
            )

    def _ready_names(self, bits: int) -> list[str]:
        prefix = f"rsa{bits}-"
        try:
            with os.scandir(self.directory) as it:
                return [
                    e.name
                    for e in it
                    if e.name.startswith(prefix) and _READY.match(e.name) is not None
                ]
        except FileNotFoundError:
            return []
        except OSError as err:
            raise StateError(f"cannot read the key pool {self.directory}: {err.strerror}") from None

    def available(self, bits: int = 1024) -> int:
        """Ready keys of ``bits`` in the pool now (other processes may take some)."""
        return len(self._ready_names(bits))

    # -- taking --------------------------------------------------------------------------
    def take(self, count: int, bits: int = 1024) -> list[bytes]:
        """Claim up to ``count`` ready keys (PEMs); fewer if the pool has fewer.

        Each key returned was removed from the pool: no other taker, in this process or
        another, can get it.
        """
        if count <= 0:
            return []
        names = self._ready_names(bits)
        random.shuffle(names)  # concurrent takers start at different places
        out: list[bytes] = []
        token = f"{os.getpid()}-{secrets.token_hex(4)}"
        for i, name in enumerate(names):
            if len(out) >= count:
                break
            src = self.directory / name
            claimed = self.directory / f".taken-{token}-{i}.pem"
            try:
                src.rename(claimed)
            except FileNotFoundError:
                continue  # another taker won this one
            except OSError as err:
                raise StateError(
                    f"cannot take a key from the pool {self.directory}: {err.strerror}"
                ) from None
            try:
                pem = claimed.read_bytes()
            finally:
                claimed.unlink(missing_ok=True)
            if b"-----END PRIVATE KEY-----" not in pem:
                log.warning("key pool: discarded an incomplete key file %s", name)
                continue
            out.append(pem)
        return out

    def take_keys(self, count: int, bits: int = 1024) -> list[DeviceKey]:
        """:meth:`take`, parsed; keys that do not parse are discarded."""
        keys = []
        for pem in self.take(count, bits):
            try:
                keys.append(load_pool_key(pem, bits))
            except ValueError as err:
                log.warning("key pool: discarded an unusable key: %s", err)
        return keys

    def obtain_sync(
        self, count: int, bits: int = 1024, *, workers: int | None = None
    ) -> tuple[list[DeviceKey], int]:
        """``count`` keys: taken from the pool, the missing ones generated now.

        Returns ``(keys, generated)``. The generated keys are used at once, not stored.
        """
        keys = self.take_keys(count, bits) if self.directory.is_dir() else []
        generated = 0
        while len(keys) < count:
            pems = generate_pems(count - len(keys), bits, workers=workers)
            keys.extend(load_pool_key(p, bits) for p in pems)
            generated += len(pems)
        return keys, generated

    async def obtain(
        self, count: int, bits: int = 1024, *, workers: int | None = None
    ) -> tuple[list[DeviceKey], int]:
        """:meth:`obtain_sync` in a thread."""
        return await asyncio.to_thread(self.obtain_sync, count, bits, workers=workers)

    # -- filling -------------------------------------------------------------------------
    @contextlib.contextmanager
    def _fill_lock(self, *, wait: bool) -> Iterator[bool]:
        fd = os.open(self.directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except OSError as err:
                if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    yield False
                    return
                raise
            try:
                yield True
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _remove_stale(self) -> None:
        cutoff = time.time() - STALE_AFTER_S
        with os.scandir(self.directory) as it:
            for entry in it:
                if entry.name.startswith((".tmp-", ".taken-")):
                    with contextlib.suppress(OSError):
                        if entry.stat().st_mtime < cutoff:
                            Path(entry.path).unlink()

    def fill(
        self,
        target: int,
        bits: int = 1024,
        *,
        workers: int | None = None,
        wait: bool = True,
        nice: int = 0,
        cancel: threading.Event | None = None,
    ) -> int:
        """Generate keys until the pool holds ``target`` ready ones; the number made.

        Only one process fills at a time (``flock``): with ``wait`` another filler is
        waited for and the count re-read; without it this call returns 0 at once.
        ``cancel`` terminates the workers (the keys they finished stay in the pool).
        """
        self.ensure_dir()
        with self._fill_lock(wait=wait) as locked:
            if not locked:
                log.info("key pool %s: another process is filling it", self.directory)
                return 0
            with contextlib.suppress(OSError):
                self._remove_stale()
            needed = target - self.available(bits)
            if needed <= 0:
                return 0
            n = _workers(needed, workers)
            if nice == 0:
                return self._fill_threads(needed, bits, n, cancel)
            procs = [
                _spawn(["fill", str(self.directory), str(bits), str(share)], nice)
                for share in _split(needed, n)
            ]
            outputs = _reap(procs, cancel)
            failed = [p.returncode for p in procs if p.returncode not in (0, -15)]
            if failed and not (cancel is not None and cancel.is_set()):
                raise StateError(
                    f"a key pool worker failed (exit status {failed[0]}) filling {self.directory}"
                )
            return sum(out.count(b".") for out in outputs)

    def _fill_threads(
        self, needed: int, bits: int, workers: int, cancel: threading.Event | None
    ) -> int:
        def one(_i: int) -> int:
            if cancel is not None and cancel.is_set():
                return 0
            _publish(self.directory, bits, generate_pem(bits))
            return 1

        with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="keygen") as pool:
            return sum(pool.map(one, range(needed)))

    def fill_in_background(
        self, target: int, bits: int = 1024, *, workers: int | None = None
    ) -> BackgroundFill:
        """Top the pool up to ``target`` in a thread with low-priority worker processes.

        Skips (does nothing) while another process fills the pool.
        """
        return BackgroundFill(self, target, bits, workers)


class BackgroundFill:
    """A running :meth:`KeyPool.fill_in_background`; :meth:`stop` ends it early."""

    def __init__(self, pool: KeyPool, target: int, bits: int, workers: int | None) -> None:
        self._cancel = threading.Event()
        self.made = 0
        self.error: BaseException | None = None
        self._done = threading.Event()

        def run() -> None:
            try:
                self.made = pool.fill(
                    target,
                    bits,
                    workers=workers,
                    wait=False,
                    nice=BACKGROUND_NICE,
                    cancel=self._cancel,
                )
            except Exception as err:  # reported by the owner, never raised in a thread
                self.error = err
                log.warning("key pool: background fill failed: %s", err)
            finally:
                self._done.set()

        self._thread = threading.Thread(target=run, name="keypool-fill", daemon=True)
        self._thread.start()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def stop(self, timeout_s: float | None = 10.0) -> None:
        """Terminate the workers (finished keys stay) and wait (bounded) for the thread."""
        self._cancel.set()
        self._thread.join(timeout_s)

    async def wait(self) -> int:
        """Until the fill is complete; the number of keys made."""
        await asyncio.to_thread(self._done.wait)
        return self.made


__all__ = [
    "BackgroundFill",
    "KeyPool",
    "default_pool_dir",
    "generate_pem",
    "generate_pems",
    "load_pool_key",
]


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))
