"""particle-api-js 12.0.3, the reference REST client, against the embedded cloud.

Everything here goes through the real library (cloud-api.md §10): each test starts an
in-memory cloud (``Database(None)``, ``Cloud``, ``CloudServer`` on 127.0.0.1 port 0),
seeds it with the model functions of ``auth.py``/``devices.py`` and runs
``tests/clients/cloud_driver.js`` in a Node subprocess with a JSON program of library
calls. The driver prints each call's result or rejection exactly as the library
surfaces it (``statusCode``, ``body.error``, ``body.error_description``,
``shortErrorDescription``, ``message``), and the tests pin those values.

The device link is not part of this module: a claim is simulated by calling
``models.claims.consume_claim_code`` (what the link does on ``spark/device/claim/code``) and
every device is offline (``OfflineLink``), so function calls answer 404 honestly.

The module is skipped, with a reason, when ``node`` or
``tests/clients/node_modules/particle-api-js`` is missing (run ``npm ci`` in
``tests/clients``).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio

from firmware_model import DeviceKey
from softap_sim.cloud import events, models, views
from softap_sim.cloud.app import CloudServer
from softap_sim.cloud.backend import CloudBackend
from softap_sim.cloud.db import Database
from tests import paths

CLIENTS_DIR = paths.CLIENTS
PACKAGE_DIR = CLIENTS_DIR / "node_modules" / "particle-api-js"
DRIVER = CLIENTS_DIR / "cloud_driver.js"
LIBRARY = "particle-api-js@12.0.3"
NODE = shutil.which("node")

if NODE is None:
    pytest.skip("node is not installed: particle-api-js cannot run", allow_module_level=True)
if not PACKAGE_DIR.is_dir():
    pytest.skip(
        f"{PACKAGE_DIR} is missing: run 'npm ci' in {CLIENTS_DIR} to install the pinned "
        "particle-api-js (the project's test script does this first)",
        allow_module_level=True,
    )

_marks = [pytest.mark.asyncio]
if importlib.util.find_spec("pytest_timeout") is not None:
    _marks.append(pytest.mark.timeout(60))
pytestmark = _marks

#: whole-subprocess bound; each driver step has its own watchdog below it
DRIVER_TIMEOUT_S = 30.0
STEP_TIMEOUT_MS = 8_000

TOKEN_RE = re.compile(r"[0-9a-f]{40}")
CLAIM_CODE_RE = re.compile(r"[A-Za-z0-9+/]{63}")
DEVICE_A = "0123456789abcdef01234567"
DEVICE_B = "fedcba9876543210fedcba98"
PASSWORD = "correct horse battery staple"
START = 1_800_000_000.0  # the manual clock's start (2027-01-15)

#: the library's rejection of a spark-server device error: no error_description
OFFLINE = {
    "statusCode": 404,
    "error": "Device is offline",
    "error_description": None,
    "shortErrorDescription": None,
    "body": {"ok": False, "error": "Device is offline"},
}
PERMISSION_DENIED = (
    "Permission denied: no device with that ID or name is visible to this access token"
)


class Clock:
    """The cloud's clock: starts at :data:`START`, moves only when a test says so."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@dataclass
class Client:
    id: str
    secret: str


@dataclass
class Env:
    cloud: CloudBackend
    server: CloudServer
    clock: Clock
    product_id: int
    product: str  # slug
    two_legged: Client
    simple_auth: Client
    other_product_id: int
    other_product: str
    other_two_legged: Client

    @property
    def url(self) -> str:
        return self.server.url

    async def run(self, fn: Callable[[Any], Any]) -> Any:
        return await self.cloud.db.run(fn)


