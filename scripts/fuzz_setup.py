"""fuzz_cloud's set-up: the cloud child, plain API calls, the world and the canary.

Set-up goes through the REST API, like a real client's, so the fuzzer only aims at what
the API can create. Destructive routes get "sacrificial" customers, tokens and clients
(re-made after every batch) so the fuzzer never deletes what it needs itself; pruning
keeps the data set the same size from batch to batch.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, urlencode

from benchlib import AsyncChild, BenchError, memory_mib
from fuzz_device import DeviceIdentity
from fuzz_http import Connection, ProtocolFailure, Request, b64, read_reply
from fuzz_routes import CUSTOMER_PASSWORD, World

#: the entry point: the child is ``fuzz_cloud.py --serve``
SCRIPT: Final = str(Path(__file__).resolve().with_name("fuzz_cloud.py"))
READY_TIMEOUT_S: Final = 60.0
STOP_TIMEOUT_S: Final = 15.0
SETUP_TIMEOUT_S: Final = 30.0


class Child(AsyncChild):
    """The cloud child: its stderr to a file (read for internal errors afterwards)."""

    def __init__(self, tmp: Path, setup_file: Path, code_dir: str) -> None:
        super().__init__(
            "the cloud child", [], pythonpath=code_dir, stderr_path=tmp / "child-stderr.log"
        )
        self.tmp = tmp
        self.setup_file = setup_file
        self.errors_path = tmp / "errors.jsonl"
        self.tracemalloc: str | None = None

    @property
    def stderr_log(self) -> Path:
        assert self.stderr_path is not None
        return self.stderr_path

    async def start(self, timeout_s: float = READY_TIMEOUT_S) -> dict[str, Any]:
        state = self.tmp / "state"
        state.mkdir()
        self.argv = [
            sys.executable,
            SCRIPT,
            "--serve",
            "--state-dir",
            str(state),
            "--setup",
            str(self.setup_file),
        ]
        if self.tracemalloc:
            self.argv += ["--tracemalloc", self.tracemalloc]
        return await super().start(timeout_s)

    async def memory_mark(self) -> None:
        """``--tracemalloc``: a snapshot in the child (the first is the baseline)."""
        if self.tracemalloc and self.proc is not None:
            await self.send_line(b"mem\n")

    def rss_mib(self) -> float | None:
        return memory_mib(self.proc.pid)["rss_mib"] if self.proc is not None else None

    async def stop(self, grace_s: float = STOP_TIMEOUT_S) -> int | None:
        return await super().stop(grace_s)


class Api:
    """Plain, valid requests for set-up and canaries (same raw client, own connection)."""

    def __init__(self, port: int) -> None:
        self.conn = Connection(port)

    async def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        basic: tuple[str, str] | None = None,
        form: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        headers: list[bytes] = []
        if token is not None:
            headers.append(b"Authorization: Bearer " + token.encode())
        if basic is not None:
            headers.append(b"Authorization: Basic " + b64(f"{basic[0]}:{basic[1]}"))
        body = b""
        if form is not None:
            headers.append(b"Content-Type: application/x-www-form-urlencoded")
            body = urlencode(form).encode()
        req = Request(method, path, headers, body, path)
        for attempt in range(2):
            try:
                reader, writer = await self.conn.ensure()
                writer.write(req.wire(0))
                async with asyncio.timeout(SETUP_TIMEOUT_S):
                    reply = await read_reply(reader, method == "HEAD")
                if reply.close or reply.sse:
                    self.conn.drop()
                break
            except (ProtocolFailure, ConnectionError) as err:
                self.conn.drop()
                if attempt:
                    raise BenchError(f"{method} {path}: {err}") from None
        try:
            data = json.loads(reply.body) if reply.body else None
        except ValueError:
            data = reply.body[:200]
        return reply.status, data

    async def ok(self, method: str, path: str, **kw: Any) -> Any:
        status, data = await self.call(method, path, **kw)
        if status // 100 != 2:
            raise BenchError(f"set-up {method} {path}: HTTP {status} {data}")
        return data

    async def client_token(
        self, w: World, scope: str | None = None, expires_in: str | None = None
    ) -> str:
        form = {"grant_type": "client_credentials"}
        if scope:
            form["scope"] = scope
        if expires_in:
            form["expires_in"] = expires_in
        data = await self.ok(
            "POST", "/oauth/token", basic=(w.client_id, w.client_secret), form=form
        )
        if scope is None:
            w.refresh_tokens.append(data["refresh_token"])
        return str(data["access_token"])


async def build_world(api: Api, info: dict[str, Any], devices: list[DeviceIdentity]) -> World:
    creds = info["credentials"]
    w = World(
        product_id=int(creds["product"]["id"]),
        product_slug=creds["product"]["slug"],
        client_id=creds["client"]["id"],
        client_secret=creds["client"]["secret"],
        user_email=creds["user"]["email"],
        user_password=creds["user"]["password"],
    )
    w.device_ids = [d.device_id for d in devices]
    w.device_names = [f"photon_{d.device_id[-6:]}" for d in devices]
    for _ in range(2):
        data = await api.ok(
            "POST",
            "/oauth/token",
            basic=("particle", "particle"),
            form={"grant_type": "password", "username": w.user_email, "password": w.user_password},
        )
        w.user_tokens.append(data["access_token"])
    for _ in range(3):
        w.client_tokens.append(await api.client_token(w))
    for i in range(3):
        email = f"customer-{i}@example.com"
        form = {"email": email}
        if i == 0:
            form["password"] = CUSTOMER_PASSWORD
        else:
            form["no_password"] = "true"
        data = await api.ok(
            "POST",
            f"/v1/products/{w.product_id}/customers",
            basic=(w.client_id, w.client_secret),
            form=form,
        )
        w.customer_emails.append(email)
        w.customer_tokens.append(data["access_token"])
        w.refresh_tokens.append(data["refresh_token"])
    w.customer_tokens.append(await api.client_token(w, scope=f"customer={w.customer_emails[1]}"))
    expired = await api.client_token(w, expires_in="1")
    revoked = await api.client_token(w)
    await api.ok("DELETE", f"/v1/access_tokens/{revoked}")
    w.bad_tokens = [expired, revoked, "0" * 40, "not-a-token", "a" * 41, "\u00e9" * 10]
    return w


async def prune_world(api: Api, w: World) -> int:
    """Delete the clients and customers the fuzzed requests created (and last batch's
    spares): the data set stays the same size from batch to batch, so RSS growth measures
    leaks, not a database that grows (list replies of 10,000 clients are megabytes)."""
    admin = w.user_tokens[0]
    deleted = 0
    for path in (f"/v1/products/{w.product_id}/clients", "/v1/clients"):
        status, data = await api.call("GET", path, token=admin)
        if status != 200 or not isinstance(data, dict):
            continue
        for client in data.get("clients", []):
            cid = client.get("id")
            if isinstance(cid, str) and cid.lower() != w.client_id.lower():
                await api.call("DELETE", f"{path}/{quote(cid, safe='')}", token=admin)
                deleted += 1
    keep = {e.lower() for e in w.customer_emails}
    status, data = await api.call("GET", f"/v1/products/{w.product_id}/customers", token=admin)
    if status == 200 and isinstance(data, dict):
        for customer in data.get("customers", []):
            email = customer.get("username")
            if isinstance(email, str) and email.lower() not in keep:
                path = f"/v1/products/{w.product_id}/customers/{quote(email, safe='')}"
                await api.call("DELETE", path, token=admin)
                deleted += 1
    return deleted


async def refresh_world(api: Api, w: World, *, online: dict[str, str]) -> None:
    """Spare targets for destructive routes; tokens re-minted; online devices re-claimed."""
    await prune_world(api, w)
    w.spare_tokens = [await api.client_token(w) for _ in range(20)]
    w.spare_emails = []
    for _ in range(8):
        email = f"spare-{os.urandom(6).hex()}@example.com"
        await api.ok(
            "POST",
            f"/v1/products/{w.product_id}/customers",
            basic=(w.client_id, w.client_secret),
            form={"email": email, "no_password": "true"},
        )
        w.spare_emails.append(email)
    admin = w.user_tokens[0]
    w.spare_product_clients = []
    w.spare_user_clients = []
    for _ in range(3):
        data = await api.ok(
            "POST",
            f"/v1/products/{w.product_id}/clients",
            token=admin,
            form={"name": "spare", "type": "installed"},
        )
        w.spare_product_clients.append(data["client"]["id"])
        data = await api.ok(
            "POST", "/v1/clients", token=admin, form={"name": "spare", "type": "installed"}
        )
        w.spare_user_clients.append(data["client"]["id"])
    # tokens the fuzzer may have revoked (it should not: they are never in destructive
    # routes, but a refresh grant can rotate the refresh tokens)
    for pool, mint in ((w.client_tokens, None), (w.customer_tokens, w.customer_emails[1])):
        for i, token in enumerate(pool):
            status, _ = await api.call("GET", "/v1/access_tokens/current", token=token)
            if status != 200:
                pool[i] = await api.client_token(w, scope=f"customer={mint}" if mint else None)
    w.refresh_tokens = w.refresh_tokens[-10:]
    for i, email in enumerate(w.customer_emails[:2]):
        code = await api.ok(
            "POST",
            f"/v1/products/{w.product_id}/device_claims",
            token=w.customer_tokens[i if i else -1],
        )
        w.claim_codes = [*w.claim_codes[-6:], code["claim_code"]]
        del email
    code = await api.ok("POST", "/v1/device_claims", token=w.user_tokens[0])
    w.claim_codes.append(code["claim_code"])
    # the online devices: customer 0 owns one, the developer the other
    owners = {"customer": w.customer_tokens[0], "user": w.user_tokens[0]}
    for device_id, who in online.items():
        token = owners[who]
        status, _ = await api.call("GET", f"/v1/devices/{device_id}", token=token)
        if status == 200 and who == "customer":
            continue
        data = await api.call("GET", "/v1/devices", token=token)
        mine = isinstance(data[1], list) and any(d.get("id") == device_id for d in data[1])
        if mine:
            continue
        await api.call(
            "DELETE", f"/v1/products/{w.product_id}/devices/{device_id}/owner", token=admin
        )
        await api.call("POST", "/v1/devices", token=token, form={"id": device_id})


async def canary(api: Api, w: World) -> str | None:
    """A customer-token grant and GET /v1/devices with it; None when both succeed."""
    try:
        token = await api.client_token(w, scope=f"customer={w.customer_emails[1]}")
        status, data = await api.call("GET", "/v1/devices", token=token)
    except BenchError as err:
        return str(err)
    if status != 200 or not isinstance(data, list):
        return f"GET /v1/devices: HTTP {status} {str(data)[:200]}"
    status, data = await api.call(
        "GET", f"/v1/products/{w.product_id}/devices", token=w.client_tokens[0]
    )
    if status != 200:
        return f"GET /v1/products/:p/devices: HTTP {status} {str(data)[:200]}"
    return None
