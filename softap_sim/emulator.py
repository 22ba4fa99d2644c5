"""``DeviceEmulator``: one emulated Photon in listening mode, owning its lifecycle.

``async with DeviceEmulator(config) as emu:`` loads (or creates) the device state,
starts the TCP 5609 and HTTP listeners (port 0 picks free ports) and reports the real
addresses. ``connect-ap`` takes the access point down after its reply is flushed, as
the firmware does (softap-protocol.md §4.5); :attr:`setup_complete` fires then, which
is the hook for the Wi-Fi join and cloud connection of later issues.
"""

from __future__ import annotations

import asyncio
import logging
import random
from types import TracebackType
from typing import Self

from firmware_model import Dct, Device, DeviceEffect, DeviceIdentity, DeviceKey
from firmware_model.device import DctChanged, SoftApShutdown
from firmware_model.eras import ERAS
from softap_sim.config import SimConfig
from softap_sim.dispatch import CommandDispatcher
from softap_sim.errors import LifecycleError, SimulatorError
from softap_sim.protocol.http import routes_for
from softap_sim.state import StateStore
from softap_sim.transports.http_server import HttpDeviceServer
from softap_sim.transports.tcp_server import TcpDeviceServer

log = logging.getLogger(__name__)


class DeviceEmulator:
    """An emulated device with its two SoftAP listeners.

    Args:
        config: device settings (state directory, era, radio environment ...).
        host: address to bind both listeners to (loopback by default).
        tcp_port: TCP protocol port; 0 picks a free one (the device uses 5609).
        http_port: HTTP port; 0 picks a free one (the device uses 80).
    """

    def __init__(
        self,
        config: SimConfig | None = None,
        *,
        host: str = "127.0.0.1",
        tcp_port: int = 0,
        http_port: int = 0,
    ) -> None:
        self.config = config or SimConfig()
        self.host = host
        self._tcp_port = tcp_port
        self._http_port = http_port
        self._device: Device | None = None
        self._store: StateStore | None = None
        self._tcp_server: asyncio.Server | None = None
        self._http_server: asyncio.Server | None = None
        self._tcp: TcpDeviceServer | None = None
        self._http: HttpDeviceServer | None = None
        self._errors: list[BaseException] = []
        self._started = False
        self.created = False
        #: set once ``connect-ap`` has been answered and the AP went down
        self.setup_complete = asyncio.Event()
        self.dispatcher: CommandDispatcher | None = None

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
        """Load or create the device and open the access point. Idempotent."""
        if self._started:
            return
        cfg = self.config
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
        self._device = Device(
            dct, key, cfg.radio, cfg.firmware, free_heap_bytes=cfg.free_heap_bytes
        )
        self.dispatcher = CommandDispatcher(self._device, self._on_effect)
        await self._open_access_point()
        self._started = True

    async def _open_access_point(self) -> None:
        """AP start order of the firmware: TCP 5609, then HTTP (§1)."""
        device = self.device
        assert self.dispatcher is not None
        loop = asyncio.get_running_loop()
        self._tcp = TcpDeviceServer(self.dispatcher, device, self._record_error)
        try:
            self._tcp_server = await loop.create_server(
                self._tcp.protocol_factory, self.host, self._tcp_port, reuse_address=True
            )
            if device.profile.http:
                self._http = HttpDeviceServer(
                    self.dispatcher, device, routes_for(device.profile), self._record_error
                )
                self._http_server = await loop.create_server(
                    self._http.protocol_factory, self.host, self._http_port, reuse_address=True
                )
        except OSError:
            await self._close_listeners()
            raise
        self.setup_complete.clear()
        log.info(
            "access point %s up: tcp %s, http %s",
            self.ssid,
            self._tcp_port_str(),
            self._http_port_str(),
        )

    async def _close_listeners(self) -> None:
        for server in (self._http_server, self._tcp_server):
            if server is not None:
                server.close()
        for holder in (self._http, self._tcp):
            if holder is not None:
                holder.close_all()
        for server in (self._http_server, self._tcp_server):
            if server is not None:
                await server.wait_closed()
        self._http_server = None
        self._tcp_server = None

    async def close(self) -> None:
        """Stop both listeners and drop every connection. Idempotent."""
        if not self._started:
            return
        self._started = False
        await self._close_listeners()

    # -- effects -------------------------------------------------------------------
    def _on_effect(self, effect: DeviceEffect) -> None:
        if isinstance(effect, DctChanged):
            if self._store is not None:
                self._store.save(self.device.dct)
        elif isinstance(effect, SoftApShutdown):
            # the reply is written by the caller right after dispatch returns; the
            # system thread takes the AP down just after (§4.5)
            asyncio.get_running_loop().call_soon(self._schedule_ap_down)

    def _schedule_ap_down(self) -> None:
        task = asyncio.get_running_loop().create_task(self._ap_down())
        task.add_done_callback(self._task_done)

    async def _ap_down(self) -> None:
        await self._close_listeners()
        log.info("setup complete: access point %s down", self.ssid)
        self.setup_complete.set()

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self._record_error(task.exception())  # type: ignore[arg-type]

    def _record_error(self, err: BaseException) -> None:
        self._errors.append(err)

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
        return self._tcp_server is not None

    def _port(self, server: asyncio.Server | None, what: str) -> int:
        if server is None:
            raise LifecycleError(f"the {what} listener is not running")
        sock = server.sockets[0]
        return int(sock.getsockname()[1])

    def _tcp_port_str(self) -> str:
        return str(self._port(self._tcp_server, "TCP"))

    def _http_port_str(self) -> str:
        return str(self._port(self._http_server, "HTTP")) if self._http_server else "off"

    @property
    def tcp_address(self) -> tuple[str, int]:
        return self.host, self._port(self._tcp_server, "TCP")

    @property
    def http_address(self) -> tuple[str, int]:
        return self.host, self._port(self._http_server, "HTTP")

    @property
    def http_url(self) -> str:
        host, port = self.http_address
        return f"http://{host}:{port}"

    def url_for(self, path: str) -> str:
        return self.http_url + (path if path.startswith("/") else "/" + path)
