"""Sans-IO codec of the *client* side of both SoftAP transports: requests out, replies in.

:mod:`softap_sim.protocol.tcp` and :mod:`softap_sim.protocol.http` are the device's side;
this package is what a setup app (the pytest plugin's clients, ``softap-sim replay``, the
benchmarks, the tests' wire helpers) needs to talk to one. It never touches a socket, so
the blocking and the async clients share every rule here and differ only in how they
move bytes.

* :mod:`~softap_sim.protocol.client.messages`: request bytes, the TCP reply;
* :mod:`~softap_sim.protocol.client.http_reply`: the incremental HTTP reply parser
  (``Content-Length``, chunked, ended by the close; case-insensitive header names);
* :mod:`~softap_sim.protocol.client.setup_steps`: the provisioning steps;
* :mod:`~softap_sim.protocol.client.errors`: :class:`SoftapClientError` and
  :class:`ChunkedEncodingError` (broken chunking, one error type wherever it is parsed).
"""

from __future__ import annotations

from softap_sim.protocol.client.errors import ChunkedEncodingError, SoftapClientError
from softap_sim.protocol.client.http_reply import (
    HttpReply,
    HttpReplyHead,
    HttpReplyParser,
    decode_chunked,
    decode_http_reply,
    http_response_end,
    parse_chunk_size,
    parse_http_reply,
    parse_reply_head,
)
from softap_sim.protocol.client.messages import (
    Body,
    Request,
    body_bytes,
    decode_tcp_reply,
    encode_http_request,
    encode_tcp_request,
)
from softap_sim.protocol.client.setup_steps import (
    DEVICE_ID,
    PUBLIC_KEY,
    SCAN_AP,
    DeviceId,
    configure_ap,
    connect_ap,
    decode_device_id,
    decode_public_key,
    decode_scan,
    expect_ok,
    provision_steps,
    set_claim_code,
)

__all__ = [
    "DEVICE_ID",
    "PUBLIC_KEY",
    "SCAN_AP",
    "Body",
    "ChunkedEncodingError",
    "DeviceId",
    "HttpReply",
    "HttpReplyHead",
    "HttpReplyParser",
    "Request",
    "SoftapClientError",
    "body_bytes",
    "configure_ap",
    "connect_ap",
    "decode_chunked",
    "decode_device_id",
    "decode_http_reply",
    "decode_public_key",
    "decode_scan",
    "decode_tcp_reply",
    "encode_http_request",
    "encode_tcp_request",
    "expect_ok",
    "http_response_end",
    "parse_chunk_size",
    "parse_http_reply",
    "parse_reply_head",
    "provision_steps",
    "set_claim_code",
]
