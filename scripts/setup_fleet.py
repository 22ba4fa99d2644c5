"""bench_setup's devices: the fleet of our server process and the setup cycle around it.

:class:`FleetHost` runs in the ``--serve`` process. It starts K devices (a
``softap_sim.fleet.Fleet``, or plain ``DeviceEmulator``s), optionally the embedded cloud,
and keeps each device cycling through setups the way a Photon does: one setup per
listening session, then join, online (claimed, with the cloud), and back into listening
mode. It follows the devices through public hooks only (``on_state_change``,
``on_access_point_change``, ``fire``) and tells the driver which device is ready.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from benchlib import BenchError, customer_tokens

HOST: Final = "127.0.0.1"
HOME: Final = {
    "ssid": "HomeNet",
    "security": "wpa2_aes",
    "channel": 6,
    "rssi": -48,
    "password": "home-wifi-password",
}
CLAIM_CONFIRM: Final = "spark/device/claim/confirm"
#: a device that is not online this long after its setup is put back into listening anyway
RECYCLE_FORCE_S: Final = {"fast": 10.0, "realistic": 60.0}


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

        def starting(device: Any) -> None:  # the fleet starts them in bounded batches
            self.slots[device.index].t_start = time.monotonic()

        # --baseline-rev may run a revision from before Fleet.on_device_starting
        starting_hooks = getattr(fleet, "on_device_starting", None)

        def created(device: Any) -> None:
            emu = device.emulator
            self._hook(self.slots[device.index], emu)
            if starting_hooks is None:
                start = emu.start

                async def timed_start() -> None:
                    starting(device)
                    await start()

                emu.start = timed_start

        fleet.on_device_created.append(created)
        if starting_hooks is not None:
            starting_hooks.append(starting)
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
