"""Hostile values for every parameter of every cloud REST route (hypothesis).

The smaller, deterministic sibling of ``scripts/fuzz_cloud.py``. One ``CloudService``
with a file-backed state directory runs in a background thread (its own event loop) for
the whole module; each example is one plain HTTP/1.1 request on a fresh socket. For each
(route, parameter) pair the request is a *valid* request of that route (right method,
a token of a suitable kind, a valid body) with that one parameter replaced by a hostile
value: ASCII and Unicode digits (U+00B2, U+0663, fullwidth), integers beyond 64 bits,
negative and empty values, lone surrogates (percent-encoded ``%ED%A0%80`` in paths,
``"\\ud800"`` escapes in JSON, raw bytes in headers), overlong UTF-8, NUL, long strings,
JSON values of the wrong type (``1e400``, ``NaN``, lists, objects, ``null``, 5 000-digit
integers); plus the whole body, the ``Authorization`` header and the method as
parameters of their own.

Every reply must be below 500; every 4xx (except to HEAD) must be a JSON object with an
``error`` field (or ``"ok": false``); and a 4xx must leave the database as it was: a
separate read-only SQLite connection to ``<state_dir>/cloud.sqlite3`` (WAL, so it sees
every committed transaction) dumps all rows of all tables before and after the request.
A 2xx may change state.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import os
import socket
import sqlite3
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from softap_sim.cloud.routes import ROUTES as ROUTE_TABLE
from softap_sim.cloud.service import CloudService
from softap_sim.protocol.client import HttpReplyParser

T = TypeVar("T")

#: (method, path template) of every REST route, from the cloud's one route table
ROUTES: tuple[tuple[str, str], ...] = tuple(
    ("POST" if method == "*" else method, path.replace("{prefix:.+}", "{prefix}"))
    for method, path, _handler in ROUTE_TABLE
)
PATH_PARAMS = ("product", "client_id", "email", "token", "device", "name", "prefix")

OAUTH_FIELDS = (
    "grant_type",
    "client_id",
    "client_secret",
    "username",
    "password",
    "scope",
    "refresh_token",
    "expires_in",
    "expires_at",
)
#: body fields each route reads (beyond access_token, which every route may take)
BODY_FIELDS: dict[tuple[str, str], tuple[str, ...]] = {
    ("POST", "/oauth/token"): OAUTH_FIELDS,
    ("POST", "/v1/clients"): ("name", "type", "scope", "redirect_uri"),
    ("PUT", "/v1/clients/{client_id}"): ("name", "scope"),
    ("POST", "/v1/products/{product}/clients"): ("name", "type", "scope", "redirect_uri"),
    ("PUT", "/v1/products/{product}/clients/{client_id}"): ("name", "scope"),
    ("POST", "/v1/products/{product}/customers"): (
        "email",
        "password",
        "no_password",
        "client_id",
        "client_secret",
        "response_type",
        "redirect_uri",
        "state",
        "expires_in",
        "expires_at",
    ),
    ("PUT", "/v1/products/{product}/customers/{email}"): ("password",),
    ("POST", "/v1/device_claims"): ("iccid", "imei", "activation_code"),
    ("POST", "/v1/products/{product}/device_claims"): ("iccid", "imei"),
    ("POST", "/v1/devices"): ("id", "request_transfer"),
    ("POST", "/v1/provisioning/{device}"): ("publicKey", "deviceID"),
    ("POST", "/v1/devices/events"): ("name", "data", "private", "ttl"),
    ("PUT", "/v1/devices/{device}"): ("name", "signal"),
    ("POST", "/v1/devices/{device}/{name}"): ("arg", "args", "format"),
    ("POST", "/v1/products/{product}/devices/{device}/{name}"): ("arg", "args", "format"),
}
QUERY_FIELDS: dict[tuple[str, str], tuple[str, ...]] = {
    ("GET", "/v1/products/{product}/devices"): (
        "page",
        "per_page",
        "perPage",
        "deviceId",
        "deviceName",
    ),
    ("GET", "/v1/devices/{device}/{name}"): ("format",),
    ("GET", "/v1/products/{product}/devices/{device}/{name}"): ("format",),
}
#: routes that stream (SSE) on success; a reply head is enough
SSE = frozenset(t for _m, t in ROUTES if "events" in t)
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS")


def _cases() -> list[tuple[str, str, str]]:
    cases = []
    for method, template in ROUTES:
        params = [p for p in PATH_PARAMS if "{" + p + "}" in template]
        params += [f"body:{f}" for f in (*BODY_FIELDS.get((method, template), ()), "access_token")]
        query = (*QUERY_FIELDS.get((method, template), ()), "access_token")
        params += [f"query:{f}" for f in query]
        params += ["auth", "body", "method"]
        cases += [(method, template, p) for p in params]
    return cases


CASES = _cases()

# -- hostile values ------------------------------------------------------------------------
HOSTILE_STRINGS = (
    "",
    " ",
    "0",
    "-1",
    "\u00b2",  # superscript two: str.isdigit() is true, int() fails
    "\u0663",  # Arabic-Indic three: int() accepts it
    "\uff11\uff10\uff10\uff10\uff11",  # fullwidth 10001
    "\u2460",
    str(2**63),
    str(2**64),
    str(-(2**63) - 1),
    "9" * 40,
    "9" * 5000,
    "1e400",
    "NaN",
    "inf",
    "1.5",
    "a" * 3000,
    "\x00",
    "a\x00b",
    "\ud800",
    "\udfff",
    "x\ud800y",
    "\U0001f600",
    "caf\u00e9",
    "%",
    "%ED%A0%80",
    "a=b&c=d",
    "customer=",
    "customer=\ud800",
    "'; DROP TABLE tokens; --",
    "true",
    "none",
    "*:*",
)
#: path segments exactly as sent (percent-encoding included, valid or not)
RAW_SEGMENTS = (
    "%ED%A0%80",  # a lone surrogate, UTF-8 encoded (invalid UTF-8)
    "%ED%BF%BF",
    "%C0%AE",  # overlong "."
    "%E0%80%AF",
    "%F4%90%80%80",
    "%FF",
    "%80",
    "%00",
    "%C2%B2",
    "%D9%A3",
    "%EF%BC%91",
    "%25",
    "%2F",
    "%20",
    "18446744073709551616",
    "-10001",
    "010001",
    "1" * 30,
    "a" * 2000,
)
JSON_RAW = (
    "1e400",
    "-1e400",
    "NaN",
    "Infinity",
    "9" * 30,
    "9" * 5000,
    "[]",
    "[1,[2,[3]]]",
    "{}",
    '{"a":{"b":null}}',
    "null",
    "true",
    "1.5",
    '"\\ud800"',
    '"\\udfff\\ud800"',
    '"\\u0000"',
    '"\\u00b2"',
)
RAW_BODIES: tuple[tuple[bytes, bytes], ...] = (
    (b"application/json", b"[]"),
    (b"application/json", b"null"),
    (b"application/json", b"{"),
    (b"application/json", b'{"a":'),
    (b"application/json", b"\xff\xfe"),
    (b"application/json", b'{"a":"\xff"}'),
    (b"application/json", b"[" * 50_000 + b"]" * 50_000),
    (b"application/json", b'{"a":' * 3000 + b"1" + b"}" * 3000),
    (b"application/json", b"9" * 5000),
    (b"application/json", b'{"\\ud800":"x"}'),
    (b"application/json; charset=latin-1", b'{"a":"\xe9"}'),
    (b"application/x-www-form-urlencoded", b"\xff\xfe\x80"),
    (b"application/x-www-form-urlencoded", b"a=%ED%A0%80&b=%FF"),
    (b"application/x-www-form-urlencoded", b"=&&=%"),
    (b"application/x-www-form-urlencoded", b"x=" + b"y" * (70 * 1024)),
    (b"text/plain", b"hello"),
    (b"multipart/form-data; boundary=x", b"--x\r\n\r\n--x--"),
    (b"multipart/form-data", b"junk"),
    (b"application/octet-stream", b"\x00\x01\x02"),
    (b"", b"a=1"),
    (b"\xff\xfe", b"{}"),
    # a second header line rides on the Content-Type value: a corrupt and a real gzip body
    # (an encoding aiohttp cannot decode at all, e.g. br, is refused by its parser with its
    # own text/plain 400: malformed HTTP, scripts/fuzz_cloud.py's raw category)
    (b"application/json\r\nContent-Encoding: gzip", b'{"a": 1}'),
    (b"application/json\r\nContent-Encoding: gzip", gzip.compress(b'{"a": 1}')),
)


def hostile_text() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(HOSTILE_STRINGS),
        st.text(max_size=12),
        st.integers(min_value=-(2**70), max_value=2**70).map(str),
        st.text(alphabet="0123456789\u00b2\u00b3\u0660\u0663\u06f5\u0966\uff10\u2460", max_size=6),
    )


def json_value() -> st.SearchStrategy[str]:
    """A JSON value as source text (wrong types, odd numbers, escapes)."""
    scalars = st.one_of(
        hostile_text().map(lambda s: json.dumps(s)),
        st.integers(min_value=-(2**80), max_value=2**80).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(json.dumps),
        st.sampled_from(JSON_RAW),
        st.booleans().map(json.dumps),
    )
    return st.one_of(
        scalars,
        st.lists(scalars, max_size=3).map(lambda xs: "[" + ",".join(xs) + "]"),
        scalars.map(lambda x: '{"k":' + x + "}"),
    )


def _header_safe(raw: bytes) -> bytes:
    """Bytes an HTTP parser takes in a header value (no controls): the hostile part is
    what the cloud does with them (non-ASCII, invalid UTF-8, odd tokens)."""
    return bytes(c for c in raw if c >= 0x20 and c != 0x7F)


def header_token() -> st.SearchStrategy[bytes]:
    return st.one_of(
        hostile_text().map(lambda s: _header_safe(s.encode("utf-8", "surrogatepass"))),
        st.binary(max_size=16).map(_header_safe),
    )


# -- the server in a thread ------------------------------------------------------------
class LoopThread:
    """An event loop in a daemon thread; ``run(coro)`` waits for a result from it."""

    def __init__(self, factory: Callable[[], asyncio.AbstractEventLoop]) -> None:
        self.loop = factory()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http(
    port: int,
    method: str,
    target: str,
    headers: list[bytes] | None = None,
    body: bytes = b"",
) -> Reply:
    """One request on a fresh connection (``Connection: close``); SSE: the head only."""
    lines = [f"{method} {target} HTTP/1.1".encode(), b"Host: 127.0.0.1", b"Connection: close"]
    lines += headers or []
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(b"Content-Length: " + str(len(body)).encode())
    data = b"\r\n".join(lines) + b"\r\n\r\n" + body
    parser = HttpReplyParser(head_only=method == "HEAD")
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(data)
        while chunk := sock.recv(65536):
            parser.feed(chunk)
            ctype = parser.head.get("content-type") if parser.head is not None else None
            if ctype is not None and ctype.lower().startswith(b"text/event-stream"):
                break  # a stream: it never ends by itself
    reply = parser.feed_eof()
    head = parser.head
    assert head is not None, f"no reply head: {parser.received[:200]!r}"
    headers = {n.decode("latin-1").lower(): v.decode("latin-1") for n, v in head.headers}
    return Reply(head.status, headers, reply.body if reply is not None else b"")


def _b64(text: str) -> bytes:
    return base64.b64encode(text.encode("utf-8", "surrogatepass"))


@dataclass
class World:
    port: int
    db_path: Path
    product_id: int
    product_slug: str
    client_id: str
    client_secret: str
    user_email: str
    user_password: str
    user_token: str = ""
    client_token: str = ""
    customer_email: str = ""
    customer_password: str = "hostile-test-pw"
    customer_token: str = ""
    device_ids: list[str] = field(default_factory=list)
    snapshot_conn: sqlite3.Connection | None = None

    # -- plain REST calls for set-up ----------------------------------------------------
    def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        basic: tuple[str, str] | None = None,
        form: dict[str, str] | None = None,
    ) -> Reply:
        headers = []
        if token is not None:
            headers.append(b"Authorization: Bearer " + token.encode())
        if basic is not None:
            headers.append(b"Authorization: Basic " + _b64(f"{basic[0]}:{basic[1]}"))
        body = b""
        if form is not None:
            headers.append(b"Content-Type: application/x-www-form-urlencoded")
            body = urlencode(form).encode()
        return http(self.port, method, path, headers, body)

    def ok(self, method: str, path: str, **kw: Any) -> Any:
        reply = self.call(method, path, **kw)
        assert 200 <= reply.status < 300, (method, path, reply.status, reply.body[:300])
        return reply.json() if reply.body else None

    def fresh_token(self) -> str:
        data = self.ok(
            "POST",
            "/oauth/token",
            basic=(self.client_id, self.client_secret),
            form={"grant_type": "client_credentials"},
        )
        return str(data["access_token"])

    def fresh_customer(self) -> str:
        email = f"spare-{os.urandom(5).hex()}@example.com"
        self.ok(
            "POST",
            f"/v1/products/{self.product_id}/customers",
            basic=(self.client_id, self.client_secret),
            form={"email": email, "no_password": "true"},
        )
        return email

    def fresh_client(self, product: bool) -> str:
        path = f"/v1/products/{self.product_id}/clients" if product else "/v1/clients"
        data = self.ok(
            "POST", path, token=self.user_token, form={"name": "spare", "type": "installed"}
        )
        return str(data["client"]["id"])

    def snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of every table (sorted), through the read-only connection."""
        conn = self.snapshot_conn
        assert conn is not None
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
        return {
            t: sorted(conn.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr) for t in tables
        }


