"""The cloud as the CLI and the emulator run it: database + REST server + registry.

``CloudService(state_dir)`` opens ``<state_dir>/cloud.sqlite3`` (or memory), creates the
default product and clients on first start (their secret is returned once and written
to a 0600 file), registers devices and serves the REST API.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from softap_sim.cloud import auth, devices
from softap_sim.cloud.app import CloudServer
from softap_sim.cloud.core import Cloud
from softap_sim.cloud.db import Database
from softap_sim.state import atomic_write

DB_FILE = "cloud.sqlite3"
CREDENTIALS_FILE = "cloud-credentials.json"


class CloudService:
    def __init__(self, state_dir: Path | None, *, now: Callable[[], float] = time.time) -> None:
        self.state_dir = state_dir
        self.db = Database(state_dir / DB_FILE if state_dir is not None else None)
        self.cloud = Cloud(self.db, now=now)
        self.server: CloudServer | None = None
        #: plain credentials, only on the start that created them
        self.created_credentials: dict[str, Any] | None = None

    @property
    def credentials_path(self) -> Path | None:
        return self.state_dir / CREDENTIALS_FILE if self.state_dir is not None else None

    async def open(self) -> None:
        await self.db.open()
        now = self.cloud.now()
        created = await self.db.run(lambda conn: auth.bootstrap(conn, now))
        if created is not None:
            self.created_credentials = created
            path = self.credentials_path
            if path is not None:
                data = json.dumps(created, indent=2, sort_keys=True).encode() + b"\n"
                atomic_write(path, data, 0o600)

    async def serve(
        self, host: str = "127.0.0.1", port: int = 0, *, allow_remote: bool = False
    ) -> CloudServer:
        self.server = CloudServer(self.cloud, host, port, allow_remote=allow_remote)
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
        now = self.cloud.now()
        return await self.db.run(
            lambda conn: devices.register_device(
                conn,
                device_id=device_id.lower(),
                public_key_pem=public_key_pem,
                name=name,
                product_id=product_id,
                now=now,
            )
        )

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()
            self.server = None
        await self.db.close()
