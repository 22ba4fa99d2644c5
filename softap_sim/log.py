"""Logging helpers: named loggers, a NullHandler on the root, and secret redaction."""

from __future__ import annotations

import logging

logging.getLogger("softap_sim").addHandler(logging.NullHandler())
logging.getLogger("firmware_model").addHandler(logging.NullHandler())


def sanitize(name: str, body: bytes | None) -> bytes:
    """A request body as logged: claim codes and (encrypted) secrets masked with ``*``.

    ``body`` is the body the device parses (the transport's framing already removed), so
    it is masked as it stands, from the device's own jsmn tokens: no search for the end
    of a head that a body containing ``\r\n\r\n`` could fool.
    """
    if not body:
        return b""
    from softap_sim.transcript import mask_body, redact_secrets

    if name == "set":
        return mask_body(body)
    if name == "configure-ap":
        return redact_secrets(body)
    return body
