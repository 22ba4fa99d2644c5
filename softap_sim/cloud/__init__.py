"""The embedded local cloud: the Particle REST subset on SQLite (cloud-api.md).

Layout follows moto's split (house-style.md §5): ``db.py`` (SQLite, off the event
loop), ``secrets.py`` (hashing), ``errors.py`` (every error as JSON with its status),
``principal.py`` (who is calling), ``auth.py`` / ``devices.py`` (models + handlers per
area), ``app.py`` (one route table, the server object).
"""

from __future__ import annotations