@pytest_asyncio.fixture
async def env() -> AsyncIterator[Env]:
    """An in-memory cloud on loopback: the bootstrap product with a two-legged and a
    simple-auth client, and a second product with its own two-legged client."""
    clock = Clock()
    db = Database(None)
    await db.open()
    cloud = CloudBackend(db, now=clock)
    server = CloudServer(cloud, "127.0.0.1", 0)
    try:

        def seed(conn: Any) -> dict[str, Any]:
            created = models.seed.bootstrap(conn, clock.now)
            assert created is not None
            product_id = created["product"]["id"]
            simple, simple_secret = models.clients.create_preset_client(
                conn, "simple-auth-mobile", name="Mobile app", product_id=product_id, now=clock.now
            )
            other = models.accounts.create_product(
                conn, "Other product", "other-product", created["user"]["id"], clock.now
            )
            other_client, other_secret = models.clients.create_preset_client(
                conn, "two-legged", name="Other server", product_id=other["id"], now=clock.now
            )
            return {
                "product_id": product_id,
                "product": created["product"]["slug"],
                "two_legged": Client(created["client"]["id"], created["client"]["secret"]),
                "simple_auth": Client(simple["id"], simple_secret),
                "other_product_id": other["id"],
                "other_product": other["slug"],
                "other_two_legged": Client(other_client["id"], other_secret),
            }

        seeded = await db.run(seed)
        await server.start()
        yield Env(cloud=cloud, server=server, clock=clock, **seeded)
    finally:
        events.close_event_streams(cloud.subscribers)  # any stream a failed test left open
        await server.close()
        await db.close()


# ---------------------------------------------------------------------------------------
# the driver
# ---------------------------------------------------------------------------------------
StreamOpen = Callable[[str], Awaitable[None]]


