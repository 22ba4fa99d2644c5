"""The state directory: the emulated DCT and the device key, written atomically.

Layout: ``device.json`` (identity, stored networks, claim code, claimed flag) and
``device_key.pem`` (the RSA private key, mode 0600). Every write goes to a temporary
file in the same directory, is fsynced, renamed over the old file and the directory is
fsynced, so a kill -9 at any moment leaves either the old or the new file.
"""

from __future__ import annotations

import json
import logging
import os
import random
from pathlib import Path

from firmware_model import Dct, DctFormatError, DeviceIdentity, DeviceKey
from firmware_model.eras import ERAS, FirmwareEra
from softap_sim.atomic import atomic_write, remove_stale_temporaries
from softap_sim.errors import StateError

log = logging.getLogger(__name__)

DCT_FILE = "device.json"
KEY_FILE = "device_key.pem"
#: the files written with ``atomic_write`` (their stale temporaries are removed on start)
STATE_FILES = (DCT_FILE, KEY_FILE)


class StateStore:
    """Loads or creates a device's persistent state in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @property
    def dct_path(self) -> Path:
        return self.directory / DCT_FILE

    @property
    def key_path(self) -> Path:
        return self.directory / KEY_FILE

    def _ensure_dir(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StateError(
                f"cannot create state directory {self.directory}: {err.strerror}; "
                "choose another with --state-dir"
            ) from None
        if not os.access(self.directory, os.R_OK | os.W_OK | os.X_OK):
            raise StateError(
                f"state directory {self.directory} is not readable and writable; "
                "fix its permissions or choose another with --state-dir"
            )
        self.remove_stale_temporaries()

    def remove_stale_temporaries(self) -> list[Path]:
        """Remove ``.device.json.*.tmp``/``.device_key.pem.*.tmp`` left by a crash.

        A write interrupted by ``kill -9`` leaves its temporary (Wi-Fi passwords, the
        claim code, the key) next to the real file; only those exact names go.
        """
        try:
            return remove_stale_temporaries(self.directory, STATE_FILES)
        except OSError as err:
            raise StateError(
                f"cannot clean up the state directory {self.directory}: {err.strerror}"
            ) from None

    def load_or_create(
        self,
        *,
        rng: random.Random,
        era: FirmwareEra = FirmwareEra.CURRENT,
        ssid_prefix: str = "Photon",
        key_bits: int = 1024,
    ) -> tuple[Dct, DeviceKey, bool]:
        """Returns ``(dct, key, created)``; a new device is made on first start."""
        self._ensure_dir()
        dct_exists = self.dct_path.exists()
        key_exists = self.key_path.exists()
        if dct_exists != key_exists:
            missing = self.key_path if dct_exists else self.dct_path
            raise StateError(
                f"{missing} is missing but the rest of the device state exists in "
                f"{self.directory}; restore it or remove the directory to start afresh"
            )
        if dct_exists:
            return self._load(), self._load_key(), False
        identity = DeviceIdentity.generate(
            rng, code_length=ERAS[era].device_code_length, ssid_prefix=ssid_prefix
        )
        dct = Dct(identity)
        key = DeviceKey.generate(key_bits)
        atomic_write(self.key_path, key.to_pem(), 0o600)
        self.save(dct)
        log.info("created new device %s in %s", identity.device_id_hex, self.directory)
        return dct, key, True

    def _load(self) -> Dct:
        path = self.dct_path
        try:
            raw = path.read_bytes()
        except OSError as err:
            raise StateError(f"cannot read {path}: {err.strerror}") from None
        try:
            return Dct.from_json(json.loads(raw))
        except (ValueError, DctFormatError) as err:
            raise StateError(
                f"{path} is corrupt or not a softap-sim state file ({err}); "
                "move it away to create a new device"
            ) from None

    def _load_key(self) -> DeviceKey:
        path = self.key_path
        try:
            pem = path.read_bytes()
        except OSError as err:
            raise StateError(f"cannot read {path}: {err.strerror}") from None
        try:
            return DeviceKey.from_pem(pem, trusted=True)
        except DctFormatError as err:
            raise StateError(f"{path}: {err}; move it away to create a new device") from None

    def save(self, dct: Dct) -> None:
        data = json.dumps(dct.to_json(), indent=1, sort_keys=True).encode()
        try:
            atomic_write(self.dct_path, data, 0o600)
        except OSError as err:
            raise StateError(f"cannot write {self.dct_path}: {err.strerror}") from None