def _public_pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    if os.environ.get("SOFTAP_TEST_LOOP") == "uvloop":
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
        return factory
    return asyncio.new_event_loop


DEVICE_IDS = ("0123456789abcdef0000f001", "0123456789abcdef0000f002", "0123456789abcdef0000f003")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    state_dir = tmp_path_factory.mktemp("cloud-fuzz")
    runner = LoopThread(_loop_factory())
    service = CloudService(state_dir)
    try:
        runner.run(service.open())
        creds = service.created_credentials
        assert creds is not None
        server = runner.run(service.serve("127.0.0.1", 0))
        port = int(server.url.rsplit(":", 1)[1])
        product_id = int(creds["product"]["id"])
        for i, device_id in enumerate(DEVICE_IDS):
            key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
            runner.run(
                service.register_device(
                    device_id, _public_pem(key), product_id=product_id if i < 2 else None
                )
            )
        w = World(
            port=port,
            db_path=state_dir / "cloud.sqlite3",
            product_id=product_id,
            product_slug=creds["product"]["slug"],
            client_id=creds["client"]["id"],
            client_secret=creds["client"]["secret"],
            user_email=creds["user"]["email"],
            user_password=creds["user"]["password"],
            device_ids=list(DEVICE_IDS),
        )
        data = w.ok(
            "POST",
            "/oauth/token",
            basic=("particle", "particle"),
            form={"grant_type": "password", "username": w.user_email, "password": w.user_password},
        )
        w.user_token = data["access_token"]
        w.client_token = w.fresh_token()
        w.customer_email = "customer@example.com"
        data = w.ok(
            "POST",
            f"/v1/products/{product_id}/customers",
            basic=(w.client_id, w.client_secret),
            form={"email": w.customer_email, "password": w.customer_password},
        )
        w.customer_token = data["access_token"]
        w.snapshot_conn = sqlite3.connect(
            f"file:{w.db_path}?mode=ro", uri=True, isolation_level=None
        )
        yield w
    finally:
        if "w" in locals() and w.snapshot_conn is not None:
            w.snapshot_conn.close()
        runner.run(service.close())
        runner.close()


