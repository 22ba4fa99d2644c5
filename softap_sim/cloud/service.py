"""The cloud as the CLI and the emulator run it: backend + REST server + device server.

``CloudService(state_dir)`` opens ``<state_dir>/cloud.sqlite3`` (or memory), creates the
default product and clients on first start (their secret is returned once and written
to a 0600 file) and serves the REST API and the device endpoint. ``service.backend`` is
the :class:`~softap_sim.cloud.backend.CloudBackend` every caller uses.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from softap_sim.atomic import atomic_write, remove_stale_temporaries
from softap_sim.cloud.app import CloudServer
from softap_sim.cloud.backend import CloudBackend
from softap_sim.cloud.db import Database
from softap_sim.cloud.device_server import DeviceServer
from softap_sim.errors import SimulatorError, StateError

DB_FILE = "cloud.sqlite3"
CREDENTIALS_FILE = "cloud-credentials.json"
SERVER_KEY_FILE = "cloud-server-key.pem"
DEFAULT_DEVICE_PORT = 5683


def load_or_create_server_key(path: Path | None) -> rsa.RSAPrivateKey:
    """The cloud's RSA-2048 key (cloud-api.md §8.1), kept in the state directory (0600)."""
    if path is not None and path.exists():
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError, OSError) as err:
            raise StateError(f"{path} is not a usable server key ({err}); move it away") from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise StateError(f"{path} must hold an RSA private key")
        return key
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if path is not None:
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        atomic_write(path, pem, 0o600)
    return key


class CloudService:
    def __init__(self, state_dir: Path | None, *, now: Callable[[], float] = time.time) -> None:
        self.state_dir = state_dir
        self.db = Database(state_dir / DB_FILE if state_dir is not None else None)
        self.backend = CloudBackend(self.db, now=now)
        self.server: CloudServer | None = None
        self.device_server: DeviceServer | None = None
        self.server_key: rsa.RSAPrivateKey | None = None
        #: plain credentials, only on the start that created them
        self.created_credentials: dict[str, Any] | None = None

    @property
    def credentials_path(self) -> Path | None:
        return self.state_dir / CREDENTIALS_FILE if self.state_dir is not None else None

    async def open(self, *, must_exist: bool = False) -> None:
        """Open (and on first start create and seed) the database.

        ``must_exist``: only an existing database, nothing created or seeded -- for
        commands that only read, so a mistyped ``--state-dir`` is an error, not a new
        empty cloud.
        """
        if must_exist:
            if self.db.path is not None and not self.db.path.is_file():
                where = self.state_dir
                raise StateError(
                    f"no cloud database at {self.db.path}; create it by starting the cloud "
                    f"once ('softap-sim run --state-dir {where}' or 'softap-sim cloud serve "
                    f"--state-dir {where}'), or check --state-dir"
                )
            await self.db.open()
            return
        if self.state_dir is not None and self.state_dir.is_dir():
            # a kill -9 during a write leaves a temporary copy (a secret or a key): gone now
            remove_stale_temporaries(self.state_dir, (CREDENTIALS_FILE, SERVER_KEY_FILE))
        await self.db.open()
        created = await self.backend.bootstrap()
        if created is not None:
            self.created_credentials = created
            path = self.credentials_path
            if path is not None:
                data = json.dumps(created, indent=2, sort_keys=True).encode() + b"\n"
                atomic_write(path, data, 0o600)

    @property
    def server_public_key_pem(self) -> bytes:
        assert self.server_key is not None
        return self.server_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    async def serve_devices(
        self, host: str = "127.0.0.1", port: int = DEFAULT_DEVICE_PORT
    ) -> DeviceServer:
        """The device endpoint (TCP 5683); REST function calls now reach devices."""
        path = self.state_dir / SERVER_KEY_FILE if self.state_dir is not None else None
        self.server_key = await asyncio.to_thread(load_or_create_server_key, path)
        server = DeviceServer(self.backend, self.server_key, host, port)
        await server.start()
        self.device_server = server
        self.backend.link = server
        return server

    async def serve(
        self, host: str = "127.0.0.1", port: int = 0, *, allow_remote: bool = False
    ) -> CloudServer:
        self.server = CloudServer(self.backend, host, port, allow_remote=allow_remote)
        await self.server.start()
        return self.server

    async def register_device(
        self,
        device_id: str,
        public_key_pem: str,
        *,
        name: str | None = None,
        product_id: int | None = None,
    ) -> dict[str, Any]:
        """Put a device into the registry (see ``CloudBackend.register_device``)."""
        return await self.backend.register_device(
            device_id, public_key_pem, name=name, product_id=product_id
        )

    def device_endpoint(self, host: str) -> tuple[str, int] | None:
        """``(host, port)`` of the device endpoint, None before :meth:`serve_devices`."""
        if self.device_server is None:
            return None
        return host, self.device_server.port

    async def register_devices(self, batch: Iterable[tuple[str, str]]) -> list[str | None]:
        """Many devices in one transaction (see ``CloudBackend.register_devices``)."""
        return await self.backend.register_devices(batch)

    async def close(self) -> None:
        if self.device_server is not None:
            await self.device_server.close()
            self.device_server = None
        if self.server is not None:
            await self.server.close()
            self.server = None
        await self.db.close()


async def start_cloud(
    state_dir: Path | None,
    host: str,
    port: int,
    device_port: int,
    *,
    allow_remote: bool = False,
) -> CloudService:
    """The embedded cloud of ``run`` and ``fleet``, serving: REST API and device endpoint.

    One start-up for both commands, so both fail alike: a refused host or a port in use
    is a :class:`SimulatorError` naming the options that get round it, after the
    half-started service is closed again.
    """
    service = CloudService(state_dir)
    await service.open()
    try:
        await service.serve(host, port, allow_remote=allow_remote)
        await service.serve_devices(host, device_port)
    except ValueError as err:
        await service.close()
        raise SimulatorError(str(err)) from None
    except OSError as err:
        await service.close()
        raise SimulatorError(
            f"cannot start the cloud on {host} (REST {port}, devices "
            f"{device_port}): {err.strerror or err}; pass --cloud-port 0 "
            "--cloud-device-port 0, or --no-cloud"
        ) from None
    return service
