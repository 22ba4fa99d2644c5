"""JSON shapes of the REST replies (cloud-api.md §2, §6): rows in, dicts out."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

Row = sqlite3.Row | Mapping[str, Any]


def iso_time(ts: float | None) -> str | None:
    """Particle's timestamp form: ISO 8601, UTC, milliseconds, ``Z``."""
    if ts is None:
        return None
    stamp = datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def client_json(client: Mapping[str, Any], secret: str | None = None) -> dict[str, Any]:
    """The REST shape (§2): ``{name, type, id[, secret][, redirect_uri]}``."""
    out: dict[str, Any] = {"name": client["name"], "type": client["type"], "id": client["id"]}
    if secret is not None:
        out["secret"] = secret
    if client["type"] == "web":
        out["redirect_uri"] = client["redirect_uri"]
    return out


def functions_of(row: Row) -> list[str]:
    """The described function names stored with a device."""
    try:
        value = json.loads(row["functions"] or "[]")
    except json.JSONDecodeError:
        return []
    return [str(v) for v in value] if isinstance(value, list) else []


def variables_of(row: Row) -> dict[str, str]:
    """The described variables (name → REST type) stored with a device."""
    try:
        value = json.loads(row["variables"] or "{}")
    except json.JSONDecodeError:
        return {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def device_view(
    row: Row, online: bool, *, detail: bool = False, owner: str | None = None
) -> dict[str, Any]:
    """The device JSON of cloud-api.md §6.1.

    ``product_id`` is the platform id (6) for a developer device, as on Particle.
    ``detail=True`` (``GET /v1/devices/:id`` and the product routes) adds ``owner``,
    ``firmware_updates_enabled/forced`` and, for product devices, the product fields.
    """
    view: dict[str, Any] = {
        "id": row["id"],
        "name": row["name"],
        "last_ip_address": row["last_ip_address"],
        "last_heard": iso_time(row["last_heard"]),
        "last_handshake_at": iso_time(row["last_handshake_at"]),
        "product_id": row["product_id"] if row["product_id"] is not None else row["platform_id"],
        "online": online,
        "connected": online,
        "platform_id": row["platform_id"],
        "cellular": False,
        "notes": None,
        "functions": functions_of(row),
        "variables": variables_of(row),
        "status": "normal",
        "serial_number": None,
        "system_firmware_version": row["system_firmware_version"],
    }
    if detail:
        view["owner"] = owner
        view["firmware_updates_enabled"] = True
        view["firmware_updates_forced"] = False
        if row["product_id"] is not None:
            view.update(
                firmware_product_id=row["product_id"],
                development=False,
                quarantined=False,
                denied=False,
                groups=[],
                targeted_firmware_release_version=None,
            )
    return view