# -- the valid request of a route ------------------------------------------------------
@dataclass
class Draft:
    method: str
    template: str
    path_values: dict[str, str]  # already encoded for the wire
    query: list[tuple[str, str]]  # already encoded
    fields: dict[str, str]  # body fields as JSON source text (json) or plain text (form)
    encoding: str  # "form" | "json" | "none"
    auth: list[bytes]

    def build(self) -> tuple[str, str, list[bytes], bytes]:
        path = self.template
        for name, value in self.path_values.items():
            path = path.replace("{" + name + "}", value)
        if self.query:
            path += "?" + "&".join(f"{k}={v}" for k, v in self.query)
        headers = list(self.auth)
        body = b""
        if self.encoding == "form" and self.fields:
            headers.append(b"Content-Type: application/x-www-form-urlencoded")
            body = "&".join(
                f"{quote(k)}={quote(v, safe='', errors='surrogatepass')}"
                for k, v in self.fields.items()
            ).encode()
        elif self.encoding == "json" and self.fields:
            headers.append(b"Content-Type: application/json")
            # values are JSON source text: lets a field be 1e400, NaN, "\ud800", [..]
            body = (
                "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in self.fields.items()) + "}"
            ).encode("utf-8", "surrogatepass")
        return self.method, path, headers, body


