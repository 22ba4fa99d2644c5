"""Where a fleet's devices listen: addresses, ports, listener sockets and the open-files limit.

Device ``i`` gets its own loopback address ``127.0.{hi}.{lo}`` with the canonical ports
(Linux routes all of 127/8 to the loopback interface); where extra loopback addresses
do not exist, port offsets on 127.0.0.1. Two listening sockets per device meet the
open-files limit at a few thousand devices: beyond it, one shared socket per port
(:mod:`softap_sim.listeners`). The errors name the option that gets round them.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import resource
import socket
from dataclasses import dataclass
from typing import Final

from softap_sim.errors import ConfigError, SimulatorError
from softap_sim.listeners import shared_ports_supported

log = logging.getLogger(__name__)

DEFAULT_HOST_PATTERN: Final = "127.0.{hi}.{lo}"
DEFAULT_TCP_PORT: Final = 5609
DEFAULT_HTTP_PORT: Final = 8080
#: the host of the port-offset fallback
FALLBACK_HOST: Final = "127.0.0.1"
#: addresses per ``hi`` value of the pattern (``lo`` = 1 ... 254: no .0 and .255)
PER_BLOCK: Final = 254
#: file descriptors besides the devices' two listeners (cloud, clients, stdio ...)
FD_RESERVE: Final = 1024

AddressMode = str  # "auto" | "loopback" | "port-offset"
ADDRESS_MODES: Final = ("auto", "loopback", "port-offset")
ListenerMode = str  # "auto" | "per-device" | "shared"
LISTENER_MODES: Final = ("auto", "per-device", "shared")


def device_address(pattern: str, index: int) -> str:
    """The address of device ``index`` under ``pattern`` (``{hi}``, ``{lo}``, ``{i}``)."""
    hi, lo = 1 + index // PER_BLOCK, 1 + index % PER_BLOCK
    try:
        text = pattern.format(hi=hi, lo=lo, i=index)
    except (KeyError, IndexError, ValueError) as err:
        raise ConfigError(
            f"bad host pattern {pattern!r} ({err}); use the fields {{hi}} and {{lo}}, "
            f"e.g. {DEFAULT_HOST_PATTERN}"
        ) from None
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise ConfigError(
            f"host pattern {pattern!r} gives {text!r} for device {index}, which is not an "
            f"IP address; with {{hi}} = 1 + i // {PER_BLOCK} it allows at most "
            f"{255 * PER_BLOCK} devices"
        ) from None
    return text


def loopback_aliases_work(host: str) -> bool:
    """Whether ``host`` can be bound here (all of 127/8 on Linux; not on macOS)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, 0))
        except OSError as err:
            if err.errno in (errno.EADDRNOTAVAIL, errno.EINVAL, errno.EAFNOSUPPORT):
                return False
            raise
    return True


@dataclass(frozen=True, slots=True)
class Placement:
    """Where device ``index`` listens (the requested ports; 0 means a free one)."""

    host: str
    tcp_port: int
    http_port: int


def plan_addresses(
    count: int,
    *,
    mode: AddressMode = "auto",
    host_pattern: str = DEFAULT_HOST_PATTERN,
    tcp_port: int = DEFAULT_TCP_PORT,
    http_port: int = DEFAULT_HTTP_PORT,
    fallback_host: str = FALLBACK_HOST,
) -> tuple[str, list[Placement]]:
    """``(mode, placements)``: the resolved mode (``loopback``/``port-offset``) and one
    placement per device; :class:`ConfigError` when the layout cannot work."""
    if mode not in ADDRESS_MODES:
        raise ConfigError(f"unknown address mode {mode!r}; use one of {', '.join(ADDRESS_MODES)}")
    if count <= 0:
        return ("loopback" if mode == "auto" else mode), []
    if mode in ("auto", "loopback"):
        hosts = [device_address(host_pattern, i) for i in range(count)]
        if len(set(hosts)) != count:
            raise ConfigError(
                f"host pattern {host_pattern!r} gives the same address to several devices; "
                "use both {hi} and {lo}"
            )
        if loopback_aliases_work(hosts[0]) and (count == 1 or loopback_aliases_work(hosts[-1])):
            return "loopback", [Placement(h, tcp_port, http_port) for h in hosts]
        if mode == "loopback":
            raise ConfigError(
                f"cannot bind {hosts[0]}: this system has no such loopback address (on macOS "
                f"add aliases, e.g. 'sudo ifconfig lo0 alias {hosts[0]}', or use --port-offset)"
            )
        log.info("no extra loopback addresses here: using port offsets on %s", fallback_host)
    for name, base in (("TCP", tcp_port), ("HTTP", http_port)):
        if base and base + count - 1 > 65535:
            raise ConfigError(
                f"with {count} devices the {name} ports {base}..{base + count - 1} pass 65535; "
                f"choose a lower base port or 0 (free ports)"
            )
    if tcp_port and http_port and tcp_port < http_port + count and http_port < tcp_port + count:
        raise ConfigError(
            f"with {count} devices the TCP ports {tcp_port}..{tcp_port + count - 1} overlap "
            f"the HTTP ports {http_port}..{http_port + count - 1}; pass other base ports "
            "(e.g. --http-port 30000) or 0 for free ports"
        )
    return "port-offset", [
        Placement(fallback_host, tcp_port + i if tcp_port else 0, http_port + i if http_port else 0)
        for i in range(count)
    ]


