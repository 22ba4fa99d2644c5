"""The device's sessions with the cloud, one at a time, and the events that cross them.

The firmware model says when a session should exist (``ConnectCloud`` on entering
cloud-connecting, ``DisconnectCloud`` on leaving it or online); this object carries that
out for a :class:`~softap_sim.emulator.DeviceEmulator`: it runs the device-side client,
turns its up/down callbacks into model events, publishes the app's periodic events while
a session lasts, and keeps the event log (claim codes masked, spec cloud-api.md §5).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from firmware_model import Device, DeviceState, Effect, Event
from firmware_model.app import EventSpec
from firmware_model.events import CloudFinished, CloudLost
from softap_sim.config import SimConfig
from softap_sim.errors import LifecycleError
from softap_sim.scheduler import Scheduler, TimerHandle
from softap_sim.transcript import CLAIM_CODE_EVENT, Transcript
from softap_sim.transports.cloud_link import DeviceCloudClient, load_server_key

log = logging.getLogger(__name__)

#: events kept for ``emu.events`` / ``GET /v1/events``
EVENT_LOG = 200


class CloudSessions:
    """Opens and ends the device-to-cloud session as the model asks.

    Every session has a number; callbacks of an ended session find a newer number and do
    nothing, so a connection that comes up after ``DisconnectCloud`` cannot revive it.
    """

    def __init__(
        self,
        device: Device,
        config: SimConfig,
        scheduler: Scheduler,
        transcript: Transcript | None,
        events: collections.deque[dict[str, Any]],
        on_event: list[Callable[[dict[str, Any]], None]],
        *,
        t0: float,
        fire: Callable[[Event], None],
        apply: Callable[[Iterable[Effect]], None],
        spawn: Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]],
        running: Callable[[], bool],
        on_error: Callable[[BaseException], None],
    ) -> None:
        self._device = device
        self._config = config
        self._scheduler = scheduler
        self._transcript = transcript
        self._t0 = t0
        self._events = events
        self._on_event = on_event
        self._fire = fire
        self._apply = apply
        self._spawn = spawn
        self._running = running
        self._on_error = on_error
        self._client: DeviceCloudClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._event_timers: dict[str, TimerHandle] = {}
        self._session = 0

    @property
    def client(self) -> DeviceCloudClient | None:
        """The current session's client (None between sessions)."""
        return self._client

    def connect(self) -> None:
        """``ConnectCloud``: open a new session (ending any old one first)."""
        cfg = self._config
        assert cfg.cloud_endpoint is not None
        assert cfg.server_public_key_pem is not None
        self.disconnect()
        self._session += 1
        session = self._session
        host, port = cfg.cloud_endpoint
        device = self._device

        def up() -> None:
            if session == self._session and device.state is DeviceState.CLOUD_CONNECTING:
                self._fire(CloudFinished(True))
                self._start_periodic_events(session)

        def down(reason: str) -> None:
            if session != self._session or not self._running():
                return
            state = device.state
            if state is DeviceState.CLOUD_CONNECTING:
                self._fire(CloudFinished(False))
            elif state is DeviceState.ONLINE:
                self._fire(CloudLost(reason))

        scheduler = self._scheduler
        client = DeviceCloudClient(
            device,
            host,
            port,
            load_server_key(cfg.server_public_key_pem),
            on_up=up,
            on_down=down,
            apply=self._apply,
            call_later=lambda delay, fn: scheduler.call_later(delay, fn),
            on_event=self._record_event,
        )
        self._client = client
        self._task = self._spawn(client.run())

    def disconnect(self) -> None:
        """End the session now: the cloud sees the connection close (offline at once).

        The task is cancelled as well as the socket closed, so a connection still being
        opened or handshaken cannot come up afterwards.
        """
        client, self._client = self._client, None
        task, self._task = self._task, None
        for handle in self._event_timers.values():
            handle.cancel()
        self._event_timers.clear()
        if client is not None:
            self._session += 1  # its callbacks are stale from now on
            client.close()
        if task is not None:
            task.cancel()

    def publish(self, name: str, data: str = "", *, private: bool = True, ttl: int = 60) -> None:
        """``Particle.publish`` now; :class:`LifecycleError` unless the session is up."""
        client = self._client
        if client is None or not client.up:
            raise LifecycleError(
                f"the device is not connected to the cloud (state {self._device.state.value}): "
                "it publishes once online"
            )
        client.publish(name, data.encode("utf-8"), private=private, ttl=ttl)

    def _start_periodic_events(self, session: int) -> None:
        scheduler = self._scheduler
        for spec in self._device.app.events.values():
            if spec.period_s <= 0:
                continue

            def tick(spec: EventSpec = spec) -> None:
                if session != self._session or self._client is None:
                    return  # the session ended: its timers stop
                self._client.publish(
                    spec.name, spec.data.encode("utf-8"), private=spec.private, ttl=spec.ttl
                )
                self._event_timers[spec.name] = scheduler.call_later(spec.period_s, tick)

            tick()  # Particle.publish in loop(): the first right after connecting

    def _record_event(self, direction: str, name: str, data: str, private: bool) -> None:
        """Every event sent or received: the event log, the transcript, the callbacks."""
        if name == CLAIM_CODE_EVENT:
            data = "*" * len(data)  # never kept or shown
        elapsed = self._scheduler.now() - self._t0
        record = {
            "t": round(elapsed, 6),
            "direction": direction,
            "name": name,
            "data": data,
            "private": private,
        }
        if direction == "in":
            record["handled"] = self._device.app.subscribed(name)
        self._events.append(record)
        transcript = self._transcript
        if transcript is not None and transcript.enabled:
            transcript.event(
                t=elapsed + self._t0,
                direction=direction,
                name=name,
                data=data,
                private=private,
            )
        log.info("event %s %s", "published" if direction == "out" else "received", name)
        for callback in list(self._on_event):
            try:
                callback(record)
            except Exception as err:
                self._on_error(err)
