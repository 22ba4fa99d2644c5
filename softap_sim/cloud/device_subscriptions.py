"""Which published events a connected device gets (cloud-api.md §8.4). Pure, no I/O.

A device subscribes with GET ``e`` ‖ prefix, ``?u`` for MY_DEVICES. The session records
them here; the device server asks :meth:`Subscriptions.matches` for every published event
(the cheap check, names only) and :meth:`Subscriptions.wants` once it has the owners.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: subscriptions kept per device (Device OS allows 4 app handlers; a hostile peer more)
MAX_SUBSCRIPTIONS = 32
#: the firmware's own subscriptions: the cloud answers them itself, nothing is routed
SYSTEM_PREFIXES = ("spark", "particle")
_SYSTEM_NAMES = ("spark/", "particle/")


class Subscriptions:
    """One device's subscriptions: ``items`` holds (prefix, MY_DEVICES only), in order."""

    def __init__(self) -> None:
        self.items: list[tuple[str, bool]] = []

    def add(self, prefix: str, mine: bool) -> bool:
        """Record one; True when it is a new application subscription (route events)."""
        if (prefix, mine) in self.items or len(self.items) >= MAX_SUBSCRIPTIONS:
            return False
        self.items.append((prefix, mine))
        return prefix not in SYSTEM_PREFIXES

    def matches(self, name: str) -> bool:
        """An application subscription's prefix matches (the cheap first check)."""
        if name.startswith(_SYSTEM_NAMES):
            return False
        return any(
            prefix not in SYSTEM_PREFIXES and name.startswith(prefix)
            for prefix, _mine in self.items
        )

    def wants(
        self, event: Mapping[str, Any], owners: Mapping[str, Any], device_id: str | None
    ) -> bool:
        """Whether one of the subscriptions of device ``device_id`` takes this event.

        ``owners``: the device's row (``owner_user_id``, ``owner_customer_id``) now.
        ``MY_DEVICES`` (``?u``): events of devices with the same owner, and the owner's
        own publishes; otherwise also every public event. System names (``spark/``,
        ``particle/``) are the cloud's to send, never routed between devices, and a
        device does not get its own events back.
        """
        name = str(event.get("name", ""))
        if event.get("coreid") == device_id:
            return False
        user, customer = owners.get("owner_user_id"), owners.get("owner_customer_id")
        same_owner = (user is not None and event.get("owner_user_id") == user) or (
            customer is not None and event.get("owner_customer_id") == customer
        )
        for prefix, mine in self.items:
            if prefix in SYSTEM_PREFIXES or not name.startswith(prefix):
                continue
            if same_owner or (not mine and not event.get("private", True)):
                return True
        return False
