"""bench_setup's measured runs: the server, peer and driver processes of one round.

A round starts our server (or the peer), then the node driver, and reads the driver's
lines until the window is complete; CPU time is sampled at the window's two edges.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Final

from benchlib import REPO_ROOT, BenchError, LineChild, free_port, machine_busy_s, process_cpu_s
from benchlib.children import CHECKOUT
from setup_fleet import HOME, HOST
from setup_results import STEPS, Run, normalise_error

#: the script whose ``--serve`` runs our fleet
SCRIPT: Final = str(Path(__file__).resolve().with_name("bench_setup.py"))
DRIVER_JS: Final = REPO_ROOT / "scripts" / "setup_load.js"
CLIENTS: Final = REPO_ROOT / "tests" / "clients" / "node_modules"
PEER_DIR: Final = CLIENTS / "softap-emulator-js"
#: the claim code sent without the cloud step (63 characters, as the cloud makes them)
STATIC_CLAIM_CODE: Final = "B" * 63
READY_TIMEOUT_S: Final = 300.0
STOP_TIMEOUT_S: Final = 15.0
#: no finished setup for this long: the run is stuck
STALL_S: Final = {"fast": 60.0, "realistic": 120.0}


class OursProcess(LineChild):
    """``--serve``: our fleet; talks to the driver over two pipes it is handed."""

    def __init__(
        self,
        argv: list[str],
        events_w: int,
        requests_r: int,
        *,
        name: str = "our server",
        pythonpath: str = CHECKOUT,
    ) -> None:
        super().__init__(name)
        self._argv = [*argv, "--events-fd", str(events_w), "--requests-fd", str(requests_r)]
        self._fds = (events_w, requests_r)
        #: where the devices' code is imported from (a --baseline-rev tree, or ours)
        self.pythonpath = pythonpath
        self.info: dict[str, Any] = {}

    def start(self) -> dict[str, Any]:
        self.spawn(self._argv, pythonpath=self.pythonpath, pass_fds=self._fds)
        self.info = self.read_json(READY_TIMEOUT_S, "start its devices")
        if "error" in self.info:
            raise BenchError(f"{self.name}: {self.info['error']}")
        if not str(self.info.get("module", "")).startswith(self.pythonpath):
            raise BenchError(
                f"{self.name} imported softap_sim from {self.info.get('module')}, "
                f"not from {self.pythonpath}"
            )
        return self.info

    def request(self, op: str, timeout_s: float = 60.0) -> Any:
        self.send_json({"op": op})
        return self.read_json(timeout_s, f"answer {op}").get("reply")

    def stop(self, grace_s: float = STOP_TIMEOUT_S, *, on_line: Any = None) -> None:
        super().stop(grace_s, on_line=on_line)


class PeerProcess(LineChild):
    """``softap-emulator-js`` 1.0.3's own main.js, on a free port instead of 5609."""

    LAUNCHER: Final = (
        "const s = require(process.env.PEER_SETTINGS); s.tcp_port = +process.env.PEER_PORT;"
        " require(process.env.PEER_MAIN);"
    )

    def __init__(self, node: str) -> None:
        super().__init__("softap-emulator-js")
        self.node = node
        self.port = 0
        self.time_to_listening_s = 0.0

    def start(self) -> None:
        if not (PEER_DIR / "main.js").is_file():
            raise BenchError(
                f"softap-emulator-js is not installed in {PEER_DIR.parent}: "
                "run 'npm ci' in tests/clients"
            )
        self.port = free_port(HOST)
        env = dict(os.environ)
        env.update(
            PEER_SETTINGS=str(PEER_DIR / "settings.js"),
            PEER_MAIN=str(PEER_DIR / "main.js"),
            PEER_PORT=str(self.port),
        )
        t0 = time.monotonic()
        self.spawn(
            [self.node, "-e", self.LAUNCHER],
            env=env,
            stdin=subprocess.DEVNULL,
            cwd=str(PEER_DIR),
        )
        assert self.proc is not None
        deadline = t0 + 30
        while True:
            try:
                with socket.create_connection((HOST, self.port), timeout=1.0):
                    break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise BenchError("softap-emulator-js did not start listening") from None
                time.sleep(0.002)
        self.time_to_listening_s = time.monotonic() - t0
        # its one console line: "Server listening on 127.0.0.1:<port>"
        line = self.read_line(time.monotonic() + 5)
        if line is None or str(self.port).encode() not in line:
            raise BenchError(f"softap-emulator-js did not announce port {self.port}: {line!r}")

    def stop(self, grace_s: float = 3.0, *, on_line: Any = None) -> None:
        if self.proc is not None and self.returncode is None:
            self.proc.terminate()  # it has no other way to stop
        super().stop(grace_s, on_line=on_line)


