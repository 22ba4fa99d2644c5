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
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

from firmware_model import (
    AccessPointDown,
    AccessPointUp,
    CancelTimer,
    Clock,
    DctChanged,
    Device,
    DeviceState,
    Effect,
    Event,
    FaultKind,
    InvalidTransition,
    SoftApShutdown,
    StartTimer,
    StateChanged,
)
from firmware_model.events import (
    ConnectApRequested,
    ConnectCloud,
    DisconnectCloud,
    PowerOn,
)
from softap_sim.access_point import AccessPointRunner
from softap_sim.cloud_session import EVENT_LOG, CloudSessions
from softap_sim.config import SimConfig
from softap_sim.control import Control
from softap_sim.device_build import build_device
from softap_sim.dispatch import CommandDispatcher
from softap_sim.errors import LifecycleError, SimulatorError
from softap_sim.lifetime import AsyncLifetime
from softap_sim.listeners import DeviceListener, PortListener, SharedPorts
from softap_sim.protocol.http import routes_for
from softap_sim.scheduler import Scheduler, TimerHandle
from softap_sim.store import StateStore
from softap_sim.transcript import Transcript
from softap_sim.transports.cloud_link import DeviceCloudClient
from softap_sim.transports.http_server import HttpDeviceServer
from softap_sim.transports.tcp_server import TcpDeviceServer

log = logging.getLogger(__name__)


class DeviceEmulator(AsyncLifetime):
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
        self._cloud: CloudSessions | None = None
        #: the last events sent and received over the cloud link (claim codes masked)
        self.events: collections.deque[dict[str, Any]] = collections.deque(maxlen=EVENT_LOG)
        #: callbacks for every event record (the dashboard's live stream uses this)
        self.on_event: list[Callable[[dict[str, Any]], None]] = []
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
        self._ap: AccessPointRunner | None = None
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
    async def start(self) -> None:
        """Load or create the device, reserve the ports and power it on. Idempotent."""
        if self._started:
            return
        cfg = self.config
        loop = asyncio.get_running_loop()
        if cfg.state_dir is not None:
            self._store = StateStore(cfg.state_dir)
        self._device, self.created = await build_device(cfg, self._store)
        self._wire(self._device, loop)
        assert self._tcp is not None
        assert self._http is not None
        try:
            self._tcp_l.reserve()
            if self._device.profile.http:
                self._http_l.reserve()
        except OSError:
            await self._tcp_l.close(keep_port=False)
            await self._http_l.close(keep_port=False)
            raise
        self._ap = AccessPointRunner(
            self._tcp_l,
            self._http_l,
            self._tcp,
            self._http,
            ssid=lambda: self.ssid,
            on_up=self._ap_is_up,
            on_down=self._ap_is_down,
            on_changed=self._access_point_changed,
            on_error=self._record_error,
        )
        self._started = True
        if self._before_power_on is not None:
            await self._before_power_on(self)
        self.fire(PowerOn())
        await self.settle()

    def _wire(self, device: Device, loop: asyncio.AbstractEventLoop) -> None:
        """The parts around the model: clock, transcript, cloud sessions, dispatch, servers."""
        cfg = self.config
        self.scheduler = Scheduler(self._clock, loop)
        self._t0 = self.scheduler.now()
        self.transcript = Transcript(cfg.transcript_path, enabled=cfg.record, t0=self._t0)
        self._cloud = CloudSessions(
            device,
            cfg,
            self.scheduler,
            self.transcript,
            self.events,
            self.on_event,
            t0=self._t0,
            fire=self.fire,
            apply=self._apply,
            spawn=self._spawn,
            running=lambda: self._started,
            on_error=self._record_error,
        )
        self.dispatcher = CommandDispatcher(
            device, self._on_command_effect, self.transcript, self.scheduler.now_fn()
        )
        self._tcp = TcpDeviceServer(
            self.dispatcher, device, self.scheduler, self._record_error, self._on_accept
        )
        self._http = HttpDeviceServer(
            self.dispatcher,
            device,
            routes_for(device.profile),
            self.scheduler,
            self._record_error,
            self._on_accept,
        )

    async def close(self) -> None:
        """Power off: stop listeners and timers, release the ports. Idempotent."""
        if not self._started:
            return
        self._started = False
        if self._cloud is not None:
            self._cloud.disconnect()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        if self.scheduler is not None:
            self.scheduler.cancel_all()
        if self._ap is not None:
            await self._ap.stop()
        for holder in (self._http, self._tcp):
            if holder is not None:
                holder.close_all()
        await self._tcp_l.close(keep_port=False)
        await self._http_l.close(keep_port=False)
        if self.transcript is not None:
            self.transcript.close()

    async def settle(self) -> None:
        """Wait until every access-point change asked for so far has been carried out."""
        if self._ap is not None:
            await self._ap.settle()
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
        assert self._ap is not None
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
                self._ap.change(effect)
            elif isinstance(effect, StateChanged):
                self._state_change(effect)
            elif isinstance(effect, DctChanged):
                self._persist()
            elif isinstance(effect, ConnectCloud):
                assert self._cloud is not None
                self._cloud.connect()
            elif isinstance(effect, DisconnectCloud) and self._cloud is not None:
                self._cloud.disconnect()

    # -- the device-to-cloud connection (softap_sim.cloud_session) -----------------
    def publish_event(
        self, name: str, data: str = "", *, private: bool = True, ttl: int = 60
    ) -> None:
        """``Particle.publish`` now; :class:`LifecycleError` unless the session is up."""
        if self._cloud is None:
            raise LifecycleError("the emulator is not started; use 'async with' or start()")
        self._cloud.publish(name, data, private=private, ttl=ttl)

    @property
    def cloud_client(self) -> DeviceCloudClient | None:
        return self._cloud.client if self._cloud is not None else None

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
    def _ap_is_up(self, ap: AccessPointUp) -> None:
        self.access_point = ap
        self.accepted = {"tcp": 0, "http": 0}

    def _ap_is_down(self) -> None:
        self.access_point = None
        if self.device.connect_requested:
            self.device.connect_requested = False
            self.setup_complete.set()

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
