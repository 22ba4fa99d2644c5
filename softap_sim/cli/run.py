"""``softap-sim run``: one emulated Photon, with its cloud and control API, until Ctrl-C.

What the user sees comes first: a banner with every address and a ready-to-paste
command, then the state changes (a live view on a terminal, plain lines otherwise, JSON
lines with ``--json``). CI jobs read ``--json`` or ``--ready-file`` for the real ports.
The options are in :mod:`.run_options`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import errno
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from firmware_model import GateMode, StateChanged
from firmware_model.timing import timing_profile
from softap_sim import __version__, argtypes, cloud_cli, event_loop
from softap_sim.atomic import atomic_write
from softap_sim.config import SimConfig, default_state_dir, load_networks
from softap_sim.emulator import DeviceEmulator
from softap_sim.errors import ConfigError, SimulatorError, StateError
from softap_sim.event_loop import stop_on_signals
from softap_sim.registry import DeviceRegistry

if TYPE_CHECKING:
    from softap_sim.control_api import ControlServer
    from softap_sim.live_view import LiveView

log = logging.getLogger("softap_sim.cli")


def cmd_run(args: argparse.Namespace) -> int:
    return event_loop.run(_run(args), args.loop)


def build_config(args: argparse.Namespace) -> SimConfig:
    """Scenario first, then the command-line options on top (house-style.md §9)."""
    base = SimConfig(state_dir=args.state_dir or default_state_dir())
    if args.scenario:
        from softap_sim.scenario import load_scenario

        base = load_scenario(args.scenario).apply(base)
    changes: dict[str, Any] = {}
    if args.networks:
        changes["radio"] = load_networks(args.networks)
    if args.firmware is not None:
        changes["firmware"] = args.firmware
    if args.ssid_prefix is not None:
        changes["ssid_prefix"] = args.ssid_prefix
    if args.seed is not None:
        changes["seed"] = args.seed
    if args.app_ram is not None:
        changes["app_ram_bytes"] = args.app_ram
    if args.heap is not None:
        changes["heap_after_boot_bytes"] = args.heap
    if args.gate is not None:
        changes["gate_bytes"] = args.gate
    if args.gate_mode is not None:
        changes["gate_mode"] = GateMode(args.gate_mode)
    timing = base.timing
    if args.timing is not None:
        timing = timing_profile(args.timing)
    if args.listening_timeout is not None:
        timing = dataclasses.replace(timing, listening_timeout_s=args.listening_timeout)
    changes["timing"] = timing
    if args.fault:
        from firmware_model import Fault

        for spec in args.fault:
            try:
                Fault.from_mapping(spec)
            except ValueError as err:
                raise ConfigError(f"--fault {json.dumps(spec)}: {err}") from None
        changes["faults"] = (*base.faults, *args.fault)
    if args.offline:
        changes["cloud_available"] = False
    if args.transcript is not None:
        changes["transcript_path"] = args.transcript
    if args.no_record:
        changes["record"] = False
    return dataclasses.replace(base, **changes)


def _banner(
    emu: DeviceEmulator,
    state_dir: Path | None,
    control_url: str | None,
    cloud_url: str | None = None,
) -> str:
    dev = emu.device
    host, tcp_port = emu.tcp_address
    claimed = "yes" if dev.dct.claimed else "no"
    nc = f"printf 'device-id\\n0\\n\\n' | nc {host} {tcp_port}"
    scenario = f", scenario {emu.config.scenario}" if emu.config.scenario else ""
    lines = [
        f"softap-sim {__version__}: firmware {dev.era.value} era{scenario}, "
        f"timing {dev.timing.name}",
        f"  SSID       {emu.ssid}",
        f"  device id  {dev.dct.identity.device_id_hex}  (claimed: {claimed})",
        f"  state      {dev.state.value}, LED {dev.led.describe()}",
        f"  TCP        {host}:{tcp_port}   e.g.  {nc}",
    ]
    if dev.profile.http:
        lines.append(f"  HTTP       {emu.http_url}   e.g.  curl {emu.url_for('/device-id')}")
    else:
        lines.append("  HTTP       not in this firmware era")
    if control_url:
        lines.append(
            f"  control    {control_url}   e.g.  softap-sim ctl --control {control_url} state"
        )
    if cloud_url:
        lines.append(f"  cloud      {cloud_url}")
    heap = dev.heap
    lines += [
        f"  memory     {heap.free_bytes} B free, app {heap.app_ram_bytes} B, gate "
        f"{heap.gate_bytes} B ({heap.gate_mode.value})",
        f"  state dir  {state_dir}{'  (new device)' if emu.created else ''}",
        f"  networks   {len(dev.radio.access_points)} simulated access points, "
        f"{len(dev.dct.credentials)} stored",
        f"  clients    new SoftAPSetup({{host: '{host}', port: {tcp_port}, protocol: 'tcp'}})",
    ]
    if dev.state.value != "listening":
        lines.append(
            "  not listening: 'softap-sim ctl listen' (or the SETUP button: "
            "'softap-sim ctl button --hold 3') enters listening mode"
        )
    lines.append("Press Ctrl-C to stop.")
    return "\n".join(lines)


def _json_state_line(change: StateChanged, t: float) -> None:
    """``run --json``: a state change as one JSON line (no secrets: LED and states)."""
    line = {
        "event": "state",
        "t": round(t, 6),
        "old": change.old,
        "new": change.new,
        "cause": change.cause,
        "led": change.led.describe(),
        "detail": change.detail,
    }
    print(json.dumps(line, default=str), flush=True)


class LedDisplay:
    """Prints every state change; coloured when the output is a terminal."""

    _ANSI: ClassVar[dict[str, str]] = {
        "off": "90",
        "white": "97",
        "dark blue": "34",
        "green": "32",
        "cyan": "36",
        "red": "31",
    }

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stdout
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def __call__(self, change: StateChanged, t: float) -> None:
        led = change.led.describe()
        dot = "●"
        if self.tty:
            dot = f"\x1b[{self._ANSI.get(change.led.colour.value, '0')}m●\x1b[0m"
        extra = ""
        if change.detail.get("last_join"):
            extra = f"  (join: {change.detail['last_join']})"
        if change.detail.get("gate_passed") is False:
            extra += "  (below the memory gate)"
        print(
            f"[{t:8.3f}s] {dot} LED {led:<24} {change.old} -> {change.new} "
            f"on {change.cause}{extra}",
            file=self.stream,
            flush=True,
        )


async def _run(args: argparse.Namespace) -> int:
    log.info("event loop: %s", event_loop.loop_name(asyncio.get_running_loop()))
    config = build_config(args)
    if config.state_dir is not None:
        problem = argtypes.state_dir_problem(config.state_dir)
        if problem is not None:
            raise StateError(problem)  # before the cloud database gets the blame
    # the cloud first: the device holds its address and public key (as in its DCT)
    cloud = await _cloud_for(args, config.state_dir)
    if cloud is not None:
        config = dataclasses.replace(
            config,
            cloud_endpoint=cloud.device_endpoint(args.cloud_host),
            server_public_key_pem=cloud.server_public_key_pem,
        )
    emu = _emulator(args, config, cloud)
    view = _show_changes(args, emu)
    control = None
    advertiser = None
    try:
        await _start_device(args, emu)
        if not args.no_control:
            control = await _start_control(args, emu)
        control_url = control.url if control else None
        if args.advertise:
            advertiser = _advertiser(args, emu, control_url)
            await advertiser.start()
        # handlers first: a supervisor may signal as soon as it reads "Press Ctrl-C"
        stop = stop_on_signals()
        _announce(args, emu, config, cloud, control_url)
        if view is None:
            await stop.wait()
        else:
            async with view:  # stopped (terminal restored) before the device closes
                await stop.wait()
    finally:
        if args.ready_file is not None:
            with contextlib.suppress(OSError):
                args.ready_file.unlink()  # not ready any more: no stale file for a poller
        if advertiser is not None:
            await advertiser.close()  # goodbye packets before the device goes away
        if control is not None:
            await control.close()
        await emu.close()
        if cloud is not None:
            await cloud.close()
    emu.check()
    print(json.dumps({"event": "stopped"}) if args.json else "stopped", flush=True)
    return 0


async def _cloud_for(args: argparse.Namespace, state_dir: Path | None) -> Any:
    """Another process's cloud (``--cloud URL``), the embedded one, or None (``--no-cloud``)."""
    if args.cloud is not None:
        from softap_sim import cloud_remote

        return await cloud_remote.from_args(args)
    if args.no_cloud:
        return None
    from softap_sim.cloud.service import start_cloud

    return await start_cloud(
        state_dir,
        args.cloud_host,
        args.cloud_port,
        args.cloud_device_port,
        allow_remote=args.cloud_public,
    )


