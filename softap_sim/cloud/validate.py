"""Input validation: every value from the wire passes one of these before anything else.

Hostile input is ordinary input here, and a bad value is a Particle-shaped 400/404
(``{"error","error_description"}``) that changes nothing. The rules:

* **Text** must be valid Unicode that encodes to UTF-8: a JSON ``"\\ud800"`` escape (a lone
  surrogate) or a header byte that aiohttp decodes with ``surrogateescape`` is refused.
  Every field has a length cap.
* **Ids** are ASCII digits within SQLite's signed 64-bit INTEGER (``str.isdigit`` would
  accept ``²`` and ``٣``), or slugs; device ids are 24 ASCII hex digits.
* **Numbers** are ASCII digits within stated bounds.

Pure functions (no aiohttp): the models use them too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime

from softap_sim.cloud.errors import DeviceError, InvalidRequest, NotFound

#: SQLite's INTEGER is a signed 64-bit value
MAX_INT64 = 2**63 - 1
MAX_EMAIL_LENGTH = 254
MAX_NAME_LENGTH = 100
MAX_PASSWORD_LENGTH = 1024
MAX_SECRET_LENGTH = 256
MAX_TOKEN_LENGTH = 256
MAX_URI_LENGTH = 2048
MAX_SLUG_LENGTH = 63
#: tokens may be asked for at most ten years ahead
MAX_EXPIRES_IN_S = 10 * 365 * 86400

_DIGITS_RE = re.compile(r"\A[0-9]{1,19}\Z")
_SLUG_RE = re.compile(r"\A[a-z0-9][a-z0-9-]{0,62}\Z")
DEVICE_ID_RE = re.compile(r"\A[0-9a-f]{24}\Z")
_SECONDS_RE = re.compile(r"\A([0-9]{1,19})(?:\.0*)?\Z")


# ------------------------------------------------------------------------------------
# text
# ------------------------------------------------------------------------------------
def is_text(value: str) -> bool:
    """True when ``value`` encodes to UTF-8 (no lone surrogates)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def text(value: str | None, what: str, *, max_length: int, required: bool = False) -> str:
    """A parameter as valid text of at most ``max_length`` characters ("" when absent)."""
    if value is None or value == "":
        if required:
            raise InvalidRequest(f'The "{what}" parameter is required')
        return ""
    if len(value) > max_length:
        raise InvalidRequest(f'The "{what}" parameter is longer than {max_length} characters')
    if not is_text(value):
        raise InvalidRequest(f'The "{what}" parameter is not valid UTF-8 text')
    return value


def _printable(value: str) -> bool:
    return not any(ch.isspace() or not ch.isprintable() for ch in value)


def email(value: str | None, what: str = "email") -> str:
    """An e-mail (or any unique username): trimmed, lower-cased, no spaces or controls."""
    found = text(value, what, max_length=MAX_EMAIL_LENGTH + 64).strip().lower()
    if not found:
        raise InvalidRequest(f'The "{what}" parameter is required')
    if len(found) > MAX_EMAIL_LENGTH or not _printable(found):
        raise InvalidRequest(f'Invalid "{what}" parameter')
    return found


def password(value: str | None) -> str:
    found = text(value, "password", max_length=MAX_PASSWORD_LENGTH)
    if not found:
        raise InvalidRequest('The "password" parameter is required')
    return found


def name(value: str | None) -> str:
    found = text(value, "name", max_length=MAX_NAME_LENGTH + 64).strip()
    if not found:
        raise InvalidRequest('The "name" parameter is required')
    if len(found) > MAX_NAME_LENGTH:
        raise InvalidRequest(f'The "name" parameter is longer than {MAX_NAME_LENGTH} characters')
    if any(not ch.isprintable() for ch in found):
        raise InvalidRequest('The "name" parameter has control characters')
    return found


def flag(params: Mapping[str, str], key: str) -> bool:
    """A boolean parameter: absent/false/0/no or true/1/yes; anything else is a 400."""
    value = params.get(key, "").strip().lower()
    if value in ("", "false", "0", "no", "off"):
        return False
    if value in ("true", "1", "yes", "on"):
        return True
    raise InvalidRequest(f"{key} must be true or false")


# ------------------------------------------------------------------------------------
# ids and numbers
# ------------------------------------------------------------------------------------
def int64(value: str) -> int | None:
    """ASCII digits within a signed 64-bit INTEGER, else None."""
    if not _DIGITS_RE.match(value):
        return None
    number = int(value)
    return number if number <= MAX_INT64 else None


def product_ref(value: str) -> int | str:
    """``:productIdOrSlug``: a numeric id (ASCII digits, int64) or a slug; else 404."""
    number = int64(value)
    if number is not None:
        return number
    slug = value.lower()
    if len(slug) <= MAX_SLUG_LENGTH and _SLUG_RE.match(slug):
        return slug
    raise NotFound("Product not found")


def positive_int(query: Mapping[str, str], *names: str, default: int, maximum: int) -> int:
    """The first of ``names`` present, as 1..``maximum`` (larger is clamped); else 400."""
    for key in names:
        if key in query:
            number = int64(query[key].strip())
            if number is None or number < 1:
                raise InvalidRequest(f"{key} must be a positive integer")
            return min(number, maximum)
    return default


def device_ref(value: str) -> str:
    """``:deviceIdOrName`` as text (the lookup decides between id and name)."""
    return text(value, "device", max_length=MAX_NAME_LENGTH + 64)


def device_id(value: str | None) -> str | None:
    """24 ASCII hex digits (lower-cased), or None."""
    candidate = (value or "").strip().lower()
    return candidate if DEVICE_ID_RE.match(candidate) else None


def expiry(params: Mapping[str, str], now: float) -> tuple[int | None, float | None]:
    """``expires_in`` (seconds, 0 = never) or ``expires_at`` (ISO 8601), bounded."""
    raw_in = text(params.get("expires_in"), "expires_in", max_length=40).strip()
    raw_at = text(params.get("expires_at"), "expires_at", max_length=64).strip()
    if raw_in and raw_at:
        raise InvalidRequest("Send expires_in or expires_at, not both")
    if raw_in:
        whole = _SECONDS_RE.match(raw_in)  # "7776000" or "7776000.0"
        number = int64(whole.group(1)) if whole else None
        if number is None or number > MAX_EXPIRES_IN_S:
            raise InvalidRequest("Invalid expires_in parameter")
        return number, None
    if raw_at:
        try:
            when = datetime.fromisoformat(raw_at)
        except ValueError:
            raise InvalidRequest("Invalid expires_at parameter: use ISO 8601") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        try:
            ts = when.timestamp()
        except (OverflowError, OSError, ValueError):
            raise InvalidRequest("Invalid expires_at parameter") from None
        if ts <= now:
            raise InvalidRequest("expires_at is in the past")
        if ts - now > MAX_EXPIRES_IN_S:
            raise InvalidRequest("Invalid expires_at parameter")
        return None, ts
    return None, None


def function_argument(params: Mapping[str, str], max_bytes: int) -> str:
    """``arg`` or ``args`` (particle-api-js); both given must agree; ≤ ``max_bytes`` UTF-8."""
    arg, args = params.get("arg"), params.get("args")
    if arg is not None and args is not None and arg != args:
        raise DeviceError("Send the argument as arg or args, not both")
    value = arg if arg is not None else (args or "")
    if not is_text(value):
        raise DeviceError("The argument is not valid UTF-8 text")
    if len(value.encode("utf-8")) > max_bytes:
        raise DeviceError(
            f"The argument is longer than {max_bytes} bytes, the most a Photon function accepts"
        )
    return value
