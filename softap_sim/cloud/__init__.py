"""The embedded local cloud: the Particle REST subset and the Photon device endpoint.

Layout (moto's split, house-style.md §5)::

    backend.py            CloudBackend: verb methods, the only code that touches the database
      backend_accounts.py   grants, OAuth clients, customers, access tokens
      backend_devices.py    registry, sessions, claim codes, ownership, calls
    models/               plain functions over a sqlite3 connection (accounts, clients,
                          customers, tokens, devices, claims, seed)
    db.py                 SQLite (WAL) behind one worker thread
    policy.py             scopes, grants, administration and visibility rules (pure)
    validate.py           every value from the wire is checked here (pure)
    params.py             request bodies, client credentials, the bearer token
    handlers/             aiohttp handlers: parse → one backend verb → render
    routes.py             the one route table
    views.py              reply JSON shapes
    events.py             event dicts, SSE frames, stream subscriptions
    app.py                the aiohttp application, JSON errors, the REST server
    device_server.py      the Photon endpoint (TCP 5683) and the DeviceLink
      device_session.py     one device connection
      device_exchange.py    what the cloud sends a device, the replies it awaits
      device_subscriptions.py  which published events a device gets
    service.py            CloudService: backend + REST + device server, as run by the CLI

The cloud imports nothing from ``firmware_model``.
"""

from __future__ import annotations