def _emulator(args: argparse.Namespace, config: SimConfig, cloud: Any) -> DeviceEmulator:
    """The device, registered in ``cloud`` (if any) just before it powers on."""

    async def register(emulator: DeviceEmulator) -> None:
        if cloud is not None:
            device = emulator.device
            await cloud.register_device(
                device.dct.identity.device_id_hex, device.key.public_key_pem.decode("ascii")
            )

    return DeviceEmulator(
        config,
        host=args.host,
        tcp_port=args.tcp_port,
        http_port=args.http_port,
        before_power_on=register,
    )


def _show_changes(args: argparse.Namespace, emu: DeviceEmulator) -> LiveView | None:
    """How state changes reach stdout: JSON lines (``--json``), the live view on a
    terminal (returned: it starts after the banner), else one plain line each."""
    if args.json:
        emu.on_state_change.append(_json_state_line)
    elif sys.stdout.isatty() and not args.plain:
        from softap_sim.live_view import LiveView

        view = LiveView(plain=False)
        view.attach(emu)
        return view
    else:
        emu.on_state_change.append(LedDisplay())
    return None


async def _start_device(args: argparse.Namespace, emu: DeviceEmulator) -> None:
    try:
        await emu.start()
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            raise SimulatorError(
                f"a port is already in use on {args.host} (TCP {args.tcp_port} or HTTP "
                f"{args.http_port}); stop the other program or pass --tcp-port/--http-port "
                "(0 picks a free port)"
            ) from None
        if err.errno == errno.EACCES:
            raise SimulatorError(
                f"permission denied binding {args.host} port {args.tcp_port} or "
                f"{args.http_port}; ports below 1024 need privileges, use e.g. "
                "--http-port 8080"
            ) from None
        raise SimulatorError(f"cannot listen on {args.host}: {err.strerror or err}") from None


