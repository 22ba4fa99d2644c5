"""aiohttp handlers: parse (``params``/``validate``) → one backend verb → render (``views``).

No handler touches the database or holds business rules; ``routes.py`` mounts them.
"""

from __future__ import annotations
