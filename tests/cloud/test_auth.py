"""The cloud's auth area (``softap_sim.cloud.auth``; cloud-api.md §1-§4, §10.3).

A real :class:`CloudServer` on port 0 over an in-memory database, with a controllable
clock: every route, every grant, every error row of §4 with exact bodies, statuses and
headers; scopes; revocation (customer deletion, token deletion, expiry); bad input
changes nothing; no secret is ever stored in plain text or logged.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
import pytest_asyncio

from softap_sim.cloud import hashing, models, policy
from softap_sim.cloud.app import CloudServer
from softap_sim.cloud.backend import CloudBackend
from softap_sim.cloud.db import Database
from softap_sim.cloud.errors import CloudError, InvalidRequest, InvalidScope, NotFound
from softap_sim.cloud.principal import Principal

T = TypeVar("T")
T0 = 1_700_000_000.0
DAY = 86400
TOKEN_RE = re.compile(r"^[0-9a-f]{40}$")
WWW_AUTH = 'Basic realm="Service"'
FORM_ONLY = "Method must be POST with application/x-www-form-urlencoded encoding"


def err(code: str, description: str) -> dict[str, str]:
    return {"error": code, "error_description": description}


BAD_CLIENT = err("invalid_client", "Client credentials are invalid")
BAD_USER = err("invalid_grant", "User credentials are invalid")
BAD_TOKEN = err("invalid_token", "The access token provided is invalid.")
EXPIRED_TOKEN = err("invalid_token", "The access token provided has expired.")
NO_TOKEN = err("invalid_request", "The access token was not found")
UNAUTHORISED = err("invalid_client", "The grant type is unauthorised for this client_id")


@pytest.fixture(autouse=True)
def fast_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    """scrypt with a small cost keeps the suite quick; the stored format is unchanged
    (one test below checks the production parameters)."""
    monkeypatch.setattr(hashing, "SCRYPT_N", 2**8)


@dataclass
class Clock:
    t: float = T0

    def __call__(self) -> float:
        return self.t


@dataclass
class Reply:
    status: int
    body: Any
    headers: Any


@dataclass
class Env:
    cloud: CloudBackend
    server: CloudServer
    session: aiohttp.ClientSession
    clock: Clock
    seed: dict[str, Any]
    #: plain secrets seen during the test (scanned against storage and logs)
    secrets: set[str] = field(default_factory=set)

    @property
    def product_id(self) -> int:
        return int(self.seed["product"]["id"])

    @property
    def server_client(self) -> tuple[str, str]:
        return self.seed["client"]["id"], self.seed["client"]["secret"]

    @property
    def user(self) -> tuple[str, str]:
        return self.seed["user"]["email"], self.seed["user"]["password"]

    async def db(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self.cloud.db.run(fn)

    async def call(
        self,
        method: str,
        path: str,
        *,
        form: dict[str, str] | None = None,
        json: Any = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        token: str | None = None,
        basic: tuple[str, str] | None = None,
    ) -> Reply:
        hdrs = dict(headers or {})
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        if basic is not None:
            hdrs["Authorization"] = basic_header(*basic)
        kwargs: dict[str, Any] = {"headers": hdrs}
        if form is not None:
            kwargs["data"] = form
        elif json is not None:
            kwargs["json"] = json
        elif data is not None:
            kwargs["data"] = data
        async with self.session.request(method, path, **kwargs) as resp:
            raw = await resp.read()
            text = raw.decode()
            body = None if not raw else await resp.json(content_type=None)
            for value in _strings(body):
                if TOKEN_RE.match(value):
                    self.secrets.add(value)
            assert resp.status == 204 or text, "every reply has a JSON body"
            return Reply(resp.status, body, resp.headers)

    async def token(self, **form: str) -> Reply:
        return await self.call("POST", "/oauth/token", form=form)

    async def login_user(self, **extra: str) -> dict[str, Any]:
        email, password = self.user
        r = await self.token(
            grant_type="password",
            username=email,
            password=password,
            client_id="particle-api",
            client_secret="particle-api",
            **extra,
        )
        assert r.status == 200, r.body
        return dict(r.body)

    async def create_customer(
        self, email: str, password: str | None = None, *, client: tuple[str, str] | None = None
    ) -> Reply:
        form = {"email": email}
        if password is None:
            form["no_password"] = "true"
        else:
            form["password"] = password
            self.secrets.add(password)
        return await self.call(
            "POST",
            f"/v1/products/{self.product_id}/customers",
            form=form,
            basic=client or self.server_client,
        )

    async def customer_login(self, email: str, password: str) -> Reply:
        cid, secret = self.server_client
        return await self.token(
            grant_type="password",
            username=email,
            password=password,
            client_id=cid,
            client_secret=secret,
        )

    async def new_client(
        self, token: str, *, product: bool = True, **form: str
    ) -> tuple[str, str, dict[str, Any]]:
        path = f"/v1/products/{self.product_id}/clients" if product else "/v1/clients"
        r = await self.call("POST", path, form={"type": "installed", **form}, token=token)
        assert r.status == 201, r.body
        self.secrets.add(r.body["client"]["secret"])
        return r.body["client"]["id"], r.body["client"]["secret"], r.body

    async def counts(self) -> dict[str, int]:
        def count(conn: sqlite3.Connection) -> dict[str, int]:
            return {
                t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                for t in ("users", "products", "clients", "customers", "tokens", "claim_codes")
            }

        return await self.db(count)

    async def stored_text(self) -> str:
        def dump(conn: sqlite3.Connection) -> str:
            names = [
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            ]
            out = []
            for name in names:
                for row in conn.execute(f"SELECT * FROM {name}"):
                    out.extend(str(v) for v in tuple(row))
            return "\n".join(out)

        return await self.db(dump)


def basic_header(name: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


@pytest_asyncio.fixture
async def env() -> AsyncIterator[Env]:
    clock = Clock()
    db = Database(None)
    await db.open()
    cloud = CloudBackend(db=db, now=clock)
    seed = await db.run(lambda c: models.seed.bootstrap(c, clock()))
    assert seed is not None
    server = CloudServer(cloud, "127.0.0.1", 0)
    await server.start()
    session = aiohttp.ClientSession(base_url=server.url)
    e = Env(cloud, server, session, clock, seed)
    e.secrets.update({seed["user"]["password"], seed["client"]["secret"]})
    try:
        yield e
    finally:
        await session.close()
        await server.close()
        await db.close()


def assert_oauth_error(r: Reply, status: int, body: dict[str, str]) -> None:
    assert (r.status, r.body) == (status, body)
    assert r.headers["Content-Type"].startswith("application/json")
    if body["error"] == "invalid_client":
        assert r.headers["WWW-Authenticate"] == WWW_AUTH
    else:
        assert "WWW-Authenticate" not in r.headers


def assert_token_json(
    body: dict[str, Any], *, expires_in: int = 7_776_000, refresh: bool = True
) -> None:
    keys = {"token_type", "access_token", "expires_in"} | ({"refresh_token"} if refresh else set())
    assert set(body) - {"scope"} == keys
    assert body["token_type"] == "bearer"
    assert TOKEN_RE.match(body["access_token"])
    assert body["expires_in"] == expires_in
    if refresh:
        assert TOKEN_RE.match(body["refresh_token"])
        assert body["refresh_token"] != body["access_token"]


# =======================================================================================
# model functions
# =======================================================================================
@pytest.mark.asyncio
async def test_bootstrap_seeds_once_and_returns_plain_credentials_once() -> None:
    db = Database(None)
    await db.open()
    try:
        seed = await db.run(lambda c: models.seed.bootstrap(c, T0))
        assert seed is not None
        assert seed["user"]["email"] == models.seed.DEFAULT_DEVELOPER_EMAIL
        assert len(seed["user"]["password"]) >= 16
        assert seed["product"] == {"id": 10001, "slug": "softap-sim", "name": "softap-sim product"}
        assert re.match(r"^softap-sim-server-[0-9a-f]{8}$", seed["client"]["id"])
        assert TOKEN_RE.match(seed["client"]["secret"])
        assert seed["developer_clients"] == [
            {"id": "particle-api", "secret": "particle-api"},
            {"id": "particle", "secret": "particle"},
            # particle-cli's login and token-create clients (issue 13)
            {"id": "CLI2", "secret": "client_secret_here"},
            {"id": "user", "secret": "client_secret_here"},
        ]
        assert await db.run(lambda c: models.seed.bootstrap(c, T0 + 1)) is None
        clients = await db.run(lambda c: models.clients.list_clients(c))
        assert {c["id"] for c in clients} == {
            "particle-api",
            "particle",
            "CLI2",
            "user",
            seed["client"]["id"],
        }
        two_legged = next(c for c in clients if c["product_id"] == 10001)
        assert (two_legged["type"], two_legged["scope"]) == ("installed", "")
        hashes = await db.run(
            lambda c: dict(c.execute("SELECT id, secret_hash FROM clients").fetchall())
        )
        # public well-known secrets are hashed like any other (scrypt: chosen, not random)
        assert hashes["particle"].startswith("scrypt$")
        assert hashes["particle-api"].startswith("scrypt$")
        assert hashes[seed["client"]["id"]] == hashing.digest(seed["client"]["secret"])
        assert await db.run(lambda c: models.clients.authenticate_client(c, "particle", "particle"))
        assert not await db.run(lambda c: models.clients.authenticate_client(c, "particle", "x"))
        assert not await db.run(lambda c: models.clients.authenticate_client(c, "nobody", "x"))
    finally:
        await db.close()


@pytest.mark.asyncio
async def test_model_products_clients_and_presets() -> None:
    db = Database(None)
    await db.open()
    try:
        user = await db.run(lambda c: models.accounts.create_user(c, "Dev@Example.com", "pw", T0))
        assert user["email"] == "dev@example.com"
        with pytest.raises(InvalidRequest, match="User already exists"):
            await db.run(lambda c: models.accounts.create_user(c, "DEV@example.com", "pw", T0))
        p1 = await db.run(
            lambda c: models.accounts.create_product(c, "Lamp", "lamp", user["id"], T0)
        )
        p2 = await db.run(lambda c: models.accounts.create_product(c, "Fan", "Fan-2", None, T0))
        assert (p1["id"], p2["id"], p2["slug"]) == (10001, 10002, "fan-2")
        for bad in ("12345", "-x", "a b", "", "x" * 64):
            with pytest.raises(InvalidRequest, match="Invalid product slug"):
                await db.run(lambda c, s=bad: models.accounts.create_product(c, "X", s, None, T0))  # type: ignore[misc]
        with pytest.raises(InvalidRequest, match="already exists"):
            await db.run(lambda c: models.accounts.create_product(c, "Lamp", "LAMP", None, T0))
        assert (await db.run(lambda c: models.accounts.get_product(c, "LaMp")) or {})["id"] == 10001
        assert (await db.run(lambda c: models.accounts.get_product(c, 10002)) or {})[
            "slug"
        ] == "fan-2"

        mobile, s1 = await db.run(
            lambda c: models.clients.create_preset_client(
                c, "simple-auth-mobile", name="My App!", product_id=10001, now=T0
            )
        )
        assert re.match(r"^my-app-[0-9a-f]{8}$", mobile["id"])
        assert policy.CLIENT_ID_RE.match(mobile["id"])
        assert (mobile["type"], mobile["scope"], mobile["redirect_uri"]) == (
            "installed",
            "customers:create",
            None,
        )
        assert TOKEN_RE.match(s1)
        web_, _ = await db.run(
            lambda c: models.clients.create_preset_client(
                c,
                "simple-auth-web",
                name="Web",
                product_id=10001,
                redirect_uri="https://app.example/cb",
                now=T0,
            )
        )
        assert (web_["type"], web_["redirect_uri"]) == ("web", "https://app.example/cb")
        server, _ = await db.run(
            lambda c: models.clients.create_preset_client(
                c, "two-legged", name="S", product_id=10001, client_id="srv_1", now=T0
            )
        )
        assert (server["id"], server["scope"]) == ("srv_1", "")
        with pytest.raises(InvalidRequest, match="Unknown client preset"):
            await db.run(
                lambda c: models.clients.create_preset_client(
                    c, "nope", name="x", product_id=None, now=T0
                )
            )
        with pytest.raises(InvalidRequest, match="Invalid client id"):
            await db.run(
                lambda c: models.clients.create_client(
                    c, name="x", type="installed", scope="", client_id="A!", now=T0
                )
            )
        with pytest.raises(InvalidRequest, match="already exists"):
            await db.run(
                lambda c: models.clients.create_client(
                    c, name="x", type="installed", scope="", client_id="SRV_1", now=T0
                )
            )
        with pytest.raises(InvalidScope):
            await db.run(
                lambda c: models.clients.create_client(
                    c, name="x", type="installed", scope="admin", now=T0
                )
            )
        legacy, _ = await db.run(
            lambda c: models.clients.create_client(
                c, name="old", type="installed", scope="create_customer", product_id=10001, now=T0
            )
        )
        assert policy.is_customer_creation_only(legacy["scope"])
        assert not policy.is_customer_creation_only("customers:create *:*")
        assert [
            c["id"]
            for c in await db.run(lambda c: models.clients.list_clients(c, product_id=10002))
        ] == []
        assert len(await db.run(lambda c: models.clients.list_clients(c, product_id=10001))) == 4
        upd = await db.run(
            lambda c: models.clients.update_client(c, "srv_1", name="Renamed", scope="*:*")
        )
        assert (upd["name"], upd["scope"]) == ("Renamed", "*:*")
        upd = await db.run(lambda c: models.clients.update_client(c, "srv_1", scope="none"))
        assert upd["scope"] == ""
        assert await db.run(lambda c: models.clients.delete_client(c, "SRV_1")) is True
        assert await db.run(lambda c: models.clients.delete_client(c, "srv_1")) is False
    finally:
        await db.close()


@pytest.mark.asyncio
async def test_model_tokens_customers_and_revocation() -> None:
    db = Database(None)
    await db.open()
    try:
        await db.run(lambda c: models.seed.bootstrap(c, T0))
        cust = await db.run(lambda c: models.customers.create_customer(c, 10001, "A@B.c", None, T0))
        assert (cust["email"], cust["shadow"]) == ("a@b.c", True)
        with pytest.raises(InvalidRequest, match="Customer already exists"):
            await db.run(lambda c: models.customers.create_customer(c, 10001, "a@b.C", "pw", T0))
        with pytest.raises(NotFound, match="Product not found"):
            await db.run(lambda c: models.customers.create_customer(c, 999, "x@y.z", "pw", T0))

        tok = await db.run(
            lambda c: models.tokens.issue_tokens(
                c, client_id="particle", customer_id=cust["id"], product_id=10001, now=T0
            )
        )
        assert_token_json(tok)
        never = await db.run(
            lambda c: models.tokens.issue_tokens(
                c, client_id="particle", user_id="u", expires_in=0, now=T0
            )
        )
        assert_token_json(never, expires_in=0, refresh=False)
        at = await db.run(
            lambda c: models.tokens.issue_tokens(
                c, client_id="particle", user_id="u", expires_at=T0 + 3600, scope="x=y", now=T0
            )
        )
        assert (at["expires_in"], at["scope"]) == (3600, "x=y")
        with pytest.raises(InvalidRequest):
            await db.run(
                lambda c: models.tokens.issue_tokens(c, client_id="p", expires_at=T0 - 1, now=T0)
            )
        rows = await db.run(
            lambda c: [
                dict(r)
                for r in c.execute("SELECT * FROM tokens WHERE customer_id = ?", (cust["id"],))
            ]
        )
        access = next(r for r in rows if r["kind"] == "access")
        refresh = next(r for r in rows if r["kind"] == "refresh")
        assert access["hash"] == hashing.digest(tok["access_token"])
        assert (access["pair_hash"], refresh["pair_hash"]) == (refresh["hash"], access["hash"])
        assert access["expires_at"] == T0 + 7_776_000
        assert refresh["expires_at"] == T0 + 14 * DAY

        await db.run(lambda c: models.customers.revoke_customer(c, cust["id"]))
        left = await db.run(
            lambda c: c.execute(
                "SELECT COUNT(*) FROM tokens WHERE customer_id = ?", (cust["id"],)
            ).fetchone()[0]
        )
        assert left == 0
        assert await db.run(lambda c: models.tokens.revoke_token(c, never["access_token"]))
        assert not await db.run(lambda c: models.tokens.revoke_token(c, never["access_token"]))
    finally:
        await db.close()


@pytest.mark.asyncio
async def test_production_kdf_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hashing, "SCRYPT_N", 2**14)
    db = Database(None)
    await db.open()
    try:
        user = await db.run(lambda c: models.accounts.create_user(c, "kdf@x.y", "pw-kdf", T0))
        stored = await db.run(
            lambda c: c.execute(
                "SELECT password_hash FROM users WHERE id = ?", (user["id"],)
            ).fetchone()[0]
        )
        assert stored.startswith("scrypt$16384$8$1$")
        assert "pw-kdf" not in stored
        assert hashing.verify_password("pw-kdf", stored)
    finally:
        await db.close()


# =======================================================================================
# POST /oauth/token: password grant
# =======================================================================================
@pytest.mark.asyncio
async def test_password_grant_user_with_particle_api_client(env: Env) -> None:
    email, password = env.user
    r = await env.token(
        grant_type="password",
        username=email,
        password=password,
        client_id="particle-api",
        client_secret="particle-api",
        expires_in="7776000",
    )
    assert r.status == 200
    assert_token_json(r.body)
    assert "scope" not in r.body
    assert r.headers["Cache-Control"] == "no-store"
    assert r.headers["Pragma"] == "no-cache"
    me = await env.call("GET", "/v1/access_tokens/current", token=r.body["access_token"])
    assert me.body == {
        "expires_at": "2024-02-12T22:13:20.000Z",
        "client": "particle-api",
        "scopes": [],
        "orgs": [],
    }


@pytest.mark.asyncio
async def test_password_grant_particle_client_basic_and_case_insensitive_username(
    env: Env,
) -> None:
    email, password = env.user
    r = await env.call(
        "POST",
        "/oauth/token",
        form={"grant_type": "password", "username": email.upper(), "password": password},
        basic=("particle", "particle"),
    )
    assert r.status == 200
    assert_token_json(r.body)


@pytest.mark.asyncio
async def test_basic_wins_over_body_credentials(env: Env) -> None:
    email, password = env.user
    form = {"grant_type": "password", "username": email, "password": password}
    ok = await env.call(
        "POST",
        "/oauth/token",
        form={**form, "client_id": "particle", "client_secret": "wrong"},
        basic=("particle-api", "particle-api"),
    )
    assert ok.status == 200
    bad = await env.call(
        "POST",
        "/oauth/token",
        form={**form, "client_id": "particle", "client_secret": "particle"},
        basic=("particle-api", "wrong"),
    )
    assert_oauth_error(bad, 400, BAD_CLIENT)
    assert bad.headers["Cache-Control"] == "no-store"
    assert bad.headers["Pragma"] == "no-cache"


@pytest.mark.asyncio
async def test_bearer_header_is_ignored_on_the_token_endpoint(env: Env) -> None:
    """particle-api-js with a default ``auth`` sends Bearer next to form credentials (§10.3)."""
    email, password = env.user
    for bearer in ("not-a-real-token", (await env.login_user())["access_token"]):
        r = await env.call(
            "POST",
            "/oauth/token",
            form={
                "grant_type": "password",
                "username": email,
                "password": password,
                "client_id": "particle-api",
                "client_secret": "particle-api",
            },
            token=bearer,
        )
        assert r.status == 200, r.body


@pytest.mark.asyncio
async def test_password_grant_bad_user_credentials(env: Env) -> None:
    email, _ = env.user
    for username, password in ((email, "wrong"), ("nobody@x.y", "whatever")):
        r = await env.token(
            grant_type="password",
            username=username,
            password=password,
            client_id="particle",
            client_secret="particle",
        )
        assert_oauth_error(r, 400, BAD_USER)


@pytest.mark.asyncio
async def test_password_grant_missing_username_or_password(env: Env) -> None:
    missing = err("invalid_client", 'Missing parameters. "username" and "password" are required')
    for form in ({"username": "a@b.c"}, {"password": "x"}, {}):
        r = await env.token(
            grant_type="password", client_id="particle", client_secret="particle", **form
        )
        assert_oauth_error(r, 400, missing)


@pytest.mark.asyncio
async def test_password_grant_scope_is_rejected(env: Env) -> None:
    email, password = env.user
    r = await env.token(
        grant_type="password",
        username=email,
        password=password,
        client_id="particle",
        client_secret="particle",
        scope="*:*",
    )
    assert_oauth_error(r, 400, err("invalid_scope", "Invalid scope"))


@pytest.mark.asyncio
async def test_users_log_in_with_developer_clients_customers_with_product_clients(
    env: Env,
) -> None:
    assert (await env.create_customer("jane@example.com", "jane-pw-1")).status == 201
    email, password = env.user
    # a customer through a developer client: no such user
    r = await env.token(
        grant_type="password",
        username="jane@example.com",
        password="jane-pw-1",
        client_id="particle-api",
        client_secret="particle-api",
    )
    assert_oauth_error(r, 400, BAD_USER)
    # the developer through a product client: no such customer
    assert_oauth_error(await env.customer_login(email, password), 400, BAD_USER)
    ok = await env.customer_login("JANE@example.COM", "jane-pw-1")
    assert ok.status == 200
    assert_token_json(ok.body)
    principal = await env.cloud.principal_for(ok.body["access_token"])
    assert (principal.kind, principal.product_id) == ("customer", env.product_id)


@pytest.mark.asyncio
async def test_shadow_customer_cannot_use_the_password_grant(env: Env) -> None:
    assert (await env.create_customer("shadow@example.com")).status == 201
    for password in ("", "anything", "None", "null"):
        r = await env.customer_login("shadow@example.com", password)
        if password == "":
            assert r.body["error"] == "invalid_client"
        else:
            assert_oauth_error(r, 400, BAD_USER)


# =======================================================================================
# POST /oauth/token: request validation (§4 table)
# =======================================================================================
@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("how", "kwargs"),
    [
        ("json", {"json": {"grant_type": "password"}}),
        ("text", {"data": b"grant_type=password", "headers": {"Content-Type": "text/plain"}}),
        ("octet", {"data": b"grant_type=password"}),
        ("multipart", {"data": b"--x--", "headers": {"Content-Type": "multipart/form-data"}}),
    ],
)
async def test_token_endpoint_is_form_only(env: Env, how: str, kwargs: dict[str, Any]) -> None:
    before = await env.counts()
    r = await env.call("POST", "/oauth/token", **kwargs)
    assert_oauth_error(r, 400, err("invalid_request", FORM_ONLY))
    assert r.headers["Cache-Control"] == "no-store"
    assert await env.counts() == before


@pytest.mark.asyncio
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_token_endpoint_other_methods(env: Env, method: str) -> None:
    r = await env.call(method, "/oauth/token")
    assert_oauth_error(r, 400, err("invalid_request", FORM_ONLY))


@pytest.mark.asyncio
@pytest.mark.parametrize("grant_type", [None, "", "authorization_code", "PASSWORD", "implicit"])
async def test_invalid_or_missing_grant_type(env: Env, grant_type: str | None) -> None:
    form = {"client_id": "particle", "client_secret": "particle"}
    if grant_type is not None:
        form["grant_type"] = grant_type
    r = await env.token(**form)
    assert_oauth_error(r, 400, err("invalid_request", "Invalid or missing grant_type parameter"))


@pytest.mark.asyncio
@pytest.mark.parametrize("client_id", [None, "", "ab", "x" * 41, "bad id", "ünï"])
async def test_invalid_or_missing_client_id(env: Env, client_id: str | None) -> None:
    form = {"grant_type": "password", "username": "a", "password": "b", "client_secret": "s"}
    if client_id is not None:
        form["client_id"] = client_id
    r = await env.token(**form)
    assert_oauth_error(r, 400, err("invalid_client", "Invalid or missing client_id parameter"))


@pytest.mark.asyncio
async def test_missing_client_secret(env: Env) -> None:
    for kwargs in (
        {"form": {"grant_type": "password", "client_id": "particle"}},
        {"form": {"grant_type": "password"}, "basic": ("particle", "")},
    ):
        r = await env.call("POST", "/oauth/token", **kwargs)  # type: ignore[arg-type]
        assert_oauth_error(r, 400, err("invalid_client", "Missing client_secret parameter"))


@pytest.mark.asyncio
async def test_unknown_client_or_wrong_secret(env: Env) -> None:
    email, password = env.user
    for cid, secret in (("nobody", "x"), ("particle", "particle-api"), ("PARTICLE", "x")):
        r = await env.token(
            grant_type="password",
            username=email,
            password=password,
            client_id=cid,
            client_secret=secret,
        )
        assert_oauth_error(r, 400, BAD_CLIENT)


@pytest.mark.asyncio
async def test_client_ids_are_case_insensitive(env: Env) -> None:
    email, password = env.user
    r = await env.token(
        grant_type="password",
        username=email,
        password=password,
        client_id="PARTICLE",
        client_secret="particle",
    )
    assert r.status == 200


@pytest.mark.asyncio
async def test_malformed_basic_header_falls_back_to_the_body(env: Env) -> None:
    email, password = env.user
    r = await env.call(
        "POST",
        "/oauth/token",
        form={
            "grant_type": "password",
            "username": email,
            "password": password,
            "client_id": "particle",
            "client_secret": "particle",
        },
        headers={"Authorization": "Basic %%%not-base64"},
    )
    assert r.status == 200


# =======================================================================================
# expiry
# =======================================================================================
@pytest.mark.asyncio
async def test_default_lifetime_then_expired(env: Env) -> None:
    tok = (await env.login_user())["access_token"]
    env.clock.t = T0 + 7_776_000 - 1
    assert (await env.call("GET", "/v1/access_tokens/current", token=tok)).status == 200
    env.clock.t = T0 + 7_776_000
    r = await env.call("GET", "/v1/access_tokens/current", token=tok)
    assert_oauth_error(r, 401, EXPIRED_TOKEN)


@pytest.mark.asyncio
async def test_expires_in_zero_never_expires_and_has_no_refresh_token(env: Env) -> None:
    body = await env.login_user(expires_in="0")
    assert_token_json(body, expires_in=0, refresh=False)
    env.clock.t = T0 + 9 * 365 * DAY
    r = await env.call("GET", "/v1/access_tokens/current", token=body["access_token"])
    assert r.status == 200
    assert r.body["expires_at"] is None


@pytest.mark.asyncio
async def test_short_expires_in(env: Env) -> None:
    body = await env.login_user(expires_in="60")
    assert body["expires_in"] == 60
    env.clock.t = T0 + 59
    r = await env.call("GET", "/v1/access_tokens/current", token=body["access_token"])
    assert r.status == 200
    env.clock.t = T0 + 60
    r = await env.call("GET", "/v1/access_tokens/current", token=body["access_token"])
    assert_oauth_error(r, 401, EXPIRED_TOKEN)


@pytest.mark.asyncio
async def test_expires_at_iso8601(env: Env) -> None:
    body = await env.login_user(expires_at="2023-11-15T00:00:00Z")  # T0 is 2023-11-14T22:13:20Z
    assert body["expires_in"] == 6400
    r = await env.call("GET", "/v1/access_tokens/current", token=body["access_token"])
    assert r.body["expires_at"] == "2023-11-15T00:00:00.000Z"
    env.clock.t = T0 + 6400
    r = await env.call("GET", "/v1/access_tokens/current", token=body["access_token"])
    assert_oauth_error(r, 401, EXPIRED_TOKEN)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("extra", "description"),
    [
        ({"expires_in": "abc"}, "Invalid expires_in parameter"),
        ({"expires_in": "-1"}, "Invalid expires_in parameter"),
        ({"expires_in": "1.5"}, "Invalid expires_in parameter"),
        ({"expires_in": str(11 * 365 * DAY)}, "Invalid expires_in parameter"),
        ({"expires_at": "tomorrow"}, "Invalid expires_at parameter: use ISO 8601"),
        ({"expires_at": "2020-01-01T00:00:00Z"}, "expires_at is in the past"),
        (
            {"expires_in": "60", "expires_at": "2030-01-01T00:00:00Z"},
            "Send expires_in or expires_at, not both",
        ),
    ],
)
async def test_bad_expiry_parameters(env: Env, extra: dict[str, str], description: str) -> None:
    email, password = env.user
    before = await env.counts()
    r = await env.token(
        grant_type="password",
        username=email,
        password=password,
        client_id="particle",
        client_secret="particle",
        **extra,
    )
    assert_oauth_error(r, 400, err("invalid_request", description))
    assert await env.counts() == before


# =======================================================================================
# client_credentials
# =======================================================================================
@pytest.mark.asyncio
async def test_client_credentials_product_client_owner_token(env: Env) -> None:
    cid, secret = env.server_client
    r = await env.token(grant_type="client_credentials", client_id=cid, client_secret=secret)
    assert r.status == 200
    assert_token_json(r.body)
    assert "scope" not in r.body
    principal = await env.cloud.principal_for(r.body["access_token"])
    assert (principal.kind, principal.product_id, principal.user_id) == (
        "client",
        env.product_id,
        None,
    )
    # a product-bound token administers its product
    lst = await env.call(
        "GET", f"/v1/products/{env.product_id}/customers", token=r.body["access_token"]
    )
    assert lst.status == 200


@pytest.mark.asyncio
async def test_client_credentials_user_client_gives_a_user_token(env: Env) -> None:
    user_tok = (await env.login_user())["access_token"]
    cid, secret, _ = await env.new_client(user_tok, product=False, name="My server")
    r = await env.call(
        "POST", "/oauth/token", form={"grant_type": "client_credentials"}, basic=(cid, secret)
    )
    assert r.status == 200
    principal = await env.cloud.principal_for(r.body["access_token"])
    assert principal.kind == "user"
    assert principal.user_id == env.seed["user"]["id"]


@pytest.mark.asyncio
async def test_client_credentials_without_owner_is_invalid_grant(env: Env) -> None:
    for cid in ("particle", "particle-api"):
        r = await env.token(grant_type="client_credentials", client_id=cid, client_secret=cid)
        assert_oauth_error(r, 400, err("invalid_grant", "Client credentials are invalid"))


@pytest.mark.asyncio
async def test_client_credentials_customer_scope(env: Env) -> None:
    assert (await env.create_customer("Jane@Example.com")).status == 201
    cid, secret = env.server_client
    r = await env.call(
        "POST",
        "/oauth/token",
        form={"grant_type": "client_credentials", "scope": "customer=JANE@example.com"},
        basic=(cid, secret),
    )
    assert r.status == 200
    assert_token_json(r.body)
    assert r.body["scope"] == "customer=jane@example.com"
    principal = await env.cloud.principal_for(r.body["access_token"])
    assert principal.kind == "customer"
    assert principal.scopes == frozenset({"customer=jane@example.com"})
    me = await env.call("GET", "/v1/access_tokens/current", token=r.body["access_token"])
    assert me.body["scopes"] == ["customer=jane@example.com"]
    # particle-api-js style: form credentials
    r2 = await env.token(
        grant_type="client_credentials",
        client_id=cid,
        client_secret=secret,
        scope="customer=jane@example.com",
        expires_in="0",
    )
    assert r2.status == 200
    assert_token_json(r2.body, expires_in=0, refresh=False)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("scope", "description"),
    [
        ("customer=nobody@example.com", "Customer not found"),
        ("customer=", "Invalid scope"),
        ("customers:create", "Invalid scope"),
        ("user=x", "Invalid scope"),
    ],
)
async def test_client_credentials_bad_scope(env: Env, scope: str, description: str) -> None:
    cid, secret = env.server_client
    before = await env.counts()
    r = await env.token(
        grant_type="client_credentials", client_id=cid, client_secret=secret, scope=scope
    )
    assert_oauth_error(r, 400, err("invalid_scope", description))
    assert await env.counts() == before


@pytest.mark.asyncio
async def test_customer_scope_needs_a_product_client(env: Env) -> None:
    assert (await env.create_customer("jane@example.com")).status == 201
    user_tok = (await env.login_user())["access_token"]
    cid, secret, _ = await env.new_client(user_tok, product=False, name="user server")
    r = await env.token(
        grant_type="client_credentials",
        client_id=cid,
        client_secret=secret,
        scope="customer=jane@example.com",
    )
    assert_oauth_error(r, 400, err("invalid_scope", "Invalid scope"))


@pytest.mark.asyncio
async def test_customer_scope_of_another_products_customer(env: Env) -> None:
    other = await env.db(
        lambda c: models.accounts.create_product(c, "Other", "other", env.seed["user"]["id"], T0)
    )
    await env.db(lambda c: models.customers.create_customer(c, other["id"], "them@x.y", None, T0))
    cid, secret = env.server_client
    r = await env.token(
        grant_type="client_credentials",
        client_id=cid,
        client_secret=secret,
        scope="customer=them@x.y",
    )
    assert_oauth_error(r, 400, err("invalid_scope", "Customer not found"))


# =======================================================================================
# scope enforcement of customer-creation clients
# =======================================================================================
@pytest.mark.asyncio
@pytest.mark.parametrize("scope", ["customers:create", "create_customer"])
async def test_customer_creation_client_creates_and_logs_in_customers_only(
    env: Env, scope: str
) -> None:
    user_tok = (await env.login_user())["access_token"]
    cid, secret, created = await env.new_client(user_tok, name="Mobile app", scope=scope)
    assert created == {
        "ok": True,
        "client": {"name": "Mobile app", "type": "installed", "id": cid, "secret": secret},
    }
    r = await env.create_customer("mob@example.com", "mob-pw-123", client=(cid, secret))
    assert r.status == 201
    assert_token_json(r.body)
    # its customers log in through it (particle-api-js login() with the app's client)
    login = await env.token(
        grant_type="password",
        username="mob@example.com",
        password="mob-pw-123",
        client_id=cid,
        client_secret=secret,
    )
    assert login.status == 200
    # ...and refresh through it
    ref = await env.token(
        grant_type="refresh_token",
        refresh_token=login.body["refresh_token"],
        client_id=cid,
        client_secret=secret,
    )
    assert ref.status == 200
    # but nothing else: no client_credentials, with or without a customer scope
    for extra in ({}, {"scope": "customer=mob@example.com"}):
        bad = await env.token(
            grant_type="client_credentials", client_id=cid, client_secret=secret, **extra
        )
        assert_oauth_error(bad, 400, UNAUTHORISED)


@pytest.mark.asyncio
async def test_customer_creation_client_without_product_cannot_log_users_in(env: Env) -> None:
    user_tok = (await env.login_user())["access_token"]
    cid, secret, _ = await env.new_client(
        user_tok, product=False, name="odd", scope="customers:create"
    )
    email, password = env.user
    r = await env.token(
        grant_type="password",
        username=email,
        password=password,
        client_id=cid,
        client_secret=secret,
    )
    assert_oauth_error(r, 400, UNAUTHORISED)


@pytest.mark.asyncio
async def test_full_scope_client_behaves_like_two_legged(env: Env) -> None:
    user_tok = (await env.login_user())["access_token"]
    cid, secret, _ = await env.new_client(user_tok, name="full", scope="*:*")
    assert (await env.create_customer("f@x.y", client=(cid, secret))).status == 201
    r = await env.token(
        grant_type="client_credentials", client_id=cid, client_secret=secret, scope="customer=f@x.y"
    )
    assert r.status == 200


# =======================================================================================
# refresh_token
# =======================================================================================
@pytest.mark.asyncio
async def test_refresh_token_rotates(env: Env) -> None:
    await env.create_customer("r@x.y", "r-pw-1")
    first = (await env.customer_login("r@x.y", "r-pw-1")).body
    cid, secret = env.server_client
    env.clock.t = T0 + 100
    r = await env.call(
        "POST",
        "/oauth/token",
        form={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
        basic=(cid, secret),
    )
    assert r.status == 200
    assert_token_json(r.body)
    assert r.body["access_token"] != first["access_token"]
    assert r.body["refresh_token"] != first["refresh_token"]
    assert r.headers["Cache-Control"] == "no-store"
    new = await env.cloud.principal_for(r.body["access_token"])
    old = await env.cloud.principal_for(first["access_token"])  # still valid
    assert new.customer_id == old.customer_id
    assert new.expires_at == T0 + 100 + 7_776_000
    # the used refresh token is gone
    again = await env.token(
        grant_type="refresh_token",
        refresh_token=first["refresh_token"],
        client_id=cid,
        client_secret=secret,
    )
    assert_oauth_error(again, 400, err("invalid_grant", "Invalid refresh token"))
    # the new one works
    third = await env.token(
        grant_type="refresh_token",
        refresh_token=r.body["refresh_token"],
        client_id=cid,
        client_secret=secret,
    )
    assert third.status == 200


@pytest.mark.asyncio
async def test_refresh_keeps_the_customer_scope(env: Env) -> None:
    await env.create_customer("s@x.y")
    cid, secret = env.server_client
    first = await env.token(
        grant_type="client_credentials", client_id=cid, client_secret=secret, scope="customer=s@x.y"
    )
    r = await env.token(
        grant_type="refresh_token",
        refresh_token=first.body["refresh_token"],
        client_id=cid,
        client_secret=secret,
    )
    assert r.body["scope"] == "customer=s@x.y"


@pytest.mark.asyncio
async def test_refresh_token_needs_the_same_client(env: Env) -> None:
    await env.create_customer("r@x.y", "r-pw-1")
    first = (await env.customer_login("r@x.y", "r-pw-1")).body
    user_tok = (await env.login_user())["access_token"]
    other_id, other_secret, _ = await env.new_client(user_tok, name="other server")
    r = await env.token(
        grant_type="refresh_token",
        refresh_token=first["refresh_token"],
        client_id=other_id,
        client_secret=other_secret,
    )
    assert_oauth_error(r, 400, err("invalid_grant", "Invalid refresh token"))
    # an access token is not a refresh token
    cid, secret = env.server_client
    r = await env.token(
        grant_type="refresh_token",
        refresh_token=first["access_token"],
        client_id=cid,
        client_secret=secret,
    )
    assert_oauth_error(r, 400, err("invalid_grant", "Invalid refresh token"))


@pytest.mark.asyncio
async def test_refresh_token_expires_after_14_days(env: Env) -> None:
    await env.create_customer("r@x.y", "r-pw-1")
    first = (await env.customer_login("r@x.y", "r-pw-1")).body
    cid, secret = env.server_client
    env.clock.t = T0 + 14 * DAY
    r = await env.token(
        grant_type="refresh_token",
        refresh_token=first["refresh_token"],
        client_id=cid,
        client_secret=secret,
    )
    assert_oauth_error(r, 400, err("invalid_grant", "Refresh token has expired"))
    env.clock.t = T0 + 14 * DAY - 1
    r = await env.token(
        grant_type="refresh_token",
        refresh_token=first["refresh_token"],
        client_id=cid,
        client_secret=secret,
    )
    assert r.status == 200


@pytest.mark.asyncio
async def test_refresh_token_missing(env: Env) -> None:
    cid, secret = env.server_client
    r = await env.token(grant_type="refresh_token", client_id=cid, client_secret=secret)
    assert_oauth_error(r, 400, err("invalid_request", 'No "refresh_token" parameter'))


@pytest.mark.asyncio
async def test_refresh_token_not_for_developer_clients(env: Env) -> None:
    body = await env.login_user()
    assert "refresh_token" in body  # issued, as in the docs' particle:particle example
    r = await env.token(
        grant_type="refresh_token",
        refresh_token=body["refresh_token"],
        client_id="particle-api",
        client_secret="particle-api",
    )
    assert_oauth_error(r, 400, UNAUTHORISED)


# =======================================================================================
# customers
# =======================================================================================
@pytest.mark.asyncio
async def test_create_customer_basic_no_password(env: Env) -> None:
    before = await env.counts()
    r = await env.call(
        "POST",
        "/v1/products/softap-sim/customers",
        form={"email": "Shadow@Example.com", "no_password": "true"},
        basic=env.server_client,
    )
    assert r.status == 201
    assert_token_json(r.body)
    assert "scope" not in r.body
    assert r.headers["Cache-Control"] == "no-store"
    after = await env.counts()
    assert after["customers"] == before["customers"] + 1
    assert after["tokens"] == before["tokens"] + 2
    principal = await env.cloud.principal_for(r.body["access_token"])
    assert principal.kind == "customer"
    assert principal.client_id == env.server_client[0]
    row = await env.db(lambda c: dict(c.execute("SELECT * FROM customers").fetchone()))
    assert (row["email"], row["password_hash"]) == ("shadow@example.com", None)


@pytest.mark.asyncio
async def test_create_customer_particle_api_js_style(env: Env) -> None:
    """``createCustomer``: form ``email, password, grant_type, client_id, client_secret``."""
    cid, secret = env.server_client
    r = await env.call(
        "POST",
        f"/v1/products/{env.product_id}/customers",
        form={
            "email": "js@example.com",
            "password": "js-pw-123",
            "grant_type": "client_credentials",
            "client_id": cid,
            "client_secret": secret,
        },
    )
    assert r.status == 201
    assert_token_json(r.body)
    login = await env.customer_login("js@example.com", "js-pw-123")
    assert login.status == 200


@pytest.mark.asyncio
async def test_create_customer_json_body(env: Env) -> None:
    cid, secret = env.server_client
    r = await env.call(
        "POST",
        f"/v1/products/{env.product_id}/customers",
        json={"email": "j@x.y", "no_password": True, "client_id": cid, "client_secret": secret},
    )
    assert r.status == 201


@pytest.mark.asyncio
async def test_duplicate_customer_is_rejected_case_insensitively(env: Env) -> None:
    assert (await env.create_customer("Jane@Example.com", "pw-1-jane")).status == 201
    before = await env.counts()
    for email in ("jane@example.com", "JANE@EXAMPLE.COM"):
        r = await env.create_customer(email)
        assert_oauth_error(r, 400, err("invalid_request", "Customer already exists"))
    assert await env.counts() == before


@pytest.mark.asyncio
async def test_same_email_in_two_products(env: Env) -> None:
    other = await env.db(
        lambda c: models.accounts.create_product(c, "Other", "other", env.seed["user"]["id"], T0)
    )
    client, secret = await env.db(
        lambda c: models.clients.create_preset_client(
            c, "two-legged", name="o", product_id=other["id"], now=T0
        )
    )
    env.secrets.add(secret)
    assert (await env.create_customer("same@x.y")).status == 201
    r = await env.call(
        "POST",
        "/v1/products/other/customers",
        form={"email": "same@x.y", "no_password": "true"},
        basic=(client["id"], secret),
    )
    assert r.status == 201


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("form", "description"),
    [
        ({}, 'The "email" parameter is required'),
        ({"email": "  "}, 'The "email" parameter is required'),
        ({"email": "a b@c.d", "no_password": "true"}, 'Invalid "email" parameter'),
        ({"email": "x@y.z"}, 'The "password" parameter is required (or "no_password=true")'),
        (
            {"email": "x@y.z", "no_password": "false"},
            'The "password" parameter is required (or "no_password=true")',
        ),
        (
            {"email": "x@y.z", "password": "p", "no_password": "true"},
            'Send "password" or "no_password=true", not both',
        ),
    ],
)
async def test_create_customer_bad_fields(env: Env, form: dict[str, str], description: str) -> None:
    before = await env.counts()
    r = await env.call(
        "POST", f"/v1/products/{env.product_id}/customers", form=form, basic=env.server_client
    )
    assert_oauth_error(r, 400, err("invalid_request", description))
    assert await env.counts() == before


@pytest.mark.asyncio
async def test_create_customer_malformed_bodies(env: Env) -> None:
    before = await env.counts()
    path = f"/v1/products/{env.product_id}/customers"
    r = await env.call(
        "POST",
        path,
        data=b"{not json",
        headers={"Content-Type": "application/json"},
        basic=env.server_client,
    )
    assert_oauth_error(r, 400, err("invalid_request", "Malformed JSON body"))
    r = await env.call("POST", path, json=["email"], basic=env.server_client)
    assert_oauth_error(r, 400, err("invalid_request", "The JSON body must be an object"))
    r = await env.call(
        "POST",
        path,
        data=b"email=x",
        headers={"Content-Type": "text/plain"},
        basic=env.server_client,
    )
    assert r.status == 415
    assert r.body["error"] == "invalid_request"
    assert await env.counts() == before


@pytest.mark.asyncio
async def test_create_customer_unknown_product(env: Env) -> None:
    before = await env.counts()
    for ref in ("99999", "no-such-product"):
        r = await env.call(
            "POST",
            f"/v1/products/{ref}/customers",
            form={"email": "x@y.z", "no_password": "true"},
            basic=env.server_client,
        )
        assert (r.status, r.body) == (404, err("not_found", "Product not found"))
    assert await env.counts() == before


@pytest.mark.asyncio
async def test_create_customer_bad_client(env: Env) -> None:
    cid, _ = env.server_client
    other = await env.db(lambda c: models.accounts.create_product(c, "Other", "other", None, T0))
    before = await env.counts()
    path = f"/v1/products/{env.product_id}/customers"
    form = {"email": "x@y.z", "no_password": "true"}
    cases: list[tuple[dict[str, Any], dict[str, str]]] = [
        ({"basic": (cid, "wrong")}, BAD_CLIENT),
        ({"basic": ("nobody", "x")}, BAD_CLIENT),
        (
            {"basic": ("particle-api", "particle-api")},
            err("invalid_client", "The client is not a client of this product"),
        ),
        ({"basic": (cid, "")}, err("invalid_client", "Missing client_secret parameter")),
        (
            {"form_extra": {"client_id": cid}},
            err("invalid_client", "Missing client_secret parameter"),
        ),
        (
            {"form_extra": {"client_id": "x", "client_secret": "y"}},
            err("invalid_client", "Invalid or missing client_id parameter"),
        ),
        ({}, NO_TOKEN),
    ]
    for how, expected in cases:
        r = await env.call(
            "POST", path, form={**form, **how.get("form_extra", {})}, basic=how.get("basic")
        )
        status = 400
        assert_oauth_error(r, status, expected)
    # a client of another product
    oc, osecret = await env.db(
        lambda c: models.clients.create_preset_client(
            c, "two-legged", name="o", product_id=other["id"], now=T0
        )
    )
    r = await env.call("POST", path, form=form, basic=(oc["id"], osecret))
    assert_oauth_error(r, 400, err("invalid_client", "The client is not a client of this product"))
    after = await env.counts()
    assert after["customers"] == before["customers"]
    assert after["tokens"] == before["tokens"]


@pytest.mark.asyncio
async def test_create_customer_with_a_product_admin_token(env: Env) -> None:
    user_tok = (await env.login_user())["access_token"]
    r = await env.call(
        "POST",
        f"/v1/products/{env.product_id}/customers",
        form={"email": "byowner@x.y", "password": "owner-set-pw"},
        token=user_tok,
    )
    assert r.status == 201
    principal = await env.cloud.principal_for(r.body["access_token"])
    assert (principal.kind, principal.client_id) == ("customer", "particle-api")
    # a customer token, or another user's token, may not
    other_user = await env.db(lambda c: models.accounts.create_user(c, "other@x.y", "other-pw", T0))
    other_tok = await env.db(
        lambda c: models.tokens.issue_tokens(
            c, client_id="particle", user_id=other_user["id"], now=T0
        )
    )
    for tok in (r.body["access_token"], other_tok["access_token"]):
        bad = await env.call(
            "POST",
            f"/v1/products/{env.product_id}/customers",
            form={"email": "nope@x.y", "no_password": "true"},
            token=tok,
        )
        assert bad.status == 403
        assert bad.body == err("forbidden", "This token cannot create customers of this product")


@pytest.mark.asyncio
async def test_create_customer_implicit_web_client(env: Env) -> None:
    user_tok = (await env.login_user())["access_token"]
    cid, _, created = await env.new_client(
        user_tok,
        name="Web app",
        type="web",
        redirect_uri="https://app.example/cb",
        scope="customers:create",
    )
    assert created["client"]["redirect_uri"] == "https://app.example/cb"
    r = await env.call(
        "POST",
        f"/v1/products/{env.product_id}/customers",
        form={"email": "web@x.y", "password": "web-pw-1", "response_type": "token", "state": "a b"},
        basic=(cid, ""),
    )
    assert r.status == 201
    assert_token_json(r.body, refresh=False)
    assert r.headers["Location"] == (
        f"https://app.example/cb#access_token={r.body['access_token']}"
        "&token_type=bearer&expires_in=7776000&state=a%20b"
    )
    assert (
        await env.call("GET", "/v1/access_tokens/current", token=r.body["access_token"])
    ).status == 200
    # client_id in the body, matching redirect_uri
    r2 = await env.call(
        "POST",
        f"/v1/products/{env.product_id}/customers",
        form={
            "email": "web2@x.y",
            "password": "web-pw-2",
            "response_type": "token",
            "client_id": cid,
            "redirect_uri": "https://app.example/cb",
        },
    )
    assert r2.status == 201
    assert r2.headers["Location"].startswith("https://app.example/cb#access_token=")


@pytest.mark.asyncio
async def test_create_customer_implicit_errors(env: Env) -> None:
    path = f"/v1/products/{env.product_id}/customers"
    user_tok = (await env.login_user())["access_token"]
    web_id, _, _ = await env.new_client(
        user_tok,
        name="Web",
        type="web",
        redirect_uri="https://a.example/cb",
        scope="customers:create",
    )
    before = await env.counts()
    base = {"email": "i@x.y", "password": "i-pw-1", "response_type": "token"}
    r = await env.call("POST", path, form={**base, "client_id": "nobody"})
    assert_oauth_error(r, 400, err("invalid_client", "Invalid client credentials"))
    r = await env.call("POST", path, form={**base, "client_id": env.server_client[0]})
    assert_oauth_error(
        r, 400, err("invalid_client", "The implicit flow needs a web client of this product")
    )
    r = await env.call(
        "POST", path, form={**base, "client_id": web_id, "redirect_uri": "https://evil.example/"}
    )
    assert_oauth_error(r, 400, err("invalid_request", "redirect_uri does not match"))
    r = await env.call(
        "POST",
        path,
        form={
            "email": "i@x.y",
            "no_password": "true",
            "response_type": "token",
            "client_id": web_id,
        },
    )
    assert_oauth_error(r, 400, err("invalid_request", 'The "password" parameter is required'))
    assert await env.counts() == before


@pytest.mark.asyncio
async def test_list_customers(env: Env) -> None:
    await env.create_customer("b@x.y")
    await env.create_customer("a@x.y", "a-pw-1")
    ids = await env.db(lambda c: dict(c.execute("SELECT email, id FROM customers").fetchall()))

    def add_device(conn: sqlite3.Connection) -> None:
        conn.execute(
            "INSERT INTO devices (id, public_key_pem, name, product_id, owner_customer_id, "
            "online, last_ip_address, created_at) VALUES (?, 'k', 'lamp', ?, ?, 1, '10.0.0.2', ?)",
            ("0123456789abcdef01234567", env.product_id, ids["a@x.y"], T0),
        )

    await env.db(add_device)
    user_tok = (await env.login_user())["access_token"]
    r = await env.call("GET", "/v1/products/softap-sim/customers", token=user_tok)
    assert r.status == 200
    assert r.body == {
        "customers": [
            {"id": ids["b@x.y"], "username": "b@x.y", "devices": []},
            {"id": ids["a@x.y"], "username": "a@x.y", "devices": ["0123456789abcdef01234567"]},
        ],
        "devices": [
            {
                "id": "0123456789abcdef01234567",
                "product_id": env.product_id,
                "last_ip_address": "10.0.0.2",
                "online": True,
            }
        ],
        "meta": {"total_pages": 1},
    }


@pytest.mark.asyncio
async def test_customer_routes_need_a_product_admin(env: Env) -> None:
    cust = (await env.create_customer("c@x.y")).body["access_token"]
    path = f"/v1/products/{env.product_id}/customers"
    for method, p in (("GET", path), ("PUT", path + "/c@x.y"), ("DELETE", path + "/c@x.y")):
        r = await env.call(
            method, p, token=cust, form={"password": "x"} if method == "PUT" else None
        )
        assert r.status == 403, (method, r.body)
        assert r.body == err("forbidden", "This token cannot administer this product")
        r = await env.call(method, p)
        assert_oauth_error(r, 400, NO_TOKEN)
        r = await env.call(method, p, token="f" * 40)
        assert_oauth_error(r, 401, BAD_TOKEN)
    user_tok = (await env.login_user())["access_token"]
    r = await env.call("GET", "/v1/products/nope/customers", token=user_tok)
    assert (r.status, r.body) == (404, err("not_found", "Product not found"))


@pytest.mark.asyncio
async def test_update_customer_password(env: Env) -> None:
    await env.create_customer("u@x.y", "old-pw-1")
    await env.create_customer("shadow@x.y")
    user_tok = (await env.login_user())["access_token"]
    base = f"/v1/products/{env.product_id}/customers"
    r = await env.call("PUT", base + "/U@X.Y", form={"password": "new-pw-1"}, token=user_tok)
    assert (r.status, r.body) == (200, {"ok": True})
    env.secrets.add("new-pw-1")
    assert_oauth_error(await env.customer_login("u@x.y", "old-pw-1"), 400, BAD_USER)
    assert (await env.customer_login("u@x.y", "new-pw-1")).status == 200
    # a shadow customer may be given a password
    r = await env.call("PUT", base + "/shadow@x.y", json={"password": "sh-pw-1"}, token=user_tok)
    assert r.status == 200
    env.secrets.add("sh-pw-1")
    assert (await env.customer_login("shadow@x.y", "sh-pw-1")).status == 200
    r = await env.call("PUT", base + "/u@x.y", form={}, token=user_tok)
    assert_oauth_error(r, 400, err("invalid_request", 'The "password" parameter is required'))
    r = await env.call("PUT", base + "/nobody@x.y", form={"password": "p"}, token=user_tok)
    assert (r.status, r.body) == (404, err("not_found", "Customer not found"))


@pytest.mark.asyncio
async def test_delete_customer_revokes_tokens_and_pending_claim_codes(env: Env) -> None:
    created = (await env.create_customer("gone@x.y", "gone-pw-1")).body
    login = (await env.customer_login("gone@x.y", "gone-pw-1")).body
    cust_id = (await env.cloud.principal_for(created["access_token"])).customer_id
    keep = (await env.create_customer("keep@x.y")).body["access_token"]
    keep_id = (await env.cloud.principal_for(keep)).customer_id

    def seed_codes(conn: sqlite3.Connection) -> None:
        rows = [
            ("h-pending", cust_id, None),
            ("h-used", cust_id, T0),
            ("h-other", keep_id, None),
        ]
        for h, cid, used in rows:
            conn.execute(
                "INSERT INTO claim_codes (hash, customer_id, product_id, created_at, expires_at, "
                "used_at) VALUES (?, ?, ?, ?, ?, ?)",
                (h, cid, env.product_id, T0, T0 + 3600, used),
            )
        conn.execute(
            "INSERT INTO devices (id, public_key_pem, name, product_id, owner_customer_id, "
            "created_at) VALUES ('aaaaaaaaaaaaaaaaaaaaaaaa', 'k', 'd', ?, ?, ?)",
            (env.product_id, cust_id, T0),
        )

    await env.db(seed_codes)
    user_tok = (await env.login_user())["access_token"]
    r = await env.call(
        "DELETE", f"/v1/products/{env.product_id}/customers/GONE@x.y", token=user_tok
    )
    assert (r.status, r.body) == (200, {"ok": True})
    for tok in (created["access_token"], login["access_token"]):
        assert_oauth_error(
            await env.call("GET", "/v1/access_tokens/current", token=tok), 401, BAD_TOKEN
        )
    cid, secret = env.server_client
    ref = await env.token(
        grant_type="refresh_token",
        refresh_token=login["refresh_token"],
        client_id=cid,
        client_secret=secret,
    )
    assert_oauth_error(ref, 400, err("invalid_grant", "Invalid refresh token"))
    assert_oauth_error(await env.customer_login("gone@x.y", "gone-pw-1"), 400, BAD_USER)
    codes = await env.db(lambda c: sorted(r[0] for r in c.execute("SELECT hash FROM claim_codes")))
    assert codes == ["h-other", "h-used"]
    owner = await env.db(
        lambda c: c.execute(
            "SELECT owner_customer_id FROM devices WHERE id = 'aaaaaaaaaaaaaaaaaaaaaaaa'"
        ).fetchone()[0]
    )
    assert owner is None
    # the other customer is untouched
    assert (await env.call("GET", "/v1/access_tokens/current", token=keep)).status == 200
    again = await env.call(
        "DELETE", f"/v1/products/{env.product_id}/customers/gone@x.y", token=user_tok
    )
    assert (again.status, again.body) == (404, err("not_found", "Customer not found"))
    # the email is free again
    assert (await env.create_customer("gone@x.y")).status == 201


# =======================================================================================
# OAuth clients
# =======================================================================================
@pytest.mark.asyncio
async def test_user_clients_crud(env: Env) -> None:
    user_tok = (await env.login_user())["access_token"]
    before = await env.counts()
    r = await env.call(
        "POST", "/v1/clients", form={"name": "My CLI", "type": "installed"}, token=user_tok
    )
    assert r.status == 201
    client = r.body["client"]
    assert set(r.body) == {"ok", "client"}
    assert set(client) == {"name", "type", "id", "secret"}
    assert policy.CLIENT_ID_RE.match(client["id"])
    assert TOKEN_RE.match(client["secret"])
    env.secrets.add(client["secret"])
    assert (await env.counts())["clients"] == before["clients"] + 1
    web_ = await env.call(
        "POST",
        "/v1/clients",
        json={"name": "Site", "type": "web", "redirect_uri": "https://s.example/cb"},
        token=user_tok,
    )
    assert web_.body["client"]["redirect_uri"] == "https://s.example/cb"
    env.secrets.add(web_.body["client"]["secret"])

    lst = await env.call("GET", "/v1/clients", token=user_tok)
    assert lst.body == {
        "ok": True,
        "clients": [
            {"name": "My CLI", "type": "installed", "id": client["id"]},
            {
                "name": "Site",
                "type": "web",
                "id": web_.body["client"]["id"],
                "redirect_uri": "https://s.example/cb",
            },
        ],
    }
    upd = await env.call(
        "PUT", f"/v1/clients/{client['id']}", form={"name": "Renamed"}, token=user_tok
    )
    assert upd.body == {
        "ok": True,
        "client": {"name": "Renamed", "type": "installed", "id": client["id"]},
    }
    # tokens of the client die with it
    cc = await env.call(
        "POST",
        "/oauth/token",
        form={"grant_type": "client_credentials"},
        basic=(client["id"], client["secret"]),
    )
    assert cc.status == 200
    d = await env.call("DELETE", f"/v1/clients/{client['id']}", token=user_tok)
    assert (d.status, d.body) == (204, None)
    assert_oauth_error(
        await env.call("GET", "/v1/access_tokens/current", token=cc.body["access_token"]),
        401,
        BAD_TOKEN,
    )
    r = await env.call(
        "POST",
        "/oauth/token",
        form={"grant_type": "client_credentials"},
        basic=(client["id"], client["secret"]),
    )
    assert_oauth_error(r, 400, BAD_CLIENT)
    d = await env.call("DELETE", f"/v1/clients/{client['id']}", token=user_tok)
    assert (d.status, d.body) == (404, err("not_found", "Client not found"))


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("form", "expected"),
    [
        ({"type": "installed"}, err("invalid_request", 'The "name" parameter is required')),
        ({"name": "x"}, err("invalid_request", 'Invalid "type" parameter: installed or web')),
        (
            {"name": "x", "type": "server"},
            err("invalid_request", 'Invalid "type" parameter: installed or web'),
        ),
        (
            {"name": "x", "type": "web"},
            err("invalid_request", 'A web client needs a "redirect_uri"'),
        ),
        (
            {"name": "x", "type": "web", "redirect_uri": "javascript:alert(1)"},
            err("invalid_request", 'The "redirect_uri" must be an http(s) URL without a fragment'),
        ),
        (
            {"name": "x", "type": "installed", "redirect_uri": "https://a/"},
            err("invalid_request", 'Only web clients take a "redirect_uri"'),
        ),
        (
            {"name": "x", "type": "installed", "scope": "devices:list"},
            err(
                "invalid_scope",
                "Invalid scope 'devices:list': use customers:create (or create_customer), "
                "*:* or none",
            ),
        ),
    ],
)
async def test_create_client_bad_fields(
    env: Env, form: dict[str, str], expected: dict[str, str]
) -> None:
    user_tok = (await env.login_user())["access_token"]
    before = await env.counts()
    for path in ("/v1/clients", f"/v1/products/{env.product_id}/clients"):
        r = await env.call("POST", path, form=form, token=user_tok)
        assert (r.status, r.body) == (400, expected)
    assert await env.counts() == before


@pytest.mark.asyncio
async def test_product_clients_crud_and_scope_update(env: Env) -> None:
    user_tok = (await env.login_user())["access_token"]
    base = f"/v1/products/{env.product_id}/clients"
    cid, secret, _ = await env.new_client(user_tok, name="App", scope="customers:create")
    lst = await env.call("GET", "/v1/products/softap-sim/clients", token=user_tok)
    assert {c["id"] for c in lst.body["clients"]} == {env.server_client[0], cid}
    assert all("secret" not in c for c in lst.body["clients"])
    denied = await env.token(grant_type="client_credentials", client_id=cid, client_secret=secret)
    assert_oauth_error(denied, 400, UNAUTHORISED)
    upd = await env.call("PUT", f"{base}/{cid}", form={"scope": "none"}, token=user_tok)
    assert upd.status == 200
    allowed = await env.token(grant_type="client_credentials", client_id=cid, client_secret=secret)
    assert allowed.status == 200
    upd = await env.call("PUT", f"{base}/{cid}", form={"scope": "create_customer"}, token=user_tok)
    assert upd.status == 200
    denied = await env.token(grant_type="client_credentials", client_id=cid, client_secret=secret)
    assert_oauth_error(denied, 400, UNAUTHORISED)
    r = await env.call("PUT", f"{base}/{cid}", form={}, token=user_tok)
    assert (r.status, r.body) == (
        400,
        err("invalid_request", 'Nothing to update: send "name" and/or "scope"'),
    )
    r = await env.call("PUT", f"{base}/{cid}", form={"scope": "root"}, token=user_tok)
    assert r.body["error"] == "invalid_scope"
    # a product client is also reachable through /v1/clients by the product owner
    r = await env.call("PUT", f"/v1/clients/{cid}", form={"name": "App 2"}, token=user_tok)
    assert r.body["client"]["name"] == "App 2"
    d = await env.call("DELETE", f"{base}/{cid}", token=user_tok)
    assert d.status == 204
    assert (await env.call("DELETE", f"{base}/{cid}", token=user_tok)).status == 404


@pytest.mark.asyncio
async def test_client_routes_permissions(env: Env) -> None:
    user_tok = (await env.login_user())["access_token"]
    cust_tok = (await env.create_customer("c@x.y")).body["access_token"]
    other_user = await env.db(lambda c: models.accounts.create_user(c, "other@x.y", "other-pw", T0))
    other_tok = (
        await env.db(
            lambda c: models.tokens.issue_tokens(
                c, client_id="particle", user_id=other_user["id"], now=T0
            )
        )
    )["access_token"]
    product_tok = (
        await env.token(
            grant_type="client_credentials",
            client_id=env.server_client[0],
            client_secret=env.server_client[1],
        )
    ).body["access_token"]
    mine, _, _ = await env.new_client(user_tok, product=False, name="mine")
    base = f"/v1/products/{env.product_id}/clients"
    server_id = env.server_client[0]
    before = await env.counts()
    # user-level routes: only a user's token, and only for its own clients
    for tok in (cust_tok, product_tok):
        for method, path in (("POST", "/v1/clients"), ("GET", "/v1/clients")):
            r = await env.call(method, path, form={"name": "x", "type": "installed"}, token=tok)
            assert (r.status, r.body) == (
                403,
                err("forbidden", "Only a user's token can manage that user's OAuth clients"),
            )
    for method in ("PUT", "DELETE"):
        for cid in (mine, server_id, "nobody"):
            r = await env.call(method, f"/v1/clients/{cid}", form={"name": "z"}, token=other_tok)
            assert (r.status, r.body) == (404, err("not_found", "Client not found"))
    # product routes: the owner (or a product-bound token); others 403
    for tok in (cust_tok, other_tok):
        for method, path in (
            ("POST", base),
            ("GET", base),
            ("PUT", f"{base}/{server_id}"),
            ("DELETE", f"{base}/{server_id}"),
        ):
            r = await env.call(method, path, form={"name": "x", "type": "installed"}, token=tok)
            assert (r.status, r.body) == (
                403,
                err("forbidden", "This token cannot administer this product"),
            )
    assert (await env.call("GET", base, token=product_tok)).status == 200
    # a user's own client is not a product client
    r = await env.call("DELETE", f"{base}/{mine}", token=user_tok)
    assert (r.status, r.body) == (404, err("not_found", "Client not found"))
    r = await env.call("GET", "/v1/products/99999/clients", token=user_tok)
    assert (r.status, r.body) == (404, err("not_found", "Product not found"))
    assert await env.counts() == before


# =======================================================================================
# access token routes and token sources
# =======================================================================================
@pytest.mark.asyncio
async def test_token_sources(env: Env) -> None:
    tok = (await env.login_user())["access_token"]
    ok = await env.call("GET", f"/v1/access_tokens/current?access_token={tok}")
    assert ok.status == 200
    both = await env.call("GET", f"/v1/access_tokens/current?access_token={tok}", token=tok)
    assert both.status == 400
    assert both.body["error"] == "invalid_request"
    assert set(both.body) == {"error", "error_description"}
    form_and_header = await env.call(
        "DELETE", "/v1/access_tokens/current", form={"access_token": tok}, token=tok
    )
    assert form_and_header.body["error"] == "invalid_request"
    malformed = await env.call(
        "GET", "/v1/access_tokens/current", headers={"Authorization": f"Token {tok}"}
    )
    assert_oauth_error(malformed, 400, err("invalid_request", "Malformed auth header"))
    assert_oauth_error(await env.call("GET", "/v1/access_tokens/current"), 400, NO_TOKEN)
    assert_oauth_error(
        await env.call("GET", "/v1/access_tokens/current", token="0" * 40), 401, BAD_TOKEN
    )
    # still valid: nothing above revoked it
    assert (await env.call("GET", "/v1/access_tokens/current", token=tok)).status == 200


@pytest.mark.asyncio
async def test_delete_current_token(env: Env) -> None:
    await env.create_customer("d@x.y", "d-pw-1")
    body = (await env.customer_login("d@x.y", "d-pw-1")).body
    r = await env.call("DELETE", "/v1/access_tokens/current", token=body["access_token"])
    assert (r.status, r.body) == (200, {"ok": True})
    assert_oauth_error(
        await env.call("GET", "/v1/access_tokens/current", token=body["access_token"]),
        401,
        BAD_TOKEN,
    )
    cid, secret = env.server_client
    ref = await env.token(
        grant_type="refresh_token",
        refresh_token=body["refresh_token"],
        client_id=cid,
        client_secret=secret,
    )
    assert_oauth_error(ref, 400, err("invalid_grant", "Invalid refresh token"))
    # the web-app way: token in the form body of the DELETE
    tok = (await env.login_user())["access_token"]
    r = await env.call("DELETE", "/v1/access_tokens/current", form={"access_token": tok})
    assert (r.status, r.body) == (200, {"ok": True})
    assert (await env.call("DELETE", "/v1/access_tokens/current", token=tok)).status == 401


@pytest.mark.asyncio
async def test_delete_token_by_value_without_auth(env: Env) -> None:
    """particle-api-js ``deleteAccessToken`` sends no Authorization header."""
    tok = (await env.login_user())["access_token"]
    other = (await env.login_user())["access_token"]
    r = await env.call("DELETE", f"/v1/access_tokens/{tok}")
    assert (r.status, r.body) == (200, {"ok": True})
    assert_oauth_error(
        await env.call("GET", "/v1/access_tokens/current", token=tok), 401, BAD_TOKEN
    )
    assert_oauth_error(await env.call("DELETE", f"/v1/access_tokens/{tok}"), 401, BAD_TOKEN)
    assert_oauth_error(await env.call("DELETE", "/v1/access_tokens/nonsense"), 401, BAD_TOKEN)
    assert (await env.call("GET", "/v1/access_tokens/current", token=other)).status == 200


@pytest.mark.asyncio
async def test_list_access_tokens_with_basic_user_password(env: Env) -> None:
    first = await env.login_user()
    second = await env.login_user(expires_in="0")
    env.clock.t = T0 + 10
    email, password = env.user
    r = await env.call("GET", "/v1/access_tokens", basic=(email, password))
    assert r.status == 200
    assert r.body == [
        {
            "token": hashing.digest(first["access_token"]),
            "expires_at": "2024-02-12T22:13:20.000Z",
            "client": "particle-api",
        },
        {
            "token": hashing.digest(second["access_token"]),
            "expires_at": None,
            "client": "particle-api",
        },
    ]
    assert_oauth_error(
        await env.call("GET", "/v1/access_tokens", basic=(email, "wrong")), 400, BAD_USER
    )
    assert_oauth_error(
        await env.call("GET", "/v1/access_tokens"),
        400,
        err("invalid_request", "Send the account's username and password with HTTP Basic"),
    )


@pytest.mark.asyncio
async def test_unknown_routes_and_methods_are_json(env: Env) -> None:
    r = await env.call("PATCH", "/v1/clients")
    assert r.status == 405
    assert r.body["error"] == "method_not_allowed"
    r = await env.call("GET", "/v1/nothing-here")
    assert (r.status, r.body["error"]) == (404, "not_found")


# =======================================================================================
# secrets at rest and in logs
# =======================================================================================
@pytest.mark.asyncio
async def test_no_plain_secret_is_stored_or_logged(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    user_tok = (await env.login_user())["access_token"]
    _, secret, _ = await env.new_client(user_tok, name="App", scope="customers:create")
    await env.create_customer("p@x.y", "customer-password-1")
    login = (await env.customer_login("p@x.y", "customer-password-1")).body
    cid, server_secret = env.server_client
    await env.token(
        grant_type="refresh_token",
        refresh_token=login["refresh_token"],
        client_id=cid,
        client_secret=server_secret,
    )
    await env.token(
        grant_type="client_credentials",
        client_id=cid,
        client_secret=server_secret,
        scope="customer=p@x.y",
    )
    await env.call(
        "PUT",
        f"/v1/products/{env.product_id}/customers/p@x.y",
        form={"password": "customer-password-2"},
        token=user_tok,
    )
    env.secrets.add("customer-password-2")
    await env.call("DELETE", f"/v1/access_tokens/{login['access_token']}")
    user_client = await env.db(
        lambda c: models.clients.create_client(
            c, name="chosen", type="installed", scope="", secret="chosen-secret-9", now=T0
        )
    )
    env.secrets.add(user_client[1])
    # failures too: wrong secrets and passwords must not be echoed or logged
    await env.token(
        grant_type="password",
        username="p@x.y",
        password="wrong-pw-xyz",
        client_id=cid,
        client_secret="wrong-secret-xyz",
    )
    env.secrets.update({"wrong-pw-xyz", "wrong-secret-xyz", secret})

    stored = await env.stored_text()
    assert len(env.secrets) > 10
    for value in env.secrets:
        assert value not in stored, "a plain secret/password/token is stored"
        assert value not in caplog.text, "a secret was logged"
    assert "cloud: token issued" in caplog.text  # logging works, without secrets


@pytest.mark.asyncio
async def test_tokens_are_random_and_160_bit(env: Env) -> None:
    tokens = set()
    for _ in range(5):
        body = await env.login_user()
        tokens.update({body["access_token"], body["refresh_token"]})
    assert len(tokens) == 10
    assert all(TOKEN_RE.match(t) for t in tokens)  # 40 hex = 160 bits


@pytest.mark.asyncio
async def test_concurrent_duplicate_customers_create_one(env: Env) -> None:
    replies = await asyncio.gather(*(env.create_customer("race@x.y") for _ in range(5)))
    assert sorted(r.status for r in replies) == [201, 400, 400, 400, 400]
    assert (await env.counts())["customers"] == 1


def test_grant_allowed_table() -> None:
    def client(scope: str, product: int | None, owner: str | None = None) -> dict[str, Any]:
        return {"scope": scope, "product_id": product, "owner_user_id": owner}

    rows = {
        ("", 1): {"password": True, "client_credentials": True, "refresh_token": True},
        ("customers:create", 1): {
            "password": True,
            "client_credentials": False,
            "refresh_token": True,
        },
        ("create_customer", None): {
            "password": False,
            "client_credentials": False,
            "refresh_token": False,
        },
        ("", None): {"password": True, "client_credentials": True, "refresh_token": False},
        ("*:* customers:create", 1): {
            "password": True,
            "client_credentials": True,
            "refresh_token": True,
        },
    }
    for (scope, product), expected in rows.items():
        for grant, allowed in expected.items():
            assert policy.grant_allowed(client(scope, product), grant) is allowed, (scope, grant)


def test_is_product_admin() -> None:
    product = {"id": 10001, "owner_user_id": "u1"}
    assert policy.is_product_admin(Principal("user", "h", "c", user_id="u1"), product)
    assert not policy.is_product_admin(Principal("user", "h", "c", user_id="u2"), product)
    assert policy.is_product_admin(Principal("client", "h", "c", product_id=10001), product)
    assert not policy.is_product_admin(Principal("client", "h", "c", product_id=10002), product)
    assert not policy.is_product_admin(
        Principal("customer", "h", "c", customer_id="x", product_id=10001), product
    )


def test_every_cloud_error_is_the_oauth_shape() -> None:
    for exc in (InvalidRequest("a"), InvalidScope("b"), NotFound("c")):
        assert isinstance(exc, CloudError)
        assert set(exc.body()) == {"error", "error_description"}


@pytest.mark.asyncio
async def test_an_older_database_gets_the_cli_clients(tmp_path: Path) -> None:
    """A cloud.sqlite3 seeded before particle-cli support gains CLI2 and user on open."""
    from softap_sim.cloud.service import CloudService

    service = CloudService(tmp_path)
    await service.open()
    await service.db.run(lambda c: c.execute("DELETE FROM clients WHERE id IN ('CLI2', 'user')"))
    await service.close()
    service = CloudService(tmp_path)
    await service.open()
    try:
        assert service.created_credentials is None  # nothing else is seeded again
        for client_id in ("CLI2", "user"):
            found = await service.db.run(
                lambda c, i=client_id: models.clients.authenticate_client(
                    c, i, "client_secret_here"
                )
            )
            assert found
    finally:
        await service.close()