async def _start_control(args: argparse.Namespace, emu: DeviceEmulator) -> ControlServer:
    """The control API of this one device (``softap-sim ctl``), also listing it."""
    from softap_sim.control_api import start_control_api

    registry = DeviceRegistry()
    registry.add(emu)
    try:
        control = await start_control_api(
            emu, args.control_host, args.control_port, registry=registry
        )
        registry.add(emu, control_url=control.url)
    except OSError as err:
        raise SimulatorError(
            f"cannot start the control API on {args.control_host}:{args.control_port} "
            f"({err.strerror or err}); pass --control-port 0 or --no-control"
        ) from None
    return control


def _advertiser(args: argparse.Namespace, emu: DeviceEmulator, control_url: str | None) -> Any:
    from softap_sim.transports.mdns import Advertiser

    return Advertiser(emu, interfaces=args.advertise_interface or None, control_url=control_url)


def _announce(
    args: argparse.Namespace,
    emu: DeviceEmulator,
    config: SimConfig,
    cloud: Any,
    control_url: str | None,
) -> None:
    """The device is up: the ready file, then the ready JSON line or the banner."""
    cloud_line = None
    cloud_url = None
    if cloud is not None and config.cloud_endpoint is not None:
        cloud_url = cloud.url if args.cloud else cloud.server.url
        host, port = config.cloud_endpoint
        where = f"{host}:{port}; external" if args.cloud else f"TCP {port}"
        cloud_line = f"{cloud_url}  (devices: {where})"
    ready = ready_info(emu, config, control_url, cloud_url)
    if args.ready_file is not None:
        write_ready_file(args.ready_file, ready)
    if args.json:
        print(json.dumps(ready), flush=True)
        return
    banner, press = _banner(emu, config.state_dir, control_url, cloud_line).rsplit("\n", 1)
    print(banner, flush=True)
    if getattr(cloud, "created_credentials", None):
        cloud_cli.print_credentials(cloud.created_credentials, cloud.credentials_path)
    print(press, flush=True)


def ready_info(
    emu: DeviceEmulator, config: SimConfig, control_url: str | None, cloud_url: str | None
) -> dict[str, Any]:
    """What a CI job needs once the device is up (``run --json`` / ``--ready-file``)."""
    dev = emu.device
    host, tcp_port = emu.tcp_address
    http = None
    if dev.profile.http:
        http_host, http_port = emu.http_address
        http = {"host": http_host, "port": http_port, "url": emu.http_url}
    endpoint = config.cloud_endpoint
    return {
        "event": "ready",
        "version": __version__,
        "pid": os.getpid(),
        "device_id": dev.dct.identity.device_id_hex,
        "ssid": emu.ssid,
        "firmware": dev.era.value,
        "state": dev.state.value,
        "claimed": dev.dct.claimed,
        "tcp": {"host": host, "port": tcp_port},
        "http": http,
        "control_url": control_url,
        "health_url": f"{control_url}/v1/health" if control_url else None,
        "cloud": None
        if cloud_url is None
        else {
            "url": cloud_url,
            "device_endpoint": None if endpoint is None else f"{endpoint[0]}:{endpoint[1]}",
        },
        "state_dir": None if config.state_dir is None else str(config.state_dir),
    }


def write_ready_file(path: Path, info: dict[str, Any]) -> None:
    """Atomically: a poller sees no file, or the whole JSON object."""
    try:
        atomic_write(path, (json.dumps(info, indent=2) + "\n").encode(), 0o644)
    except OSError as err:
        raise SimulatorError(
            f"cannot write the ready file {path}: {err.strerror or err}; check --ready-file"
        ) from None
