#!/usr/bin/env python3
"""Onboarding bench: the real npm setup client against a fleet of emulated Photons.

Issue text: "runs the real npm client libraries (the apps available here) through the full
setup against a fleet at a chosen concurrency, in fast or realistic timing, with or without
the cloud step, and prints onboarding metrics: setups/s, time to listening, per-command
p50/p95/p99, connect-ap → claimed p50/p99, failure taxonomy. JSON output for CI, plus a PNG
chart of the latency distribution. Peer comparison in the same run: the same driver against
softap-emulator-js@1.0.3 ... compare server CPU time per completed setup (user+sys of the
server process): report ours/theirs. Target ≤ 1.0."

Method
------
Three kinds of processes per measured run (``--concurrency`` K, one run per K and variant):

* **our server** (``--serve``, this script in its own process): K devices as a
  ``softap_sim.fleet.Fleet`` (each on its own loopback address 127.0.x.y, free ports, its
  own RSA-1024 key, in-memory state by default; ``--state persistent`` gives each its own
  state directory). ``--fleet off`` (or without that module) starts K plain
  ``DeviceEmulator``s on 127.0.0.1 instead, with a small pool of keys shared round-robin
  (``--key-pool``). Timing ``--timing fast|realistic``; a simulated home network
  ``HomeNet`` (WPA2, the password the driver sends); the device really decrypts every
  ``configure-ap`` password with its private key. Only public hooks are used
  (``on_state_change``, ``on_access_point_change``, ``fire``). With
  ``--cloud on`` the same process also runs the embedded cloud (``CloudService(None)``,
  in-memory SQLite on its worker thread, the device endpoint TCP 5683 on a free port);
  every device is registered and owned by a shadow customer of the default product, gets
  a fresh product claim code for every setup, connects to the cloud after its join (RSA
  handshake, AES channel, CoAP) and publishes the code; the cloud claims it and confirms.
* **the driver** (``scripts/setup_load.js``, ONE node process): K concurrent setups, each
  with a fresh client object of ``@particle/softap-setup`` 4.1.2 (the pinned copy in
  ``tests/clients/node_modules``), the full sequence deviceInfo, scan, publicKey,
  setClaimCode, configure (RSA-encrypted password), connect over TCP (``--protocol http``
  for HTTP). 4.x opens a throw-away ``device-id`` connection before its first command, so
  one setup = 7 TCP connections. With the cloud step a setup ends when the cloud confirmed
  the claim (the driver is told by the server process). Per setup it reports each step's
  latency (callback time) and the error text of a failed step. Over HTTP the driver drops
  node's idle keep-alive sockets to a device before each setup on it (between two real
  setups the phone changes networks; see setup_load.js).
* **the peer** (``--peer``, on by default): ``softap-emulator-js`` 1.0.3 from npm, its own
  ``main.js`` run by node, unmodified except for its port (``settings.tcp_port`` is set to a
  free port before ``main.js`` is required, so a running softap-sim on 5609 is not hit).
  It is TCP only and stateless (no crypto, no AP teardown), so the driver runs the same
  steps against it in "free" mode: K workers back to back on the one port. All six steps
  work with 4.x (``c`` is a boolean, so 4.x reads "not claimed"; the 10-character write
  pieces are reassembled because 4.x parses on every chunk; see clients.md §2.7).

A device serves one setup per listening session, as a Photon does: after ``connect-ap``
the AP goes down and the device joins and goes online. Gated mode keeps the fleet cycling:
the server process tells the driver "device i is ready" (listening; plus its claim code)
over a pipe, the driver runs one setup on it and answers "recycle i" over another pipe;
the server waits for the device to be online (and, with the cloud, claimed) and puts it
back into listening mode (``emu.fire(ListenRequested())``, what ``softap-sim ctl listen``
does);
when its listeners are up again it says "ready" again. Those messages go directly between
the two processes, not through this one.

Measured window: after ``--warmup`` finished setups, CPU time is sampled; after ``--setups``
more, again. Server CPU is ``sum_exec_runtime`` of ``/proc/<pid>/task/*/schedstat`` (all
threads; the same quantity as utime+stime of ``/proc/<pid>/stat``, in ns), for the server
process only: the emulator process (devices, and the cloud when on) or the peer's node
process. Reported per run:

* setups/s: setups that completed in the window / window length;
* CPU per completed setup: server CPU in the window / completed setups (the key number:
  on a 2-core machine the one node driver saturates at a few hundred setups/s, before the
  peer, so setups/s is mostly the driver's; CPU per setup is the price of each server's
  code path, whoever the bottleneck is). ``ours/theirs`` = our CPU per setup / the peer's
  at the same concurrency; target ≤ 1.0, judged without the cloud step (with it, ours
  also runs the cloud: RSA handshake, AES, CoAP, SQLite);
* per-command p50/p95/p99 (driver side, from the library call to its callback), and the
  whole setup's p50/p95/p99;
* connect-ap → claimed p50/p99 (cloud step): from the device's ``connect-ap`` reply (its
  state change out of listening) to the cloud's claim confirmation, both in the server
  process; also connect-ap → online;
* time to listening: emulator ``start()`` → both listeners up, per device (and, in the
  window, ``listen`` → listeners up again); for the peer, node start → port accepting;
* failure taxonomy: failed setups grouped by step and normalised error text (addresses
  and ports removed), over the whole run (warm-up included).

What-ifs (``--what-if A+B``, repeatable) add variants of ours without the cloud, to
measure what a change would buy (or cost) before making it: ``asyncio-loop`` (asyncio's
loop, not uvloop: ours runs on the loop ``softap-sim run`` uses, uvloop when installed),
``python-rsa`` (the RSA private operation with the builtin ``pow``, not GMP), ``fast-hex``
(a ``bytes.fromhex`` fast path), ``no-record`` (no transcript), ``persistent`` (a state
directory per device). Those that replace a function of ours do it in the server process
only, after checking it gives the same bytes (``--help`` lists them). ``--rounds R``
repeats every measurement, alternating the servers, and sums the windows, so load from
other programs on a shared machine hits all of them alike; the "other" column shows how
much there was.
``--profile-server PREFIX`` runs cProfile in our server process and prints the top
functions.

Benchmarks are not tests: the exit status is 0 whatever the numbers unless ``--enforce``
is given (then 1 if a ratio is above ``--target`` or a setup failed). 2 means set-up
failed (no numbers).

Examples::

    python scripts/bench_setup.py              # K = 1 10 50, fast timing, no cloud, with the peer
    python scripts/bench_setup.py --concurrency 10 --cloud both --json out.json --chart out.png
    python scripts/bench_setup.py --timing realistic --concurrency 10 --setups 20 --no-peer
    python scripts/bench_setup.py --concurrency 10 --profile-server /tmp/ours   # cProfile
    python scripts/bench_setup.py --concurrency 10 --what-if asyncio-loop --what-if fast-hex
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from benchlib import (
    BenchError,
    child_env,
    customer_tokens,
    machine_busy_s,
    process_cpu_s,
    quantile,
    run_main,
)

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a plain script from a checkout
    sys.path.insert(0, str(REPO_ROOT))

HOST: Final = "127.0.0.1"
SCRIPT: Final = str(Path(__file__).resolve())
DRIVER_JS: Final = REPO_ROOT / "scripts" / "setup_load.js"
CLIENTS: Final = REPO_ROOT / "tests" / "clients" / "node_modules"
PEER_DIR: Final = CLIENTS / "softap-emulator-js"
STEPS: Final = ("deviceInfo", "scan", "publicKey", "setClaimCode", "configure", "connect")
HOME: Final = {
    "ssid": "HomeNet",
    "security": "wpa2_aes",
    "channel": 6,
    "rssi": -48,
    "password": "home-wifi-password",
}
#: the claim code sent without the cloud step (63 characters, as the cloud makes them)
STATIC_CLAIM_CODE: Final = "B" * 63
CLAIM_CONFIRM: Final = "spark/device/claim/confirm"
READY_TIMEOUT_S: Final = 300.0
STOP_TIMEOUT_S: Final = 15.0
#: no finished setup for this long: the run is stuck
STALL_S: Final = {"fast": 60.0, "realistic": 120.0}
#: a device that is not online this long after its setup is put back into listening anyway
RECYCLE_FORCE_S: Final = {"fast": 10.0, "realistic": 60.0}
#: ours/theirs CPU per completed setup (``--target`` changes it for the run)
CPU_TARGET = 1.0


# ==================================================================================
# shared helpers
# ==================================================================================
def spread(values: Sequence[float], scale: float = 1.0) -> dict[str, Any]:
    """count, p50, p95, p99, max, mean (values multiplied by ``scale``)."""
    ordered = sorted(v * scale for v in values)
    out: dict[str, Any] = {"count": len(ordered)}
    for name, q in (("p50", 0.50), ("p95", 0.95), ("p99", 0.99)):
        out[name] = quantile(ordered, q)
    out["max"] = ordered[-1] if ordered else None
    out["mean"] = statistics.fmean(ordered) if ordered else None
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


_ADDR = re.compile(r"\[?[0-9a-fA-F:.]*\d\]?:\d{2,5}\b")
_HEX = re.compile(r"\b[0-9a-fA-F]{24}\b")


def normalise_error(text: str) -> str:
    """Error text without addresses, ports and device ids, to group like failures."""
    return _HEX.sub("<id>", _ADDR.sub("<addr>", text))[:160]


# ==================================================================================
# our server process (--serve): K emulators (+ the cloud), gated by the driver
# ==================================================================================
@dataclass
class Slot:
    """One emulated device of the fleet and where it is in its setup cycle."""

    index: int
    emu: Any = None
    device_id: str = ""
    principal: Any = None  # the device's owner (a shadow customer) with the cloud step
    offered: bool = False  # "ready" was sent; the driver may be setting it up
    recycle_wanted: bool = False
    t_start: float = 0.0
    t_first_up: float | None = None
    t_listen_req: float | None = None
    t_reply: float | None = None
    t_online: float | None = None
    t_claimed: float | None = None
    force: asyncio.TimerHandle | None = None


def _fleet_available() -> bool:
    try:
        from softap_sim.fleet import Fleet  # noqa: F401
    except ImportError:
        return False
    return True


class FleetHost:
    """The devices (and the cloud) of one server process, and the bench's hooks."""

    def __init__(self, args: argparse.Namespace, emit: Callable[[dict[str, Any]], None]) -> None:
        self.args = args
        self.emit = emit
        self.cloud_on = args.cloud == "on"
        self.slots: list[Slot] = []
        self.by_id: dict[str, Slot] = {}
        self.service: Any = None
        self.product_id = 0
        self.spans: dict[str, list[tuple[float, float]]] = collections.defaultdict(list)
        self.counters: collections.Counter[str] = collections.Counter()
        self.errors: list[str] = []
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.force_s = RECYCLE_FORCE_S[args.timing]
        self._all_up = asyncio.Event()
        self.fleet: Any = None

    # -- start-up ------------------------------------------------------------------
    async def start(self) -> dict[str, Any]:
        from firmware_model import RadioEnvironment
        from firmware_model.timing import timing_profile
        from softap_sim import SimConfig

        args = self.args
        t0 = time.monotonic()
        principals: list[Any] = []
        if self.cloud_on:
            from softap_sim.cloud.service import CloudService

            self.service = CloudService(None)
            await self.service.open()
            created = self.service.created_credentials
            if created is None:
                raise BenchError("the cloud database was not fresh")
            self.product_id = int(created["product"]["id"])
            await self.service.serve_devices(HOST, 0)
            self.service.backend.subscribers.add(self._on_cloud_event)
            principals = await self._customers(str(created["client"]["id"]), args.devices)
        if "persistent" in args.tweak:
            self._tmp = tempfile.TemporaryDirectory(prefix="bench-setup-state-")
        base = SimConfig(
            radio=RadioEnvironment.from_list([dict(HOME)]),
            timing=timing_profile(args.timing),
            record="no-record" not in args.tweak,
            seed=10_000,
        )
        self.slots = [Slot(i) for i in range(args.devices)]
        if args.fleet == "on" or (args.fleet == "auto" and _fleet_available()):
            info = await self._start_fleet(base)
        else:
            info = await self._start_own(base)
        for slot in self.slots:
            slot.device_id = slot.emu.device.dct.identity.device_id_hex.lower()
            self.by_id[slot.device_id] = slot
            if self.cloud_on:
                slot.principal = principals[slot.index]
        # time to listening needs the listeners up; realistic timing is still booting here
        try:
            await asyncio.wait_for(self._all_up.wait(), 60)
        except TimeoutError:
            raise BenchError("some devices never brought their access point up") from None
        return {
            "devices": [
                {
                    "host": s.emu.tcp_address[0],
                    "port": s.emu.tcp_address[1],
                    "http_port": s.emu.http_address[1],
                }
                for s in self.slots
            ],
            "time_to_listening_s": [(s.t_first_up or 0.0) - s.t_start for s in self.slots],
            "setup_s": time.monotonic() - t0,
            **info,
        }

    def _hook(self, slot: Slot, emu: Any) -> None:
        """Follow one device: its state changes and its access point (public hooks)."""
        slot.emu = emu
        emu.on_state_change.append(self._state_callback(slot))

        def on_access_point(up: bool) -> None:
            if up and emu.tcp_listening:
                self._on_listening(slot)

        emu.on_access_point_change.append(on_access_point)

    async def _start_fleet(self, base: Any) -> dict[str, Any]:
        """The devices as a ``softap_sim.fleet.Fleet``: an own loopback address each
        (127.0.x.y), free ports, an own key each, registered in the cloud in batches."""
        from softap_sim.fleet import Fleet

        fleet = Fleet(
            len(self.slots),
            base_config=base,
            state_dir=Path(self._tmp.name) if self._tmp else None,
            tcp_port=0,
            http_port=0,
            cloud=self.service,
        )

        def created(device: Any) -> None:
            slot = self.slots[device.index]
            emu = device.emulator
            self._hook(slot, emu)
            start = emu.start

            async def timed_start() -> None:  # the fleet starts them in bounded batches
                slot.t_start = time.monotonic()
                await start()

            emu.start = timed_start

        fleet.on_device_created.append(created)
        report = await fleet.start()
        self.fleet = fleet
        return {
            "fleet": f"softap_sim.fleet.Fleet ({fleet.mode})",
            "keys": f"one per device ({report.keys_generated} generated, "
            f"{report.keys_from_pool} from a pool)",
            "keygen_s": report.keys_s,
            "fleet_start_s": report.total_s,
        }

    async def _start_own(self, base: Any) -> dict[str, Any]:
        """N ``DeviceEmulator``s on 127.0.0.1, free ports, a small shared key pool."""
        import dataclasses

        from firmware_model import DeviceKey
        from softap_sim import DeviceEmulator

        args = self.args
        t0 = time.monotonic()
        pool_size = max(1, min(args.key_pool, args.devices))
        pool = await asyncio.gather(
            *(asyncio.to_thread(DeviceKey.generate, 1024) for _ in range(pool_size))
        )
        keygen_s = time.monotonic() - t0
        endpoint = server_pem = None
        if self.service is not None:
            endpoint = (HOST, int(self.service.device_server.port))
            server_pem = self.service.server_public_key_pem
        for slot in self.slots:
            i = slot.index
            config = dataclasses.replace(
                base,
                state_dir=(Path(self._tmp.name) / f"dev-{i}") if self._tmp else None,
                seed=10_000 + i,
                key=None if self._tmp else pool[i % len(pool)],
                cloud_endpoint=endpoint,
                server_public_key_pem=server_pem,
            )
            emu = DeviceEmulator(config, before_power_on=self._register if self.cloud_on else None)
            self._hook(slot, emu)

        async def start_one(slot: Slot) -> None:
            slot.t_start = time.monotonic()
            await slot.emu.start()

        await asyncio.gather(*(start_one(s) for s in self.slots))
        return {
            "fleet": "own DeviceEmulators on 127.0.0.1 (softap_sim.fleet not used)",
            "keys": f"{pool_size} shared round-robin",
            "keygen_s": keygen_s,
        }

    async def _customers(self, client_id: str, count: int) -> list[Any]:
        backend = self.service.backend
        emails = [f"bench-owner-{i}@example.com" for i in range(count)]
        tokens = await customer_tokens(
            backend, product_id=self.product_id, client_id=client_id, emails=emails
        )
        return [await backend.principal_for(t) for t in tokens]

    async def _register(self, emu: Any) -> None:
        device = emu.device
        await self.service.register_device(
            device.dct.identity.device_id_hex, device.key.public_key_pem.decode("ascii")
        )

    # -- the setup cycle -----------------------------------------------------------
    def go(self) -> None:
        for slot in self.slots:
            self._offer(slot)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.errors.append(repr(task.exception()))

    def _offer(self, slot: Slot) -> None:
        """Device ``slot`` listens: tell the driver (with a fresh claim code)."""
        slot.recycle_wanted = False
        slot.t_reply = slot.t_online = slot.t_claimed = None
        slot.offered = True
        if slot.force is not None:
            slot.force.cancel()
            slot.force = None
        self.counters["offers"] += 1
        if self.cloud_on:
            self._spawn(self._offer_with_code(slot))
        else:
            self.emit({"ev": "ready", "d": slot.index})

    async def _offer_with_code(self, slot: Slot) -> None:
        code, _ids = await self.service.backend.create_claim_code(slot.principal, self.product_id)
        self.emit({"ev": "ready", "d": slot.index, "code": code})

    def recycle(self, index: int) -> None:
        """The driver is done with device ``index``: bring it back into listening mode."""
        if not 0 <= index < len(self.slots):
            self.errors.append(f"recycle of unknown device {index}")
            return
        from firmware_model import DeviceState

        slot = self.slots[index]
        slot.recycle_wanted = True
        self.counters["recycles"] += 1
        device = slot.emu.device
        state = device.state
        # connect-ap answered but the AP not yet torn down (realistic timing: 50 ms)
        leaving = bool(getattr(device, "connect_requested", False))
        if state is DeviceState.LISTENING and not leaving:
            if slot.emu.tcp_listening:
                self._offer(slot)  # the setup failed before connect-ap: still listening
            # else: the listeners come up soon; _on_listening offers it
        elif state is DeviceState.ONLINE:
            self._listen(slot)
        else:  # joining / cloud-connecting: wait for online (_state_callback), bounded
            slot.force = asyncio.get_running_loop().call_later(
                self.force_s, self._force_listen, slot
            )

    def _force_listen(self, slot: Slot) -> None:
        slot.force = None
        if slot.recycle_wanted:
            self.counters[f"forced listen from {slot.emu.device.state.value}"] += 1
            self._listen(slot)

    def _listen(self, slot: Slot) -> None:
        from firmware_model.events import ListenRequested

        slot.t_listen_req = time.monotonic()
        try:
            # what ``softap-sim ctl listen`` fires (emu.control.listen() would also build a
            # state snapshot for its caller, which is not the device's work)
            slot.emu.fire(ListenRequested())
        except Exception as err:  # InvalidTransition: the device moved on meanwhile
            self.counters[f"listen refused: {type(err).__name__}"] += 1
            if slot.emu.device.state.value == "listening" and slot.emu.tcp_listening:
                self._offer(slot)

    def _on_listening(self, slot: Slot) -> None:
        now = time.monotonic()
        if slot.t_first_up is None:
            slot.t_first_up = now
            if all(s.t_first_up is not None for s in self.slots):
                self._all_up.set()
        if slot.t_listen_req is not None:
            self.spans["relisten"].append((now, now - slot.t_listen_req))
            slot.t_listen_req = None
        if slot.recycle_wanted:
            self._offer(slot)

    def _state_callback(self, slot: Slot) -> Callable[[Any, float], None]:
        def on_change(change: Any, _t: float) -> None:
            now = time.monotonic()
            if change.old == "listening" and change.new != "listening" and slot.offered:
                slot.t_reply = now  # connect-ap answered: the device leaves listening mode
                slot.offered = False
            elif change.new == "online" and slot.t_reply is not None and slot.t_online is None:
                slot.t_online = now
                self.spans["connect_to_online"].append((now, now - slot.t_reply))
            if change.new == "online" and slot.recycle_wanted:
                if slot.force is not None:
                    slot.force.cancel()
                    slot.force = None
                # not from inside the model's own effect handling
                asyncio.get_running_loop().call_soon(self._listen_if_online, slot)

        return on_change

    def _listen_if_online(self, slot: Slot) -> None:
        if slot.recycle_wanted and slot.emu.device.state.value == "online":
            self._listen(slot)

    def _on_cloud_event(self, event: dict[str, Any]) -> None:
        if event.get("name") != CLAIM_CONFIRM:
            return
        slot = self.by_id.get(str(event.get("coreid", "")).lower())
        if slot is None or slot.t_reply is None or slot.t_claimed is not None:
            self.counters["confirms outside a setup"] += 1
            return
        now = time.monotonic()
        slot.t_claimed = now
        self.spans["connect_to_claimed"].append((now, now - slot.t_reply))
        if slot.t_online is not None:
            self.spans["online_to_claimed"].append((now, now - slot.t_online))
        self.counters["claims"] += 1
        self.emit({"ev": "claimed", "d": slot.index, "t": now})

    # -- reporting and shutdown ----------------------------------------------------
    def stats(self) -> dict[str, Any]:
        served: collections.Counter[str] = collections.Counter()
        for slot in self.slots:
            if slot.emu.dispatcher is not None:
                served.update(slot.emu.dispatcher.served)
            try:
                slot.emu.check()
            except Exception as err:
                self.errors.append(f"device {slot.index}: {err}")
        return {
            "spans": dict(self.spans),
            "counters": dict(self.counters),
            "served": dict(served),
            "errors": self.errors[:20],
            "states": dict(collections.Counter(s.emu.device.state.value for s in self.slots)),
        }

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.fleet is not None:
            await self.fleet.close()
        else:
            await asyncio.gather(
                *(s.emu.close() for s in self.slots if s.emu is not None), return_exceptions=True
            )
        if self.service is not None:
            await self.service.close()
        if self._tmp is not None:
            self._tmp.cleanup()


