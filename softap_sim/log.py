"""Logging helpers: named loggers, a NullHandler on the root, and secret redaction."""

from __future__ import annotations

import logging
import re

logging.getLogger("softap_sim").addHandler(logging.NullHandler())
logging.getLogger("firmware_model").addHandler(logging.NullHandler())

_PWD_VALUE = re.compile(rb'("(?:pwd|ek|key)"\s*:\s*")[^"]*')


def sanitize(name: str, body: bytes | None) -> bytes:
    """A request body with claim codes and (encrypted) secrets replaced by ``<redacted>``."""
    if not body:
        return b""
    if name == "set":
        from softap_sim.transcript import mask_claim_code

        return mask_claim_code(b"\n\n" + body)[2:]
    if name == "configure-ap":
        return _PWD_VALUE.sub(rb"\1<redacted>", body)
    return body
