"""Command-line interface: ``softap-sim run``, ``scenarios``, ``ctl`` and ``replay``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import errno
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from firmware_model import GateMode, StateChanged
from firmware_model.eras import FirmwareEra
from firmware_model.timing import PROFILES, timing_profile
from softap_sim import __version__, argtypes, cloud_cli, ctl, discover, event_loop, replay
from softap_sim.atomic import atomic_write
from softap_sim.config import SimConfig, default_state_dir, load_networks
from softap_sim.emulator import DeviceEmulator
from softap_sim.errors import ConfigError, SimulatorError, StateError
from softap_sim.registry import DeviceRegistry

log = logging.getLogger("softap_sim.cli")

DEFAULT_TCP_PORT = 5609
DEFAULT_HTTP_PORT = 8080
DEFAULT_CONTROL_PORT = 5610


def _era(text: str) -> FirmwareEra:
    try:
        return FirmwareEra.parse(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


_port = argtypes.parse_port
parse_size = argtypes.parse_size
_seconds = argtypes.parse_seconds


def _fault(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(
            f'--fault takes a JSON object, e.g. \'{{"kind":"latency","delay_ms":500}}\' ({err.msg})'
        ) from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("--fault takes a JSON object")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="softap-sim",
        description=(
            "Emulate a Particle Photon in Wi-Fi SoftAP listening mode on this machine, "
            "byte-faithful to the firmware, so setup apps and client libraries can be "
            "tested without hardware."
        ),
        epilog="Run 'softap-sim COMMAND --help' for the options of each command.",
    )
    parser.add_argument("--version", action="version", version=f"softap-sim {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser(
        "run",
        help="start one emulated device (listening mode on first start)",
        description=(
            "Start one emulated Photon. A new device (no stored networks) enters listening "
            "mode: the raw TCP protocol (port 5609 on a real device) and the HTTP protocol "
            "(port 80 on a real device) are served. State (device id, RSA key, stored "
            "networks, claim code) is kept in --state-dir and reused on the next start. "
            "The LED and state changes are printed live; a control API (see 'softap-sim "
            "ctl') steers the running device. Stop with Ctrl-C."
        ),
        formatter_class=argtypes.HelpFormatter,
    )
    net = run.add_argument_group("network")
    net.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (a real device uses 192.168.0.1)"
    )
    net.add_argument(
        "--tcp-port",
        type=_port,
        default=DEFAULT_TCP_PORT,
        help="TCP protocol port; 0 picks a free port",
    )
    net.add_argument(
        "--http-port",
        type=_port,
        default=DEFAULT_HTTP_PORT,
        help="HTTP port (80 on a real device; needs privileges); 0 picks a free port",
    )
    net.add_argument(
        "--control-port",
        type=_port,
        default=DEFAULT_CONTROL_PORT,
        help="control API port (on --control-host); 0 picks a free port",
    )
    net.add_argument(
        "--control-host",
        default="127.0.0.1",
        help="address of the control API; it has no authentication, so anything but "
        "loopback (e.g. 0.0.0.0 in a container) is logged as a warning",
    )
    net.add_argument("--no-control", action="store_true", help="do not start the control API")
    net.add_argument(
        "--cloud-port",
        type=_port,
        default=cloud_cli.DEFAULT_CLOUD_PORT,
        help="port of the embedded cloud's REST API; 0 picks a free one",
    )
    net.add_argument("--cloud-host", default="127.0.0.1", help="address of the cloud API")
    net.add_argument(
        "--cloud-device-port",
        type=_port,
        default=5683,
        help="the cloud's device endpoint (the Photon protocol, TCP 5683); 0 picks a free one",
    )
    net.add_argument(
        "--cloud-public",
        action="store_true",
        help="allow a non-loopback --cloud-host (tokens become reachable from the network)",
    )
    net.add_argument("--no-cloud", action="store_true", help="do not start the embedded cloud")
    from softap_sim import cloud_remote

    cloud_remote.add_options(net)
    net.add_argument(
        "--advertise",
        action="store_true",
        help="publish DNS-SD records (_particle-softap._tcp while listening, "
        "_particle-device._tcp after a join); a real Photon advertises nothing",
    )
    net.add_argument(
        "--advertise-interface",
        action="append",
        default=[],
        metavar="IP",
        help="answer mDNS on the interface with this address (repeatable; default: the "
        "--host address, all interfaces if that is 0.0.0.0)",
    )
    dev = run.add_argument_group("device")
    dev.add_argument(
        "--scenario",
        metavar="NAME|FILE",
        default=None,
        help="a scenario (see 'softap-sim scenarios') or a scenario TOML file; "
        "options given here override it",
    )
    dev.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"device state directory, created on first start (default: {default_state_dir()})",
    )
    dev.add_argument(
        "--networks",
        type=Path,
        default=None,
        metavar="FILE",
        help="TOML file of simulated access points ([[network]] tables); "
        "default: a built-in neighbourhood",
    )
    dev.add_argument(
        "--firmware",
        type=_era,
        default=None,
        metavar="VERSION",
        help="device-os version whose SoftAP behaviour to emulate, e.g. 1.5.2, "
        "0.6.4, 0.4.9 (eras: 0.4.0, 0.4.4, 0.5.0, 0.7.0-3.3.x; default current)",
    )
    dev.add_argument(
        "--ssid-prefix",
        default=None,
        help="SSID prefix used when a new device is created (default Photon)",
    )
    dev.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed for identity generation and fault jitter (reproducible runs)",
    )
    mem = run.add_argument_group("memory (softap-protocol.md §7)")
    mem.add_argument(
        "--app-ram",
        type=parse_size,
        default=None,
        metavar="SIZE",
        help="RAM used by the user application, e.g. 52k",
    )
    mem.add_argument(
        "--heap",
        type=parse_size,
        default=None,
        metavar="SIZE",
        help="free heap after boot with an empty application (default 60k)",
    )
    mem.add_argument(
        "--gate",
        type=parse_size,
        default=None,
        metavar="SIZE",
        help="free RAM needed to enter listening mode properly (default 21.5k)",
    )
    mem.add_argument(
        "--gate-mode",
        choices=[m.value for m in GateMode],
        default=None,
        help="below the gate: 'appears' (AP up, requests fail, saves lost; "
        "default) or 'refuse' (no AP)",
    )
    tim = run.add_argument_group("timing and faults")
    tim.add_argument(
        "--timing",
        choices=sorted(PROFILES),
        default=None,
        help="step durations: fast (default) or realistic (multi-second scans, joins)",
    )
    tim.add_argument(
        "--listening-timeout",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="leave listening mode after this long (a Photon has none: 0)",
    )
    tim.add_argument(
        "--fault",
        type=_fault,
        action="append",
        default=[],
        metavar="JSON",
        help='inject a fault, e.g. \'{"kind":"no-reply","command":"device-id"}\' '
        "(repeatable; see README for kinds)",
    )
    tim.add_argument(
        "--offline",
        action="store_true",
        help="the cloud cannot be reached after a join (blinking cyan)",
    )
    rec = run.add_argument_group("recording")
    rec.add_argument(
        "--transcript",
        type=Path,
        default=None,
        metavar="FILE",
        help="append every exchange and state change to FILE as JSON lines",
    )
    rec.add_argument("--no-record", action="store_true", help="do not record exchanges")
    run.add_argument(
        "--plain",
        action="store_true",
        help="print one line per state change even on a terminal (no live view)",
    )
    run.add_argument(
        "--json",
        action="store_true",
        help="machine-readable stdout for CI: one JSON object per line, first "
        '{"event": "ready", ...} with the real ports, ids and URLs (use with --tcp-port 0), '
        'then one {"event": "state", ...} per change, last {"event": "stopped"}',
    )
    run.add_argument(
        "--ready-file",
        type=Path,
        default=None,
        metavar="FILE",
        help="write the ready object (as --json prints it) to FILE, atomically, once the "
        "device is up; removed again on exit",
    )
    run.add_argument(
        "--loop",
        choices=event_loop.LOOP_CHOICES,
        default="auto",
        help="event loop; auto: uvloop when installed (less CPU), else asyncio's",
    )
    run.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="more logging (-v: every command, -vv: wire details)",
    )
    run.set_defaults(func=_cmd_run)

    scen = sub.add_parser(
        "scenarios",
        help="list the ready-made scenarios",
        description="List the scenarios shipped with softap-sim; pass one to "
        "'softap-sim run --scenario NAME'.",
    )
    scen.add_argument("--json", action="store_true", help="machine-readable output")
    scen.add_argument("name", nargs="?", help="show one scenario in full")
    scen.set_defaults(func=_cmd_scenarios)

    ctl.add_parser(sub)
    discover.add_parser(sub)
    replay.add_parser(sub)
    cloud_cli.add_parser(sub)
    _add_fleet(sub)
    return parser


def _add_fleet(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from softap_sim import fleet

    fleet.add_parser(sub)


# -- run ---------------------------------------------------------------------------------
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
    cloud: Any = None
    if args.cloud is not None:
        from softap_sim import cloud_remote

        cloud = await cloud_remote.from_args(args)
    elif not args.no_cloud:
        # the cloud first: the device holds its address and public key (as in its DCT)
        cloud = await _start_cloud(args, config.state_dir)
    if cloud is not None:
        config = dataclasses.replace(
            config,
            cloud_endpoint=cloud.device_endpoint(args.cloud_host),
            server_public_key_pem=cloud.server_public_key_pem,
        )

    async def register(emulator: DeviceEmulator) -> None:
        if cloud is not None:
            device = emulator.device
            await cloud.register_device(
                device.dct.identity.device_id_hex, device.key.public_key_pem.decode("ascii")
            )

    emu = DeviceEmulator(
        config,
        host=args.host,
        tcp_port=args.tcp_port,
        http_port=args.http_port,
        before_power_on=register,
    )
    # on a terminal the live view (rich, started after the banner); otherwise one plain
    # line per state change
    view = None
    if args.json:
        emu.on_state_change.append(_json_state_line)
    elif sys.stdout.isatty() and not args.plain:
        from softap_sim.live_view import LiveView

        view = LiveView(plain=False)
        view.attach(emu)
    else:
        emu.on_state_change.append(LedDisplay())
    registry = DeviceRegistry()
    registry.add(emu)
    control = None
    advertiser = None
    try:
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
        if not args.no_control:
            from softap_sim.control_api import start_control_api

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
        if args.advertise:
            from softap_sim.transports.mdns import Advertiser

            advertiser = Advertiser(
                emu,
                interfaces=args.advertise_interface or None,
                control_url=control.url if control else None,
            )
            await advertiser.start()
        cloud_line = None
        cloud_url = None
        if cloud is not None and config.cloud_endpoint is not None:
            cloud_url = cloud.url if args.cloud else cloud.server.url
            host, port = config.cloud_endpoint
            where = f"{host}:{port}; external" if args.cloud else f"TCP {port}"
            cloud_line = f"{cloud_url}  (devices: {where})"
        # handlers first: a supervisor may signal as soon as it reads "Press Ctrl-C"
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        ready = ready_info(emu, config, control.url if control else None, cloud_url)
        if args.ready_file is not None:
            write_ready_file(args.ready_file, ready)
        if args.json:
            print(json.dumps(ready), flush=True)
        else:
            banner, press = _banner(
                emu, config.state_dir, control.url if control else None, cloud_line
            ).rsplit("\n", 1)
            print(banner, flush=True)
            if getattr(cloud, "created_credentials", None):
                cloud_cli.print_credentials(cloud.created_credentials, cloud.credentials_path)
            print(press, flush=True)
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


async def _start_cloud(args: argparse.Namespace, state_dir: Path | None) -> Any:
    """The embedded cloud: REST API and the device endpoint (TCP 5683)."""
    from softap_sim.cloud.service import CloudService

    service = CloudService(state_dir)
    await service.open()
    try:
        await service.serve(args.cloud_host, args.cloud_port, allow_remote=args.cloud_public)
        await service.serve_devices(args.cloud_host, args.cloud_device_port)
    except ValueError as err:
        await service.close()
        raise SimulatorError(str(err)) from None
    except OSError as err:
        await service.close()
        raise SimulatorError(
            f"cannot start the cloud on {args.cloud_host} (REST {args.cloud_port}, devices "
            f"{args.cloud_device_port}): {err.strerror or err}; pass --cloud-port 0 "
            "--cloud-device-port 0, or --no-cloud"
        ) from None
    return service


def _cmd_run(args: argparse.Namespace) -> int:
    return event_loop.run(_run(args), args.loop)


# -- scenarios ---------------------------------------------------------------------------
def _cmd_scenarios(args: argparse.Namespace) -> int:
    from softap_sim.scenario import list_scenarios, load_scenario

    if args.name:
        s = load_scenario(args.name)
        if args.json:
            print(
                json.dumps(
                    {
                        "name": s.name,
                        "description": s.description,
                        "pain_point": s.pain_point,
                        "expect": s.expect,
                        "settings": s.settings,
                    },
                    indent=2,
                    default=str,
                )
            )
        else:
            lines = [s.name, f"  {s.description}"]
            if s.pain_point:
                lines.append(f"  pain point: {s.pain_point}")
            if s.expect:
                lines.append(f"  the app sees: {s.expect}")
            lines.append(f"  settings: {json.dumps(s.settings, default=str)}")
            print("\n".join(lines))
        return 0
    scenarios = list_scenarios()
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "name": s.name,
                        "description": s.description,
                        "pain_point": s.pain_point,
                        "expect": s.expect,
                    }
                    for s in scenarios
                ],
                indent=2,
            )
        )
        return 0
    width = max((len(s.name) for s in scenarios), default=10)
    for s in scenarios:
        print(f"{s.name:<{width}}  {s.description}")
    print("\nRun one: softap-sim run --scenario NAME   (details: softap-sim scenarios NAME)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    verbose = getattr(args, "verbose", 0)
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if verbose == 0 and args.command == "run":
        logging.getLogger("softap_sim.dispatch").setLevel(logging.INFO)
    try:
        if args.command == "ctl":
            return int(args.ctl_func(args))
        if args.command == "discover":
            return int(args.discover_func(args))
        if args.command == "replay":
            return int(args.replay_func(args))
        if args.command == "cloud":
            return int(args.cloud_func(args))
        if args.command == "fleet":
            return int(args.fleet_func(args))
        return int(args.func(args))
    except SimulatorError as err:
        print(f"softap-sim: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
