"""The cloud's models: plain functions over a ``sqlite3.Connection`` (moto's models).

Each runs inside a transaction of :class:`~softap_sim.cloud.backend.CloudBackend`, takes
the time as ``now``, and raises :class:`~softap_sim.cloud.errors.CloudError` subclasses.
"""

from __future__ import annotations

from softap_sim.cloud.models import accounts, claims, clients, customers, devices, seed, tokens

__all__ = ["accounts", "claims", "clients", "customers", "devices", "seed", "tokens"]