class DriverProcess(LineChild):
    """``scripts/setup_load.js``: K concurrent setups in one node process."""

    def __init__(self, node: str, config: dict[str, Any]) -> None:
        super().__init__("setup driver")
        self.node = node
        self.config = config

    def start(self, stdin: int | None, pass_fds: tuple[int, ...] = ()) -> None:
        env = dict(os.environ)
        env["SETUP_LOAD_ARGS"] = json.dumps(self.config)
        self.spawn(
            [self.node, str(DRIVER_JS)],
            env=env,
            stdin=stdin if stdin is not None else subprocess.DEVNULL,
            pass_fds=pass_fds,
        )


def progress(message: str) -> None:
    print(f"bench_setup: {message}", file=sys.stderr, flush=True)


def _driver_config(
    args: argparse.Namespace,
    targets: list[dict[str, Any]],
    *,
    mode: str,
    budget: int,
    k: int,
    cloud: bool,
) -> dict[str, Any]:
    return {
        "protocol": args.protocol,
        "targets": targets,
        "mode": mode,
        "budget": budget,
        "concurrency": k,
        "steps": list(STEPS),
        "ssid": HOME["ssid"],
        "password": HOME["password"],
        "security": HOME["security"],
        "channel": HOME["channel"],
        "claimCode": STATIC_CLAIM_CODE,
        "stepTimeoutMs": args.step_timeout_ms,
        "waitClaim": cloud,
        "claimTimeoutMs": args.claim_timeout_ms,
    }


def _collect(
    run: Run,
    driver: DriverProcess,
    server_pid: int,
    warmup: int,
    measured: int,
    stall_s: float,
) -> tuple[float, float]:
    """Read one round's driver lines into ``run``; sample CPU at the window's two edges.

    Returns the window's edges (driver clock = CLOCK_MONOTONIC, as the server's spans).
    """
    setups: list[dict[str, Any]] = []
    start: tuple[float, float, float, float] | None = None
    edges: tuple[float, float] | None = None
    end = warmup + measured
    last_progress = time.monotonic()
    while True:
        line = driver.read_line(last_progress + stall_s)
        if line is None:
            break
        msg = json.loads(line)
        ev = msg.get("ev")
        if ev == "setup":
            setups.append(msg)
            last_progress = time.monotonic()
            n = len(setups)
            if n in (warmup, end):
                sample = (
                    msg["t1"],
                    process_cpu_s(server_pid),
                    process_cpu_s(driver.pid),
                    machine_busy_s(),
                )
                if n == warmup:
                    start = sample
                else:
                    assert start is not None
                    edges = (start[0], sample[0])
                    server_cpu = sample[1] - start[1]
                    driver_cpu = sample[2] - start[2]
                    run.window_s += sample[0] - start[0]
                    run.server_cpu_s += server_cpu
                    run.driver_cpu_s += driver_cpu
                    run.other_cpu_s += max(0.0, sample[3] - start[3] - server_cpu - driver_cpu)
                    run.window_setups.extend(setups[warmup:end])
        elif ev == "uncaught":
            run.uncaught.append(str(msg.get("message")))
        elif ev == "done":
            run.extra_callbacks += int(msg.get("extraCallbacks", 0))
            break
    run.setups.extend(setups)
    if edges is None:
        raise BenchError(
            f"{run.label} K={run.concurrency}: the driver stopped after {len(setups)} "
            f"setups, before the window ({warmup} + {measured}) was complete; failures: "
            + json.dumps(
                collections.Counter(
                    normalise_error(s["error"] or "") for s in setups if not s["ok"]
                ).most_common(5)
            )
        )
    run.rounds += 1
    return edges


