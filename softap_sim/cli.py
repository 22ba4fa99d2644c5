"""Command-line interface: ``softap-sim run`` and friends."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from firmware_model import default_environment
from firmware_model.eras import FirmwareEra
from softap_sim import __version__
from softap_sim.config import SimConfig, default_state_dir, load_networks
from softap_sim.emulator import DeviceEmulator
from softap_sim.errors import SimulatorError

log = logging.getLogger("softap_sim.cli")

DEFAULT_TCP_PORT = 5609
DEFAULT_HTTP_PORT = 8080


def _era(text: str) -> FirmwareEra:
    try:
        return FirmwareEra.parse(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _port(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535, got {v}")
    return v


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="softap-sim",
        description=(
            "Emulate a Particle Photon in Wi-Fi SoftAP listening mode on this machine, "
            "byte-faithful to the firmware, so setup apps and client libraries can be "
            "tested without hardware."
        ),
        epilog="Run 'softap-sim run --help' for the device options.",
    )
    parser.add_argument("--version", action="version", version=f"softap-sim {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser(
        "run",
        help="start one emulated device in listening mode",
        description=(
            "Start one emulated Photon in listening mode: the raw TCP protocol (port 5609 "
            "on a real device) and the HTTP protocol (port 80 on a real device). State "
            "(device id, RSA key, stored networks, claim code) is kept in --state-dir and "
            "reused on the next start. Stop with Ctrl-C."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    run.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (a real device uses 192.168.0.1)"
    )
    run.add_argument(
        "--tcp-port",
        type=_port,
        default=DEFAULT_TCP_PORT,
        help="TCP protocol port; 0 picks a free port",
    )
    run.add_argument(
        "--http-port",
        type=_port,
        default=DEFAULT_HTTP_PORT,
        help="HTTP port (80 on a real device; needs privileges); 0 picks a free port",
    )
    run.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help=f"device state directory (default: {default_state_dir()})",
    )
    run.add_argument(
        "--networks",
        type=Path,
        default=None,
        metavar="FILE",
        help="TOML file of simulated access points ([[network]] tables); "
        "default: a built-in neighbourhood",
    )
    run.add_argument(
        "--firmware",
        type=_era,
        default=FirmwareEra.CURRENT,
        metavar="VERSION",
        help="device-os version whose SoftAP behaviour to emulate, e.g. 1.5.2, "
        "0.6.4, 0.4.9 (eras: 0.4.0, 0.4.4, 0.5.0, 0.7.0-3.3.x)",
    )
    run.add_argument(
        "--ssid-prefix", default="Photon", help="SSID prefix used when a new device is created"
    )
    run.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="more logging (-v: every command, -vv: wire details)",
    )
    return parser


def _banner(emu: DeviceEmulator, state_dir: Path) -> str:
    dev = emu.device
    host, tcp_port = emu.tcp_address
    claimed = "yes" if dev.dct.claimed else "no"
    nc = f"printf 'device-id\\n0\\n\\n' | nc {host} {tcp_port}"
    lines = [
        f"softap-sim {__version__}: device in listening mode (firmware {dev.era.value} era)",
        f"  SSID       {emu.ssid}",
        f"  device id  {dev.dct.identity.device_id_hex}  (claimed: {claimed})",
        f"  TCP        {host}:{tcp_port}   e.g.  {nc}",
    ]
    if dev.profile.http:
        lines.append(f"  HTTP       {emu.http_url}   e.g.  curl {emu.url_for('/device-id')}")
    else:
        lines.append("  HTTP       not in this firmware era")
    lines += [
        f"  state      {state_dir}{'  (new device)' if emu.created else ''}",
        f"  networks   {len(dev.radio.access_points)} simulated access points",
        f"  clients    new SoftAPSetup({{host: '{host}', port: {tcp_port}, protocol: 'tcp'}})",
        "Press Ctrl-C to stop.",
    ]
    return "\n".join(lines)


async def _run(args: argparse.Namespace) -> int:
    state_dir: Path = args.state_dir or default_state_dir()
    radio = load_networks(args.networks) if args.networks else default_environment()
    config = SimConfig(
        state_dir=state_dir, firmware=args.firmware, ssid_prefix=args.ssid_prefix, radio=radio
    )
    emu = DeviceEmulator(config, host=args.host, tcp_port=args.tcp_port, http_port=args.http_port)
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
                f"{args.http_port}; ports below 1024 need privileges, use e.g. --http-port 8080"
            ) from None
        raise SimulatorError(f"cannot listen on {args.host}: {err.strerror or err}") from None
    print(_banner(emu, state_dir), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        done = asyncio.ensure_future(emu.setup_complete.wait())
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait({done, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if emu.setup_complete.is_set():
            print(
                "connect-ap received: access point down (setup complete). Press Ctrl-C to exit.",
                flush=True,
            )
            await stopper
        for t in (done, stopper):
            t.cancel()
    finally:
        await emu.close()
    emu.check()
    print("stopped", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    level = (
        logging.WARNING
        if args.verbose == 0
        else logging.INFO
        if args.verbose == 1
        else logging.DEBUG
    )
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.verbose == 0:
        logging.getLogger("softap_sim.dispatch").setLevel(logging.INFO)
        logging.getLogger("softap_sim.emulator").setLevel(logging.INFO)
    try:
        return asyncio.run(_run(args))
    except SimulatorError as err:
        print(f"softap-sim: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
