"""``softap-sim fleet``: run a :class:`~softap_sim.fleet.Fleet` until Ctrl-C.

The command wires the fleet to what a person at a terminal needs: the key pool (filled
ahead with ``--fill-pool``, topped up in the background), a cloud (embedded, another
process's with ``--cloud URL``, or none), one control API for every device, DNS-SD
records if asked, a banner and the live view. Its options are in :mod:`.options`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from softap_sim import argtypes, event_loop
from softap_sim.config import SimConfig
from softap_sim.errors import ConfigError, SimulatorError, StateError
from softap_sim.event_loop import stop_on_signals
from softap_sim.fleet.addresses import PER_BLOCK
from softap_sim.fleet.core import Fleet
from softap_sim.fleet.options import add_options
from softap_sim.fleet.scenario import FleetScenario, load_fleet_scenario
from softap_sim.fleet.state_dirs import DEVICES_DIR
from softap_sim.keypool import KeyPool, default_pool_dir

if TYPE_CHECKING:
    from softap_sim.cloud.service import CloudService
    from softap_sim.cloud_remote import RemoteCloud
    from softap_sim.live_view import LiveView


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``softap-sim fleet``; sets the default ``fleet_func`` (args -> exit code)."""
    p = sub.add_parser(
        "fleet",
        help="run N emulated devices in one process (own addresses, identities, keys)",
        description=(
            "Start N emulated Photons in listening mode in one process. Each device has its\n"
            "own identity, SSID and RSA key, and listens on its own loopback address with the\n"
            "canonical ports: 127.0.1.1, 127.0.1.2 ... each with TCP 5609 and HTTP 8080 (port\n"
            "offsets on 127.0.0.1 where extra loopback addresses do not exist). All of them\n"
            "are registered in the embedded cloud. Keys come from a reusable key pool that\n"
            "--fill-pool fills ahead of time. On a terminal a live view shows the devices;\n"
            "otherwise one line is printed per state change. Stop with Ctrl-C."
        ),
        epilog=(
            "examples:  softap-sim fleet --count 100\n"
            "           softap-sim fleet --fill-pool 1000          # fill the key pool, exit\n"
            "           softap-sim fleet --count 20 --scenario fleet.toml --state-dir ./fleet\n"
            "           curl http://127.0.1.7:8080/device-id      # device 6"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_options(p)
    p.set_defaults(fleet_func=fleet_main)


def fleet_main(args: argparse.Namespace) -> int:
    """``softap-sim fleet``: the exit code (0 ok, 1 error, 130 interrupted)."""
    try:
        return event_loop.run(_fleet(args), args.loop)
    except SimulatorError as err:
        print(f"softap-sim: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader of our output went away (e.g. '| head')
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _pool_for(args: argparse.Namespace) -> KeyPool:
    if args.key_pool is not None:
        return KeyPool(args.key_pool)
    if args.state_dir is not None:
        return KeyPool(args.state_dir / "keypool")
    return KeyPool(default_pool_dir())


def _fill(pool: KeyPool, target: int) -> None:
    have = pool.available()
    if have >= target:
        print(f"key pool {pool.directory}: {have} keys ready", flush=True)
        return
    print(
        f"key pool {pool.directory}: {have} keys ready, generating {target - have} ...",
        flush=True,
    )
    t0 = time.perf_counter()
    made = pool.fill(target)
    elapsed = time.perf_counter() - t0
    rate = made / elapsed if elapsed > 0 else 0.0
    print(
        f"key pool {pool.directory}: {pool.available()} keys ready (made {made} in "
        f"{elapsed:.1f} s, {rate:.0f} keys/s)",
        flush=True,
    )


async def _cloud_for(args: argparse.Namespace) -> Any:
    """Another process's cloud (``--cloud URL``), the embedded one, or None (``--no-cloud``)."""
    if args.cloud is not None:
        from softap_sim import cloud_remote

        return await cloud_remote.from_args(args)
    if args.no_cloud:
        return None
    from softap_sim.cloud.service import start_cloud

    return await start_cloud(
        args.state_dir, args.cloud_host, args.cloud_port, args.cloud_device_port
    )


def _base_config(args: argparse.Namespace, scenario: FleetScenario | None) -> SimConfig:
    base = SimConfig()
    if scenario is not None:
        base = scenario.apply(base)
    changes: dict[str, Any] = {}
    if args.seed is not None:
        changes["seed"] = args.seed
    if args.ssid_prefix is not None:
        from firmware_model.identity import MAX_SSID_PREFIX_LEN

        if not 0 < len(args.ssid_prefix.encode()) <= MAX_SSID_PREFIX_LEN:
            raise ConfigError(f"--ssid-prefix must be 1-{MAX_SSID_PREFIX_LEN} bytes")
        changes["ssid_prefix"] = args.ssid_prefix
    return dataclasses.replace(base, **changes)


async def _start_control(
    args: argparse.Namespace, fleet: Fleet, *, responder: Any = None
) -> tuple[Any, list[Any]]:
    """The fleet's control API (every device by id) and, if asked, its DNS-SD records.

    ``responder``: the publisher the advertisers share (tests pass a fake); default a
    real mDNS :class:`~softap_sim.transports.mdns.Responder`, closed with the fleet.
    """
    from softap_sim.registry import DeviceRegistry

    registry = DeviceRegistry()
    control = None
    if not args.no_control:
        from softap_sim.control_api import start_control_api

        try:
            control = await start_control_api(
                None, args.control_host, args.control_port, registry=registry
            )
        except OSError as err:
            raise SimulatorError(
                f"cannot start the control API on {args.control_host}:{args.control_port} "
                f"({err.strerror or err}); pass --control-port 0 or --no-control"
            ) from None
    url = control.url if control is not None else None
    for device in fleet.devices:
        registry.add(device.emulator, control_url=url)
    advertising: list[Any] = []
    if args.advertise:
        from softap_sim.transports.mdns import Advertiser, Responder

        if responder is None:
            responder = Responder(args.advertise_interface or None)
            await responder.start()
            advertising.append(responder)
        for device in fleet.devices:
            adv = Advertiser(device.emulator, responder=responder, control_url=url)
            await adv.start()
            advertising.insert(0, adv)  # closed before the responder
    return control, advertising


async def _close_all(control: Any, advertising: list[Any]) -> None:
    for item in advertising:
        await item.close()
    if control is not None:
        await control.close()


def fleet_banner(
    fleet: Fleet,
    cloud: CloudService | RemoteCloud | None,
    pool: KeyPool | None,
    control_url: str | None = None,
) -> str:
    """What the fleet is and how to reach it; without ``pool`` the live view's header."""
    r = fleet.report
    first = fleet.devices[0]
    lines = [
        f"softap-sim fleet: {len(fleet)} devices ready in {r.total_s:.2f} s "
        f"(keys: {r.keys_from_pool} from the pool, {r.keys_generated} generated; "
        f"{r.created} new devices)",
        *_address_lines(fleet),
    ]
    host, port = first.emulator.tcp_address
    lines.append(
        f"  e.g.       curl {first.emulator.url_for('/device-id')}    "
        f"printf 'device-id\\n0\\n\\n' | nc {host} {port}"
    )
    cloud_line = _cloud_line(cloud, r.registered)
    if cloud_line is not None:
        lines.append(cloud_line)
    if control_url is not None:
        lines.append(
            f"  control    {control_url}   e.g.  softap-sim ctl --control {control_url} "
            f"--device {first.device_id} state"
        )
    state = fleet.state_dir / DEVICES_DIR if fleet.state_dir is not None else "in memory"
    lines.append(f"  state      {state}")
    if pool is not None:
        lines.append(f"  key pool   {pool.directory} ({pool.available()} ready)")
    return "\n".join(lines)


def _address_lines(fleet: Fleet) -> list[str]:
    first, last = fleet.devices[0], fleet.devices[-1]
    tcp0, tcp1 = first.emulator.tcp_address[1], last.emulator.tcp_address[1]
    if fleet.mode != "loopback":
        return [f"  addresses  {first.host}, port offsets: device i on TCP {tcp0}+i ... {tcp1}"]
    shared = "  (shared listeners: one socket per port)" if fleet.listeners == "shared" else ""
    return [
        f"  addresses  {first.host} ... {last.host}  (device i: "
        f"{fleet.host_pattern}, hi = 1 + i // {PER_BLOCK}, lo = 1 + i % {PER_BLOCK})",
        f"  ports      TCP {tcp0}, HTTP {first.emulator.http_address[1]} on each{shared}",
    ]


def _cloud_line(cloud: CloudService | RemoteCloud | None, registered: int) -> str | None:
    from softap_sim.cloud_remote import RemoteCloud

    if isinstance(cloud, RemoteCloud):
        host, port = cloud.endpoint
        return (
            f"  cloud      {cloud.url}  (external; devices: {host}:{port}; {registered} registered)"
        )
    if cloud is not None and cloud.server is not None and cloud.device_server is not None:
        return (
            f"  cloud      {cloud.server.url}  (devices: TCP {cloud.device_server.port}; "
            f"{registered} registered)"
        )
    return None


async def _fleet(args: argparse.Namespace) -> int:
    if args.count is None and args.fill_pool is None:
        raise ConfigError(
            "give --count N (devices to run), or --fill-pool N to only fill the key pool"
        )
    pool = _pool_for(args)
    if args.fill_pool is not None:
        pool.ensure_dir()
        await asyncio.to_thread(_fill, pool, args.fill_pool)
        if args.count is None:
            return 0
    count: int = args.count
    scenario = load_fleet_scenario(args.scenario) if args.scenario else None
    base = _base_config(args, scenario)
    if scenario is not None and scenario.max_index >= count:
        raise ConfigError(
            f"scenario {scenario.source} overrides device {scenario.max_index} but "
            f"--count is {count} (indices 0..{count - 1})"
        )
    from softap_sim.live_view import LiveView

    if args.state_dir is not None:
        _make_state_dir(args.state_dir)
    cloud = await _cloud_for(args)
    fleet = _make_fleet(args, base, scenario, cloud, pool)
    view = LiveView(plain=True if args.plain else None, recent=args.recent)
    view.attach_fleet(fleet)
    try:
        await _serve(args, fleet, cloud, pool, view)
    finally:
        await fleet.close()
        if cloud is not None:
            await cloud.close()
    fleet.check()
    print("stopped", flush=True)
    return 0


def _make_fleet(
    args: argparse.Namespace,
    base: SimConfig,
    scenario: FleetScenario | None,
    cloud: Any,
    pool: KeyPool,
) -> Fleet:
    """The fleet the options describe (not started)."""
    return Fleet(
        args.count,
        base_config=base,
        state_dir=args.state_dir,
        scenario=scenario,
        address_mode="port-offset" if args.port_offset else "auto",
        listeners=args.listeners,
        host_pattern=args.host_pattern,
        tcp_port=args.tcp_port,
        http_port=args.http_port,
        cloud=cloud,
        cloud_host=args.cloud_host,
        key_pool=pool,
        concurrency=args.concurrency,
        freeze_gc=True,
    )


def _make_state_dir(state_dir: Path) -> None:
    problem = argtypes.state_dir_problem(state_dir)
    if problem is not None:
        raise StateError(problem)
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise StateError(
            f"cannot create state directory {state_dir}: {err.strerror}; "
            "choose another with --state-dir"
        ) from None


async def _serve(
    args: argparse.Namespace, fleet: Fleet, cloud: Any, pool: KeyPool, view: LiveView
) -> None:
    """Start the fleet, its control API and the view; run until SIGINT or SIGTERM."""
    refill = None
    stack = contextlib.AsyncExitStack()
    try:
        pool.ensure_dir()
        if not view.plain:
            print(f"starting {fleet.count} devices ...", flush=True)
        await fleet.start()
        stop = stop_on_signals()
        control, advertising = await _start_control(args, fleet)
        stack.push_async_callback(_close_all, control, advertising)
        control_url = control.url if control else None
        print(fleet_banner(fleet, cloud, pool, control_url), flush=True)
        if getattr(cloud, "created_credentials", None):
            from softap_sim import cloud_cli

            cloud_cli.print_credentials(cloud.created_credentials, cloud.credentials_path)
        if not args.no_refill and pool.available() < fleet.count:
            refill = pool.fill_in_background(fleet.count)
        print("Press Ctrl-C to stop.", flush=True)
        view.header = fleet_banner(fleet, cloud, None, control_url)
        async with view:
            await stop.wait()
    finally:
        if refill is not None:
            await asyncio.to_thread(refill.stop)
        await stack.aclose()  # the control API and mDNS goodbyes before the devices go
