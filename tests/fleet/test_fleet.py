"""Fleets: many devices in one process, their key pool and the live view.

Small fleets (5-12 devices) on their own loopback addresses with one port chosen free
(Linux: all of 127/8 is loopback), and the port-offset fallback on 127.0.0.1; each
device answers device-id with its own id over TCP and HTTP; one claims through the
cloud path over raw TCP. Keys come from a pool filled once per module.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric import padding

from firmware_model import DeviceState, RadioEnvironment
from softap_sim import SimConfig
from softap_sim.cloud.service import CloudService
from softap_sim.errors import ConfigError, SimulatorError
from softap_sim.fleet import (
    DEVICES_DIR,
    Fleet,
    FleetScenario,
    choose_listeners,
    device_address,
    load_fleet_scenario,
    loopback_aliases_work,
    plan_addresses,
)
from softap_sim.fleet.cli import add_parser, fleet_main
from softap_sim.keypool import KeyPool, load_pool_key
from softap_sim.listeners import shared_ports_supported
from softap_sim.live_view import LiveView
from softap_sim.protocol.client import decode_http_reply
from softap_sim.scenario import load_scenario
from tests import paths
from tests.wire import read_http_response, tcp_exchange

pytestmark = pytest.mark.timeout(60)

ALIASES = loopback_aliases_work("127.0.1.1")
needs_aliases = pytest.mark.skipif(
    not ALIASES, reason="no extra loopback addresses here (macOS without lo0 aliases)"
)
HOME: dict[str, Any] = {
    "ssid": "HomeNet",
    "security": "wpa2_aes",
    "channel": 6,
    "rssi": -48,
    "password": "home-wifi-password",
}
WPA2_AES = 0x00400004
POOL_KEYS = 60


@pytest.fixture(scope="module")
def pool_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A key pool filled once for the module (fleets take from it)."""
    directory = tmp_path_factory.mktemp("keypool")
    KeyPool(directory).fill(POOL_KEYS)
    return directory


@pytest_asyncio.fixture
async def cloud() -> AsyncIterator[CloudService]:
    service = CloudService(None)
    await service.open()
    await service.serve_devices("127.0.0.1", 0)
    try:
        yield service
    finally:
        await service.close()


