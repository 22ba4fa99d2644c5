"""fuzz_cloud's mutations: what turns a valid request into a hostile one.

Each request gets 0-4 mutations of its path parameters, query, headers, form fields, body
or method, so most requests are *nearly* valid: they get past the early checks and reach
the code that handles an odd value, where the 500s hide. A share of the requests is raw
malformed HTTP for aiohttp's own parser (``raw_request``).
"""

from __future__ import annotations

import base64
import json
import os
import random
from urllib.parse import quote

from fuzz_http import Request, b64
from fuzz_routes import (
    KDF_ROUTES,
    METHODS,
    ROUTES,
    SSE_TEMPLATES,
    TokenBucket,
    ValidRequests,
    World,
)
from fuzz_values import (
    CONTENT_TYPES,
    DEVICE_ID_NOISE,
    EXPIRES_VALUES,
    FORM_KEYS,
    HOSTILE_TEXT,
    JSON_WEIRD,
    RAW_SEGMENTS,
)


class Mutator(ValidRequests):
    """Builds one request: a valid request for a route, then 0-4 mutations."""

    def __init__(self, world: World, rng: random.Random, kdf: TokenBucket, raw_share: float):
        self.w = world
        self.rng = rng
        self.kdf = kdf
        self.raw_share = raw_share

    # -- values -------------------------------------------------------------------------
    def hostile(self) -> str:
        r = self.rng.random()
        if r < 0.6:
            return self.rng.choice(HOSTILE_TEXT)
        if r < 0.8:
            return "".join(chr(self.rng.randrange(0, 0x3000)) for _ in range(self.rng.randrange(8)))
        return self.rng.choice(
            (self.w.product_slug, str(self.w.product_id), self.rng.choice(self.w.device_ids))
        )

    def segment(self, value: str) -> str:
        """A path segment on the wire: encoded, or one of the raw hostile spellings."""
        if self.rng.random() < 0.25:
            return self.rng.choice(RAW_SEGMENTS)
        return quote(value, safe="", errors="surrogatepass")

    def hostile_param(self, name: str) -> str:
        rng = self.rng
        if name == "device" and rng.random() < 0.5:
            return quote(rng.choice(DEVICE_ID_NOISE), safe="")
        if name == "product" and rng.random() < 0.3:
            return quote(rng.choice(("\u00b2", "\u0663", str(2**64), "-10001", "1" * 30)), safe="")
        return self.segment(self.hostile())

    # -- mutations --------------------------------------------------------------------------
    def mutate_path(self, req: Request) -> None:
        names = [
            n
            for n in ("product", "client_id", "email", "token", "device", "name", "prefix")
            if "{" + n + "}" in req.template
        ]
        path, _, query = req.target.partition("?")
        if not names:
            # add, drop or garble a segment of a parameterless route
            choice = self.rng.random()
            if choice < 0.4:
                path = path + "/" + self.segment(self.hostile())
            elif choice < 0.7:
                path = path.upper() if self.rng.random() < 0.5 else path + "/"
            else:
                path = "/" + self.segment(self.hostile()) + path
        else:
            segments = self._rebuild(req.template)
            name = self.rng.choice(names)
            segments[name] = self.hostile_param(name)
            path = req.template
            for n, v in segments.items():
                path = path.replace("{" + n + "}", v)
        req.target = path + ("?" + query if query else "")

    def mutate_query(self, req: Request) -> None:
        rng = self.rng
        pairs: list[str] = []
        for _ in range(rng.randrange(1, 5)):
            key = rng.choice(
                (
                    "per_page",
                    "perPage",
                    "page",
                    "deviceId",
                    "deviceName",
                    "format",
                    "access_token",
                    "nonce",
                    "",
                    "a%00",
                    "%ED%A0%80",
                    "page[]",
                    "&",
                    "=",
                )
            )
            if key == "access_token" and rng.random() < 0.5:
                value = quote(self.token(rng.choice(("user", "client", "customer"))))
            elif key == "format" and rng.random() < 0.5:
                value = rng.choice(("raw", "RAW", "json"))
            else:
                value = (
                    rng.choice(RAW_SEGMENTS)
                    if rng.random() < 0.3
                    else quote(self.hostile(), safe="", errors="surrogatepass")
                )
            pairs.append(f"{key}={value}" if rng.random() < 0.9 else key)
        if rng.random() < 0.2:
            pairs = pairs + pairs  # repeated keys
        path, _, query = req.target.partition("?")
        joined = "&".join(([query] if query and rng.random() < 0.5 else []) + pairs)
        req.target = path + "?" + joined

    def mutate_headers(self, req: Request) -> None:
        rng = self.rng
        choice = rng.randrange(13)
        auth = [h for h in req.headers if h.lower().startswith(b"authorization:")]
        others = [h for h in req.headers if not h.lower().startswith(b"authorization:")]
        token = self.token(rng.choice(("user", "client", "customer"))).encode()
        junk: list[bytes] = [
            b"Authorization: Bearer",
            b"Authorization: Bearer ",
            b"Authorization: bearer " + token,
            b"Authorization: BEARER\t" + token,
            b"Authorization: Bearer  " + token + b" ",
            b"Authorization: Bearer " + token + b" extra",
            b"Authorization: Basic",
            b"Authorization: Basic !!!!",
            b"Authorization: Basic " + base64.b64encode(os.urandom(rng.randrange(1, 40))),
            b"Authorization: Basic " + b64(":"),
            b"Authorization: Basic " + b64("\udcff:x"),
            b"Authorization: Basic " + base64.b64encode(b"\xff\xfe:\x80"),
            b"Authorization: Basic " + b64(self.w.client_id + ":"),
            b"Authorization: Basic " + b64(":" + self.w.client_secret),
            b"Authorization: Basic " + b64("a" * 300 + ":" + "b" * 300),
            b"Authorization: Basic " + b64(f"{self.w.client_id}:{self.w.client_secret}")[:-2],
            b"Authorization: Digest x",
            b"Authorization: " + token,
            b"Authorization:",
            b"Authorization: Bearer \xc3\xa9\xff\xfe",
            b"Authorization: Bearer " + b"a" * 8000,
            b"Authorization: Bearer " + rng.choice(self.w.bad_tokens).encode(),
        ]
        if choice < 6:
            req.headers = [*others, rng.choice(junk)]
        elif choice < 8:
            req.headers = [*others, *auth, rng.choice(junk)]  # two Authorization headers
        elif choice < 9:
            req.headers = others  # none at all
        elif choice < 10:
            req.headers = [*req.headers, b"Content-Type: " + rng.choice(CONTENT_TYPES)]
        elif choice < 11:
            req.headers = [
                *req.headers,
                rng.choice(
                    (
                        b"X-Odd: \xff\xfe\x80",
                        b"Accept: */*; q=\xff",
                        b"Connection: close",
                        b"Expect: 100-continue",
                        b"Cookie: a=" + b"b" * 4000,
                        b"Content-Encoding: gzip",
                        b"Transfer-Encoding: identity",
                        b"Host: [::1",
                        b"Origin: null",
                        b"X-Forwarded-For: 10.0.0.1",
                    )
                ),
            ]
        elif choice < 12:
            req.headers = [h.lower() if rng.random() < 0.5 else h.upper() for h in req.headers]
        else:
            req.headers = [
                *others,
                b"Authorization: Bearer " + token,
                b"Authorization: Basic " + b64(f"{self.w.client_id}:{self.w.client_secret}"),
            ]

    def mutate_params(self, params: dict[str, str]) -> None:
        rng = self.rng
        for _ in range(rng.randrange(1, 4)):
            r = rng.random()
            if r < 0.4 and params:
                params[rng.choice(list(params))] = self.hostile()
            elif r < 0.6 and params:
                params.pop(rng.choice(list(params)))
            else:
                key = rng.choice(FORM_KEYS)
                if key in ("expires_in", "expires_at"):
                    params[key] = rng.choice(EXPIRES_VALUES)
                elif key == "scope":
                    params[key] = rng.choice(
                        (
                            "customer=" + self.hostile(),
                            "customer=" + rng.choice(self.w.customer_emails),
                            "customers:create",
                            "*:*",
                            self.hostile(),
                        )
                    )
                elif key == "grant_type":
                    params[key] = rng.choice(
                        (
                            "password",
                            "client_credentials",
                            "refresh_token",
                            "urn:custom:mfa-otp",
                            "implicit",
                            self.hostile(),
                        )
                    )
                elif key == "access_token":
                    params[key] = self.token(rng.choice(("user", "client", "customer")))
                elif key == "response_type":
                    params[key] = "token"
                else:
                    params[key] = self.hostile()

    def mutate_body(self, req: Request, params: dict[str, str]) -> None:
        """Replace the body with a hostile one (JSON or form or bytes)."""
        rng = self.rng
        others = [h for h in req.headers if not h.lower().startswith(b"content-type:")]
        choice = rng.randrange(10)
        key = rng.choice([*params, *FORM_KEYS[:24]]) if params else rng.choice(FORM_KEYS)
        if choice < 4:  # JSON with hostile value types
            fields = {k: json.dumps(v) for k, v in params.items()}
            fields[key] = rng.choice(JSON_WEIRD)
            if rng.random() < 0.2:
                fields[rng.choice(FORM_KEYS)] = rng.choice(JSON_WEIRD)
            text = "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in fields.items()) + "}"
            body = text.encode()
            ctype = b"application/json"
        elif choice < 5:  # not an object / broken JSON
            body = rng.choice(
                (
                    b"[]",
                    b"null",
                    b"1",
                    b'"x"',
                    b"{",
                    b'{"a":',
                    b'{"a":1,}',
                    b"{'a':1}",
                    b'{"a":"\xff\xfe"}',
                    b"\xef\xbb\xbf{}",
                    b"[" * 100_000 + b"]" * 100_000,
                    b'{"a":' * 5000 + b"1" + b"}" * 5000,
                    b"1" * 5000,
                    b"\x00" * 10,
                    b"",
                    b'{"a":1,"a":2}',
                    b'{"\\ud800":"x"}',
                )
            )
            ctype = b"application/json"
        elif choice < 7:  # form with hostile encodings
            parts = [f"{quote(k)}={quote(v, errors='surrogatepass')}" for k, v in params.items()]
            parts.append(
                rng.choice(
                    (
                        f"{key}=%ED%A0%80",
                        f"{key}=%FF",
                        f"{key}=%",
                        f"{key}",
                        "=",
                        "&&&",
                        f"{key}=%00",
                        f"{key}=a&{key}=b",
                        "%E9=1",
                        f"{key}={'x' * 5000}",
                    )
                )
            )
            body = "&".join(parts).encode()
            if rng.random() < 0.2:
                body += b"\xff\xfe\x80"
            ctype = b"application/x-www-form-urlencoded"
        elif choice < 8:  # wrong content type for the bytes
            body = json.dumps(params or {"a": 1}).encode()
            ctype = rng.choice(CONTENT_TYPES)
        elif choice < 9:  # large bodies (above and just below the 64 KiB limit)
            size = rng.choice((64 * 1024, 64 * 1024 + 1, 70 * 1024))
            body = (key + "=").encode() + b"x" * size
            ctype = b"application/x-www-form-urlencoded"
        else:  # random bytes
            body = os.urandom(rng.randrange(1, 300))
            ctype = rng.choice(CONTENT_TYPES)
        req.body = body
        req.headers = [*others, b"Content-Type: " + ctype] if ctype else others

    # -- one request ----------------------------------------------------------------------
    def next(self) -> Request:
        rng = self.rng
        if rng.random() < self.raw_share:
            return raw_request(rng, self)
        while True:
            method, template = rng.choice(ROUTES)
            if (method, template) in KDF_ROUTES and rng.random() < 0.8:
                continue
            req, params, kdf = self.baseline(method if method != "*" else "POST", template)
            if kdf and not self.kdf.take():
                continue
            break
        if template in SSE_TEMPLATES and rng.random() < 0.5:
            # most SSE requests carry a bad token: a valid one only opens a stream
            req.headers = [b"Authorization: Bearer " + rng.choice(self.w.bad_tokens).encode()]
        mutations = rng.choices((0, 1, 2, 3, 4), weights=(12, 40, 26, 14, 8))[0]
        body_replaced = False
        for _ in range(mutations):
            what = rng.randrange(12)
            if what < 3:
                self.mutate_path(req)
            elif what < 4:
                self.mutate_query(req)
            elif what < 6:
                self.mutate_headers(req)
            elif what < 9:
                self.mutate_params(params)
            elif what < 11:
                body_replaced = True
            else:
                req.method = rng.choice(METHODS)
        self.body_bytes(params, req)
        if body_replaced:
            self.mutate_body(req, params)
        drop_body = req.method in ("GET", "HEAD", "DELETE", "OPTIONS") and rng.random() < 0.7
        if drop_body and not body_replaced:
            req.body = b""
        req.kdf = kdf
        self.protect(req)
        return req

    def protect(self, req: Request) -> None:
        """``DELETE /v1/access_tokens/current`` revokes whatever token it carries: never a
        shared one (the fuzzer's later requests and the canary need them)."""
        path = req.target.partition("?")[0].lower()
        if req.method != "DELETE" or not path.startswith("/v1/access_tokens/current"):
            return
        w = self.w
        for shared in (*w.user_tokens, *w.client_tokens, *w.customer_tokens):
            raw = shared.encode()
            if (
                raw not in req.body
                and shared not in req.target
                and not any(raw in h for h in req.headers)
            ):
                continue
            spare = (w.spare_tokens.pop() if w.spare_tokens else w.bad_tokens[0]).encode()
            req.headers = [h.replace(raw, spare) for h in req.headers]
            req.target = req.target.replace(shared, spare.decode())
            req.body = req.body.replace(raw, spare)


