"""Finding emulated devices by DNS-SD: resolved records as device-list entries.

The records (:mod:`softap_sim.protocol.dnssd`) carry what a discovery client needs; this
module reads them into the same :class:`~softap_sim.registry.DeviceInfo` the control API's
device list serves, so ``softap-sim discover`` prints both sources alike. The browsing
itself is :class:`softap_sim.transports.mdns_browser.ServiceBrowser`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from softap_sim.protocol.dnssd import (
    LISTENING,
    LISTENING_TYPE,
    SERVICE_TYPES,
    instance_of,
    port_from_txt,
)
from softap_sim.registry import SOURCE_MDNS, DeviceInfo
from softap_sim.transports.mdns_browser import ServiceBrowser


def device_from_service(
    service_type: str,
    name: str,
    txt: Mapping[str, str],
    addresses: Sequence[str],
    port: int | None,
) -> DeviceInfo:
    """A :class:`DeviceInfo` from one resolved record (TXT keys as in protocol.dnssd)."""
    listening = service_type == LISTENING_TYPE
    state = txt.get("state") or (LISTENING if listening else "")
    return DeviceInfo(
        device_id=txt.get("id") or instance_of(service_type, name),
        ssid=txt.get("ssid", ""),
        firmware=txt.get("fw", ""),
        state=state,
        claimed=txt.get("claimed") == "1",
        host=addresses[0] if addresses else None,
        tcp_port=port_from_txt(txt.get("tcp")) or (port if listening else None),
        http_port=port_from_txt(txt.get("http")),
        ap_up=True if listening else None,
        control_url=txt.get("control") or None,
        scenario=txt.get("scenario") or None,
        record=name,
        source=SOURCE_MDNS,
    )


class Browser(ServiceBrowser[DeviceInfo]):
    """Watches both service types; :attr:`items` maps record names to devices.

    ``async with Browser(interfaces=["127.0.0.1"]) as browser:`` then
    ``await browser.wait_for(lambda devices: ..., timeout_s=10)``.
    """

    def __init__(
        self,
        *,
        interfaces: Sequence[str] | None = None,
        service_types: Sequence[str] = SERVICE_TYPES,
    ) -> None:
        super().__init__(device_from_service, interfaces=interfaces, service_types=service_types)


async def browse(
    timeout_s: float = 3.0, *, interfaces: Sequence[str] | None = None
) -> list[DeviceInfo]:
    """Browse both service types for ``timeout_s`` seconds; what was found, sorted."""
    async with Browser(interfaces=interfaces) as browser:
        await asyncio.sleep(timeout_s)  # the browse window itself, not a synchronisation
        devices = browser.items
    return sorted(devices.values(), key=lambda d: (d.device_id, d.record or ""))


__all__ = ["Browser", "browse", "device_from_service"]
