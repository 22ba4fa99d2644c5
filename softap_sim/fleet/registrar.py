"""A fleet's cloud registrations, batched: one transaction per wave of device starts.

Every device must be in the cloud's registry before it powers on (it connects at once).
Registering 10,000 devices one by one would be 10,000 transactions; the starts that
happen in the same event-loop turn share one instead.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from softap_sim.errors import SimulatorError

if TYPE_CHECKING:
    from softap_sim.cloud_remote import DeviceCloud
    from softap_sim.emulator import DeviceEmulator


class Registrar:
    """Registers devices in the cloud in batches: one transaction per wave of starts."""

    def __init__(self, cloud: DeviceCloud) -> None:
        self._cloud = cloud
        self._pending: list[tuple[str, str, asyncio.Future[None]]] = []
        self._flushing: asyncio.Task[None] | None = None
        self.registered = 0

    async def register(self, emu: DeviceEmulator) -> None:
        device = emu.device
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(
            (
                device.dct.identity.device_id_hex.lower(),
                device.key.public_key_pem.decode("ascii"),
                fut,
            )
        )
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.get_running_loop().create_task(self._flush())
        await fut

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # let the other starts of this wave queue up
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                results = await self._cloud.register_devices([(d, pem) for d, pem, _f in batch])
            except Exception as err:
                for *_x, fut in batch:
                    if not fut.done():
                        fut.set_exception(
                            SimulatorError(f"cannot register the devices in the cloud: {err}")
                        )
                continue
            for (device_id, _pem, fut), error in zip(batch, results, strict=True):
                if fut.done():
                    continue
                if error is None:
                    self.registered += 1
                    fut.set_result(None)
                else:
                    fut.set_exception(
                        SimulatorError(f"cannot register device {device_id}: {error}")
                    )