async def drive(
    env: Env,
    steps: list[dict[str, Any]],
    *,
    client: Client | None = None,
    on_stream_open: StreamOpen | None = None,
) -> dict[str, dict[str, Any]]:
    """Run ``steps`` with particle-api-js; each step's result by step id.

    ``client`` is the OAuth client of the ``Particle`` instance (default: the product's
    two-legged client). ``on_stream_open(step_id)`` runs once an event stream is open.
    """
    client = client or env.two_legged
    program = {
        "baseUrl": env.url,
        "clientId": client.id,
        "clientSecret": client.secret,
        "stepTimeoutMs": STEP_TIMEOUT_MS,
        "deadlineMs": int(DRIVER_TIMEOUT_S * 1000) - 2000,
        "steps": steps,
    }
    assert NODE is not None
    proc = await asyncio.create_subprocess_exec(
        NODE,
        str(DRIVER),
        cwd=str(CLIENTS_DIR),
        env={**os.environ, "CLOUD_DRIVER_ARGS": json.dumps(program)},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    stdout, stderr = proc.stdout, proc.stderr
    noise: list[str] = []

    async def pump_stderr() -> None:
        while line := await stderr.readline():
            text = line.decode("utf-8", "replace").strip()
            try:
                marker = json.loads(text)
            except ValueError:
                marker = None
            if isinstance(marker, dict) and "stream_open" in marker:
                if on_stream_open is not None:
                    await on_stream_open(str(marker["stream_open"]))
            elif text:
                noise.append(text)

    try:
        async with asyncio.timeout(DRIVER_TIMEOUT_S):
            out, _ = await asyncio.gather(stdout.read(), pump_stderr())
            await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    lines = out.decode().strip().splitlines()
    assert len(lines) == 1, f"driver stdout: {out!r}; stderr: {noise}"
    report = json.loads(lines[0])
    assert report["error"] is None, f"{report['error']}; stderr: {noise}"
    assert report["library"] == LIBRARY
    assert proc.returncode == 0
    results = {step["id"]: step for step in report["steps"]}
    assert len(results) == len(steps)
    return results


def rejection(result: dict[str, Any]) -> dict[str, Any]:
    """The library's rejection fields of a failed step."""
    assert result["ok"] is False, result
    return {
        k: result[k]
        for k in ("statusCode", "error", "error_description", "shortErrorDescription", "body")
    }


def oauth_error(status: int, error: str, description: str) -> dict[str, Any]:
    """What particle-api-js surfaces for an OAuth-shaped error body (§4, §10.3)."""
    return {
        "statusCode": status,
        "error": error,
        "error_description": description,
        "shortErrorDescription": description,
        "body": {"error": error, "error_description": description},
    }


def assert_message(result: dict[str, Any], env: Env, path: str) -> None:
    """``HTTP error <status> from <url>[ - <error_description>]`` (§10.3)."""
    expected = f"HTTP error {result['statusCode']} from {env.url}{path}"
    if result["error_description"] is not None:
        expected += f" - {result['error_description']}"
    assert result["message"] == expected


def assert_token_body(result: dict[str, Any], status: int, *, scope: str | None = None) -> None:
    assert result["ok"] is True, result
    assert result["statusCode"] == status
    body = result["body"]
    expected_keys = {"token_type", "access_token", "expires_in", "refresh_token"}
    if scope is not None:
        expected_keys.add("scope")
        assert body["scope"] == scope
    assert set(body) == expected_keys
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 7_776_000
    assert TOKEN_RE.fullmatch(body["access_token"])
    assert TOKEN_RE.fullmatch(body["refresh_token"])


def assert_claim_code(result: dict[str, Any], device_ids: list[str]) -> None:
    assert result["ok"] is True, result
    assert result["statusCode"] == 200
    assert set(result["body"]) == {"claim_code", "device_ids"}
    assert CLAIM_CODE_RE.fullmatch(result["body"]["claim_code"])
    assert result["body"]["device_ids"] == device_ids


def customer_token_steps(env: Env, email: str, prefix: str) -> list[dict[str, Any]]:
    """A two-legged server's way: shadow customer (Basic), then a customer-scoped token."""
    return [
        {
            "op": "request",
            "id": f"{prefix}_create",
            "uri": f"/v1/products/{env.product}/customers",
            "method": "post",
            "basic": {"user": env.two_legged.id, "pass": env.two_legged.secret},
            "form": {"email": email, "no_password": "true"},
        },
        {
            "op": "request",
            "id": f"{prefix}_token",
            "uri": "/oauth/token",
            "method": "post",
            "form": {
                "grant_type": "client_credentials",
                "scope": f"customer={email}",
                "client_id": env.two_legged.id,
                "client_secret": env.two_legged.secret,
            },
        },
    ]


async def register(env: Env, device_key: DeviceKey, device_id: str) -> None:
    pem = device_key.public_key_pem.decode("ascii")
    now = env.clock.now
    await env.run(
        lambda c: models.devices.register_device(
            c, device_id=device_id, public_key_pem=pem, now=now
        )
    )


async def claim(env: Env, code: str, device_id: str) -> dict[str, Any] | None:
    """What the device link does with ``spark/device/claim/code``."""
    now = env.clock.now
    result: dict[str, Any] | None = await env.run(
        lambda c: models.claims.consume_claim_code(c, code, device_id, now)
    )
    return result


# ---------------------------------------------------------------------------------------
# (a) simple auth: a mobile app's own client creates and logs in customers
# ---------------------------------------------------------------------------------------
async def test_simple_auth_customer_login_claim_code_and_empty_list(env: Env) -> None:
    steps = [
        {
            "op": "createCustomer",
            "id": "create",
            "email": "Alice@Example.com",
            "password": PASSWORD,
            "product": env.product,
        },
        # emails are case-insensitive (§3)
        {"op": "login", "id": "login", "username": "alice@example.com", "password": PASSWORD},
        {
            "op": "getClaimCode",
            "id": "code",
            "product": env.product,
            "auth": "{{login.body.access_token}}",
        },
        {
            "op": "getClaimCode",
            "id": "code_by_id",
            "product": str(env.product_id),
            "auth": "{{create.body.access_token}}",
        },
        {"op": "listDevices", "id": "list", "auth": "{{login.body.access_token}}"},
        # with a default auth the library sends a Bearer header next to the form
        # credentials even on login(); the token endpoint must ignore it (§10.3)
        {
            "op": "login",
            "id": "login_with_default_auth",
            "instanceAuth": "{{login.body.access_token}}",
            "username": "alice@example.com",
            "password": PASSWORD,
        },
        # the same for customer creation
        {
            "op": "createCustomer",
            "id": "create_with_default_auth",
            "instanceAuth": "{{login.body.access_token}}",
            "email": "alan@example.com",
            "password": PASSWORD,
            "product": env.product,
        },
    ]
    r = await drive(env, steps, client=env.simple_auth)

    assert_token_body(r["create"], 201)
    assert_token_body(r["login"], 200)
    assert r["login"]["body"]["access_token"] != r["create"]["body"]["access_token"]
    assert_claim_code(r["code"], [])
    assert_claim_code(r["code_by_id"], [])
    assert r["code"]["body"]["claim_code"] != r["code_by_id"]["body"]["claim_code"]
    assert r["list"]["ok"] is True
    assert r["list"]["statusCode"] == 200
    assert r["list"]["body"] == []
    assert_token_body(r["login_with_default_auth"], 200)
    assert_token_body(r["create_with_default_auth"], 201)

    customer = await env.run(
        lambda c: models.customers.get_customer(c, env.product_id, "ALICE@example.com")
    )
    assert customer is not None
    assert customer["email"] == "alice@example.com"
    assert customer["shadow"] is False


# ---------------------------------------------------------------------------------------
# (b) two-legged: a server makes shadow customers and mints their tokens
# ---------------------------------------------------------------------------------------
async def test_two_legged_shadow_customer_refresh_and_token_deletion(env: Env) -> None:
    email = "bob@example.com"
    tl = env.two_legged
    steps = [
        *customer_token_steps(env, email, "bob"),
        # outside /oauth/token a JSON body works too (§1), credentials in the body
        {
            "op": "request",
            "id": "create_json",
            "uri": f"/v1/products/{env.product}/customers",
            "method": "post",
            "data": {
                "email": "bob.json@example.com",
                "no_password": True,
                "client_id": tl.id,
                "client_secret": tl.secret,
            },
        },
        # the same grant with the client credentials in a Basic header
        {
            "op": "request",
            "id": "token_basic",
            "uri": "/oauth/token",
            "method": "post",
            "basic": {"user": tl.id, "pass": tl.secret},
            "form": {"grant_type": "client_credentials", "scope": f"customer={email}"},
        },
        {
            "op": "getClaimCode",
            "id": "code",
            "product": env.product,
            "auth": "{{bob_token.body.access_token}}",
        },
        {
            "op": "request",
            "id": "refresh",
            "uri": "/oauth/token",
            "method": "post",
            "form": {
                "grant_type": "refresh_token",
                "refresh_token": "{{bob_token.body.refresh_token}}",
                "client_id": tl.id,
                "client_secret": tl.secret,
            },
        },
        {"op": "listDevices", "id": "list_refreshed", "auth": "{{refresh.body.access_token}}"},
        # refresh tokens rotate: the used one is gone
        {
            "op": "request",
            "id": "refresh_again",
            "uri": "/oauth/token",
            "method": "post",
            "form": {
                "grant_type": "refresh_token",
                "refresh_token": "{{bob_token.body.refresh_token}}",
                "client_id": tl.id,
                "client_secret": tl.secret,
            },
        },
        {"op": "deleteAccessToken", "id": "delete", "token": "{{refresh.body.access_token}}"},
        {"op": "listDevices", "id": "list_deleted", "auth": "{{refresh.body.access_token}}"},
        {"op": "deleteAccessToken", "id": "delete_again", "token": "{{refresh.body.access_token}}"},
        # the token issued before the refresh still works
        {"op": "listDevices", "id": "list_original", "auth": "{{bob_token.body.access_token}}"},
        # a shadow customer has no password to log in with
        {"op": "login", "id": "shadow_login", "username": email, "password": "anything"},
    ]
    r = await drive(env, steps)

    assert_token_body(r["bob_create"], 201)
    assert_token_body(r["bob_token"], 200, scope=f"customer={email}")
    assert_token_body(r["create_json"], 201)
    assert_token_body(r["token_basic"], 200, scope=f"customer={email}")
    assert_claim_code(r["code"], [])
    assert_token_body(r["refresh"], 200, scope=f"customer={email}")
    assert r["refresh"]["body"]["access_token"] != r["bob_token"]["body"]["access_token"]
    assert r["list_refreshed"]["statusCode"] == 200
    assert r["list_refreshed"]["body"] == []
    assert rejection(r["refresh_again"]) == oauth_error(
        400, "invalid_grant", "Invalid refresh token"
    )
    assert r["delete"]["ok"] is True
    assert r["delete"]["statusCode"] == 200
    assert r["delete"]["body"] == {"ok": True}
    invalid = oauth_error(401, "invalid_token", "The access token provided is invalid.")
    assert rejection(r["list_deleted"]) == invalid
    assert_message(r["list_deleted"], env, "/v1/devices")
    assert rejection(r["delete_again"]) == invalid
    assert r["list_original"]["statusCode"] == 200
    assert rejection(r["shadow_login"]) == oauth_error(
        400, "invalid_grant", "User credentials are invalid"
    )

    customer = await env.run(lambda c: models.customers.get_customer(c, env.product_id, email))
    assert customer is not None
    assert customer["shadow"] is True


# ---------------------------------------------------------------------------------------
# (c) every error path, as the library surfaces it
# ---------------------------------------------------------------------------------------
async def test_oauth_errors(env: Env) -> None:
    simple = env.simple_auth
    steps: list[dict[str, Any]] = [
        {
            "op": "createCustomer",
            "id": "create",
            "email": "carol@example.com",
            "password": PASSWORD,
            "product": env.product,
        },
        {
            "op": "login",
            "id": "bad_secret",
            "clientSecret": "not-the-secret",
            "username": "carol@example.com",
            "password": PASSWORD,
        },
        {
            "op": "login",
            "id": "unknown_client",
            "clientId": "no-such-client",
            "clientSecret": "whatever",
            "username": "carol@example.com",
            "password": PASSWORD,
        },
        {"op": "login", "id": "bad_password", "username": "carol@example.com", "password": "x"},
        {"op": "login", "id": "unknown_user", "username": "nobody@example.com", "password": "x"},
        # a simple-auth client may log its customers in, not mint client tokens
        {"op": "loginAsClientOwner", "id": "simple_client_credentials"},
        {
            "op": "createCustomer",
            "id": "duplicate",
            "email": "carol@example.com",
            "password": PASSWORD,
            "product": env.product,
        },
        {
            "op": "createCustomer",
            "id": "duplicate_case",
            "email": "CAROL@example.com",
            "password": PASSWORD,
            "product": env.product,
        },
        {
            "op": "createCustomer",
            "id": "bad_secret_customer",
            "clientSecret": "not-the-secret",
            "email": "dave@example.com",
            "password": PASSWORD,
            "product": env.product,
        },
        {
            "op": "createCustomer",
            "id": "wrong_product_customer",
            "email": "dave@example.com",
            "password": PASSWORD,
            "product": "no-such-product",
        },
        {
            "op": "createCustomer",
            "id": "other_products_customer",
            "email": "dave@example.com",
            "password": PASSWORD,
            "product": env.other_product,
        },
        # /oauth/token takes form encoding only (§1)
        {
            "op": "request",
            "id": "json_token",
            "uri": "/oauth/token",
            "method": "post",
            "data": {
                "grant_type": "password",
                "username": "carol@example.com",
                "password": PASSWORD,
                "client_id": simple.id,
                "client_secret": simple.secret,
            },
        },
        {
            "op": "request",
            "id": "no_grant_type",
            "uri": "/oauth/token",
            "method": "post",
            "form": {"client_id": simple.id, "client_secret": simple.secret},
        },
        {
            "op": "request",
            "id": "unknown_scope_customer",
            "uri": "/oauth/token",
            "method": "post",
            "form": {
                "grant_type": "client_credentials",
                "scope": "customer=nobody@example.com",
                "client_id": env.two_legged.id,
                "client_secret": env.two_legged.secret,
            },
        },
        {"op": "listDevices", "id": "no_token"},
        {"op": "listDevices", "id": "unknown_token", "auth": "0" * 40},
    ]
    r = await drive(env, steps, client=simple)

    assert_token_body(r["create"], 201)
    bad_client = oauth_error(400, "invalid_client", "Client credentials are invalid")
    assert rejection(r["bad_secret"]) == bad_client
    assert_message(r["bad_secret"], env, "/oauth/token")
    assert rejection(r["unknown_client"]) == bad_client
    bad_user = oauth_error(400, "invalid_grant", "User credentials are invalid")
    assert rejection(r["bad_password"]) == bad_user
    assert_message(r["bad_password"], env, "/oauth/token")
    assert rejection(r["unknown_user"]) == bad_user
    assert rejection(r["simple_client_credentials"]) == oauth_error(
        400, "invalid_client", "The grant type is unauthorised for this client_id"
    )
    exists = oauth_error(400, "invalid_request", "Customer already exists")
    assert rejection(r["duplicate"]) == exists
    assert rejection(r["duplicate_case"]) == exists
    customers = f"/v1/products/{env.product}/customers"
    assert_message(r["duplicate"], env, customers)
    assert rejection(r["bad_secret_customer"]) == bad_client
    assert rejection(r["wrong_product_customer"]) == oauth_error(
        404, "not_found", "Product not found"
    )
    assert rejection(r["other_products_customer"]) == oauth_error(
        400, "invalid_client", "The client is not a client of this product"
    )
    assert rejection(r["json_token"]) == oauth_error(
        400,
        "invalid_request",
        "Method must be POST with application/x-www-form-urlencoded encoding",
    )
    assert rejection(r["no_grant_type"]) == oauth_error(
        400, "invalid_request", "Invalid or missing grant_type parameter"
    )
    assert rejection(r["unknown_scope_customer"]) == oauth_error(
        400, "invalid_scope", "Customer not found"
    )
    assert rejection(r["no_token"]) == oauth_error(
        400, "invalid_request", "The access token was not found"
    )
    assert rejection(r["unknown_token"]) == oauth_error(
        401, "invalid_token", "The access token provided is invalid."
    )


async def test_expired_token_is_invalid_token(env: Env) -> None:
    tl = env.two_legged
    steps = [
        *customer_token_steps(env, "erin@example.com", "erin"),
        {
            "op": "request",
            "id": "short",
            "uri": "/oauth/token",
            "method": "post",
            "form": {
                "grant_type": "client_credentials",
                "scope": "customer=erin@example.com",
                "expires_in": "60",
                "client_id": tl.id,
                "client_secret": tl.secret,
            },
        },
        {"op": "listDevices", "id": "fresh", "auth": "{{short.body.access_token}}"},
    ]
    r = await drive(env, steps)
    assert r["short"]["statusCode"] == 200
    assert r["short"]["body"]["expires_in"] == 60
    assert r["fresh"]["statusCode"] == 200

    env.clock.now += 61
    token = r["short"]["body"]["access_token"]
    later = [
        {"op": "listDevices", "id": "expired", "auth": token},
        {"op": "getClaimCode", "id": "expired_claim", "product": env.product, "auth": token},
        {"op": "listDevices", "id": "long_lived", "auth": r["erin_token"]["body"]["access_token"]},
    ]
    r = await drive(env, later)
    expired = oauth_error(401, "invalid_token", "The access token provided has expired.")
    assert rejection(r["expired"]) == expired
    assert_message(r["expired"], env, "/v1/devices")
    assert rejection(r["expired_claim"]) == expired
    assert r["long_lived"]["statusCode"] == 200


async def test_claim_code_route_errors(env: Env) -> None:
    other = env.other_two_legged
    steps = [
        *customer_token_steps(env, "frank@example.com", "frank"),
        {
            "op": "getClaimCode",
            "id": "wrong_product",
            "product": "no-such-product",
            "auth": "{{frank_token.body.access_token}}",
        },
        {
            "op": "getClaimCode",
            "id": "other_product",
            "product": env.other_product,
            "auth": "{{frank_token.body.access_token}}",
        },
        {
            "op": "getClaimCode",
            "id": "other_product_by_id",
            "product": str(env.other_product_id),
            "auth": "{{frank_token.body.access_token}}",
        },
        # a product client's own token is no customer's
        {
            "op": "loginAsClientOwner",
            "id": "client_token",
            "clientId": other.id,
            "clientSecret": other.secret,
        },
        {
            "op": "getClaimCode",
            "id": "client_token_claim",
            "product": env.other_product,
            "auth": "{{client_token.body.access_token}}",
        },
        # the user route works for a customer too: the code is theirs
        {"op": "getClaimCode", "id": "user_route", "auth": "{{frank_token.body.access_token}}"},
    ]
    r = await drive(env, steps)
    assert rejection(r["wrong_product"]) == oauth_error(404, "not_found", "Product not found")
    assert_message(r["wrong_product"], env, "/v1/products/no-such-product/device_claims")
    forbidden = oauth_error(
        403, "forbidden", "This product's claim codes need an access token of one of its customers"
    )
    assert rejection(r["other_product"]) == forbidden
    assert rejection(r["other_product_by_id"]) == forbidden
    assert r["client_token"]["statusCode"] == 200
    assert rejection(r["client_token_claim"]) == forbidden
    assert_claim_code(r["user_route"], [])


# ---------------------------------------------------------------------------------------
# (d) a registered device, claimed through the model, seen through the library
# ---------------------------------------------------------------------------------------
async def test_claimed_device_listed_and_offline_answers(env: Env, device_key: DeviceKey) -> None:
    await register(env, device_key, DEVICE_A)
    await register(env, device_key, DEVICE_B)
    # an earlier session described a function and a variable; the device is offline now
    now = env.clock.now

    def earlier_session(conn: Any) -> None:
        models.devices.set_device_online(
            conn, DEVICE_A, True, now, functions=["led"], variables={"temp": "double"}
        )
        models.devices.set_device_online(conn, DEVICE_A, False, now + 1)

    await env.run(earlier_session)
    steps = [
        *customer_token_steps(env, "gina@example.com", "gina"),
        *customer_token_steps(env, "hank@example.com", "hank"),
        {
            "op": "getClaimCode",
            "id": "gina_code",
            "product": env.product,
            "auth": "{{gina_token.body.access_token}}",
        },
        {
            "op": "getClaimCode",
            "id": "hank_code",
            "product": env.product,
            "auth": "{{hank_token.body.access_token}}",
        },
        {"op": "listDevices", "id": "before", "auth": "{{gina_token.body.access_token}}"},
    ]
    r = await drive(env, steps)
    assert r["before"]["body"] == []
    gina = r["gina_token"]["body"]["access_token"]
    hank = r["hank_token"]["body"]["access_token"]

    owner = await claim(env, r["gina_code"]["body"]["claim_code"], DEVICE_A)
    gina_row = await env.run(
        lambda c: models.customers.get_customer(c, env.product_id, "gina@example.com")
    )
    assert owner == {
        "device_id": DEVICE_A,
        "user_id": None,
        "customer_id": gina_row["id"],
        "product_id": env.product_id,
    }
    assert await claim(env, r["hank_code"]["body"]["claim_code"], DEVICE_B) is not None
    # hank's used code cannot take gina's device
    assert await claim(env, r["hank_code"]["body"]["claim_code"], DEVICE_A) is None

    steps = [
        {"op": "listDevices", "id": "list", "auth": gina},
        {"op": "getDevice", "id": "get", "deviceId": DEVICE_A, "auth": gina},
        {"op": "getDevice", "id": "get_by_name", "deviceId": "photon_234567", "auth": gina},
        {"op": "getClaimCode", "id": "code_again", "product": env.product, "auth": gina},
        {
            "op": "callFunction",
            "id": "call",
            "deviceId": DEVICE_A,
            "name": "led",
            "argument": "on",
            "auth": gina,
        },
        {
            "op": "callFunction",
            "id": "call_product_route",
            "deviceId": DEVICE_A,
            "name": "led",
            "argument": "on",
            "product": env.product,
            "auth": gina,
        },
        {"op": "getVariable", "id": "var", "deviceId": DEVICE_A, "name": "temp", "auth": gina},
        {"op": "claimDevice", "id": "claim_offline", "deviceId": DEVICE_A, "auth": gina},
        # another customer's device: the same 403 whether it exists or not
        {"op": "getDevice", "id": "get_other", "deviceId": DEVICE_B, "auth": gina},
        {
            "op": "callFunction",
            "id": "call_other",
            "deviceId": DEVICE_B,
            "name": "led",
            "argument": "on",
            "auth": gina,
        },
        {"op": "getVariable", "id": "var_other", "deviceId": DEVICE_B, "name": "t", "auth": gina},
        {"op": "getDevice", "id": "get_unknown", "deviceId": "0" * 24, "auth": gina},
        {"op": "getDevice", "id": "hank_get_gina", "deviceId": DEVICE_A, "auth": hank},
        {"op": "listDevices", "id": "hank_list", "auth": hank},
    ]
    r = await drive(env, steps)

    assert r["list"]["statusCode"] == 200
    assert len(r["list"]["body"]) == 1
    listed = r["list"]["body"][0]
    assert listed["id"] == DEVICE_A
    assert listed["name"] == "photon_234567"
    assert listed["online"] is False
    assert listed["connected"] is False
    assert listed["platform_id"] == 6
    assert listed["product_id"] == env.product_id
    assert listed["functions"] == ["led"]
    assert listed["variables"] == {"temp": "double"}
    assert r["get"]["statusCode"] == 200
    assert r["get"]["body"]["id"] == DEVICE_A
    assert r["get"]["body"]["owner"] == "gina@example.com"
    assert r["get_by_name"]["body"]["id"] == DEVICE_A
    assert_claim_code(r["code_again"], [DEVICE_A])

    for key in ("call", "call_product_route", "var", "claim_offline"):
        assert rejection(r[key]) == OFFLINE, key
    assert_message(r["call"], env, f"/v1/devices/{DEVICE_A}/led")

    denied = oauth_error(403, "forbidden", PERMISSION_DENIED)
    for key in ("get_other", "call_other", "var_other", "get_unknown", "hank_get_gina"):
        assert rejection(r[key]) == denied, key
    assert [d["id"] for d in r["hank_list"]["body"]] == [DEVICE_B]


# ---------------------------------------------------------------------------------------
# (e) server-sent events
# ---------------------------------------------------------------------------------------
async def test_event_stream_receives_published_events(env: Env, device_key: DeviceKey) -> None:
    await register(env, device_key, DEVICE_A)
    await register(env, device_key, DEVICE_B)
    r = await drive(
        env,
        [
            *customer_token_steps(env, "ivy@example.com", "ivy"),
            *customer_token_steps(env, "jack@example.com", "jack"),
            {
                "op": "getClaimCode",
                "id": "ivy_code",
                "product": env.product,
                "auth": "{{ivy_token.body.access_token}}",
            },
            {
                "op": "getClaimCode",
                "id": "jack_code",
                "product": env.product,
                "auth": "{{jack_token.body.access_token}}",
            },
        ],
    )
    assert await claim(env, r["ivy_code"]["body"]["claim_code"], DEVICE_A) is not None
    assert await claim(env, r["jack_code"]["body"]["claim_code"], DEVICE_B) is not None
    ivy = r["ivy_token"]["body"]["access_token"]

    def row_of(conn: Any, device_id: str) -> dict[str, Any]:
        return dict(conn.execute("SELECT * FROM devices WHERE id = ?", (device_id,)).fetchone())

    row_a = await env.run(lambda c: row_of(c, DEVICE_A))
    row_b = await env.run(lambda c: row_of(c, DEVICE_B))
    opened: list[str] = []

    async def publish(step_id: str) -> None:
        opened.append(step_id)
        for _ in range(100):  # the stream registers right after its headers go out
            if env.cloud.subscribers:
                break
            await asyncio.sleep(0.02)
        now = env.clock.now
        if step_id == "stream":
            # jack's device first: ivy's stream must not see it
            env.cloud.publish(events.device_event(row_b, "temp", "19.0", now=now))
            env.cloud.publish(events.device_event(row_a, "temp", "21.5", now=now, ttl=30))
            env.cloud.publish(events.device_event(row_a, "spark/status", "online", now=now))
        elif step_id == "prefixed":
            env.cloud.publish(events.device_event(row_a, "humidity", "40", now=now))
            env.cloud.publish(events.device_event(row_a, "temp/outside", "3", now=now))

    steps = [
        {
            "op": "getEventStream",
            "id": "stream",
            "deviceId": "mine",
            "auth": ivy,
            "count": 2,
            "timeoutMs": 5000,
        },
        {
            "op": "getEventStream",
            "id": "prefixed",
            "deviceId": DEVICE_A,
            "name": "temp",
            "auth": ivy,
            "count": 1,
            "timeoutMs": 5000,
        },
        {
            "op": "getEventStream",
            "id": "bad_token",
            "deviceId": "mine",
            "auth": "f" * 40,
            "timeoutMs": 1000,
        },
        {
            "op": "getEventStream",
            "id": "other_device",
            "deviceId": DEVICE_B,
            "auth": ivy,
            "timeoutMs": 1000,
        },
    ]
    r = await drive(env, steps, on_stream_open=publish)
    assert opened == ["stream", "prefixed"]
    published_at = views.iso_time(env.clock.now)

    assert r["stream"]["ok"] is True
    assert r["stream"]["stopped"] == "count"
    assert r["stream"]["events"] == [
        {
            "data": "21.5",
            "ttl": 30,
            "published_at": published_at,
            "coreid": DEVICE_A,
            "name": "temp",
        },
        {
            "data": "online",
            "ttl": 60,
            "published_at": published_at,
            "coreid": DEVICE_A,
            "name": "spark/status",
        },
    ]
    assert r["prefixed"]["stopped"] == "count"
    assert [(e["name"], e["data"]) for e in r["prefixed"]["events"]] == [("temp/outside", "3")]

    # EventStream.connect() rejects with {statusCode, errorDescription, body}
    bad = r["bad_token"]
    assert bad["ok"] is False
    assert bad["statusCode"] == 401
    assert bad["error"] == "invalid_token"
    assert bad["error_description"] == "The access token provided is invalid."
    assert bad["message"] == (
        f"HTTP error 401 from {env.url}/v1/devices/events - The access token provided is invalid."
    )
    other = r["other_device"]
    assert other["statusCode"] == 403
    assert other["error"] == "forbidden"
    assert other["error_description"] == PERMISSION_DENIED

    # every stream was closed by the client and dropped by the server
    for _ in range(100):
        if not env.cloud.subscribers:
            break
        await asyncio.sleep(0.05)
    assert not env.cloud.subscribers
