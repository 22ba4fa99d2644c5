"""The cloud's shared core: the ``Cloud`` object, request parsing and authentication.

Route modules (``auth.py``, ``devices.py``) get the :class:`Cloud` from the app
(``request.app[CLOUD_KEY]``), parse parameters with :func:`read_params`, identify the
caller with :meth:`Cloud.authenticate` and run their SQL through ``cloud.db.run``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qsl

from aiohttp import web

from softap_sim.cloud import hashing
from softap_sim.cloud.db import Database
from softap_sim.cloud.errors import CloudError, InvalidRequest, InvalidToken

#: token lifetimes (cloud-api.md §4): 90 days, refresh tokens 14 days
ACCESS_TOKEN_LIFETIME_S = 7_776_000
REFRESH_TOKEN_LIFETIME_S = 1_209_600
CLAIM_CODE_LIFETIME_S = 3600
MAX_BODY_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a bearer token belongs to, and what it may do."""

    kind: str  # "user" | "customer" | "client"
    token_hash: str
    client_id: str
    user_id: str | None = None
    customer_id: str | None = None
    product_id: int | None = None
    scopes: frozenset[str] = frozenset()
    expires_at: float | None = None

    @property
    def is_customer(self) -> bool:
        return self.kind == "customer"


class DeviceLink(Protocol):
    """How the REST API reaches devices; the device-to-cloud link (issue 5) implements it."""

    def is_online(self, device_id: str) -> bool: ...

    async def call_function(self, device_id: str, name: str, arg: str, timeout_s: float) -> int: ...

    async def get_variable(self, device_id: str, name: str, timeout_s: float) -> Any: ...


class OfflineLink:
    """No device link yet: every device is honestly reported offline."""

    def is_online(self, device_id: str) -> bool:
        return False

    async def call_function(self, device_id: str, name: str, arg: str, timeout_s: float) -> int:
        from softap_sim.cloud.errors import DeviceOffline

        raise DeviceOffline()

    async def get_variable(self, device_id: str, name: str, timeout_s: float) -> Any:
        from softap_sim.cloud.errors import DeviceOffline

        raise DeviceOffline()


@dataclass(eq=False)
class Cloud:
    """Everything a handler needs: the database, the clock, the device link, events."""

    db: Database
    now: Callable[[], float] = time.time
    link: DeviceLink = field(default_factory=OfflineLink)
    #: SSE subscribers: each gets the event dict of ``devices.make_event``
    subscribers: set[Callable[[dict[str, Any]], None]] = field(default_factory=set)
    call_timeout_s: float = 30.0

    async def authenticate(self, request: web.Request, params: Mapping[str, str]) -> Principal:
        """The caller's principal; exactly one token source is allowed (cloud-api.md §1)."""
        sources = []
        header = request.headers.get("Authorization")
        if header is not None:
            scheme, _, value = header.partition(" ")
            if scheme.lower() == "bearer" and value.strip():
                sources.append(value.strip())
            elif scheme.lower() != "basic":  # an empty Bearer lands here too
                raise InvalidRequest("Malformed auth header")
        if "access_token" in request.query:
            sources.append(request.query["access_token"])
        if "access_token" in params and request.method in ("POST", "PUT", "DELETE"):
            sources.append(params["access_token"])
        if not sources:
            raise InvalidRequest("The access token was not found", status=400)
        if len(sources) > 1:
            # the OAuth library's wording, double space included (lib/authorise.js)
            raise InvalidRequest(
                "Only one method may be used to authenticate at a time (Auth header,  GET or POST)."
            )
        return await self.principal_for(sources[0])

    async def principal_for(self, token: str) -> Principal:
        token_hash = hashing.digest(token)
        now = self.now()

        def lookup(conn: Any) -> Any:
            return conn.execute(
                "SELECT * FROM tokens WHERE hash = ? AND kind = 'access'", (token_hash,)
            ).fetchone()

        row = await self.db.run(lookup)
        if row is None or row["revoked"]:
            raise InvalidToken()
        if row["expires_at"] is not None and row["expires_at"] <= now:
            raise InvalidToken("The access token provided has expired.")
        if row["customer_id"]:
            kind = "customer"
        elif row["user_id"]:
            kind = "user"
        else:
            kind = "client"
        return Principal(
            kind,
            token_hash,
            row["client_id"],
            row["user_id"],
            row["customer_id"],
            row["product_id"],
            frozenset(row["scope"].split()),
            row["expires_at"],
        )

    def publish(self, event: dict[str, Any]) -> None:
        """Hand an event to every SSE subscriber (they filter by visibility)."""
        for subscriber in list(self.subscribers):
            subscriber(event)


CLOUD_KEY = web.AppKey("cloud", Cloud)


def cloud_of(request: web.Request) -> Cloud:
    return request.app[CLOUD_KEY]


async def read_params(request: web.Request) -> dict[str, str]:
    """Form or JSON body (objects only) merged over nothing; values become strings.

    Malformed JSON, a non-object JSON body or an oversized body is ``invalid_request``.
    """
    if request.method in ("GET", "HEAD") or not request.can_read_body:
        return {}
    raw = await request.content.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise InvalidRequest("Request body too large", status=413)
    ctype = request.content_type
    if ctype == "application/json":
        try:
            data = json.loads(raw or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise InvalidRequest("Malformed JSON body") from None
        if not isinstance(data, dict):
            raise InvalidRequest("The JSON body must be an object")
        return {str(k): _as_text(v) for k, v in data.items()}
    if ctype in ("application/x-www-form-urlencoded", "", "application/octet-stream"):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRequest("The form body is not UTF-8") from None
        return dict(parse_qsl(text, keep_blank_values=True))
    raise InvalidRequest(f"Unsupported content type {ctype!r}: send a form or JSON", status=415)


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value) if isinstance(value, list | dict) else str(value)


def json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.json_response(data, status=status, headers=headers)


def error_response(err: CloudError) -> web.Response:
    return web.json_response(err.body(), status=err.status, headers=err.headers)


def find_product(conn: Any, id_or_slug: str) -> Any:
    """``:productIdOrSlug``: a numeric id or a slug (case-insensitive); the row or None."""
    if id_or_slug.isdigit():
        row = conn.execute("SELECT * FROM products WHERE id = ?", (int(id_or_slug),)).fetchone()
        if row is not None:
            return row
    return conn.execute("SELECT * FROM products WHERE slug = ?", (id_or_slug,)).fetchone()
