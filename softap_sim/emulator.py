"""``DeviceEmulator``: one emulated Photon, owning its lifecycle, listeners and timers.

``async with DeviceEmulator(config) as emu:`` loads (or creates) the device state,
reserves its TCP 5609 and HTTP ports (port 0 picks free ones), powers the device on
and carries out the effects the firmware model returns: listeners start when the
access point comes up (within the limits of the modelled heap), stop when it goes
down, timers run on the injected clock, and the DCT is written after every change.
The same ports are reused every time the AP comes back.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from types import TracebackType
from typing import Any, Self

from firmware_model import (
    AccessPointDown,
    AccessPointUp,
    CancelTimer,
    Clock,
    Dct,
    DctChanged,
    Device,
    DeviceIdentity,
    DeviceKey,
    DeviceState,
    Effect,
    Event,
    Fault,
    FaultKind,
    FaultPlan,
    Heap,
    InvalidTransition,
    SoftApShutdown,
    StartTimer,
    StateChanged,
)
from firmware_model.app import EventSpec
from firmware_model.eras import ERAS
from firmware_model.events import (
    CloudFinished,
    CloudLost,
    ConnectApRequested,
    ConnectCloud,
    DisconnectCloud,
    PowerOn,
)
from softap_sim.config import SimConfig
from softap_sim.control import Control
from softap_sim.dispatch import CommandDispatcher
from softap_sim.errors import LifecycleError, SimulatorError
from softap_sim.listeners import DeviceListener, PortListener, SharedPorts
from softap_sim.protocol.http import routes_for
from softap_sim.scheduler import Scheduler, TimerHandle
from softap_sim.store import StateStore
from softap_sim.transcript import CLAIM_CODE_EVENT, Transcript
from softap_sim.transports.cloud_link import DeviceCloudClient, load_server_key
from softap_sim.transports.http_server import HttpDeviceServer
from softap_sim.transports.tcp_server import TcpDeviceServer

log = logging.getLogger(__name__)

#: events kept for ``emu.events`` / ``GET /v1/events``
EVENT_LOG = 200


class DeviceEmulator:
    """An emulated device with its two SoftAP listeners.

    Args:
        config: device settings (state directory, era, radio, heap, timing, faults ...).
        host: address to bind both listeners to (loopback by default).
        tcp_port: TCP protocol port; 0 picks a free one (the device uses 5609).
        http_port: HTTP port; 0 picks a free one (the device uses 80).
        clock: the model's clock; a :class:`~firmware_model.ManualClock` makes time
            move only through :meth:`advance` (for deterministic tests).
        before_power_on: awaited after the state is loaded, before power-on.
        shared_ports: serve both ports from a fleet's shared sockets (see
            :mod:`softap_sim.listeners`) instead of the device's own.
    """

    def __init__(
        self,
        config: SimConfig | None = None,
        *,
        host: str = "127.0.0.1",
        tcp_port: int = 0,
        http_port: int = 0,
        clock: Clock | None = None,
        before_power_on: Callable[[DeviceEmulator], Awaitable[None]] | None = None,
        shared_ports: SharedPorts | None = None,
    ) -> None:
        self.config = config or SimConfig()
        #: runs after the device state is loaded and before power-on (e.g. to register
        #: the device with a cloud before it can connect)
        self._before_power_on = before_power_on
        self._cloud_client: DeviceCloudClient | None = None
        self._cloud_task: asyncio.Task[None] | None = None
        self._event_timers: dict[str, TimerHandle] = {}
        #: the last events sent and received over the cloud link (claim codes masked)
        self.events: collections.deque[dict[str, Any]] = collections.deque(maxlen=EVENT_LOG)
        #: callbacks for every event record (the dashboard's live stream uses this)
        self.on_event: list[Callable[[dict[str, Any]], None]] = []
        self._cloud_session = 0
        self.host = host
        self._clock = clock
        self._tcp_l: PortListener
        self._http_l: PortListener
        if shared_ports is not None:
            self._tcp_l = shared_ports.listener("TCP", host, tcp_port)
            self._http_l = shared_ports.listener("HTTP", host, http_port)
        else:
            self._tcp_l = DeviceListener("TCP", host, tcp_port)
            self._http_l = DeviceListener("HTTP", host, http_port)
        self._device: Device | None = None
        self._store: StateStore | None = None
        self._tcp: TcpDeviceServer | None = None
        self._http: HttpDeviceServer | None = None
        self._errors: list[BaseException] = []
        self._started = False
        self._timers: dict[str, TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._ap_queue: asyncio.Queue[AccessPointUp | AccessPointDown | None] | None = None
        self._ap_worker: asyncio.Task[None] | None = None
        #: wait_for_state callers: (the states they wait for, their future)
        self._state_waiters: list[tuple[tuple[DeviceState, ...], asyncio.Future[None]]] = []
        self._t0 = 0.0
        self.created = False
        self.scheduler: Scheduler | None = None
        self.transcript: Transcript | None = None
        self.dispatcher: CommandDispatcher | None = None
        #: steer the running device (faults, button, power, heap, radio ...)
        self.control = Control(self)
        #: the last AccessPointUp the model asked for (what works while listening)
        self.access_point: AccessPointUp | None = None
        #: set when connect-ap took the AP down (stays set; clear it to wait again)
        self.setup_complete = asyncio.Event()
        #: callbacks for every lifecycle change (the CLI's LED display uses this)
        self.on_state_change: list[Callable[[StateChanged, float], None]] = []
        #: callbacks after every change of the stored DCT (claimed, claim code, networks)
        self.on_dct_change: list[Callable[[], None]] = []
        #: callbacks after the access point came up (True) or went down (False)
        self.on_access_point_change: list[Callable[[bool], None]] = []
        #: accepted connections per transport since the AP last came up
        self.accepted: dict[str, int] = {"tcp": 0, "http": 0}

    # -- lifecycle -----------------------------------------------------------------
    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Load or create the device, reserve the ports and power it on. Idempotent."""
        if self._started:
            return
        cfg = self.config
        loop = asyncio.get_running_loop()
        rng = random.Random(cfg.seed)
        if cfg.state_dir is not None:
            self._store = StateStore(cfg.state_dir)
            dct, key, self.created = await asyncio.to_thread(
                self._store.load_or_create,
                rng=rng,
                era=cfg.firmware,
                ssid_prefix=cfg.ssid_prefix,
                key_bits=cfg.key_bits,
            )
        else:
            identity = cfg.identity or DeviceIdentity.generate(
                rng, code_length=ERAS[cfg.firmware].device_code_length, ssid_prefix=cfg.ssid_prefix
            )
            dct = Dct(identity)
            if cfg.key is not None:
                key = cfg.key
            else:
                key = await asyncio.to_thread(DeviceKey.generate, cfg.key_bits)
            self.created = True
        plan = FaultPlan(rng=random.Random(cfg.seed if cfg.seed is not None else 0))
        for spec in cfg.faults:
            plan.add(Fault.from_mapping(spec))
        heap = Heap(
            heap_after_boot_bytes=cfg.heap_after_boot_bytes,
            app_ram_bytes=cfg.app_ram_bytes,
            gate_bytes=cfg.gate_bytes,
            gate_mode=cfg.gate_mode,
        )
        self._device = Device(
            dct,
            key,
            cfg.radio,
            cfg.firmware,
            heap=heap,
            timing=cfg.timing,
            faults=plan,
            cloud_available=cfg.cloud_available,
            app=cfg.app,
            cloud_link=cfg.cloud_endpoint is not None and cfg.server_public_key_pem is not None,
        )
        self.scheduler = Scheduler(self._clock, loop)
        self._t0 = self.scheduler.now()
        self.transcript = Transcript(cfg.transcript_path, enabled=cfg.record, t0=self._t0)
        self.dispatcher = CommandDispatcher(
            self._device, self._on_command_effect, self.transcript, self.scheduler.now_fn()
        )
        self._tcp = TcpDeviceServer(
            self.dispatcher, self._device, self.scheduler, self._record_error, self._on_accept
        )
        self._http = HttpDeviceServer(
            self.dispatcher,
            self._device,
            routes_for(self._device.profile),
            self.scheduler,
            self._record_error,
            self._on_accept,
        )
        try:
            self._tcp_l.reserve()
            if self._device.profile.http:
                self._http_l.reserve()
        except OSError:
            await self._tcp_l.close(keep_port=False)
            await self._http_l.close(keep_port=False)
            raise
        self._ap_queue = asyncio.Queue()
        self._ap_worker = loop.create_task(self._run_ap_queue())
        self._started = True
        if self._before_power_on is not None:
            await self._before_power_on(self)
        self.fire(PowerOn())
        await self.settle()

    async def close(self) -> None:
        """Power off: stop listeners and timers, release the ports. Idempotent."""
        if not self._started:
            return
        self._started = False
        self._disconnect_cloud()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        if self.scheduler is not None:
            self.scheduler.cancel_all()
        if self._ap_queue is not None:
            self._ap_queue.put_nowait(None)
        if self._ap_worker is not None:
            await self._ap_worker
        for holder in (self._http, self._tcp):
            if holder is not None:
                holder.close_all()
        await self._tcp_l.close(keep_port=False)
        await self._http_l.close(keep_port=False)
        if self.transcript is not None:
            self.transcript.close()

    async def settle(self) -> None:
        """Wait until every access-point change asked for so far has been carried out."""
        if self._ap_queue is not None:
            await self._ap_queue.join()
        for _ in range(3):
            await asyncio.sleep(0)

    async def advance(self, seconds: float) -> None:
        """Move a manual clock forward, running the timers that fall due (tests)."""
        assert self.scheduler is not None
        await self.scheduler.advance(seconds)
        await self.settle()

    # -- the model -----------------------------------------------------------------
    def fire(self, event: Event) -> None:
        """Apply a lifecycle event now; :class:`InvalidTransition` if not accepted."""
        assert self.scheduler is not None
        effects = self.device.handle(event, self.scheduler.now())
        self._apply(effects)

    def _fire_timer(self, key: str, event: Event) -> None:
        self._timers.pop(key, None)
        try:
            self.fire(event)
        except InvalidTransition as err:  # a stale timer: the device moved on
            log.debug("timer %s ignored: %s", key, err)
        except Exception as err:
            self._record_error(err)
            log.exception("timer %s failed", key)

    def _apply(self, effects: Iterable[Effect]) -> None:
        assert self.scheduler is not None
        assert self._ap_queue is not None
        for effect in effects:
            if isinstance(effect, StartTimer):
                old = self._timers.pop(effect.key, None)
                if old is not None:
                    old.cancel()
                self._timers[effect.key] = self.scheduler.call_at(
                    effect.deadline, functools.partial(self._fire_timer, effect.key, effect.event)
                )
            elif isinstance(effect, CancelTimer):
                handle = self._timers.pop(effect.key, None)
                if handle is not None:
                    handle.cancel()
            elif isinstance(effect, AccessPointUp | AccessPointDown):
                self._ap_queue.put_nowait(effect)
            elif isinstance(effect, StateChanged):
                self._state_change(effect)
            elif isinstance(effect, DctChanged):
                self._persist()
            elif isinstance(effect, ConnectCloud):
                self._connect_cloud()
            elif isinstance(effect, DisconnectCloud):
                self._disconnect_cloud()

    # -- the device-to-cloud connection --------------------------------------------
    def _connect_cloud(self) -> None:
        cfg = self.config
        assert cfg.cloud_endpoint is not None
        assert cfg.server_public_key_pem is not None
        assert self.scheduler is not None
        self._disconnect_cloud()
        self._cloud_session += 1
        session = self._cloud_session
        host, port = cfg.cloud_endpoint

        def up() -> None:
            if session == self._cloud_session and self.device.state is DeviceState.CLOUD_CONNECTING:
                self.fire(CloudFinished(True))
                self._start_periodic_events(session)

        def down(reason: str) -> None:
            if session != self._cloud_session or not self._started:
                return
            state = self.device.state
            if state is DeviceState.CLOUD_CONNECTING:
                self.fire(CloudFinished(False))
            elif state is DeviceState.ONLINE:
                self.fire(CloudLost(reason))

        scheduler = self.scheduler
        client = DeviceCloudClient(
            self.device,
            host,
            port,
            load_server_key(cfg.server_public_key_pem),
            on_up=up,
            on_down=down,
            apply=self._apply,
            call_later=lambda delay, fn: scheduler.call_later(delay, fn),
            on_event=self._cloud_event,
        )
        self._cloud_client = client
        self._cloud_task = self._spawn(client.run())

    # -- events over the cloud link ------------------------------------------------
    def _cloud_event(self, direction: str, name: str, data: str, private: bool) -> None:
        """Every event sent or received: the event log, the transcript, the callbacks."""
        if name == CLAIM_CODE_EVENT:
            data = "*" * len(data)  # never kept or shown
        record = {
            "t": round(self._elapsed(), 6),
            "direction": direction,
            "name": name,
            "data": data,
            "private": private,
        }
        if direction == "in":
            record["handled"] = self.device.app.subscribed(name)
        self.events.append(record)
        if self.transcript is not None and self.transcript.enabled:
            self.transcript.event(
                t=self._elapsed() + self._t0,
                direction=direction,
                name=name,
                data=data,
                private=private,
            )
        log.info("event %s %s", "published" if direction == "out" else "received", name)
        for callback in list(self.on_event):
            try:
                callback(record)
            except Exception as err:
                self._record_error(err)

    def publish_event(
        self, name: str, data: str = "", *, private: bool = True, ttl: int = 60
    ) -> None:
        """``Particle.publish`` now; :class:`LifecycleError` unless the session is up."""
        client = self._cloud_client
        if client is None or not client.up:
            raise LifecycleError(
                f"the device is not connected to the cloud (state {self.device.state.value}): "
                "it publishes once online"
            )
        client.publish(name, data.encode("utf-8"), private=private, ttl=ttl)

    def _start_periodic_events(self, session: int) -> None:
        assert self.scheduler is not None
        scheduler = self.scheduler
        for spec in self.device.app.events.values():
            if spec.period_s <= 0:
                continue

            def tick(spec: EventSpec = spec) -> None:
                if session != self._cloud_session or self._cloud_client is None:
                    return  # the session ended: its timers stop
                self._cloud_client.publish(
                    spec.name, spec.data.encode("utf-8"), private=spec.private, ttl=spec.ttl
                )
                self._event_timers[spec.name] = scheduler.call_later(spec.period_s, tick)

            tick()  # Particle.publish in loop(): the first right after connecting

    def _disconnect_cloud(self) -> None:
        """End the session now: the cloud sees the connection close (offline at once).

        The task is cancelled as well as the socket closed, so a connection still being
        opened or handshaken cannot come up afterwards.
        """
        client, self._cloud_client = self._cloud_client, None
        task, self._cloud_task = self._cloud_task, None
        for handle in self._event_timers.values():
            handle.cancel()
        self._event_timers.clear()
        if client is not None:
            self._cloud_session += 1  # its callbacks are stale from now on
            client.close()
        if task is not None:
            task.cancel()

    @property
    def cloud_client(self) -> DeviceCloudClient | None:
        return self._cloud_client

    def _on_command_effect(self, effect: Effect) -> None:
        if isinstance(effect, DctChanged):
            self._persist()
        elif isinstance(effect, SoftApShutdown):
            # the reply is written right after dispatch returns; then the system thread
            # leaves listening mode (§4.5)
            asyncio.get_running_loop().call_soon(self._connect_ap_done)

    def _connect_ap_done(self) -> None:
        if not self._started:
            return
        try:
            self.fire(ConnectApRequested())
        except InvalidTransition as err:
            log.warning("connect-ap ignored: %s", err)

    def _persist(self) -> None:
        if self._store is not None:
            self._store.save(self.device.dct)
        for callback in list(self.on_dct_change):
            try:
                callback()
            except Exception as err:
                self._record_error(err)

    def _access_point_changed(self, up: bool) -> None:
        for callback in list(self.on_access_point_change):
            try:
                callback(up)
            except Exception as err:
                self._record_error(err)

    def _state_change(self, change: StateChanged) -> None:
        t = self._elapsed()
        if log.isEnabledFor(logging.INFO):
            log.info(
                "state %s -> %s on %s (LED %s)",
                change.old,
                change.new,
                change.cause,
                change.led.describe(),
            )
        if self.transcript is not None and self.transcript.enabled:
            self.transcript.state(
                t=t + self._t0,
                old=change.old,
                new=change.new,
                cause=change.cause,
                led=change.led.describe(),
                detail=change.detail,
            )
        for callback in list(self.on_state_change):
            try:
                callback(change, t)
            except Exception as err:
                self._record_error(err)
        if self._state_waiters:
            state = self.device.state
            for wanted, future in self._state_waiters:
                if state in wanted and not future.done():
                    future.set_result(None)

    async def wait_for_state(self, *states: DeviceState, timeout_s: float | None = 10.0) -> None:
        """Wait (event-driven) until the device is in one of ``states``.

        A state passed through while the caller was not scheduled still counts: the
        waiter is woken at the change itself, not when it next looks. It returns once
        the access-point changes asked for so far are carried out (:meth:`settle`), so
        e.g. after ``ONLINE`` the listeners are really down.
        """
        if self.device.state not in states:
            entry = (states, asyncio.get_running_loop().create_future())
            self._state_waiters.append(entry)
            try:
                await asyncio.wait_for(entry[1], timeout_s)
            finally:
                self._state_waiters.remove(entry)
        await self.settle()

    def _elapsed(self) -> float:
        return (self.scheduler.now() - self._t0) if self.scheduler is not None else 0.0

    # -- the access point ----------------------------------------------------------
    async def _run_ap_queue(self) -> None:
        assert self._ap_queue is not None
        while True:
            op = await self._ap_queue.get()
            try:
                if op is None:
                    return
                if isinstance(op, AccessPointUp):
                    await self._ap_up(op)
                else:
                    await self._ap_down()
            except Exception as err:
                self._record_error(err)
                log.exception("access point change failed")
            finally:
                self._ap_queue.task_done()

    async def _ap_up(self, ap: AccessPointUp) -> None:
        assert self._tcp is not None
        assert self._http is not None
        self.access_point = ap
        self.accepted = {"tcp": 0, "http": 0}
        self._tcp.serving = ap.tcp_serving
        self._http.slots = ap.http_slots
        if ap.tcp_listening:
            await self._tcp_l.open(self._tcp.protocol_factory)
        if ap.http_listening:
            await self._http_l.open(self._http.protocol_factory)
        log.info(
            "access point %s up: tcp %s, http %s%s",
            ap.ssid,
            self._tcp_l.port if self._tcp_l.listening else "refusing",
            self._http_l.port if self._http_l.listening else "refusing",
            " (below the memory gate)" if ap.degraded else "",
        )
        self._access_point_changed(True)

    async def _ap_down(self) -> None:
        assert self._tcp is not None
        assert self._http is not None
        await self._tcp_l.close()
        await self._http_l.close()
        self._tcp.close_all()
        self._http.close_all()
        self.access_point = None
        if self.device.connect_requested:
            self.device.connect_requested = False
            self.setup_complete.set()
        log.info("access point %s down", self.ssid)
        self._access_point_changed(False)

    def _on_accept(self, transport: str) -> None:
        """Count connections for ``refuse-after`` faults (pain-points.md #3)."""
        self.accepted[transport] += 1
        device = self.device
        if not device.faults.faults:
            return
        for fault in device.faults.take((FaultKind.REFUSE_AFTER,), "*", transport):
            if fault.applied >= fault.count:
                listener = self._tcp_l if transport == "tcp" else self._http_l
                self._spawn(listener.close())
                log.info(
                    "%s port now refuses connections (refuse-after %d)", transport, fault.count
                )

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _record_error(self, err: BaseException) -> None:
        self._errors.append(err)

    @property
    def failed(self) -> bool:
        """An error was raised inside the emulator's callbacks (see :meth:`check`)."""
        return bool(self._errors)

    def check(self) -> None:
        """Re-raise the first error raised inside the emulator's callbacks, if any."""
        if self._errors:
            err = self._errors[0]
            raise SimulatorError(f"the emulator failed internally: {err!r}") from err

    # -- introspection -------------------------------------------------------------
    @property
    def device(self) -> Device:
        if self._device is None:
            raise LifecycleError("the emulator is not started; use 'async with' or start()")
        return self._device

    @property
    def ssid(self) -> str:
        return self.device.dct.identity.ssid

    @property
    def ap_up(self) -> bool:
        return self.access_point is not None

    def _port(self, listener: PortListener) -> int:
        if not self._started or not listener.bound:
            raise LifecycleError(f"the {listener.name} listener is not running")
        return listener.port

    @property
    def tcp_address(self) -> tuple[str, int]:
        return self.host, self._port(self._tcp_l)

    @property
    def http_address(self) -> tuple[str, int]:
        return self.host, self._port(self._http_l)

    @property
    def tcp_listening(self) -> bool:
        return self._tcp_l.listening

    @property
    def http_listening(self) -> bool:
        return self._http_l.listening

    @property
    def http_url(self) -> str:
        host, port = self.http_address
        return f"http://{host}:{port}"

    def url_for(self, path: str) -> str:
        return self.http_url + (path if path.startswith("/") else "/" + path)


__all__ = ["DeviceEmulator"]
