"""The device-protocol session ends with the state that held it (issue 12 item 2).

Before, ``ctl power off`` or ``ctl listen`` left the cloud link up: the REST API listed
the device online and ``lightsOn`` answered 1. Now power off, a reset, entering
listening mode (the station is disconnected when the AP starts, spec §4), SETUP held
3 s, and a Wi-Fi loss (asked for, or the access point gone from the radio) each close
the session: the cloud publishes ``spark/status offline`` at once, lists the device
offline and answers function calls with its offline error. After the next join the
device comes back online.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
import pytest_asyncio

from firmware_model import DeviceKey, DeviceState, ManualClock, TimingProfile
from firmware_model.led import LED_JOINING, LED_LISTENING
from softap_sim import DeviceEmulator
from tests.cloud.test_link_device import HOME, join
from tests.linked import World as LinkedWorld
from tests.linked import linked_cloud

WAIT_S = 10.0


class World(LinkedWorld):
    async def until_online(self) -> None:
        """Let the join and retry timers run until the device is online again."""
        for _ in range(30):
            if self.emu.device.state is DeviceState.ONLINE:
                break
            await self.emu.advance(1.0)
            if self.emu.device.state is DeviceState.CLOUD_CONNECTING:
                await self.emu.wait_for_state(DeviceState.ONLINE, DeviceState.CLOUD_RETRY)
        assert self.emu.device.state is DeviceState.ONLINE
        assert self.service.device_server is not None
        await self.service.device_server.wait_ready(self.device_id)


@pytest_asyncio.fixture
async def world(device_key: DeviceKey) -> AsyncIterator[World]:
    # a second to join: the device comes back when the test moves the clock, so
    # "offline" is observed before the next session, deterministically
    async with linked_cloud() as cloud, aiohttp.ClientSession() as http:
        config = cloud.device_config(device_key, timing=TimingProfile(join_s=1.0))
        async with DeviceEmulator(
            config, clock=ManualClock(), before_power_on=cloud.register
        ) as emu:
            token = await cloud.developer_token(http)
            device_id = emu.device.dct.identity.device_id_hex.lower()
            w = World(cloud.service, emu, cloud.events, http, token, device_id)
            await join(emu)
            await w.until_online()
            status, body = await w.rest("POST", "/v1/devices", json={"id": device_id})
            assert status == 200, body
            yield w
            emu.check()


async def _power_off(w: World) -> Callable[[], Awaitable[None]]:
    w.emu.control.power("off")

    async def back() -> None:
        w.emu.control.power("on")

    return back


async def _reset(w: World) -> Callable[[], Awaitable[None]]:
    w.emu.control.power("cycle")

    async def back() -> None:
        pass  # it boots and joins its stored network by itself

    return back


async def _listen(w: World) -> Callable[[], Awaitable[None]]:
    w.emu.control.listen()
    await w.emu.advance(0.5)
    assert w.emu.device.led == LED_LISTENING

    async def back() -> None:
        w.emu.control.press_button(0.5)  # a tap leaves listening mode

    return back


async def _setup_hold(w: World) -> Callable[[], Awaitable[None]]:
    w.emu.control.press_button(3.0)
    assert w.emu.device.state is DeviceState.LISTENING

    async def back() -> None:
        w.emu.control.press_button(0.5)

    return back


async def _wifi_lost(w: World) -> Callable[[], Awaitable[None]]:
    w.emu.control.wifi_lost()
    assert w.emu.device.led == LED_JOINING

    async def back() -> None:
        pass  # the access point is still there: the next join finds it

    return back


async def _access_point_gone(w: World) -> Callable[[], Awaitable[None]]:
    w.emu.control.set_radio(networks=[])
    assert w.emu.device.state in (DeviceState.JOINING, DeviceState.JOIN_RETRY)

    async def back() -> None:
        w.emu.control.set_radio(networks=[HOME])

    return back


TRIGGERS = {
    "power-off": _power_off,
    "reset": _reset,
    "listening-mode": _listen,
    "setup-held-3s": _setup_hold,
    "wifi-lost": _wifi_lost,
    "access-point-gone": _access_point_gone,
}


@pytest.mark.asyncio
@pytest.mark.parametrize("trigger", list(TRIGGERS))
async def test_session_ends_and_comes_back(world: World, trigger: str) -> None:
    w = world
    status, body = await w.rest("GET", f"/v1/devices/{w.device_id}")
    assert body["online"] is True
    status, body = await w.rest("POST", f"/v1/devices/{w.device_id}/lightsOn", json={"arg": "x"})
    assert status == 200
    assert body["return_value"] == 1

    back = await TRIGGERS[trigger](w)
    await w.events.wait_status("offline", 1)  # at once: the connection was closed
    assert w.emu.cloud_client is None
    assert w.emu.device.state is not DeviceState.ONLINE
    assert w.service.device_server is not None
    assert not w.service.device_server.is_online(w.device_id)
    status, body = await w.rest("GET", f"/v1/devices/{w.device_id}")
    assert status == 200
    assert body["online"] is False
    assert body["connected"] is False
    status, body = await w.rest("POST", f"/v1/devices/{w.device_id}/lightsOn", json={"arg": "x"})
    assert (status, body) == (404, {"ok": False, "error": "Device is offline"})

    await back()
    await w.until_online()
    await w.events.wait_status("online", 2)
    assert w.events.statuses().count("offline") == 1
    status, body = await w.rest("POST", f"/v1/devices/{w.device_id}/lightsOn", json={"arg": "x"})
    assert status == 200
    assert body["return_value"] == 1


@pytest.mark.asyncio
async def test_radio_change_elsewhere_keeps_the_session(world: World) -> None:
    """Another network appearing or going does not touch the one the device is on."""
    w = world
    w.emu.control.set_radio(
        networks=[HOME, {"ssid": "Neighbour", "security": "open", "channel": 11}]
    )
    w.emu.control.set_radio(networks=[HOME])
    assert w.emu.device.state is DeviceState.ONLINE
    assert w.emu.cloud_client is not None
    assert w.events.statuses() == ["online"]
