"""Small network helpers shared by the servers."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import struct


def is_loopback(host: str) -> bool:
    """Whether ``host`` only reaches this machine (the default for every server here)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def reset_transport(transport: asyncio.Transport) -> None:
    """Close with an RST (SO_LINGER 0): the client sees ECONNRESET, not a clean end."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