def check_listener_mode(mode: ListenerMode) -> ListenerMode:
    """``mode`` if it is one of :data:`LISTENER_MODES`, else :class:`ConfigError`."""
    if mode not in LISTENER_MODES:
        raise ConfigError(f"listeners must be one of {', '.join(LISTENER_MODES)}, not {mode!r}")
    return mode


def nofile_hard_limit() -> int | None:
    """The hard open-files limit (``None``: unlimited)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return None if hard == resource.RLIM_INFINITY else int(hard)


def choose_listeners(requested: ListenerMode, mode: str, count: int) -> str:
    """Resolve ``auto`` and raise the open-files limit for what was chosen.

    ``per-device`` needs two descriptors per device (plus a reserve for connections);
    ``auto`` takes it while the hard limit allows, and shared listeners beyond that
    when they work here (own loopback addresses, Linux).
    """
    if requested == "per-device":
        ensure_nofile(count)
        return "per-device"
    why_not = (
        shared_ports_supported()
        if mode == "loopback"
        else "shared listeners need the devices' own loopback addresses, not port "
        "offsets: drop --port-offset, or use --listeners per-device"
    )
    hard = nofile_hard_limit()
    if requested == "shared":
        if why_not is not None:
            raise ConfigError(why_not)
    elif why_not is not None or hard is None or hard >= 2 * count + FD_RESERVE:
        ensure_nofile(count)  # auto, and own sockets fit (or shared ones do not work here)
        return "per-device"
    else:
        log.info(
            "%d devices need %d open files with their own sockets, the hard limit is %s: "
            "one shared socket per port instead",
            count,
            2 * count + FD_RESERVE,
            hard,
        )
    ensure_nofile(0, reserve=hard or FD_RESERVE)
    return "shared"


def ensure_nofile(count: int, reserve: int = FD_RESERVE) -> int:
    """Raise the soft open-files limit for ``count`` devices; the limit now.

    Each device holds two listening sockets. :class:`SimulatorError` when even the hard
    limit is too low for them.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    minimum = 2 * count + 32
    wanted = 2 * count + reserve
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < minimum:
        raise SimulatorError(
            f"{count} devices need at least {minimum} open files (two listening sockets "
            f"each) but this process may open only {soft} (hard limit {hard}); raise the "
            f"limit (e.g. 'ulimit -Hn {wanted}' as root, LimitNOFILE= in a systemd unit), "
            f"use --listeners shared (Linux: one socket per port for the whole fleet) "
            f"or run at most {max(0, (int(soft) - 32) // 2)} devices"
        )
    return int(soft)


def start_error(
    index: int, place: Placement, err: BaseException, failed: int, *, shared: bool = False
) -> SimulatorError:
    """What to tell the user when device ``index`` (of ``failed`` failures) did not start."""
    more = f" ({failed - 1} more failed)" if failed > 1 else ""
    where = f"{place.host} (TCP {place.tcp_port or 'free'}, HTTP {place.http_port or 'free'})"
    if isinstance(err, SimulatorError):
        return SimulatorError(f"device {index}: {err}{more}")
    if shared and isinstance(err, OSError) and err.errno == errno.EADDRINUSE:
        return SimulatorError(
            f"shared listeners take TCP {place.tcp_port} and HTTP {place.http_port} on every "
            "loopback address (127.x.y.z), and one of them is in use (e.g. by 'softap-sim "
            "run' on 127.0.0.1); stop it, pass other --tcp-port/--http-port, or run fewer "
            "devices with --listeners per-device"
        )
    if isinstance(err, OSError) and err.errno == errno.EADDRINUSE:
        return SimulatorError(
            f"device {index}: a port is already in use on {where}{more}; stop the "
            "other program, or pass other --tcp-port/--http-port (0 picks free ports)"
        )
    if isinstance(err, OSError) and err.errno == errno.EACCES:
        return SimulatorError(
            f"device {index}: permission denied binding {where}{more}; ports below "
            "1024 need privileges"
        )
    if isinstance(err, OSError) and err.errno == errno.EMFILE:
        return SimulatorError(
            f"device {index}: too many open files{more}; raise 'ulimit -n' or run fewer devices"
        )
    if isinstance(err, OSError):
        return SimulatorError(
            f"device {index}: cannot listen on {where}: {err.strerror or err}{more}"
        )
    return SimulatorError(f"device {index} failed to start: {err!r}{more}")