def free_port_on(hosts: list[str]) -> int:
    """A port free on every one of ``hosts`` (tried a few times)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        socks = []
        try:
            for host in hosts:
                s = socket.socket()
                socks.append(s)
                s.bind((host, port))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        return port
    raise RuntimeError("no common free port")


async def device_id_tcp(addr: tuple[str, int]) -> str:
    reply = await tcp_exchange(addr, b"device-id\n0\n\n")
    assert reply.startswith(b"\n\n")
    return str(json.loads(reply[2:])["id"])


async def device_id_http(addr: tuple[str, int]) -> str:
    reader, writer = await asyncio.open_connection(*addr)
    try:
        writer.write(b"GET /device-id HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        response = await read_http_response(reader)
    finally:
        writer.close()
        await writer.wait_closed()
    assert response.startswith(b"HTTP/1.1 200")
    return str(decode_http_reply(response, "device-id")["id"])


async def registered_ids(cloud: CloudService) -> set[str]:
    rows = await cloud.db.run(lambda conn: conn.execute("SELECT id FROM devices").fetchall())
    return {str(r[0]) for r in rows}


# -- addresses ----------------------------------------------------------------------------
def test_addresses_skip_the_network_and_broadcast_values() -> None:
    assert device_address("127.0.{hi}.{lo}", 0) == "127.0.1.1"
    assert device_address("127.0.{hi}.{lo}", 253) == "127.0.1.254"
    assert device_address("127.0.{hi}.{lo}", 254) == "127.0.2.1"
    assert device_address("127.0.{hi}.{lo}", 9999) == "127.0.40.94"
    with pytest.raises(ConfigError, match="not an IP address"):
        device_address("127.0.{hi}.{lo}", 255 * 254)
    with pytest.raises(ConfigError, match="bad host pattern"):
        device_address("127.0.{x}.1", 0)


def test_port_offset_plan_and_its_errors() -> None:
    mode, places = plan_addresses(3, mode="port-offset")
    assert mode == "port-offset"
    assert [(p.host, p.tcp_port, p.http_port) for p in places] == [
        ("127.0.0.1", 5609, 8080),
        ("127.0.0.1", 5610, 8081),
        ("127.0.0.1", 5611, 8082),
    ]
    with pytest.raises(ConfigError, match="overlap"):
        plan_addresses(3000, mode="port-offset")
    with pytest.raises(ConfigError, match="65535"):
        plan_addresses(100, mode="port-offset", tcp_port=65500, http_port=1000)
    _mode, free = plan_addresses(3000, mode="port-offset", tcp_port=0, http_port=0)
    assert {(p.tcp_port, p.http_port) for p in free} == {(0, 0)}
    with pytest.raises(ConfigError, match="same address"):
        plan_addresses(3, mode="loopback", host_pattern="127.0.1.{hi}")


def test_auto_falls_back_to_port_offsets_without_loopback_aliases(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("softap_sim.fleet.addresses.loopback_aliases_work", lambda host: False)
    mode, places = plan_addresses(2)
    assert mode == "port-offset"
    assert [p.tcp_port for p in places] == [5609, 5610]
    with pytest.raises(ConfigError, match="no such loopback address"):
        plan_addresses(2, mode="loopback")


# -- fleets -------------------------------------------------------------------------------
@needs_aliases
@pytest.mark.asyncio
async def test_loopback_fleet_each_device_its_own_address_id_ssid_and_key(
    pool_dir: Path, cloud: CloudService
) -> None:
    count = 12
    hosts = [device_address("127.0.{hi}.{lo}", i) for i in range(count)]
    tcp_port, http_port = free_port_on(hosts), free_port_on(hosts)
    async with Fleet(
        count, cloud=cloud, key_pool=KeyPool(pool_dir), tcp_port=tcp_port, http_port=http_port
    ) as fleet:
        assert fleet.mode == "loopback"
        assert [d.host for d in fleet] == hosts
        ids = []
        for device in fleet:
            emu = device.emulator
            assert emu.tcp_address == (device.host, tcp_port)  # the same port everywhere
            assert emu.http_address == (device.host, http_port)
            assert await device_id_tcp(emu.tcp_address) == device.device_id
            assert await device_id_http(emu.http_address) == device.device_id
            assert emu.config.cloud_endpoint is not None
            ids.append(device.device_id)
        assert len(set(ids)) == count
        assert len({d.ssid for d in fleet}) == count
        assert len({d.emulator.device.key.public_key_pem for d in fleet}) == count
        assert fleet.report.keys_from_pool == count
        assert fleet.report.keys_generated == 0
        assert await registered_ids(cloud) == {i.lower() for i in ids}
        fleet.check()


SHARED = shared_ports_supported()
needs_shared = pytest.mark.skipif(SHARED is not None, reason=SHARED or "")


async def reset_on_connect(addr: tuple[str, int], request: bytes) -> bool:
    """Whether the connection is reset before any reply (what shared ports do for a
    device that is not listening)."""
    reader, writer = await asyncio.open_connection(*addr)
    try:
        writer.write(request)
        await asyncio.wait_for(reader.read(), 5)
    except ConnectionResetError:
        return True
    finally:
        writer.close()
    return False


@needs_aliases
@needs_shared
@pytest.mark.asyncio
async def test_shared_listeners_route_each_connection_to_the_address_dialled(
    pool_dir: Path, cloud: CloudService
) -> None:
    async with Fleet(
        6,
        cloud=cloud,
        key_pool=KeyPool(pool_dir),
        listeners="shared",
        tcp_port=0,
        http_port=0,
    ) as fleet:
        assert fleet.listeners == fleet.report.listeners == "shared"
        ports = {d.emulator.tcp_address[1] for d in fleet}
        assert len(ports) == 1  # one socket, every address
        assert {d.emulator.http_address[1] for d in fleet} != ports
        for device in fleet:
            emu = device.emulator
            assert emu.tcp_address[0] == device.host
            assert await device_id_tcp(emu.tcp_address) == device.device_id
            assert await device_id_http(emu.http_address) == device.device_id
        (port,) = ports
        # an address no device owns: reset, not served by anyone
        assert await reset_on_connect(("127.0.200.1", port), b"device-id\n0\n\n")
        # a device whose AP is down resets; its neighbours keep answering
        off, other = fleet[2].emulator, fleet[3].emulator
        off.control.power("off")
        await off.settle()
        assert not off.tcp_listening
        assert await reset_on_connect(off.tcp_address, b"device-id\n0\n\n")
        assert await reset_on_connect(off.http_address, b"GET /device-id HTTP/1.1\r\n\r\n")
        assert await device_id_tcp(other.tcp_address) == fleet[3].device_id
        off.control.power("on")
        await off.wait_for_state(DeviceState.LISTENING)
        await off.settle()
        assert await device_id_tcp(off.tcp_address) == fleet[2].device_id
        fleet.check()
    with socket.socket() as again:  # the shared socket is gone with the fleet
        again.bind(("127.0.0.1", port))


@needs_aliases
@needs_shared
@pytest.mark.asyncio
async def test_a_shared_port_taken_on_any_loopback_address_is_one_clear_error(
    pool_dir: Path,
) -> None:
    with socket.socket() as blocker:  # e.g. 'softap-sim run' on 127.0.0.1
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        port = blocker.getsockname()[1]
        fleet = Fleet(2, key_pool=KeyPool(pool_dir), listeners="shared", tcp_port=port, http_port=0)
        with pytest.raises(SimulatorError, match=r"every loopback address .* in use"):
            await fleet.start()
    assert not any(d.emulator.tcp_listening for d in fleet)


def test_listener_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("softap_sim.fleet.addresses.nofile_hard_limit", lambda: 20_000)
    assert choose_listeners("auto", "loopback", 10) == "per-device"
    assert choose_listeners("per-device", "loopback", 10) == "per-device"
    assert choose_listeners("auto", "port-offset", 10) == "per-device"
    with pytest.raises(ConfigError, match="not port offsets"):
        choose_listeners("shared", "port-offset", 10)
    if SHARED is None:
        assert choose_listeners("auto", "loopback", 10_000) == "shared"  # 20,000 + reserve
        assert choose_listeners("shared", "loopback", 10) == "shared"
    else:
        with pytest.raises(ConfigError):
            choose_listeners("shared", "loopback", 10)
    with pytest.raises(ConfigError, match="listeners must be"):
        Fleet(1, listeners="both")


@needs_aliases
@needs_shared
@pytest.mark.asyncio
async def test_auto_takes_shared_listeners_when_descriptors_run_short(
    pool_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("softap_sim.fleet.addresses.nofile_hard_limit", lambda: 1000)
    async with Fleet(3, key_pool=KeyPool(pool_dir), tcp_port=0, http_port=0) as fleet:
        assert fleet.listeners == "shared"
        for device in fleet:
            assert await device_id_tcp(device.emulator.tcp_address) == device.device_id


@pytest.mark.asyncio
async def test_port_offset_fleet_on_one_address(pool_dir: Path) -> None:
    async with Fleet(
        5, address_mode="port-offset", key_pool=KeyPool(pool_dir), tcp_port=0, http_port=0
    ) as fleet:
        assert fleet.mode == "port-offset"
        tcp_ports = {d.emulator.tcp_address for d in fleet}
        assert {h for h, _p in tcp_ports} == {"127.0.0.1"}
        assert len(tcp_ports) == 5
        for device in fleet:
            assert await device_id_tcp(device.emulator.tcp_address) == device.device_id
            assert await device_id_http(device.emulator.http_address) == device.device_id


@pytest.mark.asyncio
async def test_a_taken_port_is_one_clear_error_and_nothing_stays_open(pool_dir: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        port = blocker.getsockname()[1]
        fleet = Fleet(
            2,
            address_mode="port-offset",
            key_pool=KeyPool(pool_dir),
            tcp_port=port,
            http_port=0,
        )
        with pytest.raises(SimulatorError, match=r"device 0: a port is already in use"):
            await fleet.start()
    for device in fleet:
        assert not device.emulator.tcp_listening


@pytest.mark.asyncio
async def test_one_device_claims_through_the_cloud_over_raw_tcp(
    pool_dir: Path, cloud: CloudService
) -> None:
    base = SimConfig(radio=RadioEnvironment.from_list([HOME]))
    created = cloud.created_credentials
    assert created is not None
    product_id, client_id = int(created["product"]["id"]), str(created["client"]["id"])
    _customer, tokens = await cloud.backend.create_customer_with_token(
        product_id, client_id, "fleet@example.com", None
    )
    principal = await cloud.backend.principal_for(tokens["access_token"])
    code, _ids = await cloud.backend.create_claim_code(principal, product_id)
    confirmed: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def on_event(event: dict[str, Any]) -> None:
        if event["name"] == "spark/device/claim/confirm" and not confirmed.done():
            confirmed.set_result(str(event["coreid"]))

    cloud.backend.subscribers.add(on_event)
    async with Fleet(
        5,
        base_config=base,
        cloud=cloud,
        key_pool=KeyPool(pool_dir),
        address_mode="port-offset",
        tcp_port=0,
        http_port=0,
    ) as fleet:
        device = fleet[3]
        emu = device.emulator
        body = json.dumps({"k": "cc", "v": code}).encode()
        assert await tcp_exchange(emu.tcp_address, b"set\n%d\n\n%s" % (len(body), body)) == (
            b'\n\n{"r":0}'
        )
        pwd = emu.device.key.crypto_key.public_key().encrypt(
            HOME["password"].encode(), padding.PKCS1v15()
        )
        conf = json.dumps(
            {"idx": 0, "ssid": HOME["ssid"], "sec": WPA2_AES, "ch": 6, "pwd": pwd.hex()}
        ).encode()
        reply = await tcp_exchange(emu.tcp_address, b"configure-ap\n%d\n\n%s" % (len(conf), conf))
        assert reply == b'\n\n{"r":0}'
        reply = await tcp_exchange(emu.tcp_address, b'connect-ap\n9\n\n{"idx":0}')
        assert reply == b'\n\n{"r":0}'
        assert await asyncio.wait_for(confirmed, 20) == device.device_id.lower()
        await emu.wait_for_state(DeviceState.ONLINE)
        for _ in range(100):  # the confirm reaches the device right after it is published
            if emu.device.dct.claimed:
                break
            await asyncio.sleep(0.02)
        assert emu.device.dct.claimed
        assert [d.emulator.device.dct.claimed for d in fleet] == [False, False, False, True, False]
        fleet.check()
    cloud.backend.subscribers.discard(on_event)


@pytest.mark.asyncio
async def test_state_dir_devices_persist_and_restart_without_keys(
    pool_dir: Path, tmp_path: Path
) -> None:
    pool = KeyPool(pool_dir)
    async with Fleet(
        3, state_dir=tmp_path, key_pool=pool, address_mode="port-offset", tcp_port=0, http_port=0
    ) as fleet:
        first = [(d.device_id, d.ssid) for d in fleet]
        assert fleet.report.created == 3
    for i in range(3):
        directory = tmp_path / DEVICES_DIR / str(i)
        assert (directory / "device.json").is_file()
        assert (directory / "device_key.pem").stat().st_mode & 0o777 == 0o600
    available = pool.available()
    async with Fleet(
        4, state_dir=tmp_path, key_pool=pool, address_mode="port-offset", tcp_port=0, http_port=0
    ) as fleet:
        assert [(d.device_id, d.ssid) for d in fleet][:3] == first
        assert fleet.report.created == 1  # only device 3 is new
        assert fleet.report.keys_from_pool == 1
    assert pool.available() == available - 1


@pytest.mark.asyncio
async def test_a_fleet_wide_seed_still_gives_distinct_reproducible_devices(pool_dir: Path) -> None:
    base = SimConfig(seed=7)
    async with Fleet(
        4, base_config=base, key_pool=KeyPool(pool_dir), address_mode="port-offset",
        tcp_port=0, http_port=0,
    ) as fleet:  # fmt: skip
        first = [d.device_id for d in fleet]
    async with Fleet(
        4, base_config=base, key_pool=KeyPool(pool_dir), address_mode="port-offset",
        tcp_port=0, http_port=0,
    ) as fleet:  # fmt: skip
        assert [d.device_id for d in fleet] == first
    assert len(set(first)) == 4


# -- per-device scenario overrides ----------------------------------------------------------
FLEET_TOML = """
name = "mixed"
[device]
ssid_prefix = "Fleet"