def _json_fields(fields: dict[str, str]) -> dict[str, str]:
    return {k: json.dumps(v) for k, v in fields.items()}


def valid_draft(w: World, method: str, template: str) -> Draft:
    """A request the route accepts (or rejects only for a reason of state)."""
    values: dict[str, str] = {}
    if "{product}" in template:
        values["product"] = w.product_slug
    if "{client_id}" in template:
        values["client_id"] = w.fresh_client(product="{product}" in template)
    if "{email}" in template:
        values["email"] = quote(w.fresh_customer(), safe="")
    if "{token}" in template:
        values["token"] = w.fresh_token()
    if "{device}" in template:
        values["device"] = w.device_ids[0]
    if "{name}" in template:
        values["name"] = "led" if method == "POST" else "temp"
    if "{prefix}" in template:
        values["prefix"] = "spark"
    query: list[tuple[str, str]] = []
    fields: dict[str, str] = {}
    token = w.customer_token if "device_claims" in template else w.user_token
    if "/devices" in template and "{product}" in template:
        token = w.client_token
    if template == "/v1/access_tokens/current":
        token = w.fresh_token()  # a DELETE (or a GET turned DELETE) revokes it
    auth = [b"Authorization: Bearer " + token.encode()]
    encoding = "form"
    if template == "/oauth/token":
        auth = [b"Authorization: Basic " + _b64(f"{w.client_id}:{w.client_secret}")]
        fields = {"grant_type": "client_credentials", "scope": f"customer={w.customer_email}"}
    elif template == "/v1/access_tokens":
        auth = [b"Authorization: Basic " + _b64(f"{w.user_email}:{w.user_password}")]
    elif template == "/v1/access_tokens/{token}":
        auth = []
    elif template.endswith("/customers") and method == "POST":
        auth = [b"Authorization: Basic " + _b64(f"{w.client_id}:{w.client_secret}")]
        fields = {"email": f"new-{os.urandom(5).hex()}@example.com", "no_password": "true"}
    elif template.endswith("/clients") and method == "POST":
        fields = {"name": "hostile test", "type": "installed"}
    elif "{client_id}" in template and method == "PUT":
        fields = {"name": "renamed"}
    elif "{email}" in template and method == "PUT":
        fields = {"password": "new-password-1"}
    elif template == "/v1/devices" and method == "POST":
        fields = {"id": w.device_ids[0]}
    elif "{name}" in template and method == "POST":
        fields = {"arg": "on"}
    elif template == "/v1/products/{product}/devices":
        query = [("page", "1"), ("per_page", "25")]
    return Draft(method, template, values, query, fields, encoding, auth)


