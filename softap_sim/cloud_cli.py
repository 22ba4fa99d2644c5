"""``softap-sim cloud``: run the local cloud alone, and manage its clients and customers.

Management commands work on the SQLite database in the state directory directly, so
they work whether or not a server is running (WAL lets both share the file).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from softap_sim import event_loop
from softap_sim.argtypes import parse_port, state_dir_problem
from softap_sim.config import default_state_dir
from softap_sim.errors import SimulatorError, StateError

if TYPE_CHECKING:
    from softap_sim.cloud.backend import CloudBackend
    from softap_sim.cloud.service import CloudService

T = TypeVar("T")

DEFAULT_CLOUD_PORT = 8181
#: the device endpoint (cloud/service.py DEFAULT_DEVICE_PORT; not imported: aiohttp)
DEFAULT_DEVICE_PORT = 5683
#: the console presets (cloud-api.md §2), by their short CLI names
PRESETS = {"two-legged": "two-legged", "mobile": "simple-auth-mobile", "web": "simple-auth-web"}


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cloud = sub.add_parser(
        "cloud",
        help="run the local cloud alone, or manage its OAuth clients and customers",
        description="The embedded Particle-style cloud (REST subset on SQLite). Without a "
        "subcommand it serves the API until Ctrl-C.",
    )
    _common(cloud)
    _serve_options(cloud)
    cloud.set_defaults(cloud_func=_serve)
    csub = cloud.add_subparsers(dest="cloud_command", metavar="SUBCOMMAND")
    serve = csub.add_parser("serve", help="serve the REST API (the default)")
    _common(serve)
    _serve_options(serve)
    serve.set_defaults(cloud_func=_serve)

    client = csub.add_parser("client", help="OAuth clients: create, list, delete")
    ccs = client.add_subparsers(dest="client_command", metavar="ACTION", required=True)
    create = ccs.add_parser("create", help="create a client; its secret is shown once")
    _common(create)
    create.add_argument("--name", required=True, help="a name for the client")
    create.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="two-legged",
        help="two-legged (server, no scope), mobile (simple auth, "
        "customers:create) or web (simple auth, needs --redirect-uri)",
    )
    create.add_argument(
        "--product", default=None, help="product id or slug (default: the default product)"
    )
    create.add_argument("--redirect-uri", default=None, help="web clients only")
    create.set_defaults(cloud_func=_client_create)
    lst = ccs.add_parser("list", help="list clients (secrets are never shown again)")
    _common(lst)
    lst.add_argument("--product", default=None, help="only this product's clients")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(cloud_func=_client_list)
    delete = ccs.add_parser("delete", help="delete a client")
    _common(delete)
    delete.add_argument("client_id")
    delete.set_defaults(cloud_func=_client_delete)

    customer = csub.add_parser("customer", help="customers: list")
    cus = customer.add_subparsers(dest="customer_command", metavar="ACTION", required=True)
    clist = cus.add_parser("list", help="list a product's customers")
    _common(clist)
    clist.add_argument("--product", default=None, help="product id or slug (default product)")
    clist.add_argument("--json", action="store_true")
    clist.set_defaults(cloud_func=_customer_list)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--state-dir",
        type=Path,
        default=argparse.SUPPRESS,
        help=f"state directory holding cloud.sqlite3 (default: {default_state_dir()})",
    )


def _serve_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback)")
    p.add_argument(
        "--loop",
        choices=event_loop.LOOP_CHOICES,
        default="auto",
        help="event loop; auto: uvloop when installed (less CPU), else asyncio's",
    )
    p.add_argument(
        "--port",
        type=parse_port,
        default=DEFAULT_CLOUD_PORT,
        help=f"REST API port (default {DEFAULT_CLOUD_PORT}); 0 picks a free one",
    )
    p.add_argument(
        "--device-port",
        type=parse_port,
        default=DEFAULT_DEVICE_PORT,
        help=f"the device endpoint (the Photon protocol, TCP; default {DEFAULT_DEVICE_PORT}) "
        "on --host; 0 picks a free one",
    )
    p.add_argument(
        "--no-devices",
        action="store_true",
        help="serve the REST API only (no device endpoint: every device is offline)",
    )
    p.add_argument(
        "--public",
        action="store_true",
        help="allow a non-loopback --host (tokens and customer data become "
        "reachable from the network)",
    )


def _state_dir(args: argparse.Namespace) -> Path:
    path: Path = getattr(args, "state_dir", None) or default_state_dir()
    problem = state_dir_problem(path)
    if problem is not None:
        raise StateError(problem)
    return path


def print_credentials(creds: dict[str, Any], path: Path | None, out: Any = None) -> None:
    out = out or sys.stdout
    print(
        "cloud: first start, created (the secrets are shown only now"
        + (f"; also saved to {path}, mode 0600" if path else "")
        + "):",
        file=out,
    )
    for line in json.dumps(creds, indent=2, sort_keys=True).splitlines():
        print(f"  {line}", file=out)


async def _serve_async(args: argparse.Namespace) -> int:
    from softap_sim.cloud.service import CloudService

    state_dir = _state_dir(args)
    service = CloudService(state_dir)
    await service.open()
    try:
        try:
            await service.serve(args.host, args.port, allow_remote=args.public)
        except ValueError as err:
            raise SimulatorError(str(err)) from None
        except OSError as err:
            raise SimulatorError(
                f"cannot listen on {args.host}:{args.port} ({err.strerror or err}); "
                "pass --port 0 or stop the other program"
            ) from None
        if not args.no_devices:
            try:
                await service.serve_devices(args.host, args.device_port)
            except OSError as err:
                raise SimulatorError(
                    f"cannot serve the device endpoint on {args.host}:{args.device_port} "
                    f"({err.strerror or err}); pass --device-port 0, --no-devices, or stop "
                    "the other program"
                ) from None
        if service.created_credentials:
            print_credentials(service.created_credentials, service.credentials_path)
        print(_banner(service, args.host), flush=True)
        stop = event_loop.stop_on_signals()
        await stop.wait()
    finally:
        await service.close()
    print("stopped", flush=True)
    return 0


def _banner(service: CloudService, host: str) -> str:
    from softap_sim.cloud.service import SERVER_KEY_FILE

    assert service.server is not None
    url = service.server.url
    lines = [f"softap-sim cloud: REST API on {url} (database {service.db.path or 'in memory'})"]
    if service.device_server is not None:
        key = service.state_dir / SERVER_KEY_FILE if service.state_dir else "in memory"
        lines += [
            f"  devices    TCP {host}:{service.device_server.port} (server key {key})",
            f"  share it   softap-sim run --cloud {url} --cloud-token TOKEN  "
            "(or fleet; TOKEN: a developer or product-client access token)",
        ]
    else:
        lines.append("  devices    no device endpoint (--no-devices): devices stay offline")
    lines.append("Press Ctrl-C to stop.")
    return "\n".join(lines)


def _serve(args: argparse.Namespace) -> int:
    return event_loop.run(_serve_async(args), getattr(args, "loop", "auto"))


def _with_backend(
    args: argparse.Namespace,
    fn: Callable[[CloudBackend], Awaitable[T]],
    *,
    create: bool = False,
) -> T:
    """Run one backend job on the state directory's database.

    Only a command that creates something (``create=True``) may create and seed a new
    database (its first-start credentials are printed and saved as ``run`` does); the
    others need an existing one, so a mistyped ``--state-dir`` is an error, not an
    empty cloud.
    """
    from softap_sim.cloud.service import CloudService

    state_dir = _state_dir(args)

    async def job() -> T:
        service = CloudService(state_dir)
        try:
            await service.open(must_exist=not create)
            if service.created_credentials:
                print_credentials(
                    service.created_credentials, service.credentials_path, out=sys.stderr
                )
            return await fn(service.backend)
        finally:
            await service.close()

    return asyncio.run(job())


async def _product(backend: CloudBackend, ref: str | None) -> dict[str, Any]:
    row = await (backend.first_product() if ref is None else backend.product_row(ref))
    if row is None and ref is None:
        raise SimulatorError("the cloud database has no product; pass --product ID")
    if row is None:
        raise SimulatorError(f"no product {ref!r}; list them with 'softap-sim cloud client list'")
    return row


def _client_create(args: argparse.Namespace) -> int:
    from softap_sim.cloud.errors import CloudError

    if args.preset == "web" and not args.redirect_uri:
        raise SimulatorError("a web client needs --redirect-uri")

    async def create(backend: CloudBackend) -> tuple[dict[str, Any], str]:
        product = await _product(backend, args.product)
        return await backend.create_client(
            preset=PRESETS[args.preset],
            name=args.name,
            type="",
            scope=None,
            product_id=product["id"],
            redirect_uri=args.redirect_uri,
        )

    try:
        row, secret = _with_backend(args, create, create=True)
    except CloudError as err:
        raise SimulatorError(err.description) from None
    print(json.dumps({**row, "secret": secret}, indent=2, sort_keys=True))
    print("The secret is shown only now; store it safely.", file=sys.stderr)
    return 0


def _client_list(args: argparse.Namespace) -> int:
    async def rows(backend: CloudBackend) -> list[dict[str, Any]]:
        product_id = None
        if args.product is not None:
            product_id = (await _product(backend, args.product))["id"]
        found = await backend.list_clients(product_id=product_id)
        keys = ("id", "name", "type", "scope", "product_id", "redirect_uri")
        return [{k: c[k] for k in keys} for c in found]

    result = _with_backend(args, rows)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for r in result:
            print(
                f"{r['id']:<40} {r['type']:<9} product {r['product_id'] or '-':<6} "
                f"scope {r['scope'] or '-':<17} {r['name']}"
            )
    return 0


def _client_delete(args: argparse.Namespace) -> int:
    found = _with_backend(args, lambda backend: backend.delete_client(args.client_id))
    if not found:
        raise SimulatorError(f"no client {args.client_id!r}")
    print(f"deleted client {args.client_id}")
    return 0


def _customer_list(args: argparse.Namespace) -> int:
    async def rows(backend: CloudBackend) -> list[dict[str, Any]]:
        product = await _product(backend, args.product)
        return await backend.customer_summaries(product["id"])

    result = _with_backend(args, rows)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for r in result:
            shadow = " (no password)" if r["shadow"] else ""
            print(f"{r['email']}{shadow}  devices: {', '.join(r['devices']) or '-'}")
    return 0