[[devices]]
index = 2
[devices.device]
ssid_prefix = "Odd"
[[devices.fault]]
kind = "no-reply"
command = "device-id"

[[devices]]
range = [3, 4]
scenario = "low-memory"
"""


@pytest.mark.asyncio
async def test_scenario_overrides_apply_to_the_right_devices(
    pool_dir: Path, tmp_path: Path
) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(FLEET_TOML)
    scenario = load_fleet_scenario(str(path))
    low = load_scenario("low-memory").apply(SimConfig())
    async with Fleet(
        6,
        base_config=scenario.apply(SimConfig()),
        scenario=scenario,
        key_pool=KeyPool(pool_dir),
        address_mode="port-offset",
        tcp_port=0,
        http_port=0,
    ) as fleet:
        prefixes = [d.ssid.split("-")[0] for d in fleet]
        assert prefixes == ["Fleet", "Fleet", "Odd", "Fleet", "Fleet", "Fleet"]
        assert [d.emulator.config.scenario for d in fleet] == [
            "mixed",
            "mixed",
            "mixed",
            "low-memory",
            "low-memory",
            "mixed",
        ]
        assert [d.emulator.config.app_ram_bytes for d in fleet][3:5] == [low.app_ram_bytes] * 2
        assert fleet[5].emulator.config.app_ram_bytes == 0
        # device 2 never answers device-id (its no-reply fault); device 1 does
        assert await device_id_tcp(fleet[1].emulator.tcp_address) == fleet[1].device_id
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(
                tcp_exchange(fleet[2].emulator.tcp_address, b"device-id\n0\n\n"), 0.3
            )


def test_fleet_scenario_errors_are_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[[devices]]\nindex = "two"\n')
    with pytest.raises(ConfigError, match=r"\[\[devices\]\] #1: 'index' must be") as err:
        load_fleet_scenario(str(path))
    assert "\n" not in str(err.value)
    path.write_text("[[devices]]\nindex = 1\ncolour = 3\n")
    with pytest.raises(ConfigError, match="unknown key 'colour'"):
        load_fleet_scenario(str(path))
    path.write_text("[[devices]]\nindex = 1\n[devices.memory]\napp_ram_bytes = -1\n")
    with pytest.raises(ConfigError, match="app_ram_bytes"):
        load_fleet_scenario(str(path))
    path.write_text("[[devices]]\nindex = 9\n[devices.device]\nseed = 1\n")
    with pytest.raises(ConfigError, match="overrides device 9"):
        Fleet(3, scenario=load_fleet_scenario(str(path)))
    assert load_fleet_scenario("low-memory").base is not None  # a shipped name still works
    assert FleetScenario().config_for(0, SimConfig()) == SimConfig()


# -- the key pool ---------------------------------------------------------------------------
def _fingerprints(pems: list[bytes]) -> list[str]:
    return [hashlib.sha256(p).hexdigest() for p in pems]


_CHILD_TAKER = """
import hashlib, sys
from pathlib import Path
from softap_sim.keypool import KeyPool
sys.stdin.readline()  # start together with the parent's takers
for pem in KeyPool(Path(sys.argv[1])).take(int(sys.argv[2])):
    print(hashlib.sha256(pem).hexdigest())
