"""Helpers for tests that use softap-sim: what the pytest plugin's fixtures hand out.

The fixtures themselves live in :mod:`softap_sim.pytest_plugin` (loaded by pytest through
its entry point); import the types from here::

    from softap_sim.testing import SoftapClient, SoftapCloud, SoftapDeviceFactory

* :mod:`~softap_sim.testing.clients`: :class:`SoftapClient` / :class:`SoftapSyncClient`,
  tiny clients of both SoftAP transports (socket I/O over :mod:`softap_sim.protocol.client`);
* :mod:`~softap_sim.testing.cloud`: :class:`SoftapCloud`, the local cloud of one test;
* :mod:`~softap_sim.testing.factories`: the device factories' types and config building;
* :mod:`~softap_sim.testing.marker`: ``@pytest.mark.softap``'s validated settings;
* :mod:`~softap_sim.testing.leaks`: the leak check of emulators a test never closed.
"""

from __future__ import annotations

from softap_sim.protocol.client import ChunkedEncodingError, SoftapClientError
from softap_sim.testing.clients import SoftapClient, SoftapSyncClient, SoftapTarget
from softap_sim.testing.cloud import CloudCustomer, CloudProduct, OAuthClient, SoftapCloud
from softap_sim.testing.factories import (
    ListenAddress,
    SoftapDeviceFactory,
    SoftapSyncDeviceFactory,
)
from softap_sim.testing.marker import SoftapSettings

__all__ = [
    "ChunkedEncodingError",
    "CloudCustomer",
    "CloudProduct",
    "ListenAddress",
    "OAuthClient",
    "SoftapClient",
    "SoftapClientError",
    "SoftapCloud",
    "SoftapDeviceFactory",
    "SoftapSettings",
    "SoftapSyncClient",
    "SoftapSyncDeviceFactory",
    "SoftapTarget",
]
