"""fuzz_cloud's targets: every REST route, the world it aims at, and valid requests.

Every fuzzed request starts from a *valid* request for its route (right method, path,
token of a suitable kind, body) so the server gets past authentication and parsing to the
code under the route; ``fuzz_mutate`` then breaks it. The route table is data copied from
the cloud's route modules, not imported, so the fuzzer keeps aiming at the routes that
exist even while those modules move.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import quote, urlencode

from fuzz_http import Request, b64
from fuzz_values import EXPIRES_VALUES

#: (method, path template) of every REST route, copied from softap_sim/cloud/auth.py and
#: softap_sim/cloud/devices.py ``ROUTES`` (those modules are being moved: this is data).
#: ``*`` = any method; ``{prefix:.+}`` is written ``{prefix}``.
ROUTES: Final[tuple[tuple[str, str], ...]] = (
    ("*", "/oauth/token"),
    ("POST", "/v1/clients"),
    ("GET", "/v1/clients"),
    ("PUT", "/v1/clients/{client_id}"),
    ("DELETE", "/v1/clients/{client_id}"),
    ("POST", "/v1/products/{product}/clients"),
    ("GET", "/v1/products/{product}/clients"),
    ("PUT", "/v1/products/{product}/clients/{client_id}"),
    ("DELETE", "/v1/products/{product}/clients/{client_id}"),
    ("POST", "/v1/products/{product}/customers"),
    ("GET", "/v1/products/{product}/customers"),
    ("PUT", "/v1/products/{product}/customers/{email}"),
    ("DELETE", "/v1/products/{product}/customers/{email}"),
    ("GET", "/v1/softap-sim/cloud"),
    ("POST", "/v1/provisioning/{device}"),
    ("GET", "/v1/user"),
    ("GET", "/v1/webhooks"),
    ("GET", "/v1/access_tokens"),
    ("GET", "/v1/access_tokens/current"),
    ("DELETE", "/v1/access_tokens/current"),
    ("DELETE", "/v1/access_tokens/{token}"),
    ("POST", "/v1/device_claims"),
    ("POST", "/v1/products/{product}/device_claims"),
    ("GET", "/v1/devices"),
    ("POST", "/v1/devices"),
    ("POST", "/v1/devices/events"),
    ("GET", "/v1/devices/events"),
    ("GET", "/v1/devices/events/{prefix}"),
    ("GET", "/v1/events/{prefix}"),
    ("GET", "/v1/events"),
    ("GET", "/v1/devices/{device}/events"),
    ("GET", "/v1/devices/{device}/events/{prefix}"),
    ("GET", "/v1/devices/{device}"),
    ("PUT", "/v1/devices/{device}"),
    ("DELETE", "/v1/devices/{device}"),
    ("GET", "/v1/devices/{device}/{name}"),
    ("POST", "/v1/devices/{device}/{name}"),
    ("GET", "/v1/products/{product}/devices"),
    ("GET", "/v1/products/{product}/devices/{device}"),
    ("DELETE", "/v1/products/{product}/devices/{device}/owner"),
    ("GET", "/v1/products/{product}/devices/{device}/{name}"),
    ("POST", "/v1/products/{product}/devices/{device}/{name}"),
)
#: routes whose valid form always costs a scrypt (rate-limited by --kdf-rate)
KDF_ROUTES: Final = frozenset({("GET", "/v1/access_tokens")})
#: SSE routes: a valid request opens a stream that never ends by itself
SSE_TEMPLATES: Final = frozenset(t for _m, t in ROUTES if "events" in t)
METHODS: Final = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS")

FUNCTIONS: Final = ("led", "echo")
VARIABLES: Final = {"temp": 9, "count": 2, "label": 4, "on": 1}  # describe type codes
CUSTOMER_PASSWORD: Final = "fuzz-password-1"  # a throwaway value in a temp database


class TokenBucket:
    """At most ``rate`` events per second (burst ``rate``)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = rate
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