def raw_request(rng: random.Random, m: Mutator) -> Request:
    """Malformed HTTP for aiohttp's parser; sent on its own connection."""
    token = m.token("user").encode()
    auth = b"Authorization: Bearer " + token + b"\r\n"
    path = b"/v1/devices"
    kind = rng.randrange(16)
    raw: bytes
    if kind == 0:
        raw = b"GET\r\n\r\n"
    elif kind == 1:
        raw = b"GET /v1/devices HTTP/9.9\r\nHost: x\r\n\r\n"
    elif kind == 2:
        raw = b"G\x00T /v1/devices HTTP/1.1\r\nHost: x\r\n\r\n"
    elif kind == 3:
        raw = b"GET /v1/dev ices HTTP/1.1\r\nHost: x\r\n\r\n"
    elif kind == 4:
        raw = b"GET /v1/devices HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n"
    elif kind == 5:
        raw = b"GET /v1/devices HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n" + auth + b"\r\n"
    elif kind == 6:
        raw = (
            b"POST /v1/device_claims HTTP/1.1\r\nHost: x\r\n"
            + auth
            + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"
        )
    elif kind == 7:
        raw = (
            b"POST /v1/device_claims HTTP/1.1\r\nHost: x\r\n"
            + auth
            + b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        )
    elif kind == 8:
        raw = (
            b"POST /oauth/token HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n\r\ngrant_type=pass"
        )
    elif kind == 9:
        raw = (
            b"POST /oauth/token HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\ngrant_type=password"
        )
    elif kind == 10:
        raw = b"POST /v1/devices HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n" + auth + b"\r\n"
    elif kind == 11:
        raw = (
            b"POST /v1/devices HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n"
            + auth
            + b"\r\n{}"
        )
    elif kind == 12:
        raw = b"GET " + path + b" HTTP/1.1\nHost: x\n" + auth.replace(b"\r\n", b"\n") + b"\n"
    elif kind == 13:
        raw = b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    elif kind == 14:
        raw = b"GET /v1/devices HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 200 + b"\r\n"
    else:
        raw = (
            b"POST /v1/device_claims HTTP/1.1\r\nHost: x\r\n"
            + auth
            + b"Transfer-Encoding: chunked\r\n\r\n"
            + b"ffffffffffffffffff\r\nab\r\n0\r\n\r\n"
        )
    return Request("RAW", "", [], b"", f"raw#{kind}", raw=raw)