def apply_hostile(draft: Draft, param: str, data: st.DataObject, w: World) -> None:
    """Replace one parameter of a valid request with a hostile value."""
    if param in PATH_PARAMS:
        value = data.draw(
            st.one_of(
                st.sampled_from(RAW_SEGMENTS),
                hostile_text().map(lambda s: quote(s, safe="", errors="surrogatepass")),
                st.sampled_from(
                    (
                        "0" * 24,
                        "F" * 24,
                        "0" * 23,
                        "g" * 24,
                        w.device_ids[2],  # a device no token here may see
                        quote(w.product_slug.upper()),
                        str(w.product_id),
                    )
                ),
            ).filter(bool),
            label=param,
        )
        draft.path_values[param] = value
    elif param.startswith("body:"):
        name = param.removeprefix("body:")
        draft.encoding = data.draw(st.sampled_from(("form", "json")), label="encoding")
        if draft.encoding == "json":
            fields = _json_fields(draft.fields)
            fields[name] = data.draw(json_value(), label=name)
        else:
            fields = dict(draft.fields)
            fields[name] = data.draw(hostile_text(), label=name)
        draft.fields = fields
    elif param.startswith("query:"):
        name = param.removeprefix("query:")
        value = data.draw(
            st.one_of(
                st.sampled_from(RAW_SEGMENTS),
                hostile_text().map(lambda s: quote(s, safe="", errors="surrogatepass")),
            ),
            label=name,
        )
        repeat = data.draw(st.booleans(), label="repeated")
        draft.query = [*draft.query, (name, value)] + ([(name, "1")] if repeat else [])
    elif param == "auth":
        token = data.draw(header_token(), label="token")
        scheme = data.draw(
            st.sampled_from(
                (b"Bearer ", b"bearer ", b"Bearer", b"Basic ", b"Basic", b"", b"Digest ", b"Token ")
            ),
            label="scheme",
        )
        variant = data.draw(st.sampled_from(("replace", "add", "basic-b64", "drop")), label="how")
        if variant == "basic-b64":
            header = b"Authorization: Basic " + base64.b64encode(token)
        else:
            header = b"Authorization: " + scheme + token
        if variant == "replace":
            draft.auth = [header]
        elif variant == "add":
            draft.auth = [*draft.auth, header]
        elif variant == "drop":
            draft.auth = []
        else:
            draft.auth = [header]
    elif param == "body":
        ctype, body = data.draw(st.sampled_from(RAW_BODIES), label="body")
        draft.encoding = "raw"
        draft.auth = [*draft.auth, b"Content-Type: " + ctype if ctype else b"Content-Type:"]
        draft.fields = {"__raw__": body.decode("latin-1")}
    elif param == "method":
        draft.method = data.draw(st.sampled_from(METHODS), label="method")