@dataclass
class World:
    """Everything real the fuzzer can aim at (refreshed after each batch)."""

    product_id: int
    product_slug: str
    client_id: str
    client_secret: str
    user_email: str
    user_password: str
    user_tokens: list[str] = field(default_factory=list)
    client_tokens: list[str] = field(default_factory=list)
    customer_tokens: list[str] = field(default_factory=list)
    customer_emails: list[str] = field(default_factory=list)
    refresh_tokens: list[str] = field(default_factory=list)
    bad_tokens: list[str] = field(default_factory=list)  # expired, revoked, garbage
    claim_codes: list[str] = field(default_factory=list)
    device_ids: list[str] = field(default_factory=list)
    device_names: list[str] = field(default_factory=list)
    # sacrificial: destructive routes may delete these
    spare_tokens: list[str] = field(default_factory=list)
    spare_emails: list[str] = field(default_factory=list)
    spare_product_clients: list[str] = field(default_factory=list)
    spare_user_clients: list[str] = field(default_factory=list)


class ValidRequests:
    """The valid request of a route; ``fuzz_mutate.Mutator`` adds the mutations."""

    w: World
    rng: random.Random

    def param(self, name: str) -> str:
        """A *valid* value of a path parameter."""
        rng, w = self.rng, self.w
        if name == "product":
            return rng.choice((w.product_slug, str(w.product_id), w.product_slug.upper()))
        if name == "device":
            return rng.choice(w.device_ids + w.device_names[:1])
        if name == "name":
            return rng.choice((*FUNCTIONS, *VARIABLES, "nope"))
        if name == "client_id":
            pool = w.spare_product_clients + w.spare_user_clients
            return rng.choice(pool) if pool else "no-such-client"
        if name == "email":
            # only spare customers: a DELETE of a shared one would revoke its tokens
            return rng.choice(w.spare_emails) if w.spare_emails else "nobody@example.com"
        if name == "token":
            if w.spare_tokens and rng.random() < 0.5:
                return w.spare_tokens.pop()
            return rng.choice(w.bad_tokens)
        if name == "prefix":
            return rng.choice(("spark", "spark/status", "a/b/c", "x"))
        raise AssertionError(name)

    def token(self, kind: str) -> str:
        w = self.w
        pool = {
            "user": w.user_tokens,
            "client": w.client_tokens,
            "customer": w.customer_tokens,
        }.get(kind) or w.bad_tokens
        return self.rng.choice(pool)

    def auth_kind(self, template: str, method: str) -> str:
        """Which valid token the baseline request carries."""
        if "/customers" in template or "/products/{product}/clients" in template:
            return self.rng.choice(("user", "client", "client", "customer"))
        if template == "/v1/clients" or template.startswith("/v1/clients/"):
            return self.rng.choice(("user", "user", "client"))
        if "device_claims" in template:
            return self.rng.choice(("customer", "customer", "user", "client"))
        return self.rng.choice(("user", "client", "customer", "customer"))

    # -- the baseline ---------------------------------------------------------------------
    def baseline(self, method: str, template: str) -> tuple[Request, dict[str, str], bool]:
        """(request without body, form params, kdf?) for a valid request of the route."""
        rng, w = self.rng, self.w
        kdf = False
        params: dict[str, str] = {}
        headers: list[bytes] = []
        path = template
        for name in ("product", "client_id", "email", "token", "device", "name", "prefix"):
            if "{" + name + "}" in path:
                path = path.replace("{" + name + "}", quote(self.param(name), safe="/"))
        if template == "/oauth/token":
            method = "POST"
            grant = rng.random()
            cid, secret = w.client_id, w.client_secret
            if rng.random() < 0.05:
                cid = secret = rng.choice(("particle", "particle-api"))  # scrypt secrets
                kdf = True
            if grant < 0.03:
                kdf = True
                params.update(grant_type="password", username=w.user_email)
                params["password"] = w.user_password if rng.random() < 0.5 else "wrong"
                cid = secret = "particle"
            elif grant < 0.15:
                params["grant_type"] = "refresh_token"
                params["refresh_token"] = rng.choice(w.refresh_tokens or w.bad_tokens)
            else:
                params["grant_type"] = "client_credentials"
                if rng.random() < 0.7 and w.customer_emails:
                    params["scope"] = "customer=" + rng.choice(w.customer_emails)
            if rng.random() < 0.5:
                headers.append(b"Authorization: Basic " + b64(f"{cid}:{secret}"))
            else:
                params.update(client_id=cid, client_secret=secret)
            if rng.random() < 0.2:
                params["expires_in"] = rng.choice(EXPIRES_VALUES)
            headers.append(b"Content-Type: application/x-www-form-urlencoded")
            return Request(method, path, headers, b"", template), params, kdf
        if (method, template) in KDF_ROUTES:
            kdf = True
            headers.append(b"Authorization: Basic " + b64(f"{w.user_email}:{w.user_password}"))
            return Request(method, path, headers, b"", template), params, kdf
        if template == "/v1/products/{product}/customers" and method == "POST":
            # a bounded set: most repeats are "Customer already exists", so the customer
            # table (and the list routes) stay small and the request rate stays flat
            params["email"] = f"fz-{rng.randrange(300)}@example.com"
            if rng.random() < 0.03:
                kdf = True
                params["password"] = CUSTOMER_PASSWORD
            else:
                params["no_password"] = "true"
            if rng.random() < 0.6:
                headers.append(b"Authorization: Basic " + b64(f"{w.client_id}:{w.client_secret}"))
                return Request(method, path, headers, b"", template), params, kdf
        kind = self.auth_kind(template, method)
        where = rng.random()
        token = self.token(kind)
        if where < 0.85 or method == "GET":
            headers.append(b"Authorization: Bearer " + token.encode())
        else:
            params["access_token"] = token
        if template.endswith("/clients") and method == "POST":
            params.update(name=f"fuzz {rng.getrandbits(16)}", type="installed")
            if rng.random() < 0.2:
                params.update(type="web", redirect_uri="https://example.com/cb")
            if rng.random() < 0.2:
                params["scope"] = rng.choice(("customers:create", "*:*", "none", "create_customer"))
        elif "{client_id}" in template and method == "PUT":
            params["name"] = f"renamed {rng.getrandbits(16)}"
            if rng.random() < 0.3:
                params["scope"] = rng.choice(("customers:create", "*:*", "none"))
        elif "{email}" in template and method == "PUT":
            if rng.random() < 0.1:
                kdf = True
                params["password"] = CUSTOMER_PASSWORD
        elif template == "/v1/devices" and method == "POST":
            params["id"] = rng.choice(w.device_ids)
            if rng.random() < 0.2:
                params["request_transfer"] = rng.choice(("true", "false"))
        elif "{name}" in template and method == "POST":
            key = "arg" if rng.random() < 0.5 else "args"
            params[key] = rng.choice(("on", "off", "", "x" * 63))
            if rng.random() < 0.1:
                params["format"] = "raw"
        query = ""
        if "{name}" in template and method == "GET" and rng.random() < 0.2:
            query = "?format=raw"
        elif template == "/v1/products/{product}/devices" and rng.random() < 0.6:
            query = "?" + urlencode(
                {"page": rng.choice(("1", "2")), "per_page": rng.choice(("1", "25", "100"))}
            )
        return Request(method, path + query, headers, b"", template), params, kdf

    def _rebuild(self, template: str) -> dict[str, str]:
        return {
            n: quote(self.param(n), safe="/")
            for n in ("product", "client_id", "email", "token", "device", "name", "prefix")
            if "{" + n + "}" in template
        }

    def body_bytes(self, params: dict[str, str], req: Request) -> None:
        """Serialise the params as form or JSON (the baseline encoding)."""
        if not params:
            return
        has_ct = any(h.lower().startswith(b"content-type:") for h in req.headers)
        if req.template != "/oauth/token" and self.rng.random() < 0.4:
            req.body = json.dumps(params).encode()
            if not has_ct:
                req.headers.append(b"Content-Type: application/json")
        else:
            req.body = urlencode(params, errors="surrogatepass").encode()
            if not has_ct:
                req.headers.append(b"Content-Type: application/x-www-form-urlencoded")
