"""The cloud's access rules as pure functions: scopes, grants, administration, visibility.

Choices where cloud-api.md is silent (the tests pin each):

* Scopes of a client: ``customers:create`` and the Photon-era ``create_customer`` are the
  same scope; ``*:*`` (full control) behaves like no scope (two-legged). A client whose
  scopes are only customer creation ("simple auth") may create customers of its product
  and log *those customers* in (``password`` and ``refresh_token`` grants, which is what
  particle-api-js ``login()`` does for simple-auth apps), and nothing else: its
  ``client_credentials`` grant is ``invalid_client`` "The grant type is unauthorised for
  this client_id" (the OAuth library's ``grantTypeAllowed`` hook, ``lib/grant.js``).
* ``refresh_token`` works only with product clients (api-service.json: "Refresh tokens
  only work for product tokens"); other clients get the same ``invalid_client``.
* Product administration (client and customer management, customer creation by bearer
  token, the product device list) is allowed to the product owner's user token and to a
  product-bound client token (``client_credentials`` of a two-legged product client).
* Device visibility: a **customer** token sees only devices that customer owns; a
  **user** token sees devices the user owns and every device of a product the user owns;
  a **client** token (a product client with no owner user) sees its product's devices.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from softap_sim.cloud.errors import InvalidScope
from softap_sim.cloud.principal import Principal
from softap_sim.cloud.views import Row

#: OAuth client ids (``lib/oauth2server.js``: ``^[a-z0-9-_]{3,40}$``, case-insensitive).
#: Spelled out in ASCII and anchored with ``\A``/``\Z``: Python's IGNORECASE lets ``[a-z]``
#: match the Kelvin sign and ``$`` match before a trailing newline.
CLIENT_ID_RE = re.compile(r"\A[a-zA-Z0-9_-]{3,40}\Z")
CLIENT_TYPES = ("installed", "web")
#: both spellings of the customer-creation scope (current docs / Photon-era guide)
CUSTOMER_CREATE_SCOPES = frozenset({"customers:create", "create_customer"})
FULL_SCOPE = "*:*"
CLIENT_SCOPES = CUSTOMER_CREATE_SCOPES | {FULL_SCOPE}
#: console presets (cloud-apis/authentication.md): preset -> (type, scope)
CLIENT_PRESETS: dict[str, tuple[str, str]] = {
    "simple-auth-mobile": ("installed", "customers:create"),
    "simple-auth-web": ("web", "customers:create"),
    "two-legged": ("installed", ""),
}
GRANT_TYPES = ("password", "client_credentials", "refresh_token")


def normalize_scope(scope: str | None) -> str:
    """A client scope list: ``none``/empty → ``""``; only the spec's scopes are accepted."""
    parts = (scope or "").split()
    if parts == ["none"] or not parts:
        return ""
    out: list[str] = []
    for part in parts:
        if part not in CLIENT_SCOPES:
            raise InvalidScope(
                f"Invalid scope {part[:40]!r}: use customers:create (or create_customer), "
                "*:* or none"
            )
        if part not in out:
            out.append(part)
    return " ".join(out)


def is_customer_creation_only(scope: str) -> bool:
    """True for "simple auth" clients: customer creation (and their customers' logins) only."""
    parts = set(scope.split())
    return bool(parts & CUSTOMER_CREATE_SCOPES) and FULL_SCOPE not in parts


def may_create_customers(scope: str) -> bool:
    """Two-legged (no scope), full control, or a customer-creation scope."""
    parts = set(scope.split())
    return not parts or FULL_SCOPE in parts or bool(parts & CUSTOMER_CREATE_SCOPES)


def grant_allowed(client: Mapping[str, Any], grant_type: str) -> bool:
    """The ``grantTypeAllowed`` hook: which grants a client may use (module docstring)."""
    product_client = client["product_id"] is not None
    if grant_type == "refresh_token" and not product_client:
        return False
    if is_customer_creation_only(client["scope"]):
        if grant_type == "client_credentials":
            return False
        if grant_type == "password" and not product_client:
            return False
    return True


def is_product_admin(principal: Principal, product: Mapping[str, Any]) -> bool:
    """The product owner's user token, or a token bound to the product by its client."""
    if principal.kind == "user":
        return principal.user_id is not None and principal.user_id == product["owner_user_id"]
    if principal.kind == "client":
        return bool(principal.product_id == product["id"])
    return False


def can_see(
    principal: Principal,
    admin_products: frozenset[int],
    *,
    owner_user_id: str | None,
    owner_customer_id: str | None,
    product_id: int | None,
) -> bool:
    """The visibility rule of the module docstring, for a device or an event."""
    if principal.is_customer:
        return owner_customer_id is not None and owner_customer_id == principal.customer_id
    if (
        principal.kind == "user"
        and owner_user_id is not None
        and owner_user_id == principal.user_id
    ):
        return True
    return product_id is not None and product_id in admin_products


def row_visible(principal: Principal, admin_products: frozenset[int], row: Row) -> bool:
    """:func:`can_see` for a device row."""
    return can_see(
        principal,
        admin_products,
        owner_user_id=row["owner_user_id"],
        owner_customer_id=row["owner_customer_id"],
        product_id=row["product_id"],
    )
