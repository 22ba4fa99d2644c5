"""Request parsing: bodies, client credentials and the bearer token of a request.

* **Bodies** are form-encoded or a JSON object (at most :data:`MAX_BODY_BYTES`); JSON nested
  too deep or with an integer literal beyond Python's digit limit is malformed, not a 500;
  every key and value must be valid UTF-8 text (:func:`validate.is_text`).
* Unknown parameters are kept and ignored by the handlers, as the real API does.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from softap_sim.cloud.errors import InvalidRequest
from softap_sim.cloud.validate import is_text, text

MAX_BODY_BYTES = 64 * 1024
#: a JSON body nested deeper than this is malformed (no route takes nested values)
MAX_JSON_DEPTH = 32
_NESTING_RE = re.compile(rb"[\[{]")


# ------------------------------------------------------------------------------------
# bodies
# ------------------------------------------------------------------------------------
async def read_params(request: web.Request) -> dict[str, str]:
    """Form or JSON body (objects only); values become strings (unknown keys are kept
    and ignored by the handlers).

    Malformed JSON, a non-object JSON body, text that is not UTF-8 or an oversized body
    is ``invalid_request``; another content type is 415.
    """
    if request.method in ("GET", "HEAD") or not request.can_read_body:
        return {}
    try:
        raw = await request.content.read(MAX_BODY_BYTES + 1)
    except (RequestPayloadError, HttpProcessingError):  # e.g. a corrupt gzip body
        raise InvalidRequest("The request body cannot be read (bad Content-Encoding?)") from None
    if len(raw) > MAX_BODY_BYTES:
        raise InvalidRequest("Request body too large", status=413)
    ctype = request.content_type
    if ctype == "application/json":
        return _json_params(raw)
    if ctype in ("application/x-www-form-urlencoded", "", "application/octet-stream"):
        try:
            body = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRequest("The form body is not UTF-8") from None
        # percent-escapes that are not UTF-8 become U+FFFD (parse_qsl's errors="replace")
        return dict(parse_qsl(body, keep_blank_values=True))
    raise InvalidRequest(
        f"Unsupported content type {text(ctype, 'Content-Type', max_length=100)!r}: "
        "send a form or JSON",
        status=415,
    )


def _json_params(raw: bytes) -> dict[str, str]:
    if _too_deep(raw):
        raise InvalidRequest("Malformed JSON body: nested too deeply")
    try:
        data = json.loads(raw or b"{}")
    except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError, digit limit
        raise InvalidRequest("Malformed JSON body") from None
    if not isinstance(data, dict):
        raise InvalidRequest("The JSON body must be an object")
    out: dict[str, str] = {}
    for key, value in data.items():
        rendered = _as_text(value)
        if not is_text(key) or not is_text(rendered):
            raise InvalidRequest("The JSON body is not valid UTF-8 text (a lone surrogate?)")
        out[key] = rendered
    return out


def _too_deep(raw: bytes) -> bool:
    """A cheap upper bound: more opening brackets than the depth limit may be nesting."""
    if len(_NESTING_RE.findall(raw, 0, 4096)) <= MAX_JSON_DEPTH:
        return False
    depth = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return True
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return False


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


# ------------------------------------------------------------------------------------
# credentials
# ------------------------------------------------------------------------------------
def basic_credentials(request: web.Request) -> tuple[str, str] | None:
    """``Authorization: Basic`` as (name, password), or None (as the ``basic-auth`` module)."""
    header = request.headers.get("Authorization")
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    if ":" not in decoded:
        return None
    user, _, secret = decoded.partition(":")
    return user, secret


def client_credentials(
    request: web.Request, params: Mapping[str, str]
) -> tuple[str | None, str | None]:
    """Client id and secret: HTTP Basic wins over the body (``lib/grant.js``); empty → None.

    The values are checked by ``CloudBackend.authenticate_client`` (id pattern, secret
    length and encoding), so hostile ones end as ``invalid_client``.
    """
    basic = basic_credentials(request)
    if basic is not None:
        return basic[0] or None, basic[1] or None
    return params.get("client_id") or None, params.get("client_secret") or None


def bearer_token(request: web.Request, params: Mapping[str, str]) -> str:
    """The one access token of the request; exactly one source is allowed (cloud-api.md §1).

    A token that is not text or is longer than any token we issue cannot match: it is
    refused here as ``invalid_token`` by the caller (returned as-is, checked by length).
    """
    sources = []
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            sources.append(value.strip())
        elif scheme.lower() != "basic":  # an empty Bearer lands here too
            raise InvalidRequest("Malformed auth header")
    if "access_token" in request.query:
        sources.append(request.query["access_token"])
    if "access_token" in params and request.method in ("POST", "PUT", "DELETE"):
        sources.append(params["access_token"])
    if not sources:
        raise InvalidRequest("The access token was not found", status=400)
    if len(sources) > 1:
        # the OAuth library's wording, double space included (lib/authorise.js)
        raise InvalidRequest(
            "Only one method may be used to authenticate at a time (Auth header,  GET or POST)."
        )
    return sources[0]