def _announce(info: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(info) + "\n")
    sys.stdout.flush()


async def _serve(args: argparse.Namespace) -> None:
    import cProfile
    import logging

    # the library default: no logging configured, warnings only (the CLI logs every
    # command at INFO; that is not what is measured here)
    logging.getLogger("softap_sim").setLevel(logging.WARNING)
    loop = asyncio.get_running_loop()
    events_file = os.fdopen(args.events_fd, "wb", buffering=0)
    events, _ = await loop.connect_write_pipe(asyncio.Protocol, events_file)

    def emit(obj: dict[str, Any]) -> None:
        events.write(json.dumps(obj, separators=(",", ":")).encode() + b"\n")

    host = FleetHost(args, emit)
    profiler = cProfile.Profile() if args.profile_out else None
    try:
        try:
            info = await host.start()
        except BenchError as err:
            _announce({"error": str(err)})
            return
        _announce({"pid": os.getpid(), **info})

        requests = asyncio.StreamReader(limit=1 << 20)
        await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(requests),
            os.fdopen(args.requests_fd, "rb", buffering=0),
        )

        async def driver_requests() -> None:
            while line := await requests.readline():
                msg = json.loads(line)
                if msg.get("op") == "recycle":
                    host.recycle(int(msg["d"]))

        reader_task = loop.create_task(driver_requests())
        control = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(control), sys.stdin)
        while line := await control.readline():
            op = json.loads(line).get("op")
            if op == "go":
                if profiler is not None:
                    profiler.enable()
                host.go()
                _announce({"reply": "go"})
            elif op == "stats":
                if profiler is not None:
                    profiler.disable()
                _announce({"reply": host.stats()})
        reader_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader_task
    finally:
        if profiler is not None and args.profile_out:
            profiler.disable()
            profiler.dump_stats(args.profile_out)
        await host.close()
        events.close()


