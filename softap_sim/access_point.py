"""Carrying out the model's access-point changes on the listeners, one at a time.

``AccessPointUp`` and ``AccessPointDown`` effects arrive synchronously from the firmware
model, but opening and closing sockets is asynchronous: a queue keeps them in order, so
a quick up-down-up (a SETUP tap during start-up) ends in the state the model is in.
:meth:`AccessPointRunner.settle` waits until every change asked for so far is done.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from firmware_model import AccessPointDown, AccessPointUp
from softap_sim.listeners import PortListener
from softap_sim.transports.http_server import HttpDeviceServer
from softap_sim.transports.tcp_server import TcpDeviceServer

log = logging.getLogger(__name__)


class AccessPointRunner:
    """Opens and closes one device's TCP and HTTP listeners as its access point changes.

    ``on_up`` runs before the listeners open (so the first accepted connection already
    sees the new access point), ``on_down`` after they closed; ``on_changed`` after both.
    """

    def __init__(
        self,
        tcp_listener: PortListener,
        http_listener: PortListener,
        tcp: TcpDeviceServer,
        http: HttpDeviceServer,
        *,
        ssid: Callable[[], str],
        on_up: Callable[[AccessPointUp], None],
        on_down: Callable[[], None],
        on_changed: Callable[[bool], None],
        on_error: Callable[[BaseException], None],
    ) -> None:
        self._tcp_l = tcp_listener
        self._http_l = http_listener
        self._tcp = tcp
        self._http = http
        self._ssid = ssid
        self._on_up = on_up
        self._on_down = on_down
        self._on_changed = on_changed
        self._on_error = on_error
        self._queue: asyncio.Queue[AccessPointUp | AccessPointDown | None] = asyncio.Queue()
        self._worker = asyncio.get_running_loop().create_task(self._run())

    def change(self, op: AccessPointUp | AccessPointDown) -> None:
        """Queue one change; it runs after the ones before it."""
        self._queue.put_nowait(op)

    async def settle(self) -> None:
        """Wait until every change queued so far has been carried out."""
        await self._queue.join()

    async def stop(self) -> None:
        """Finish the queued changes, then end the worker."""
        self._queue.put_nowait(None)
        await self._worker

    async def _run(self) -> None:
        queue = self._queue
        while True:
            op = await queue.get()
            try:
                if op is None:
                    return
                if isinstance(op, AccessPointUp):
                    await self._up(op)
                else:
                    await self._down()
            except Exception as err:
                self._on_error(err)
                log.exception("access point change failed")
            finally:
                queue.task_done()

    async def _up(self, ap: AccessPointUp) -> None:
        self._on_up(ap)
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
        self._on_changed(True)

    async def _down(self) -> None:
        await self._tcp_l.close()
        await self._http_l.close()
        self._tcp.close_all()
        self._http.close_all()
        self._on_down()
        log.info("access point %s down", self._ssid())
        self._on_changed(False)
