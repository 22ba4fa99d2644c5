"""The control API seen from a client: where it is, and one JSON request to it.

``softap-sim ctl`` and ``softap-sim discover`` both find the control API the same way
(``--control URL``, else ``$SOFTAP_SIM_CONTROL``, else :data:`DEFAULT_CONTROL_URL`), so the
convention lives here rather than in either command. The client uses the standard library
only (``urllib``): the commands start quickly and need no event loop.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any

from softap_sim.errors import SimulatorError

DEFAULT_CONTROL_URL = "http://127.0.0.1:5610"
CONTROL_ENV = "SOFTAP_SIM_CONTROL"
DEVICE_ENV = "SOFTAP_SIM_DEVICE"
TIMEOUT_S = 10.0

#: API routes that are not about one device (never prefixed with a device id)
_API_PATHS = ("/v1/health", "/v1/openapi.json", "/v1/devices")


class ControlClientError(SimulatorError):
    """A request to the control API failed; the message is one line for a user."""


def control_url(explicit: str | None) -> str:
    """``explicit``, else ``$SOFTAP_SIM_CONTROL``, else the default; without a final ``/``."""
    url = explicit or os.environ.get(CONTROL_ENV) or DEFAULT_CONTROL_URL
    if not url.startswith(("http://", "https://")):
        raise ControlClientError(
            f"bad control URL {url!r}: use http://HOST:PORT, e.g. {DEFAULT_CONTROL_URL}"
        )
    return url.rstrip("/")


def device_path(device: str | None, path: str) -> str:
    """``/v1/state`` -> ``/v1/devices/ID/state`` for ``device`` (else ``$SOFTAP_SIM_DEVICE``).

    A fleet's control API serves each device under its id; a single emulator's API answers
    the short paths too, so no device means the short path.
    """
    device = device or os.environ.get(DEVICE_ENV)
    if not device or path.startswith(_API_PATHS):
        return path
    if len(device) != 24 or any(c not in "0123456789abcdefABCDEF" for c in device):
        raise ControlClientError(f"--device takes a device id (24 hex digits), got {device!r}")
    return f"/v1/devices/{device}{path.removeprefix('/v1')}"


def call(base: str, method: str, path: str, body: Any = None, *, error_json: bool = False) -> Any:
    """One request to ``base + path``; the decoded JSON reply.

    Raises :class:`ControlClientError` with a one-line reason. With ``error_json`` the JSON
    body of an error status is the reply (``/v1/health`` answers 503 with its report).
    """
    data = None if body is None else json.dumps(body).encode("utf-8")
    request = urllib.request.Request(base + path, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    request.add_header("Accept", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            raw = response.read()
    except urllib.error.HTTPError as err:
        try:
            raw = err.read()
        except OSError:
            raw = b""
        if not error_json:
            raise ControlClientError(_server_message(err, raw)) from None
        try:
            return json.loads(raw)
        except ValueError:
            raise ControlClientError(_server_message(err, raw)) from None
    except urllib.error.URLError as err:
        reason = err.reason
        hint = "is `softap-sim run` running? (its banner prints the control URL)"
        if isinstance(reason, ConnectionRefusedError):
            raise ControlClientError(f"cannot reach the control API at {base}: {hint}") from None
        raise ControlClientError(
            f"cannot reach the control API at {base} ({reason}): {hint}"
        ) from None
    except (TimeoutError, ConnectionError) as err:
        raise ControlClientError(f"the control API at {base} did not answer: {err}") from None
    except ValueError as err:  # e.g. a URL without http://
        raise ControlClientError(f"bad control URL {base!r}: {err}") from None
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        raise ControlClientError(
            f"{base}{path} did not answer JSON: is {base} the control API?"
        ) from None


def _server_message(err: urllib.error.HTTPError, raw: bytes) -> str:
    """The ``message`` of the API's JSON error body, else the status line."""
    try:
        payload = json.loads(raw)
        message = payload["message"]
    except (ValueError, KeyError, TypeError):
        return f"HTTP {err.code} {err.reason} from {err.url}"
    return str(message)


__all__ = [
    "CONTROL_ENV",
    "DEFAULT_CONTROL_URL",
    "DEVICE_ENV",
    "TIMEOUT_S",
    "ControlClientError",
    "call",
    "control_url",
    "device_path",
]