def _send(w: World, draft: Draft) -> tuple[str, str, list[bytes], bytes, Reply]:
    if draft.encoding == "raw":
        body = draft.fields["__raw__"].encode("latin-1")
        path = draft.template
        for name, value in draft.path_values.items():
            path = path.replace("{" + name + "}", value)
        method, headers = draft.method, draft.auth
    else:
        method, path, headers, body = draft.build()
    return method, path, headers, body, http(w.port, method, path, headers, body)


def _error_body(reply: Reply) -> bool:
    try:
        data = reply.json()
    except ValueError:
        return False
    return isinstance(data, dict) and ("error" in data or data.get("ok") is False)


@pytest.mark.parametrize(
    ("method", "template", "param"),
    CASES,
    ids=[f"{m} {t} [{p}]" for m, t, p in CASES],
)
@settings(
    max_examples=10,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    report_multiple_bugs=False,
)
@given(data=st.data())
def test_hostile_parameter(
    world: World, method: str, template: str, param: str, data: st.DataObject
) -> None:
    draft = valid_draft(world, method, template)
    apply_hostile(draft, param, data, world)
    before = world.snapshot()
    sent_method, path, headers, body, reply = _send(world, draft)
    request = f"{sent_method} {path[:300]} headers={headers} body={body[:300]!r}"
    assert reply.status < 500, f"HTTP {reply.status} for {request}: {reply.body[:300]!r}"
    if 400 <= reply.status < 500:
        if sent_method != "HEAD":
            assert _error_body(reply), (
                f"HTTP {reply.status} without a JSON error body for {request}: {reply.body[:300]!r}"
            )
        assert world.snapshot() == before, f"HTTP {reply.status} changed the database: {request}"


def test_every_route_has_cases() -> None:
    """Every route, and on it every path parameter, is covered by the parametrisation."""
    covered = {(m, t) for m, t, _p in CASES}
    assert covered == set(ROUTES)
    for method, template in ROUTES:
        names = {p for m, t, p in CASES if (m, t) == (method, template)}
        for param in PATH_PARAMS:
            if "{" + param + "}" in template:
                assert param in names


def test_valid_requests_succeed(world: World) -> None:
    """The baselines the hostile examples start from are accepted (else the examples would
    test nothing but the first check of each handler)."""
    expected_2xx = [
        ("POST", "/oauth/token"),
        ("GET", "/v1/clients"),
        ("GET", "/v1/products/{product}/customers"),
        ("GET", "/v1/devices"),
        ("GET", "/v1/devices/{device}"),
        ("GET", "/v1/products/{product}/devices"),
        ("POST", "/v1/products/{product}/customers"),
        ("POST", "/v1/products/{product}/device_claims"),
        ("DELETE", "/v1/products/{product}/customers/{email}"),
        ("DELETE", "/v1/access_tokens/{token}"),
    ]
    for method, template in expected_2xx:
        _m, path, _headers, _body, reply = _send(world, valid_draft(world, method, template))
        assert 200 <= reply.status < 300, (method, path, reply.status, reply.body[:200])
