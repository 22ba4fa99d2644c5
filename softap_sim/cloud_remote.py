"""A cloud in another process: ``softap-sim run/fleet --cloud URL`` instead of an embedded one.

Several emulator processes (or machines, e.g. Locust workers) share one
``softap-sim cloud serve``. What a device needs from its cloud is what the embedded one
hands over in-process: the device endpoint (TCP 5683) and the server's public key for
its DCT, read from ``GET /v1/softap-sim/cloud``, and its own public key in the cloud's
registry before it connects, sent to ``POST /v1/provisioning/{id}`` (the route
``particle keys send`` uses) with a token of the developer or of a product client.

:class:`RemoteCloud` offers the same three things as
:class:`~softap_sim.cloud.service.CloudService` (``device_endpoint``,
``server_public_key_pem``, ``register_device(s)``), so ``run`` and ``Fleet`` take either.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Self
from urllib.parse import urlsplit

import aiohttp

from softap_sim.errors import ConfigError, SimulatorError

log = logging.getLogger(__name__)

#: environment variable read when --cloud-token is not given (keeps it out of `ps`)
TOKEN_ENV = "SOFTAP_SIM_CLOUD_TOKEN"
#: registrations in flight at once (a fleet registering 1,000 devices)
REGISTER_CONCURRENCY = 16
TIMEOUT_S = 15.0


class RemoteCloudError(SimulatorError):
    """The external cloud cannot be used (unreachable, refused the token, bad reply)."""


def _token_hint(url: str) -> str:
    return (
        f"pass --cloud-token (or set {TOKEN_ENV}) with a token of the cloud's developer or "
        "of a product client, e.g. the token of: curl -s -u CLIENT_ID:CLIENT_SECRET -d "
        f"grant_type=client_credentials {url}/oauth/token (the client is in the cloud's "
        "cloud-credentials.json)"
    )


def check_url(url: str) -> str:
    """``http(s)://host:port`` without a path; ConfigError otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--cloud must be an http:// URL of a softap-sim cloud, got {url!r}")
    if parts.path not in ("", "/") or parts.query:
        raise ConfigError(f"--cloud takes the cloud's base URL (no path), got {url!r}")
    return url.rstrip("/")


def parse_endpoint(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT``) of a device endpoint."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"a device endpoint is HOST:PORT, got {text!r}")
    return host, int(port)


class DeviceCloud(Protocol):
    """What a device host needs of a cloud: the embedded one or a :class:`RemoteCloud`."""

    @property
    def server_public_key_pem(self) -> bytes: ...

    def device_endpoint(self, host: str) -> tuple[str, int] | None:
        """Where devices connect (``host``: the address to use for a local endpoint)."""

    async def register_devices(self, batch: Iterable[tuple[str, str]]) -> list[str | None]: ...


@dataclass
class RemoteCloud:
    """A running softap-sim cloud reached over HTTP (see the module docstring)."""

    url: str
    token: str
    endpoint: tuple[str, int]
    server_public_key_pem: bytes
    session: aiohttp.ClientSession

    @classmethod
    async def connect(
        cls,
        url: str,
        token: str | None,
        *,
        endpoint: tuple[str, int] | None = None,
        server_key_pem: bytes | None = None,
    ) -> Self:
        """Ask the cloud for its device endpoint and key (unless both are given)."""
        url = check_url(url)
        if not token:
            raise ConfigError(f"--cloud {url} needs a token: {_token_hint(url)}")
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S))
        try:
            if endpoint is None or server_key_pem is None:
                info = await _get_json(session, f"{url}/v1/softap-sim/cloud", url)
                if endpoint is None:
                    endpoint = _endpoint_from(info, url)
                if server_key_pem is None:
                    pem = info.get("server_public_key") if isinstance(info, dict) else None
                    if not isinstance(pem, str) or "BEGIN PUBLIC KEY" not in pem:
                        raise RemoteCloudError(
                            f"the cloud at {url} has no device endpoint running (start it "
                            "with 'softap-sim cloud serve', which serves TCP 5683 too)"
                        )
                    server_key_pem = pem.encode("ascii")
        except BaseException:
            await session.close()
            raise
        return cls(url, token, endpoint, server_key_pem, session)

    def device_endpoint(self, host: str | None = None) -> tuple[str, int]:
        """The cloud's own endpoint (``host`` is for a local cloud only)."""
        return self.endpoint

    async def register_device(self, device_id: str, public_key_pem: str) -> None:
        error = (await self.register_devices([(device_id, public_key_pem)]))[0]
        if error is not None:
            raise RemoteCloudError(f"cannot register device {device_id}: {error}")

    async def register_devices(self, batch: Iterable[tuple[str, str]]) -> list[str | None]:
        """Register each (id, PEM); one entry per pair: None, or why the cloud refused it."""
        limit = asyncio.Semaphore(REGISTER_CONCURRENCY)

        async def one(device_id: str, pem: str) -> str | None:
            async with limit:
                return await self._provision(device_id, pem)

        return list(await asyncio.gather(*(one(d, pem) for d, pem in batch)))

    async def _provision(self, device_id: str, pem: str) -> str | None:
        target = f"{self.url}/v1/provisioning/{device_id.lower()}"
        try:
            async with self.session.post(
                target,
                data={"publicKey": pem},
                headers={"Authorization": f"Bearer {self.token}"},
            ) as resp:
                body = await _json_body(resp)
                if resp.status == 401:
                    raise RemoteCloudError(
                        f"the cloud at {self.url} refused the token: {_token_hint(self.url)}"
                    )
                if resp.status == 403:
                    raise RemoteCloudError(
                        f"the cloud at {self.url} does not let this token provision devices "
                        f"(a customer token?): {_token_hint(self.url)}"
                    )
                if resp.status != 200:
                    return str(body.get("error_description") or body.get("error") or resp.status)
                return None
        except (aiohttp.ClientError, TimeoutError) as err:
            raise RemoteCloudError(_unreachable(self.url, err)) from None

    async def close(self) -> None:
        await self.session.close()