#: what-ifs measured as variants of ours (``--what-if A+B``); those that replace a function
#: of ours do it in the server process only, after checking that it gives the same bytes
TWEAKS: Final = {
    "asyncio-loop": "asyncio's own event loop instead of uvloop (the default of 'softap-sim "
    "run' and 'fleet', softap_sim/event_loop.py): what the uvloop dependency buys",
    "no-record": "SimConfig(record=False): no in-memory transcript",
    "persistent": "a state directory per device: every DCT change written atomically (fsync)",
    "python-rsa": "DeviceKey._private_op (the RSA-1024 CRT private operation) with the "
    "builtin pow instead of gmpy2's GMP powmod: what the gmpy2 dependency buys",
    "fast-hex": "firmware_model hex_decode: bytes.fromhex when the text is plain even-length "
    "hex, the lenient nibble loop otherwise",
}


def apply_tweaks(tweaks: Sequence[str]) -> None:
    """Install the function-replacing what-ifs in this (server) process."""
    import random

    if "python-rsa" in tweaks:
        from firmware_model import keys

        keys._powmod = pow  # _private_op looks the function up on every call
    if "fast-hex" in tweaks:
        from firmware_model import commands, device

        lenient = commands.hex_decode
        plain_hex = re.compile(rb"(?:[0-9A-Fa-f]{2})*")

        def fast_hex(text: bytes, max_bytes: int) -> bytes:
            head = text[: 2 * max_bytes]
            if plain_hex.fullmatch(head):
                return bytes.fromhex(head.decode("ascii"))
            return lenient(text, max_bytes)

        rng = random.Random(7)
        for n in (0, 1, 2, 31, 256, 300):
            for text in (
                rng.randbytes(n).hex().encode(),
                rng.randbytes(n).hex().upper().encode(),
                rng.randbytes(n).hex().encode()[:-1],
                b"zz" + b"0f" * n,
            ):
                for limit in (16, 256):
                    if fast_hex(text, limit) != lenient(text, limit):
                        raise BenchError(f"--what-if fast-hex differs for {text[:40]!r}")
        device.hex_decode = fast_hex  # type: ignore[attr-defined]