def _window_sizes(args: argparse.Namespace, k: int, timing: str) -> tuple[int, int]:
    if timing == "fast":
        warmup = args.warmup if args.warmup is not None else max(20, 2 * k)
        measured = args.setups if args.setups is not None else max(1000, 20 * k)
    else:
        warmup = args.warmup if args.warmup is not None else k
        measured = args.setups if args.setups is not None else max(10, 3 * k)
    return warmup, measured


def run_ours(args: argparse.Namespace, node: str, run: Run, tag: str) -> None:
    """One round of our fleet at ``run``'s concurrency and variant; adds into ``run``.

    A ``rev`` run is the same server process with ``PYTHONPATH`` at the extracted
    ``--baseline-rev`` tree: this script's fleet host around that revision's devices.
    """
    k = run.concurrency
    warmup, measured = _window_sizes(args, k, run.timing)
    events_r, events_w = os.pipe()
    requests_r, requests_w = os.pipe()
    argv = [
        sys.executable,
        SCRIPT,
        "--serve",
        "--devices",
        str(k),
        "--timing",
        run.timing,
        "--cloud",
        "on" if run.cloud else "off",
        "--key-pool",
        str(args.key_pool),
        "--fleet",
        args.fleet,
    ]
    for tweak in run.tweaks:
        argv += ["--tweak", tweak]
    profile_path = None
    if args.profile_server:
        profile_path = f"{args.profile_server}-{tag}-r{run.rounds + 1}.pstats"
        argv += ["--profile-out", profile_path]
    name = "our server" if run.server == "ours" else f"the {run.label} server"
    server = OursProcess(
        argv, events_w, requests_r, name=name, pythonpath=run.pythonpath or CHECKOUT
    )
    driver: DriverProcess | None = None
    try:
        progress(f"{run.label} K={k}: starting {k} emulators")
        info = server.start()
        os.close(events_w)
        os.close(requests_r)
        events_w = requests_r = -1
        run.time_to_listening_s.extend(info["time_to_listening_s"])
        run.info.setdefault("rounds", []).append(
            {
                key: v
                for key, v in info.items()
                if key not in ("devices", "time_to_listening_s", "pid", "module")
            }
        )
        port_key = "port" if run.protocol == "tcp" else "http_port"
        targets = [{"host": d["host"], "port": d[port_key]} for d in info["devices"]]
        config = _driver_config(
            args, targets, mode="gated", budget=warmup + measured + k, k=k, cloud=run.cloud
        )
        config["protocol"] = run.protocol
        config["serverFd"] = requests_w
        driver = DriverProcess(node, config)
        driver.start(stdin=events_r, pass_fds=(requests_w,))
        os.close(events_r)
        os.close(requests_w)
        events_r = requests_w = -1
        server.request("go")
        progress(f"{run.label} K={k}: {warmup} warm-up + {measured} measured setups")
        t0, t1 = _collect(run, driver, server.pid, warmup, measured, STALL_S[run.timing])
        run.add_server_stats(server.request("stats") or {}, t0, t1)
    finally:
        for fd in (events_r, events_w, requests_r, requests_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        if driver is not None:
            driver.stop(5.0)
        server.stop()
    if server.returncode not in (0, None):
        raise BenchError(f"{name} exited with status {server.returncode}")
    if profile_path:
        run.info.setdefault("profiles", []).append(profile_path)


def run_peer(args: argparse.Namespace, node: str, run: Run) -> None:
    """One round against softap-emulator-js; adds into ``run``."""
    k = run.concurrency
    # the peer has no timing: its window is always the fast-mode one
    warmup, measured = _window_sizes(args, k, "fast")
    peer = PeerProcess(node)
    driver: DriverProcess | None = None
    try:
        progress(f"peer softap-emulator-js 1.0.3 K={k}: {warmup} warm-up + {measured} measured")
        peer.start()
        run.time_to_listening_s.append(peer.time_to_listening_s)
        config = _driver_config(
            args,
            [{"host": HOST, "port": peer.port}],
            mode="free",
            budget=warmup + measured + k,
            k=k,
            cloud=False,
        )
        config["protocol"] = "tcp"  # the peer has no HTTP
        driver = DriverProcess(node, config)
        driver.start(stdin=None)
        _collect(run, driver, peer.pid, warmup, measured, STALL_S["fast"])
    finally:
        if driver is not None:
            driver.stop(5.0)
        peer.stop()