def _endpoint_arg(text: str) -> tuple[str, int]:
    try:
        return parse_endpoint(text)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_options(group: argparse._ArgumentGroup) -> None:
    """``--cloud URL`` and its companions, for ``run`` and ``fleet``."""
    group.add_argument(
        "--cloud",
        metavar="URL",
        default=None,
        help="use the cloud of another process ('softap-sim cloud serve') instead of the "
        "embedded one, e.g. http://127.0.0.1:8181; its device endpoint and server key "
        "are read from it; several emulator processes can share it",
    )
    group.add_argument(
        "--cloud-token",
        metavar="TOKEN",
        default=None,
        help=f"with --cloud: a developer or product-client token that may register "
        f"devices (default: ${TOKEN_ENV})",
    )
    group.add_argument(
        "--cloud-device",
        metavar="HOST:PORT",
        type=_endpoint_arg,
        default=None,
        help="with --cloud: the device endpoint to use instead of the one it reports",
    )
    group.add_argument(
        "--cloud-server-key",
        metavar="PEM",
        type=Path,
        default=None,
        help="with --cloud: the server's public key file instead of the one it reports",
    )


async def from_args(args: argparse.Namespace) -> RemoteCloud:
    """The :class:`RemoteCloud` the ``--cloud`` options name (one-line errors)."""
    if getattr(args, "no_cloud", False):
        raise ConfigError("--cloud and --no-cloud exclude each other")
    key_pem = None
    if args.cloud_server_key is not None:
        try:
            key_pem = args.cloud_server_key.read_bytes()
        except OSError as err:
            raise ConfigError(
                f"cannot read --cloud-server-key {args.cloud_server_key}: {err.strerror}"
            ) from None
        if b"BEGIN PUBLIC KEY" not in key_pem and b"BEGIN RSA PUBLIC KEY" not in key_pem:
            raise ConfigError(f"--cloud-server-key {args.cloud_server_key} is not a PEM public key")
    token = args.cloud_token or os.environ.get(TOKEN_ENV)
    return await RemoteCloud.connect(
        args.cloud, token, endpoint=args.cloud_device, server_key_pem=key_pem
    )


def _endpoint_from(info: Any, url: str) -> tuple[str, int]:
    ep = info.get("device_endpoint") if isinstance(info, dict) else None
    if not isinstance(ep, dict) or not isinstance(ep.get("port"), int):
        raise RemoteCloudError(
            f"the cloud at {url} has no device endpoint running (start it with 'softap-sim "
            "cloud serve', which serves TCP 5683 too, or pass --cloud-device HOST:PORT)"
        )
    host = ep.get("host")
    url_host = urlsplit(url).hostname or "127.0.0.1"
    try:
        unspecified = host is None or ipaddress.ip_address(str(host)).is_unspecified
    except ValueError:
        unspecified = False
    # a cloud bound to 0.0.0.0 is reached at the address we reached its REST API on
    return (url_host if unspecified else str(host)), int(ep["port"])


def _unreachable(url: str, err: BaseException) -> str:
    detail = str(err) or type(err).__name__
    return (
        f"cannot reach the cloud at {url} ({detail}); start it with 'softap-sim cloud serve' "
        "or check --cloud"
    )


async def _json_body(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    text = await resp.text()
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    return data if isinstance(data, dict) else {}


async def _get_json(session: aiohttp.ClientSession, target: str, url: str) -> Any:
    try:
        async with session.get(target) as resp:
            if resp.status == 404:
                raise RemoteCloudError(
                    f"{url} is not a softap-sim cloud (no /v1/softap-sim/cloud); pass its "
                    "device endpoint and server key with --cloud-device and --cloud-server-key"
                )
            if resp.status != 200:
                raise RemoteCloudError(f"the cloud at {url} answered {resp.status} to {target}")
            return await _json_body(resp)
    except (aiohttp.ClientError, TimeoutError) as err:
        raise RemoteCloudError(_unreachable(url, err)) from None


__all__ = [
    "TOKEN_ENV",
    "DeviceCloud",
    "RemoteCloud",
    "RemoteCloudError",
    "add_options",
    "check_url",
    "from_args",
    "parse_endpoint",
]