def serve_main(args: argparse.Namespace) -> int:
    # Ctrl-C in the terminal reaches the whole process group: leave shutdown to the parent
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    apply_tweaks(args.tweak)
    from softap_sim import event_loop

    # the loop 'softap-sim run' and 'fleet' use by default: uvloop when installed
    event_loop.run(_serve(args), "asyncio" if "asyncio-loop" in args.tweak else "auto")
    return 0


# ==================================================================================
# main side: child processes
# ==================================================================================
class LineChild:
    """A child process whose stdout is read line by line with deadlines (select)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None
        self._out = b""
        self.returncode: int | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def read_line(self, deadline: float) -> bytes | None:
        """The next stdout line; None at EOF; raises BenchError past ``deadline``."""
        assert self.proc is not None
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._out:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"{self.name}: no output within the time limit")
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return None
            self._out += chunk
        line, _, self._out = self._out.partition(b"\n")
        return line

    def stop(self, grace_s: float = STOP_TIMEOUT_S) -> None:
        proc = self.proc
        if proc is None or self.returncode is not None:
            return
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        try:
            self.returncode = proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                self.returncode = proc.wait(timeout=3.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                self.returncode = proc.wait(timeout=3.0)
        if proc.stdout is not None:
            proc.stdout.close()


class OursProcess(LineChild):
    """``--serve``: our fleet; talks to the driver over two pipes it is handed."""

    def __init__(self, argv: list[str], events_w: int, requests_r: int) -> None:
        super().__init__("our server")
        self._argv = [*argv, "--events-fd", str(events_w), "--requests-fd", str(requests_r)]
        self._fds = (events_w, requests_r)
        self.info: dict[str, Any] = {}

    def start(self) -> dict[str, Any]:
        env = child_env(str(REPO_ROOT))
        self.proc = subprocess.Popen(
            self._argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, pass_fds=self._fds
        )
        line = self.read_line(time.monotonic() + READY_TIMEOUT_S)
        if line is None:
            raise BenchError(f"our server exited at start-up (status {self.proc.wait()})")
        self.info = json.loads(line)
        if "error" in self.info:
            raise BenchError(f"our server: {self.info['error']}")
        return self.info

    def request(self, op: str, timeout_s: float = 60.0) -> Any:
        assert self.proc is not None
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op}).encode() + b"\n")
        self.proc.stdin.flush()
        line = self.read_line(time.monotonic() + timeout_s)
        if line is None:
            raise BenchError(f"our server exited while answering {op}")
        return json.loads(line).get("reply")


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
        self.port = free_port()
        env = dict(os.environ)
        env.update(
            PEER_SETTINGS=str(PEER_DIR / "settings.js"),
            PEER_MAIN=str(PEER_DIR / "main.js"),
            PEER_PORT=str(self.port),
        )
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [self.node, "-e", self.LAUNCHER],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            env=env,
            cwd=str(PEER_DIR),
        )
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

    def stop(self, grace_s: float = STOP_TIMEOUT_S) -> None:
        if self.proc is not None and self.returncode is None:
            self.proc.terminate()  # it has no other way to stop
        super().stop(3.0)


class DriverProcess(LineChild):
    """``scripts/setup_load.js``: K concurrent setups in one node process."""

    def __init__(self, node: str, config: dict[str, Any]) -> None:
        super().__init__("setup driver")
        self.node = node
        self.config = config

    def start(self, stdin: int | None, pass_fds: tuple[int, ...] = ()) -> None:
        env = dict(os.environ)
        env["SETUP_LOAD_ARGS"] = json.dumps(self.config)
        self.proc = subprocess.Popen(
            [self.node, str(DRIVER_JS)],
            stdin=stdin if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            env=env,
            pass_fds=pass_fds,
        )


# ==================================================================================
# main side: one measured run
# ==================================================================================
@dataclass
class Run:
    """One measured configuration (all its rounds) and what came back."""

    server: str  # "ours" or "peer"
    concurrency: int
    cloud: bool
    timing: str
    protocol: str
    tweaks: tuple[str, ...] = ()
    rounds: int = 0
    setups: list[dict[str, Any]] = field(default_factory=list)  # every finished setup
    window_setups: list[dict[str, Any]] = field(default_factory=list)  # the measured ones
    window_s: float = 0.0  # summed over the rounds, like the CPU times
    server_cpu_s: float = 0.0
    driver_cpu_s: float = 0.0
    other_cpu_s: float = 0.0
    #: server-side spans (seconds) that ended inside a measured window
    spans: dict[str, list[float]] = field(default_factory=lambda: collections.defaultdict(list))
    time_to_listening_s: list[float] = field(default_factory=list)
    counters: collections.Counter[str] = field(default_factory=collections.Counter)
    served: collections.Counter[str] = field(default_factory=collections.Counter)
    states: collections.Counter[str] = field(default_factory=collections.Counter)
    server_errors: list[str] = field(default_factory=list)
    uncaught: list[str] = field(default_factory=list)
    extra_callbacks: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        if self.server == "peer":
            return "peer"
        return " ".join(["ours", "cloud" if self.cloud else "no-cloud"]) + "".join(
            f" +{t}" for t in self.tweaks
        )

    def add_server_stats(self, stats: dict[str, Any], t0: float, t1: float) -> None:
        for name, values in stats.get("spans", {}).items():
            self.spans[name].extend(v for t, v in values if t0 <= t <= t1)
        self.counters.update(stats.get("counters") or {})
        self.served.update(stats.get("served") or {})
        self.states.update(stats.get("states") or {})
        self.server_errors.extend(stats.get("errors") or [])

    def summary(self) -> dict[str, Any]:
        window = self.window_setups
        ok = [s for s in window if s["ok"]]
        steps: dict[str, Any] = {}
        for name in STEPS:
            values = self.step_values_ms(name)
            if values:
                steps[name] = spread(values)
        failures = collections.Counter(
            normalise_error(s["error"] or "unknown") for s in self.setups if not s["ok"]
        )
        cpu_per_setup = self.server_cpu_s / len(ok) if ok else None
        ours = self.server == "ours"
        return {
            "label": self.label,
            "server": self.server,
            "concurrency": self.concurrency,
            "cloud": self.cloud,
            "timing": self.timing,
            "protocol": self.protocol,
            "tweaks": list(self.tweaks),
            "rounds": self.rounds,
            "window_setups": len(window),
            "completed": len(ok),
            "failed": len(window) - len(ok),
            "window_s": self.window_s,
            "setups_per_s": len(ok) / self.window_s if self.window_s > 0 else None,
            "server_cpu_s": self.server_cpu_s,
            "server_cpu_ms_per_setup": cpu_per_setup * 1e3 if cpu_per_setup else None,
            "server_cpu_util": self.server_cpu_s / self.window_s if self.window_s else None,
            "driver_cpu_util": self.driver_cpu_s / self.window_s if self.window_s else None,
            "other_cpu_util": self.other_cpu_s / self.window_s if self.window_s else None,
            "setup_ms": spread(self.durations_ms()),
            "steps_ms": steps,
            "connect_ap_to_claimed_ms": (
                spread(self.spans.get("connect_to_claimed", []), 1e3) if self.cloud else None
            ),
            "online_to_claimed_ms": (
                spread(self.spans.get("online_to_claimed", []), 1e3) if self.cloud else None
            ),
            "connect_ap_to_online_ms": (
                spread(self.spans.get("connect_to_online", []), 1e3) if ours else None
            ),
            "driver_connect_to_claimed_ms": (
                spread([s["claimMs"] for s in ok if s.get("claimMs") is not None])
                if self.cloud
                else None
            ),
            "time_to_listening_ms": spread(self.time_to_listening_s, 1e3),
            "relisten_ms": spread(self.spans.get("relisten", []), 1e3) if ours else None,
            "failures": dict(failures.most_common()),
            "failures_total": sum(failures.values()),
            "setups_total": len(self.setups),
            "uncaught": self.uncaught[:10],
            "uncaught_total": len(self.uncaught),
            "extra_callbacks": self.extra_callbacks,
            "server_counters": dict(self.counters) if ours else None,
            "server_errors": self.server_errors[:20],
            "served": dict(self.served) if ours else None,
            "device_states_at_end": dict(self.states) if ours else None,
            "info": self.info,
        }

    def durations_ms(self) -> list[float]:
        return [(s["t1"] - s["t0"]) * 1e3 for s in self.window_setups if s["ok"]]

    def step_values_ms(self, name: str) -> list[float]:
        return [s["steps"][name][1] for s in self.window_setups if s["steps"].get(name, [False])[0]]

    def claim_values_ms(self) -> list[float]:
        return [v * 1e3 for v in self.spans.get("connect_to_claimed", [])]


def _progress(message: str) -> None:
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
    """One round of our fleet at ``run``'s concurrency and variant; adds into ``run``."""
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
    server = OursProcess(argv, events_w, requests_r)
    driver: DriverProcess | None = None
    try:
        _progress(f"{run.label} K={k}: starting {k} emulators")
        info = server.start()
        os.close(events_w)
        os.close(requests_r)
        events_w = requests_r = -1
        run.time_to_listening_s.extend(info["time_to_listening_s"])
        run.info.setdefault("rounds", []).append(
            {
                key: v
                for key, v in info.items()
                if key not in ("devices", "time_to_listening_s", "pid")
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
        _progress(f"{run.label} K={k}: {warmup} warm-up + {measured} measured setups")
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
        raise BenchError(f"our server exited with status {server.returncode}")
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
        _progress(f"peer softap-emulator-js 1.0.3 K={k}: {warmup} warm-up + {measured} measured")
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


# ==================================================================================
# report
# ==================================================================================
def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ms(value: float | None) -> str:
    """A latency in ms with as many decimals as are meaningful at its size."""
    if value is None:
        return "-"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 1000 else f"{value:.0f}"


def ratios(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """ours/theirs server CPU per completed setup, per concurrency and our variant."""
    peers = {r.concurrency: r.summary() for r in runs if r.server == "peer"}
    out = []
    for r in runs:
        if r.server != "ours" or r.concurrency not in peers:
            continue
        ours, theirs = r.summary(), peers[r.concurrency]
        a, b = ours["server_cpu_ms_per_setup"], theirs["server_cpu_ms_per_setup"]
        ratio = a / b if a and b else None
        out.append(
            {
                "concurrency": r.concurrency,
                "ours": r.label,
                "ours_cpu_ms_per_setup": a,
                "theirs_cpu_ms_per_setup": b,
                "ratio": ratio,
                "target": CPU_TARGET,
                "pass": ratio is not None and ratio <= CPU_TARGET,
                "judged": not r.cloud,  # with the cloud step ours also runs the cloud
                "throughput_ratio": (
                    ours["setups_per_s"] / theirs["setups_per_s"]
                    if ours["setups_per_s"] and theirs["setups_per_s"]
                    else None
                ),
            }
        )
    return out


def print_report(runs: Sequence[Run], args: argparse.Namespace) -> None:
    summaries = [r.summary() for r in runs]
    w = max([22, *(len(s["label"]) + 2 for s in summaries)])
    fleets = {
        f"{r['fleet']}, keys: {r['keys']}"
        for s in summaries
        for r in s["info"].get("rounds", [])
        if "fleet" in r
    }
    print(
        f"onboarding bench: {os.cpu_count()} CPUs; Python {sys.version.split()[0]}; driver "
        f"@particle/softap-setup 4.1.2 in one node process ({args.protocol.upper()} to ours, "
        "TCP to the peer); server CPU = the server process only"
    )
    for text in sorted(fleets):
        print(f"  our devices: {text}")
    head = (
        f"{'run':<{w}}{'K':>4}{'window':>8}{'ok':>6}{'fail':>5}{'setups/s':>9}"
        f"{'srv ms/setup':>13}{'srv CPU':>8}{'drv CPU':>8}{'other':>6}"
        f"{'setup p50':>10}{'p99':>8}{'claim p50':>10}{'p99':>8}{'listen ms':>10}"
    )
    print(head)
    print("-" * len(head))
    for s in summaries:
        claim = s["connect_ap_to_claimed_ms"] or {}
        ttl = s["time_to_listening_ms"]
        print(
            f"{s['label']:<{w}}{s['concurrency']:>4}{s['window_setups']:>8}{s['completed']:>6}"
            f"{s['failed']:>5}{_f(s['setups_per_s']):>9}"
            f"{_f(s['server_cpu_ms_per_setup'], 3):>13}"
            f"{_f((s['server_cpu_util'] or 0) * 100, 0) + '%':>8}"
            f"{_f((s['driver_cpu_util'] or 0) * 100, 0) + '%':>8}"
            f"{_f((s['other_cpu_util'] or 0) * 100, 0) + '%':>6}"
            f"{_f(s['setup_ms']['p50']):>10}{_f(s['setup_ms']['p99']):>8}"
            f"{_f(claim.get('p50')):>10}{_f(claim.get('p99')):>8}"
            f"{_f(ttl['p50']):>10}"
        )
    print(
        "  window: measured setups; srv/drv CPU: % of one core (server process, node driver);"
        " setup p50/p99 ms: driver's start -> connect callback (-> claim with the cloud);"
        " claim: connect-ap -> claimed ms (server side); listen ms: start -> listeners up (p50)"
    )
    print()
    print("per-command latency, ms (p50 / p95 / p99), driver side")
    print(f"{'run':<{w}}{'K':>4}  " + "".join(f"{n:>22}" for n in STEPS))
    for s in summaries:
        cells = []
        for name in STEPS:
            st = s["steps_ms"].get(name)
            cells.append(
                "-" if st is None else f"{_ms(st['p50'])}/{_ms(st['p95'])}/{_ms(st['p99'])}"
            )
        print(f"{s['label']:<{w}}{s['concurrency']:>4}  " + "".join(f"{c:>22}" for c in cells))
    extra = [s for s in summaries if s["server"] == "ours"]
    if extra:
        print()
        print("our server: time to listening and the cycle (ms, p50 / p99 / max)")
        for s in extra:
            ttl, rel, onl = (
                s["time_to_listening_ms"],
                s["relisten_ms"] or {},
                (s["connect_ap_to_online_ms"] or {}),
            )
            line = (
                f"  {s['label']:<{w}} K={s['concurrency']:<4} start->listening "
                f"{_f(ttl['p50'], 2)}/{_f(ttl['p99'], 2)}/{_f(ttl['max'], 2)}  "
                f"listen->listening {_f(rel.get('p50'), 2)}/{_f(rel.get('p99'), 2)}  "
                f"connect-ap->online {_f(onl.get('p50'), 2)}/{_f(onl.get('p99'), 2)}"
            )
            if s["cloud"]:
                c = s["connect_ap_to_claimed_ms"] or {}
                line += f"  connect-ap->claimed {_f(c.get('p50'), 2)}/{_f(c.get('p99'), 2)}"
            print(line)
    peers = [s for s in summaries if s["server"] == "peer"]
    for s in peers:
        print(
            f"  peer K={s['concurrency']}: node start -> port accepting "
            f"{_f(s['time_to_listening_ms']['p50'], 1)} ms"
        )
    rs = ratios(runs)
    if rs:
        print()
        print(
            f"server CPU per completed setup, ours / theirs (softap-emulator-js); "
            f"target <= {CPU_TARGET:.1f}"
        )
        for r in rs:
            verdict = ("PASS" if r["pass"] else "FAIL") if r["judged"] else "(not judged)"
            note = "" if r["judged"] else "  ours includes the cloud (handshake + claim)"
            print(
                f"  K={r['concurrency']:<4} {r['ours']:<{w}} {_f(r['ours_cpu_ms_per_setup'], 3)} ms"
                f" / {_f(r['theirs_cpu_ms_per_setup'], 3)} ms = {_f(r['ratio'], 2)} "
                f"{verdict}   throughput ratio {_f(r['throughput_ratio'], 2)}{note}"
            )
    print()
    print("failure taxonomy (whole run, warm-up included)")
    any_failure = False
    for s in summaries:
        if s["failures"] or s["uncaught_total"] or s["server_errors"]:
            any_failure = True
            print(
                f"  {s['label']} K={s['concurrency']}: {s['failures_total']} of "
                f"{s['setups_total']} setups failed"
            )
            for text, n in s["failures"].items():
                print(f"    {n:>6}  {text}")
            if s["uncaught_total"]:
                print(
                    f"    {s['uncaught_total']:>6}  uncaught in the library, e.g. "
                    f"{s['uncaught'][0]!r}"
                )
            for err in s["server_errors"] or []:
                print(f"    server error: {err}")
    if not any_failure:
        print("  none: every setup completed")
    busy = [s for s in summaries if (s["other_cpu_util"] or 0) > 0.5]
    if busy:
        print(
            "  note: > 50% of a core went to other work in a window: setups/s is noisy, "
            "trust CPU per setup"
        )


def write_chart(runs: Sequence[Run], path: str, args: argparse.Namespace) -> bool:
    """The latency distribution as a PNG: one column per concurrency, three rows:
    per-command p50 (bars) with p95/p99 marks, the ECDF of whole-setup times (and of
    connect-ap -> claimed), and the server CPU per completed setup with ours/theirs."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    except ImportError:
        print(
            "bench_setup: --chart needs matplotlib, which is not installed: "
            "pip install matplotlib (into this environment), then run again; no chart written",
            file=sys.stderr,
        )
        return False
    plain = FuncFormatter(lambda v, _pos: f"{v:g}")

    def log_axis(axis: Any) -> None:
        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(plain)
        axis.set_minor_formatter(NullFormatter())

    ks = sorted({r.concurrency for r in runs})
    fig, axes = plt.subplots(
        3,
        len(ks),
        figsize=(max(8.0, 5.6 * len(ks) + 0.6), 13),
        squeeze=False,
        gridspec_kw={"height_ratios": [3, 3, 1.7]},
        constrained_layout=True,
    )
    colours = {"peer": "#8c8c8c"}
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b"]
    for i, label in enumerate(dict.fromkeys(r.label for r in runs if r.server == "ours")):
        colours[label] = palette[i % len(palette)]
    ratio_by = {(r["concurrency"], r["ours"]): r["ratio"] for r in ratios(runs)}
    short = ["device\nInfo", "scan", "public\nKey", "setClaim\nCode", "configure", "connect"]
    for col, k in enumerate(ks):
        group = [r for r in runs if r.concurrency == k]
        # row 1: per-command latency
        ax = axes[0][col]
        width = 0.84 / max(1, len(group))
        for j, r in enumerate(group):
            xs, p50s, p95s, p99s = [], [], [], []
            for si, name in enumerate(STEPS):
                values = sorted(r.step_values_ms(name))
                if not values:
                    continue
                xs.append(si - 0.42 + width * (j + 0.5))
                p50s.append(quantile(values, 0.5))
                p95s.append(quantile(values, 0.95))
                p99s.append(quantile(values, 0.99))
            colour = colours.get(r.label, "#333333")
            ax.bar(xs, p50s, width * 0.92, color=colour, alpha=0.9, label=r.label)
            ax.scatter(xs, p95s, marker="_", s=80, color="black", linewidths=1.2, zorder=3)
            ax.scatter(
                xs,
                p99s,
                marker="v",
                s=16,
                color=colour,
                edgecolor="black",
                linewidths=0.5,
                zorder=3,
            )
        ax.set_xticks(range(len(STEPS)))
        ax.set_xticklabels(short, fontsize=8)
        ax.set_yscale("log")
        log_axis(ax.yaxis)
        ax.set_ylabel("ms (log scale)")
        ax.set_title(
            f"K = {k} concurrent setups: per-command latency\n"
            "bar = p50, dash = p95, triangle = p99",
            fontsize=10,
        )
        ax.grid(axis="y", which="both", alpha=0.25)
        # row 2: ECDF of whole setups
        ax = axes[1][col]
        for r in group:
            colour = colours.get(r.label, "#333333")
            values = sorted(r.durations_ms())
            if values:
                ys = [(i + 1) / len(values) for i in range(len(values))]
                rate = r.summary()["setups_per_s"]
                ax.step(
                    values,
                    ys,
                    where="post",
                    color=colour,
                    linewidth=1.6,
                    label=f"{r.label}: setup ({_f(rate)}/s)",
                )
            claims = sorted(r.claim_values_ms())
            if claims:
                ys = [(i + 1) / len(claims) for i in range(len(claims))]
                ax.step(
                    claims,
                    ys,
                    where="post",
                    linestyle="--",
                    color=colour,
                    label=f"{r.label}: connect-ap → claimed",
                )
        ax.set_xscale("log")
        log_axis(ax.xaxis)
        ax.set_xlabel("ms (log scale)")
        ax.set_ylabel("fraction of setups ≤ x")
        ax.set_ylim(0, 1.02)
        ax.set_title(
            f"K = {k}: whole-setup time, ECDF\n(start → connect callback; "
            "with the cloud → claimed)",
            fontsize=10,
        )
        ax.grid(which="both", alpha=0.25)
        ax.legend(fontsize=6.5, loc="upper left")
        # row 3: server CPU per setup
        ax = axes[2][col]
        names = [r.label for r in group]
        cpus = [r.summary()["server_cpu_ms_per_setup"] or 0.0 for r in group]
        bars = ax.barh(range(len(group)), cpus, color=[colours.get(n, "#333") for n in names])
        ax.set_yticks(range(len(group)))
        ax.set_yticklabels(names, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("server CPU per completed setup, ms")
        top = max(cpus or [1.0])
        ax.set_xlim(0, top * 1.35)
        for bar, r, cpu in zip(bars, group, cpus, strict=True):
            ratio = ratio_by.get((k, r.label))
            text = f"{cpu:.2f}" + ("" if ratio is None else f"  ({ratio:.2f} x peer)")
            ax.text(
                cpu + top * 0.01, bar.get_y() + bar.get_height() / 2, text, va="center", fontsize=7
            )
        ax.set_title(
            f"K = {k}: server CPU per setup (target: ours ≤ {CPU_TARGET:g} x peer)", fontsize=10
        )
        ax.grid(axis="x", alpha=0.25)
    fig.suptitle(
        "softap-sim onboarding bench: real @particle/softap-setup 4.1.2 full setups\n"
        f"{args.timing} timing, {args.protocol.upper()} to ours; "
        "peer = softap-emulator-js 1.0.3 (TCP)",
        fontsize=11,
    )
    handles: dict[str, Any] = {}
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    fig.legend(
        handles=list(handles.values()),
        labels=list(handles),
        loc="outside lower center",
        ncol=min(4, len(handles)),
        fontsize=8,
        frameon=False,
    )
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def print_profile(path: str, limit: int = 25) -> None:
    import pstats

    print(f"\n== cProfile of our server process ({path}): top {limit} by own time ==")
    stats = pstats.Stats(path)
    stats.sort_stats("tottime").print_stats(limit)
    print("== the same, our code only (softap_sim, firmware_model), by cumulative time ==")
    stats.sort_stats("cumulative").print_stats(r"softap_sim|firmware_model", limit)


# ==================================================================================
# CLI
# ==================================================================================
def _what_if(text: str) -> tuple[str, ...]:
    tweaks = tuple(dict.fromkeys(t.strip() for t in text.split("+") if t.strip()))
    unknown = [t for t in tweaks if t not in TWEAKS]
    if not tweaks or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown tweak(s) {unknown or text!r}; use {', '.join(TWEAKS)} joined by '+'"
        )
    return tweaks


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=(
            "Onboarding bench: the real @particle/softap-setup 4.1.2 client runs full setups "
            "against a fleet of emulated Photons (and against softap-emulator-js 1.0.3 for "
            "comparison); setups/s, latencies, connect-ap -> claimed, failures, server CPU "
            "per setup."
        ),
        epilog="The method is described at the top of this script.",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=[1, 10, 50],
        metavar="K",
        help="concurrent setups = devices in the fleet (default: 1 10 50)",
    )
    p.add_argument("--timing", choices=("fast", "realistic"), default="fast")
    p.add_argument(
        "--cloud",
        choices=("off", "on", "both"),
        default="off",
        help="the cloud step: each setup waits until the device is claimed",
    )
    p.add_argument(
        "--protocol",
        choices=("tcp", "http"),
        default="tcp",
        help="transport to our devices (the peer is TCP only)",
    )
    p.add_argument(
        "--state",
        choices=("memory", "persistent"),
        default="memory",
        help="device state in memory (default) or a state directory per device",
    )
    p.add_argument(
        "--what-if",
        action="append",
        default=[],
        metavar="TWEAK[+TWEAK...]",
        type=_what_if,
        help="also measure a variant of ours without the cloud (repeatable); "
        "tweaks: " + "; ".join(f"{k}: {v}" for k, v in TWEAKS.items()),
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="repeat every measurement, alternating the servers, and sum (default 1)",
    )
    p.add_argument(
        "--peer",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run softap-emulator-js 1.0.3 (default: yes)",
    )
    p.add_argument(
        "--setups",
        type=int,
        default=None,
        help="measured setups per run (default: fast max(500, 10K), realistic max(10, 3K))",
    )
    p.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="setups before the window (default: fast max(20, 2K), realistic K)",
    )
    p.add_argument(
        "--fleet",
        choices=("auto", "on", "off"),
        default="auto",
        help="run the devices as a softap_sim.fleet.Fleet (own 127.0.x.y address each; "
        "auto: when that module exists) or as plain DeviceEmulators on 127.0.0.1 (off)",
    )
    p.add_argument(
        "--key-pool",
        type=int,
        default=8,
        help="without the fleet: RSA-1024 device keys made at start-up, shared round-robin "
        "(the fleet gives each device its own key)",
    )
    p.add_argument("--step-timeout-ms", type=int, default=15000)
    p.add_argument("--claim-timeout-ms", type=int, default=30000)
    p.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="FILE",
        help="write the JSON report to FILE (or stdout with no FILE; the table "
        "then goes to stderr)",
    )
    p.add_argument("--chart", metavar="PNG", help="write a latency chart (needs matplotlib)")
    p.add_argument(
        "--profile-server",
        metavar="PREFIX",
        help="cProfile our server process; PREFIX-<run>.pstats, top functions printed",
    )
    p.add_argument(
        "--target",
        type=float,
        default=CPU_TARGET,
        help="ours/theirs CPU per setup target (default 1.0)",
    )
    p.add_argument(
        "--enforce",
        action="store_true",
        help="exit 1 when a judged ratio misses --target or a setup failed",
    )
    p.add_argument("--node", default=None, help="node binary (default: node on PATH)")
    # internal: the server process
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--devices", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--events-fd", type=int, default=-1, help=argparse.SUPPRESS)
    p.add_argument("--requests-fd", type=int, default=-1, help=argparse.SUPPRESS)
    p.add_argument("--profile-out", default=None, help=argparse.SUPPRESS)
    p.add_argument(
        "--tweak", action="append", default=[], choices=tuple(TWEAKS), help=argparse.SUPPRESS
    )
    return p


def run_benchmark(args: argparse.Namespace) -> int:
    global CPU_TARGET
    CPU_TARGET = args.target
    node = args.node or shutil.which("node")
    if not node:
        raise BenchError("node is not on PATH (the driver is a node script)")
    if not (CLIENTS / "@particle" / "softap-setup").is_dir():
        raise BenchError(
            f"the pinned npm clients are missing in {CLIENTS}: run 'npm ci' in tests/clients"
        )
    if args.chart:  # fail early, not after minutes of measuring
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print(
                "bench_setup: note: --chart needs matplotlib (pip install matplotlib); "
                "the chart will be skipped",
                file=sys.stderr,
            )
    if any(k < 1 for k in args.concurrency):
        raise BenchError("--concurrency values must be >= 1")
    clouds = {"off": [False], "on": [True], "both": [False, True]}[args.cloud]
    base = ("persistent",) if args.state == "persistent" else ()
    runs: list[Run] = []
    for k in args.concurrency:
        group: list[tuple[Run, str]] = []
        for cloud in clouds:
            run = Run("ours", k, cloud, args.timing, args.protocol, base)
            group.append((run, f"k{k}-{'cloud' if cloud else 'nocloud'}"))
        for what in dict.fromkeys(args.what_if):
            tweaks = tuple(dict.fromkeys((*base, *what)))
            run = Run("ours", k, False, args.timing, args.protocol, tweaks)
            if run.label not in {r.label for r, _ in group}:
                group.append((run, f"k{k}-{'-'.join(what)}"))
        if args.peer:
            group.append((Run("peer", k, False, "n/a", "tcp"), ""))
        # rounds alternate the servers, so background load on a shared machine hits all alike
        for _ in range(args.rounds):
            for run, tag in group:
                if run.server == "peer":
                    run_peer(args, node, run)
                else:
                    run_ours(args, node, run, tag)
        runs.extend(run for run, _ in group)
    report: dict[str, Any] = {
        "config": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "node": subprocess.run(
                [node, "--version"], capture_output=True, text=True, check=False
            ).stdout.strip(),
            "client": "@particle/softap-setup 4.1.2",
            "peer": "softap-emulator-js 1.0.3" if args.peer else None,
            "timing": args.timing,
            "protocol": args.protocol,
            "state": args.state,
            "concurrency": list(args.concurrency),
            "cloud": args.cloud,
            "what_if": ["+".join(w) for w in dict.fromkeys(args.what_if)],
            "tweaks": TWEAKS,
            "rounds": args.rounds,
            "steps": list(STEPS),
            "target": CPU_TARGET,
        },
        "runs": [r.summary() for r in runs],
        "ratios": ratios(runs),
    }
    to_stdout = args.json == "-"
    with contextlib.redirect_stdout(sys.stderr) if to_stdout else contextlib.nullcontext():
        print_report(runs, args)
        if args.chart and write_chart(runs, args.chart, args):
            print(f"\nchart: {args.chart}")
        for r in runs:
            for path in r.info.get("profiles", []):
                print_profile(path)
    if args.json:
        text = json.dumps(report, indent=2)
        if to_stdout:
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    if args.enforce:
        judged = [r for r in report["ratios"] if r["judged"]]
        failed = any(s["failures_total"] for s in report["runs"])
        if failed or not all(r["pass"] for r in judged):
            return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.serve:
        return serve_main(args)
    return run_main("bench_setup", lambda: run_benchmark(args))


if __name__ == "__main__":
    sys.exit(main())
