"""The cloud's aiohttp application and server object.

One route table (:mod:`.routes`), one middleware that turns every failure into JSON
(cloud-api.md §10.3: particle-api-js parses every error body), a protocol logger that
keeps malformed HTTP to one WARNING line, and a server that binds to loopback unless
told otherwise.
"""

from __future__ import annotations

import logging
import socket

from aiohttp import web

from softap_sim.cloud.backend import CloudBackend
from softap_sim.cloud.errors import CloudError
from softap_sim.cloud.handlers.common import BACKEND_KEY, Handler, error_response
from softap_sim.cloud.handlers.events import on_shutdown
from softap_sim.cloud.params import MAX_BODY_BYTES
from softap_sim.cloud.routes import ROUTES
from softap_sim.http_log import ProtocolLogger
from softap_sim.lifetime import AsyncLifetime
from softap_sim.net import is_loopback

log = logging.getLogger(__name__)
#: aiohttp's connection-level messages (malformed requests) go here
http_log = logging.getLogger("softap_sim.cloud.http")

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


def make_app(backend: CloudBackend) -> web.Application:
    app = web.Application(middlewares=[json_errors], client_max_size=MAX_BODY_BYTES)
    app[BACKEND_KEY] = backend
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)
    app.on_shutdown.append(on_shutdown)  # end open event streams promptly
    return app


class CloudServer(AsyncLifetime):
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
        runner = web.AppRunner(
            make_app(self.backend), access_log=None, logger=ProtocolLogger(http_log)
        )
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
