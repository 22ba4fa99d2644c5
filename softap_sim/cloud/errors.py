"""Cloud errors: each carries its HTTP status and renders to the exact JSON body.

OAuth-style errors (token endpoint, authentication) are exactly
``{"error","error_description"}`` (cloud-api.md §4); device errors follow the
spark-server shapes (§6.4).
"""

from __future__ import annotations

from typing import Any

from softap_sim.errors import SimulatorError


class CloudError(SimulatorError):
    """Base of every error the REST API answers."""

    status = 400
    code = "invalid_request"

    def __init__(
        self, description: str, *, status: int | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(description)
        self.description = description
        if status is not None:
            self.status = status
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "error_description": self.description}


class InvalidRequest(CloudError):
    code = "invalid_request"


class InvalidClient(CloudError):
    """Particle's fork answers 400 (not 401) with a Basic challenge (§4)."""

    code = "invalid_client"

    def __init__(self, description: str = "Client credentials are invalid") -> None:
        super().__init__(
            description, status=400, headers={"WWW-Authenticate": 'Basic realm="Service"'}
        )


class InvalidGrant(CloudError):
    code = "invalid_grant"


class InvalidScope(CloudError):
    code = "invalid_scope"


class UnsupportedGrantType(CloudError):
    code = "unsupported_grant_type"


class InvalidToken(CloudError):
    code = "invalid_token"
    status = 401

    def __init__(self, description: str = "The access token provided is invalid.") -> None:
        super().__init__(description)


class Forbidden(CloudError):
    code = "forbidden"
    status = 403


class NotFound(CloudError):
    code = "not_found"
    status = 404


class Conflict(CloudError):
    code = "conflict"
    status = 400


class DeviceError(CloudError):
    """Device-level errors in spark-server's ``{"ok":false,"error":...}`` shape (§6.4)."""

    def body(self) -> dict[str, Any]:
        return {"ok": False, "error": self.description}


class DeviceOffline(DeviceError):
    status = 404

    def __init__(self, description: str = "Device is offline") -> None:
        super().__init__(description)


class DeviceTimeout(CloudError):
    status = 408

    def __init__(self, description: str = "Timed out.") -> None:
        super().__init__(description)

    def body(self) -> dict[str, Any]:
        return {"error": self.description}


class RateLimited(CloudError):
    """Too many slow (scrypt) requests at once: 429, as the real API's rate limit (§4)."""

    code = "rate_limit_exceeded"
    status = 429

    def __init__(self, description: str = "Too many requests, slow down") -> None:
        super().__init__(description, headers={"Retry-After": "1"})
