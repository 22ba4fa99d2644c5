"""Sans-IO codecs for the device's two SoftAP transports: bytes in, requests out."""

from __future__ import annotations

from softap_sim.protocol.http import HttpConnection, HttpRequest
from softap_sim.protocol.tcp import TcpConnection, TcpRequest, encode_tcp_reply

__all__ = ["HttpConnection", "HttpRequest", "TcpConnection", "TcpRequest", "encode_tcp_reply"]
