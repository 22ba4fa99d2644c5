"""Logging helpers: named loggers, a NullHandler on the root, and secret redaction."""

from __future__ import annotations

import logging
import re

logging.getLogger("softap_sim").addHandler(logging.NullHandler())
logging.getLogger("firmware_model").addHandler(logging.NullHandler())

_SET_VALUE = re.compile(rb'("v"\s*:\s*")[^"]*')
_PWD_VALUE = re.compile(rb'("(?:pwd|ek|key)"\s*:\s*")[^"]*')


def sanitize(name: str, body: bytes | None) -> bytes:
    """A request body with claim codes and (encrypted) secrets replaced by ``<redacted>``."""
    if not body:
        return b""
    if name == "set":
        return _SET_VALUE.sub(rb"\1<redacted>", body)
    if name == "configure-ap":
        return _PWD_VALUE.sub(rb"\1<redacted>", body)
    return body