"""


def test_two_pools_on_one_directory_and_another_process_never_share_a_key(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "pool"
    KeyPool(directory).fill(30)
    a, b = KeyPool(directory), KeyPool(directory)
    assert a.available() == b.available() == 30
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD_TAKER, str(directory), "12"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=paths.REPO,
    )
    got: dict[str, list[bytes]] = {}
    barrier = threading.Barrier(2)

    def taker(name: str, pool: KeyPool) -> None:
        barrier.wait()
        got[name] = pool.take(12)

    threads = [threading.Thread(target=taker, args=(n, p)) for n, p in (("a", a), ("b", b))]
    assert child.stdin is not None
    child.stdin.write("go\n")
    child.stdin.flush()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out, _ = child.communicate(timeout=30)
    taken = _fingerprints(got["a"]) + _fingerprints(got["b"]) + out.split()
    assert len(taken) == 30  # 36 asked for, 30 existed: every key went to exactly one taker
    assert len(set(taken)) == 30
    assert a.available() == 0
    assert a.take(1) == []
    assert [p.name for p in directory.iterdir() if not p.name.startswith(".fill")] == []


def test_pool_files_are_private_and_broken_ones_are_discarded(tmp_path: Path) -> None:
    pool = KeyPool(tmp_path / "pool")
    pool.fill(2)
    assert pool.directory.stat().st_mode & 0o777 == 0o700
    for path in pool.directory.glob("rsa1024-*.pem"):
        assert path.stat().st_mode & 0o777 == 0o600
    (pool.directory / f"rsa1024-{'0' * 32}.pem").write_bytes(b"-----BEGIN PRIVATE KEY-----\nAB")
    keys = pool.take_keys(5)
    assert len(keys) == 2
    assert all(k.bits == 1024 for k in keys)
    with pytest.raises(ValueError, match="RSA-1024"):
        load_pool_key(keys[0].to_pem(), 2048)


def test_obtain_takes_what_there_is_and_generates_the_rest(tmp_path: Path) -> None:
    pool = KeyPool(tmp_path / "pool")
    pool.fill(2)
    keys, generated = pool.obtain_sync(5)
    assert (len(keys), generated) == (5, 3)
    assert len({k.public_key_pem for k in keys}) == 5
    assert pool.available() == 0


@pytest.mark.asyncio
async def test_background_fill_uses_niced_workers_and_skips_while_another_fills(
    tmp_path: Path,
) -> None:
    pool = KeyPool(tmp_path / "pool")
    fill = pool.fill_in_background(6)
    assert await asyncio.wait_for(fill.wait(), 30) == 6
    assert fill.error is None
    assert pool.available() == 6
    with pool._fill_lock(wait=True):  # another filler holds the lock
        assert pool.fill(10, wait=False) == 0
    assert pool.available() == 6


# -- the live view --------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_live_view_plain_lines_and_rich_rendering(pool_dir: Path) -> None:
    from rich.console import Console

    out = io.StringIO()
    view = LiveView(stream=out, recent=5)
    assert view.plain  # a StringIO is not a terminal
    fleet = Fleet(
        3, key_pool=KeyPool(pool_dir), address_mode="port-offset", tcp_port=0, http_port=0
    )
    view.attach_fleet(fleet)
    async with fleet:
        lines = out.getvalue().splitlines()
        assert len(lines) == 6  # off -> booting -> listening, per device
        assert all("booting -> listening" in ln for ln in lines[1::2])
        assert {ln.split("] ")[1].split()[0] for ln in lines} == {"#0", "#1", "#2"}
        assert fleet[1].ssid in lines[2] + lines[3]
        await device_id_tcp(fleet[1].emulator.tcp_address)
        view.poll()
        assert view.devices[1].last_command == "tcp device-id"
        assert view.summary()["states"] == {"listening": 3}
        assert view.summary()["served"] == 1
        fleet[1].emulator.control.listen()  # a state change: its line names the command
        await fleet[1].emulator.settle()
        buf = io.StringIO()
        Console(file=buf, width=200).print(view.render(height=30))
        text = buf.getvalue()
        assert "3 devices" in text
        assert "most recent changes" in text
        assert "tcp device-id" in text
    assert len(out.getvalue().splitlines()) == 6  # commands alone print nothing


# -- the command line -----------------------------------------------------------------------
def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="softap-sim")
    add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_cli_fill_pool_only_and_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _parse(["fleet", "--fill-pool", "3", "--key-pool", str(tmp_path / "kp")])
    assert args.fleet_func(args) == 0
    assert "3 keys ready" in capsys.readouterr().out
    assert KeyPool(tmp_path / "kp").available() == 3
    args = _parse(["fleet"])
    assert fleet_main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("softap-sim: error: give --count N")
    assert err.count("\n") == 1
    args = _parse(
        ["fleet", "-n", "3", "--scenario", "no-such-scenario", "--key-pool", str(tmp_path)]
    )
    assert fleet_main(args) == 1
    assert "unknown scenario 'no-such-scenario'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _parse(["fleet", "--count", "0"])
    with pytest.raises(SystemExit) as done:
        _parse(["fleet", "--help"])
    assert done.value.code == 0
    assert "lo = 1 + i % 254" in " ".join(capsys.readouterr().out.split())
