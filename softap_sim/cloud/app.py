"""The cloud's aiohttp application and server object.

One route table (:mod:`.routes`), one middleware that turns every failure into JSON
(cloud-api.md §10.3: particle-api-js parses every error body), a protocol logger that
keeps malformed HTTP to one WARNING line, and a server that binds to loopback unless
told otherwise.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from softap_sim.cloud.backend import CloudBackend
from softap_sim.cloud.errors import CloudError
from softap_sim.cloud.handlers.common import BACKEND_KEY, Handler, error_response
from softap_sim.cloud.handlers.events import on_shutdown
from softap_sim.cloud.params import MAX_BODY_BYTES
from softap_sim.cloud.routes import ROUTES
from softap_sim.net import is_loopback

log = logging.getLogger(__name__)
#: aiohttp's connection-level messages (malformed requests) go here
http_log = logging.getLogger("softap_sim.cloud.http")

#: malformed-request warnings per minute before they are only counted
MALFORMED_WARNINGS_PER_MINUTE = 20

_STATUS_CODES = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except CloudError as err:
        return error_response(err)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _STATUS_CODES.get(exc.status, "invalid_request")
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return web.json_response(
            {"error": code, "error_description": exc.reason or code},
            status=exc.status,
            headers=headers,
        )
    except Exception:  # a bug: answer JSON, log it (never with secrets), keep serving
        log.exception("cloud: internal error on %s %s", request.method, request.path)
        return web.json_response(
            {"error": "server_error", "error_description": "Internal server error"}, status=500
        )


class ProtocolLogger:
    """The ``logger`` of aiohttp's request handler, for errors outside any route.

    aiohttp logs every request its parser rejects (bad request line, header bytes,
    chunked framing, …) with ``logger.exception``: a traceback at ERROR level per
    malformed request, which buries everything else exactly when someone is debugging a
    bad client. Those become one WARNING line without a traceback (the traceback at
    DEBUG, ``-vv``); anything else is passed on unchanged.
    """

    def __init__(
        self,
        target: logging.Logger = http_log,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = target
        self._clock = clock
        self._window_start = float("-inf")
        self._in_window = 0
        self._suppressed = 0

    def exception(self, msg: str, *args: Any, exc_info: Any = True, **kw: Any) -> None:
        bad_input = _client_fault(exc_info)
        if bad_input is not None:
            self._malformed(args[0] if args else "a client", bad_input)
            return
        self._log.error(msg, *args, exc_info=exc_info, **kw)

    def _malformed(self, peer: object, exc: HttpProcessingError) -> None:
        """One WARNING line per request, at most :data:`MALFORMED_WARNINGS_PER_MINUTE`
        a minute (a hostile client cannot flood the log); the rest are counted."""
        now = self._clock()
        if now - self._window_start >= 60.0:
            if self._suppressed:
                self._log.warning(
                    "cloud: %d more malformed HTTP requests in the last minute (not logged)",
                    self._suppressed,
                )
            self._window_start, self._in_window, self._suppressed = now, 0, 0
        if self._in_window >= MALFORMED_WARNINGS_PER_MINUTE:
            self._suppressed += 1
        else:
            self._in_window += 1
            self._log.warning("cloud: malformed HTTP request from %s: %s", peer, _short(exc))
        if self._log.isEnabledFor(logging.DEBUG):
            self._log.debug("cloud: the parser's error in full", exc_info=exc)

    def debug(self, msg: str, *args: Any, **kw: Any) -> None:
        self._log.debug(msg, *args, **kw)

    def warning(self, msg: str, *args: Any, **kw: Any) -> None:
        self._log.warning(msg, *args, **kw)

    def error(self, msg: str, *args: Any, **kw: Any) -> None:
        self._log.error(msg, *args, **kw)

    def info(self, msg: str, *args: Any, **kw: Any) -> None:
        self._log.info(msg, *args, **kw)

    def isEnabledFor(self, level: int) -> bool:  # logging.Logger's name
        return self._log.isEnabledFor(level)


def _client_fault(exc: object) -> HttpProcessingError | None:
    """The parser error behind ``exc`` (itself, or a cause: aiohttp wraps a corrupt body's
    decoding error in ``RequestPayloadError`` when it drains an unread body), else None."""
    seen = 0
    while isinstance(exc, BaseException) and seen < 8:
        if isinstance(exc, HttpProcessingError):
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def _short(exc: HttpProcessingError) -> str:
    """``400, message: Invalid method …`` without the echoed bytes beyond a bound."""
    message = str(getattr(exc, "message", "") or exc).splitlines()[0] if str(exc) else ""
    name = type(exc).__name__
    return f"{name}: {message[:160]!r}" if message else name


def make_app(backend: CloudBackend) -> web.Application:
    app = web.Application(middlewares=[json_errors], client_max_size=MAX_BODY_BYTES)
    app[BACKEND_KEY] = backend
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)
    app.on_shutdown.append(on_shutdown)  # end open event streams promptly
    return app


class CloudServer:
    """The REST API on ``host:port`` (loopback by default; port 0 picks a free one)."""

    def __init__(
        self,
        backend: CloudBackend,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        allow_remote: bool = False,
    ) -> None:
        if not is_loopback(host) and not allow_remote:
            raise ValueError(
                f"the cloud binds to loopback by default; binding {host} exposes tokens and "
                "customer data to the network: pass allow_remote=True (--cloud-public)"
            )
        self.backend = backend
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        if self._runner is not None:
            return
        if not is_loopback(self.host):
            log.warning("the cloud API listens on %s: reachable from the network", self.host)
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        runner = web.AppRunner(make_app(self.backend), access_log=None, logger=ProtocolLogger())
        await runner.setup()
        await web.SockSite(runner, sock).start()
        self._runner = runner

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
