"""The mission's whole flow with real npm clients only (issue: device <-> cloud).

particle-api-js (the app's server and the app) creates a shadow customer through a
two-legged client, mints a customer token and a product claim code; @particle/softap-setup
(the app) reads device-id, sends the claim code and the encrypted Wi-Fi password and calls
connect-ap; the emulated device joins the simulated network, connects to the cloud over the
Photon protocol (TCP 5683), publishes its claim code and is claimed; the customer sees it
online and calls its function and reads its variable. Waiting is event-driven and bounded.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from firmware_model import DeviceKey, DeviceState, RadioEnvironment
from softap_sim import DeviceEmulator, SimConfig
from softap_sim.cloud.service import CloudService
from tests import paths
from tests.cloud import test_particle_api_js as api
from tests.conformance.test_real_clients import run_driver

CLIENTS = paths.CLIENTS
pytestmark = [
    pytest.mark.skipif(
        not (CLIENTS / "node_modules" / "particle-api-js").is_dir()
        or not (CLIENTS / "node_modules" / "@particle" / "softap-setup").is_dir()
        or shutil.which("node") is None,
        reason="the pinned npm clients are missing: run 'npm ci' in tests/clients "
        "(scripts/test.sh does it first)",
    ),
    pytest.mark.asyncio,
    pytest.mark.timeout(120),
]

HOME = {
    "ssid": "HomeNet",
    "security": "wpa2_aes",
    "channel": 6,
    "rssi": -48,
    "password": "home-wifi-password",
}


class Clock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


@dataclass
class World:
    service: CloudService
    clock: Clock
    config: SimConfig
    env: Any  # what tests.cloud.test_particle_api_js.drive needs: url, two_legged
    product: str


@pytest_asyncio.fixture
async def world(device_key: DeviceKey) -> AsyncIterator[World]:
    clock = Clock()
    service = CloudService(None, now=clock)
    await service.open()
    creds = service.created_credentials
    assert creds is not None
    server = await service.serve("127.0.0.1", 0)
    devserver = await service.serve_devices("127.0.0.1", 0)
    config = SimConfig(
        radio=RadioEnvironment.from_list([HOME]),
        key=device_key,
        cloud_endpoint=("127.0.0.1", devserver.port),
        server_public_key_pem=service.server_public_key_pem,
    )
    env = _Env(
        server.url,
        api.Client(creds["client"]["id"], creds["client"]["secret"]),
        creds["product"]["slug"],
    )
    try:
        yield World(service, clock, config, env, creds["product"]["slug"])
    finally:
        await service.close()


@dataclass
class _Env:
    url: str
    two_legged: Any
    product: str


async def register(world: World, emu: DeviceEmulator) -> None:
    device = emu.device
    await world.service.register_device(
        device.dct.identity.device_id_hex, device.key.public_key_pem.decode("ascii")
    )


def events_named(world: World, name: str) -> asyncio.Future[dict[str, Any]]:
    """A future resolved by the first cloud event called ``name`` (no polling)."""
    fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    def on_event(event: dict[str, Any]) -> None:
        if event["name"] == name and not fut.done():
            fut.set_result(event)

    world.service.backend.subscribers.add(on_event)
    fut.add_done_callback(lambda _f: world.service.backend.subscribers.discard(on_event))
    return fut


async def customer_and_claim_code(
    world: World, email: str, product: str | None = None
) -> tuple[str, str]:
    env = world.env if product is None else replace(world.env, product=product)
    steps = [
        *api.customer_token_steps(env, email, "c"),
        {
            "op": "getClaimCode",
            "id": "claim",
            "product": env.product,
            "auth": "{{c_token.body.access_token}}",
        },
    ]
    results = await api.drive(env, steps)
    assert results["c_create"]["statusCode"] == 201, results
    token = results["c_token"]["body"]["access_token"]
    code = results["claim"]["body"]["claim_code"]
    assert len(code) == 63
    return token, code


async def softap_setup(
    emu: DeviceEmulator, node: str, code: str, password: str, steps: list[str] | None = None
) -> dict[str, Any]:
    host, port = emu.tcp_address
    return await run_driver(
        node,
        {
            "lib": "particle-4.1.2",
            "protocol": "tcp",
            "host": host,
            "port": port,
            "ssid": HOME["ssid"],
            "password": password,
            "security": "wpa2_aes",
            "channel": 6,
            "claimCode": code,
            **({"steps": steps} if steps else {}),
        },
    )


async def api_calls(world: World, token: str, device_id: str) -> dict[str, dict[str, Any]]:
    return await api.drive(
        world.env,
        [
            {"op": "listDevices", "id": "list", "auth": token},
            {
                "op": "callFunction",
                "id": "call",
                "deviceId": device_id,
                "name": "lightsOn",
                "argument": "livingRoom",
                "auth": token,
            },
            {
                "op": "getVariable",
                "id": "var",
                "deviceId": device_id,
                "name": "temperature",
                "auth": token,
            },
        ],
    )


@pytest.fixture(scope="module")
def node() -> str:
    path = shutil.which("node")
    assert path is not None
    return path


async def test_two_legged_flow_claims_the_device_and_reaches_it(world: World, node: str) -> None:
    token, code = await customer_and_claim_code(world, "owner@example.com")
    confirmed = events_named(world, "spark/device/claim/confirm")
    emu = DeviceEmulator(world.config, before_power_on=lambda e: register(world, e))
    async with emu:
        device_id = emu.device.dct.identity.device_id_hex.lower()
        report = await softap_setup(emu, node, code, HOME["password"])
        assert report["ok"], report
        assert report["steps"]["deviceInfo"]["result"] == {"id": device_id, "claimed": False}
        assert report["steps"]["configure"]["result"] == {"r": 0}
        await asyncio.wait_for(confirmed, 20)
        await emu.wait_for_state(DeviceState.ONLINE)
        assert world.service.device_server is not None
        await world.service.device_server.wait_ready(device_id)
        assert emu.device.dct.claimed  # "c":"1" from now on, persisted in the DCT
        assert emu.device.dct.claim_code == b""
        results = await api_calls(world, token, device_id)
        listed = results["list"]["body"]
        assert [(d["id"], d["online"]) for d in listed] == [(device_id, True)]
        assert set(listed[0]["functions"]) >= {"lightsOn"}
        assert listed[0]["variables"]["temperature"] == "double"
        assert results["call"]["body"]["return_value"] == 1
        assert results["call"]["body"]["connected"] is True
        assert results["var"]["body"]["result"] == 21.5
        # a new SoftAP session after re-entering listening mode reports c = "1"
        emu.control.listen()
        await emu.settle()
        report = await softap_setup(emu, node, code, HOME["password"], steps=["deviceInfo"])
        assert report["steps"]["deviceInfo"]["result"] == {"id": device_id, "claimed": True}
        emu.check()


async def test_simple_auth_flow(world: World, node: str, tmp_path: Path) -> None:
    from softap_sim.cloud import models

    def make_client(conn: Any) -> tuple[dict[str, Any], str]:
        product = conn.execute("SELECT id FROM products").fetchone()["id"]
        return models.clients.create_preset_client(
            conn, "simple-auth-mobile", name="App", product_id=product, now=world.clock()
        )

    client_row, secret = await world.service.db.run(make_client)
    simple = api.Client(client_row["id"], secret)
    results = await api.drive(
        world.env,
        [
            {
                "op": "createCustomer",
                "id": "create",
                "email": "app-user@example.com",
                "password": "a-good-password",
                "product": world.product,
            },
            {
                "op": "getClaimCode",
                "id": "claim",
                "product": world.product,
                "auth": "{{create.body.access_token}}",
            },
        ],
        client=simple,
    )
    token = results["create"]["body"]["access_token"]
    code = results["claim"]["body"]["claim_code"]
    confirmed = events_named(world, "spark/device/claim/confirm")
    config = replace(world.config, state_dir=tmp_path / "device")
    async with DeviceEmulator(config, before_power_on=lambda e: register(world, e)) as emu:
        device_id = emu.device.dct.identity.device_id_hex.lower()
        report = await softap_setup(emu, node, code, HOME["password"])
        assert report["ok"], report
        await asyncio.wait_for(confirmed, 20)
        await emu.wait_for_state(DeviceState.ONLINE)
        results = await api.drive(
            world.env, [{"op": "listDevices", "id": "list", "auth": token}], client=simple
        )
        assert [d["id"] for d in results["list"]["body"]] == [device_id]
    # claimed survives a restart of the device (persisted)
    async with DeviceEmulator(config, before_power_on=lambda e: register(world, e)) as emu:
        assert emu.device.dct.claimed


async def test_expired_claim_code_does_not_claim(world: World, node: str) -> None:
    token, code = await customer_and_claim_code(world, "late@example.com")
    world.clock.t += 3601  # the code is valid for one hour
    async with DeviceEmulator(world.config, before_power_on=lambda e: register(world, e)) as emu:
        device_id = emu.device.dct.identity.device_id_hex.lower()
        report = await softap_setup(emu, node, code, HOME["password"])
        assert report["ok"], report
        await emu.wait_for_state(DeviceState.ONLINE)
        assert world.service.device_server is not None
        await world.service.device_server.wait_ready(device_id)
        assert not emu.device.dct.claimed
        results = await api.drive(world.env, [{"op": "listDevices", "id": "list", "auth": token}])
        assert results["list"]["body"] == []  # the app sees it not claimed


async def test_other_products_customer_cannot_see_the_device(world: World, node: str) -> None:
    from softap_sim.cloud import models

    def other(conn: Any) -> dict[str, Any]:
        user = conn.execute("SELECT id FROM users").fetchone()["id"]
        product = models.accounts.create_product(conn, "Other", "other", user, world.clock())
        row, secret = models.clients.create_preset_client(
            conn, "two-legged", name="Other server", product_id=product["id"], now=world.clock()
        )
        return {"slug": product["slug"], "client": api.Client(row["id"], secret)}

    o = await world.service.db.run(other)
    other_env = _Env(world.env.url, o["client"], o["slug"])
    other_token, other_code = await customer_and_claim_code(
        World(world.service, world.clock, world.config, other_env, o["slug"]), "x@example.com"
    )
    token, _code = await customer_and_claim_code(world, "me@example.com")
    async with DeviceEmulator(world.config, before_power_on=lambda e: register(world, e)) as emu:
        device_id = emu.device.dct.identity.device_id_hex.lower()
        confirmed = events_named(world, "spark/device/claim/confirm")
        report = await softap_setup(emu, node, other_code, HOME["password"])
        assert report["ok"], report
        await asyncio.wait_for(confirmed, 20)
        results = await api.drive(
            world.env,
            [
                {"op": "listDevices", "id": "list", "auth": token},
                {"op": "getDevice", "id": "get", "deviceId": device_id, "auth": token},
            ],
        )
        assert results["list"]["body"] == []
        assert results["get"]["statusCode"] == 403
        theirs = await api.drive(other_env, [{"op": "listDevices", "id": "l", "auth": other_token}])
        assert [d["id"] for d in theirs["l"]["body"]] == [device_id]


async def test_wrong_wifi_password_never_reaches_the_cloud(world: World, node: str) -> None:
    token, code = await customer_and_claim_code(world, "typo@example.com")
    async with DeviceEmulator(world.config, before_power_on=lambda e: register(world, e)) as emu:
        ports = emu.tcp_address
        report = await softap_setup(emu, node, code, "wrong-password-123")
        assert report["ok"], report  # configure says r=0: the password is only tried later
        await asyncio.wait_for(emu.setup_complete.wait(), 10)
        await emu.wait_for_state(DeviceState.LISTENING)  # back in listening mode (§4.5)
        await emu.settle()
        assert emu.tcp_address == ports
        assert emu.device.lifecycle.last_join is not None
        assert emu.device.lifecycle.last_join.outcome.value == "bad_password"
        assert emu.cloud_client is None
        assert not emu.device.dct.claimed
        results = await api.drive(world.env, [{"op": "listDevices", "id": "l", "auth": token}])
        assert results["l"]["body"] == []
        report = await softap_setup(emu, node, code, HOME["password"], steps=["deviceInfo"])
        assert report["steps"]["deviceInfo"]["result"]["claimed"] is False
