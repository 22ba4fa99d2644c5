"""Events: the dict the cloud publishes, its SSE frame, and one stream's subscription.

Events come from devices (through the device server) and from the cloud itself
(``spark/status``, claim confirmations). :meth:`CloudBackend.publish` hands each to every
subscriber; an :class:`EventStream` (one SSE connection) filters by visibility with the
owners *at publish time*, carried in the event, so no subscriber touches the database.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from softap_sim.cloud.policy import can_see
from softap_sim.cloud.principal import Principal
from softap_sim.cloud.views import Row, iso_time

log = logging.getLogger(__name__)

DEFAULT_EVENT_TTL_S = 60
#: events queued for one slow SSE client before its stream is closed
SSE_MAX_QUEUED = 1000

Subscriber = Callable[[dict[str, Any]], None]


def make_event(
    name: str,
    data: str | None,
    *,
    coreid: str,
    now: float,
    ttl: int = DEFAULT_EVENT_TTL_S,
    private: bool = True,
    owner_user_id: str | None = None,
    owner_customer_id: str | None = None,
    product_id: int | None = None,
) -> dict[str, Any]:
    """The event dict that ``CloudBackend.publish`` carries to every SSE subscriber.

    Shape::

        {"name": str,               # event name; CR/LF removed (one SSE line)
         "data": str | None,        # payload text as published
         "ttl": int,                # seconds (device default 60)
         "published_at": str,       # ISO 8601 UTC with milliseconds, "Z"
         "coreid": str,             # the publishing device id
         "private": bool,           # private events reach only the owner's streams
         "owner_user_id": str | None,      # owners *at publish time*: subscribers
         "owner_customer_id": str | None,  # filter on these, never on the database
         "product_id": int | None}

    Only ``data``, ``ttl``, ``published_at`` and ``coreid`` go on the wire.
    """
    return {
        "name": name.replace("\r", "").replace("\n", ""),
        "data": data,
        "ttl": int(ttl),
        "published_at": iso_time(now),
        "coreid": coreid,
        "private": bool(private),
        "owner_user_id": owner_user_id,
        "owner_customer_id": owner_customer_id,
        "product_id": product_id,
    }


def device_event(
    row: Row,
    name: str,
    data: str | None,
    *,
    now: float,
    ttl: int = DEFAULT_EVENT_TTL_S,
    private: bool = True,
) -> dict[str, Any]:
    """:func:`make_event` for a device row (owners and product filled in from it)."""
    return make_event(
        name,
        data,
        coreid=row["id"],
        now=now,
        ttl=ttl,
        private=private,
        owner_user_id=row["owner_user_id"],
        owner_customer_id=row["owner_customer_id"],
        product_id=row["product_id"],
    )


def encode_sse(event: Mapping[str, Any]) -> bytes:
    """One SSE frame; the JSON sits on a single ``data:`` line (particle-api-js)."""
    name = str(event.get("name", "")).replace("\r", "").replace("\n", "")
    payload = {
        "data": event.get("data"),
        "ttl": event.get("ttl", DEFAULT_EVENT_TTL_S),
        "published_at": event.get("published_at"),
        "coreid": event.get("coreid"),
    }
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    return f"event: {name}\ndata: {body}\n\n".encode()


class EventStream:
    """One SSE connection's subscription: a filter and a queue of encoded frames.

    Instances are the callables registered in ``backend.subscribers``; ``backend.publish``
    must be called on the event loop. A client that falls ``max_queued`` frames
    behind is disconnected (its queue is dropped) rather than silently losing events.

    A stream lives no longer than its token: the backend closes it when the token is
    revoked or deleted (with its customer or client), and it closes itself once the token
    has expired (``now``), before delivering anything more.
    """

    def __init__(
        self,
        principal: Principal,
        admin_products: frozenset[int],
        *,
        device_id: str | None = None,
        prefix: str | None = None,
        public: bool = False,
        max_queued: int = SSE_MAX_QUEUED,
        now: Callable[[], float] | None = None,
    ) -> None:
        self.principal = principal
        self.now = now
        self.admin_products = admin_products
        self.device_id = device_id
        self.prefix = prefix or None
        self.public = public
        self.max_queued = max_queued
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.closed = False

    def wants(self, event: Mapping[str, Any]) -> bool:
        if self.prefix is not None and not str(event.get("name", "")).startswith(self.prefix):
            return False
        if self.device_id is not None and event.get("coreid") != self.device_id:
            return False
        if self.public and not event.get("private", True):
            return True
        return can_see(
            self.principal,
            self.admin_products,
            owner_user_id=event.get("owner_user_id"),
            owner_customer_id=event.get("owner_customer_id"),
            product_id=event.get("product_id"),
        )

    def expired(self) -> bool:
        """The token's lifetime is over (never, without a clock or an expiry)."""
        expires_at = self.principal.expires_at
        return self.now is not None and expires_at is not None and self.now() >= expires_at

    def __call__(self, event: dict[str, Any]) -> None:
        if self.closed:
            return
        if self.expired():
            self.close()
            return
        if not self.wants(event):
            return
        if self.queue.qsize() >= self.max_queued:
            log.warning("cloud: an event stream fell %d events behind; closing it", self.max_queued)
            self.close()
            return
        self.queue.put_nowait(encode_sse(event))

    def close(self) -> None:
        """End the stream: drop what is queued, then the end marker."""
        if self.closed:
            return
        self.closed = True
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)


def close_event_streams(subscribers: Iterable[Subscriber]) -> None:
    """End every open SSE stream among ``subscribers`` (server shutdown)."""
    for subscriber in list(subscribers):
        if isinstance(subscriber, EventStream):
            subscriber.close()
