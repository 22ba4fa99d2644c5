"""Discovery: DNS-SD records (opt-in), ``softap-sim discover`` and the device list fallback.

The fallback list, the record contents and the advertiser's bookkeeping are tested
everywhere, without multicast. The real browse needs multicast, which plain loopback lacks
(no MULTICAST flag): as root the test makes a network namespace whose ``lo`` has multicast
on and a ``224.0.0.0/4`` route, runs this module in it (``ip netns exec NS python -m
tests.transports.test_mdns``; see :func:`_netns_child`) and checks the JSON report. Nothing is sent
outside that namespace. Without root it skips, saying why.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import traceback
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import padding

from firmware_model import (
    FAST,
    AccessPoint,
    DeviceIdentity,
    DeviceKey,
    DeviceState,
    ManualClock,
    RadioEnvironment,
    Secret,
)
from firmware_model import security as sec
from firmware_model.eras import FirmwareEra
from softap_sim import DeviceEmulator, SimConfig, ctl, discover
from softap_sim.mdns_browse import Browser, device_from_service
from softap_sim.protocol.dnssd import (
    LISTENING,
    LISTENING_TYPE,
    OPERATIONAL,
    OPERATIONAL_TYPE,
    ServiceRecord,
)
from softap_sim.registry import DeviceInfo, DeviceRegistry, add_routes, describe
from softap_sim.transports.mdns import (
    Advertiser,
    MdnsError,
    Responder,
    interfaces_for,
    record_addresses,
    records_for,
)
from tests import paths
from tests.wire import tcp_exchange

REPO = paths.REPO
#: this module, run as the child inside the network namespace
CHILD_MODULE = "tests.transports.test_mdns"
DEVICE_ID = "320020001847333531323135"
LOOPBACK = ["127.0.0.1"]
#: bound on every wait in the namespace child (probing + announcing take about 1.5 s)
WAIT_S = 15.0


# -- helpers ---------------------------------------------------------------------------
def _frame(name: str, body: bytes = b"") -> bytes:
    return name.encode() + b"\n" + str(len(body)).encode() + b"\n\n" + body


def _encrypt(key: DeviceKey, plaintext: bytes) -> str:
    return key._key.public_key().encrypt(plaintext, padding.PKCS1v15()).hex()


async def join_guest(emu: DeviceEmulator) -> None:
    """configure-ap + connect-ap over TCP (the spec radio's ``guest``), then ONLINE."""
    body = (
        '{"idx":0,"ssid":"guest","sec":4194310,"ch":6,"pwd":"%s"}'
        % _encrypt(emu.device.key, b"guest-password")
    ).encode()
    assert await tcp_exchange(emu.tcp_address, _frame("configure-ap", body)) == b'\n\n{"r":0}'
    assert await tcp_exchange(emu.tcp_address, _frame("connect-ap", b'{"idx":0}')) == (
        b'\n\n{"r":0}'
    )
    await emu.wait_for_state(DeviceState.ONLINE)


class FakePublisher:
    """Records what the advertiser asks for, instead of multicasting it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, str]]] = []
        #: set on every call (to wait for one without asking the advertiser to refresh)
        self.called = asyncio.Event()

    def _call(self, op: str, record: ServiceRecord) -> None:
        self.calls.append((op, record.name, dict(record.txt)))
        self.called.set()

    async def publish(self, record: ServiceRecord) -> None:
        self._call("publish", record)

    async def update(self, record: ServiceRecord) -> None:
        self._call("update", record)

    async def withdraw(self, record: ServiceRecord) -> None:
        self._call("withdraw", record)

    def take(self) -> list[tuple[str, str, dict[str, str]]]:
        calls, self.calls = self.calls, []
        return calls


@pytest_asyncio.fixture
async def control(emulator: DeviceEmulator) -> AsyncIterator[tuple[str, DeviceRegistry]]:
    """An aiohttp app serving a registry holding ``emulator``; its base URL."""
    registry = DeviceRegistry.of(emulator, control_url="http://127.0.0.1:5610")
    app = web.Application()
    add_routes(app, registry)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", registry
    finally:
        await runner.cleanup()


# -- the fallback device list (always) -------------------------------------------------
@pytest.mark.asyncio
async def test_registry_lists_live_emulators(spec_config: SimConfig) -> None:
    registry = DeviceRegistry()
    emu = DeviceEmulator(spec_config)
    registry.add(emu)
    assert emu in registry
    assert registry.devices() == []  # not started: no identity yet
    async with emu:
        [info] = registry.devices()
        assert info.device_id == DEVICE_ID
        assert info.ssid == "Photon-ABCDEF"
        assert info.firmware == "0.7.0"
        assert info.state == "listening"
        assert info.led == "blinking dark blue"
        assert info.claimed is False
        assert (info.host, info.tcp_port) == emu.tcp_address
        assert info.http_port == emu.http_address[1]
        assert info.ap_up is True
        assert info.running is True
        assert info.source == "registry"
        emu.device.dct.mark_claimed()
        assert registry.find(DEVICE_ID.upper()) == DeviceInfo(**{**_fields(info), "claimed": True})
    [stopped] = registry.devices()
    assert stopped.state == "stopped"
    assert (stopped.tcp_port, stopped.http_port, stopped.running) == (None, None, False)
    registry.remove(emu)
    registry.remove(emu)  # unknown: ignored
    assert len(registry) == 0


def _fields(info: DeviceInfo) -> dict[str, Any]:
    return {name: getattr(info, name) for name in DeviceInfo.__dataclass_fields__}


def test_device_info_json_round_trip_and_validation() -> None:
    info = DeviceInfo(
        device_id=DEVICE_ID,
        ssid="Photon-ABCDEF",
        firmware="0.7.0",
        state="online",
        claimed=True,
        host="127.0.0.1",
        tcp_port=5609,
        http_port=None,
        scenario="x",
    )
    assert DeviceInfo.from_json(json.loads(json.dumps(info.to_json()))) == info
    bad: Any
    for bad in (
        [],
        {**info.to_json(), "claimed": "yes"},
        {**info.to_json(), "tcp_port": 70000},
        {**info.to_json(), "tcp_port": True},
        {**info.to_json(), "id": None},
    ):
        with pytest.raises(ValueError):
            DeviceInfo.from_json(bad)


@pytest.mark.asyncio
async def test_control_routes_serve_the_device_list(
    control: tuple[str, DeviceRegistry], emulator: DeviceEmulator
) -> None:
    url, registry = control
    async with aiohttp.ClientSession() as session:
        async with session.get(url + "/v1/devices") as resp:
            assert resp.status == 200
            assert resp.content_type == "application/json"
            devices = await resp.json()
        assert devices == registry.to_json()
        [device] = devices
        assert device["id"] == DEVICE_ID
        assert device["state"] == "listening"
        assert device["tcp_port"] == emulator.tcp_address[1]
        assert device["control_url"] == "http://127.0.0.1:5610"
        text = json.dumps(devices)
        assert "guest-password" not in text
        async with session.get(f"{url}/v1/devices/{DEVICE_ID}") as resp:
            assert resp.status == 200
            assert await resp.json() == device
        async with session.get(url + "/v1/devices/nope") as resp:
            assert resp.status == 404
            body = await resp.json()
            assert body["error"] == "not_found"
            assert DEVICE_ID in body["message"]


@pytest.mark.asyncio
async def test_discover_falls_back_to_the_control_api(
    control: tuple[str, DeviceRegistry],
    emulator: DeviceEmulator,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, _ = control
    # --timeout 0: no mDNS at all (nothing multicast from the test machine)
    rc = await asyncio.to_thread(discover.main, ["--timeout", "0", "--control", url, "--json"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    result = json.loads(out.out)
    assert result["source"] == "control"
    assert result["control_url"] == url
    [device] = result["devices"]
    assert device["id"] == DEVICE_ID
    assert device["ssid"] == "Photon-ABCDEF"
    assert device["state"] == "listening"

    rc = await asyncio.to_thread(discover.main, ["--timeout", "0", "--control", url + "/"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    lines = out.out.splitlines()
    assert lines[0] == f"1 device from the control API's device list at {url}"
    assert lines[1].split() == ["ID", "SSID", "ADDRESS", "TCP", "HTTP", "CLAIMED", "STATE"]
    host, tcp = emulator.tcp_address
    http = emulator.http_address[1]
    assert lines[2].split() == [
        DEVICE_ID,
        "Photon-ABCDEF",
        host,
        str(tcp),
        str(http),
        "no",
        "listening",
    ]


@pytest.mark.asyncio
async def test_discover_reports_an_unreachable_control_api(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    with socket.socket() as sock:  # bound, not listening: connections are refused
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        rc = await asyncio.to_thread(discover.main, ["--timeout", "0", "--control", url])
        out = capsys.readouterr()
        assert rc == 1
        assert out.out == ""
        assert out.err.startswith(
            f"softap-sim discover: error: cannot reach the control API at {url}"
        )
        # the default URL is tried quietly: "no devices found", naming the reason
        monkeypatch.setattr(discover, "DEFAULT_CONTROL_URL", url)
        monkeypatch.delenv(ctl.CONTROL_ENV, raising=False)
        rc = await asyncio.to_thread(discover.main, ["--timeout", "0"])
        out = capsys.readouterr()
        assert rc == 1
        assert out.err.startswith("softap-sim discover: no devices found (cannot reach")


def test_discover_parser() -> None:
    parser = argparse.ArgumentParser(prog="softap-sim")
    discover.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["discover"])
    assert args.discover_func is discover.discover_main
    assert (args.timeout, args.json, args.interfaces, args.control) == (3.0, False, [], None)
    args = parser.parse_args(
        ["discover", "--timeout", "1.5", "--json", "--interface", "127.0.0.1", "--control", "u"]
    )
    assert (args.timeout, args.json, args.interfaces, args.control) == (1.5, True, LOOPBACK, "u")
    with pytest.raises(SystemExit):
        parser.parse_args(["discover", "--timeout", "-1"])


# -- the records and the advertiser (always; a fake publisher instead of multicast) -----
@pytest.mark.asyncio
async def test_records_follow_the_device(spec_config: SimConfig) -> None:
    config = SimConfig(**{**_config_fields(spec_config), "scenario": "bench"})
    async with DeviceEmulator(config) as emu:
        tcp, http = emu.tcp_address[1], emu.http_address[1]
        records = records_for(emu, control_url="http://127.0.0.1:5610")
        assert set(records) == {LISTENING}
        rec = records[LISTENING]
        assert rec.name == f"{DEVICE_ID}.{LISTENING_TYPE}"
        assert (rec.port, rec.addresses, rec.server) == (
            tcp,
            ("127.0.0.1",),
            f"softap-sim-{DEVICE_ID}.local.",
        )
        assert rec.txt == {
            "txtvers": "1",
            "id": DEVICE_ID,
            "ssid": "Photon-ABCDEF",
            "claimed": "0",
            "fw": "0.7.0",
            "state": "listening",
            "tcp": str(tcp),
            "http": str(http),
            "proto": "2",
            "scenario": "bench",
            "control": "http://127.0.0.1:5610",
        }
        await join_guest(emu)
        emu.device.dct.mark_claimed()
        records = records_for(emu, addresses=["192.0.2.7"])
        assert set(records) == {OPERATIONAL}
        rec = records[OPERATIONAL]
        assert rec.name == f"{DEVICE_ID}.{OPERATIONAL_TYPE}"
        assert rec.addresses == ("192.0.2.7",)
        assert rec.txt == {
            "txtvers": "1",
            "id": DEVICE_ID,
            "ssid": "Photon-ABCDEF",
            "claimed": "1",
            "fw": "0.7.0",
            "state": "online",
            "cloud": "1",
            "scenario": "bench",
        }
    assert records_for(emu) == {}  # stopped


def _config_fields(config: SimConfig) -> dict[str, Any]:
    return {name: getattr(config, name) for name in SimConfig.__dataclass_fields__}


@pytest.mark.asyncio
async def test_records_of_an_era_without_http(spec_config: SimConfig) -> None:
    config = SimConfig(**{**_config_fields(spec_config), "firmware": FirmwareEra.V0_4_0})
    async with DeviceEmulator(config) as emu:
        txt = records_for(emu)[LISTENING].txt
        assert (txt["http"], txt["fw"]) == ("0", "0.4.0")
        assert describe(emu) is not None
        assert describe(emu).http_port is None  # type: ignore[union-attr]


def test_addresses_and_interfaces() -> None:
    assert interfaces_for("127.0.0.1") == ["127.0.0.1"]
    assert interfaces_for("0.0.0.0") is None
    assert interfaces_for("localhost") is None
    assert record_addresses("127.0.0.2") == ("127.0.0.2",)
    assert record_addresses("0.0.0.0", ["192.0.2.9"]) == ("192.0.2.9",)
    assert record_addresses("::", ["0.0.0.0"]) != ()


def test_device_from_resolved_records() -> None:
    name = f"{DEVICE_ID}.{LISTENING_TYPE}"
    txt = {"id": DEVICE_ID, "ssid": "Photon-ABCDEF", "claimed": "0", "tcp": "5609"}
    info = device_from_service(LISTENING_TYPE, name, {**txt, "http": "0"}, ["127.0.0.1"], 5609)
    assert (info.device_id, info.host, info.tcp_port, info.http_port) == (
        DEVICE_ID,
        "127.0.0.1",
        5609,
        None,
    )
    assert (info.state, info.source, info.record, info.ap_up) == ("listening", "mdns", name, True)
    # a record from someone else's responder with no TXT: named by its instance
    info = device_from_service(OPERATIONAL_TYPE, f"abc.{OPERATIONAL_TYPE}", {}, [], 1)
    assert (info.device_id, info.tcp_port, info.host, info.claimed) == ("abc", None, None, False)


@pytest.mark.asyncio
async def test_advertiser_publishes_updates_and_withdraws(emulator: DeviceEmulator) -> None:
    fake = FakePublisher()
    listening = f"{DEVICE_ID}.{LISTENING_TYPE}"
    operational = f"{DEVICE_ID}.{OPERATIONAL_TYPE}"
    async with Advertiser(emulator, responder=fake, control_url="http://c") as adv:
        await adv.settle()
        [(op, name, txt)] = fake.take()
        assert (op, name, txt["state"], txt["claimed"], txt["control"]) == (
            "publish",
            listening,
            "listening",
            "0",
            "http://c",
        )
        assert set(adv.published) == {LISTENING}
        await adv.settle()
        assert fake.take() == []  # nothing changed: nothing sent

        await join_guest(emulator)
        await adv.settle()
        calls = fake.take()
        assert [(op, name) for op, name, _ in calls] == [
            ("withdraw", listening),
            ("publish", operational),
        ]
        assert calls[1][2]["state"] == "online"
        assert calls[1][2]["claimed"] == "0"

        emulator.device.dct.mark_claimed()  # a claim changes the DCT, not the state
        adv.refresh()
        await adv.settle()
        [(op, name, txt)] = fake.take()
        assert (op, name, txt["claimed"]) == ("update", operational, "1")
        assert adv.published[OPERATIONAL].txt["claimed"] == "1"

        emulator.control.listen()  # back to listening mode: operational withdrawn
        await adv.settle()
        assert [(op, name) for op, name, _ in fake.take()] == [
            ("publish", listening),
            ("withdraw", operational),
        ]
        adv.check()
    assert [(op, name) for op, name, _ in fake.take()] == [("withdraw", listening)]
    assert adv.published == {}
    assert len(emulator.on_state_change) == 0
    await adv.close()  # idempotent


def _require_hook(emu: DeviceEmulator, name: str) -> None:
    if not hasattr(emu, name):
        pytest.skip(f"the emulator has no {name} hook yet (see softap_sim/transports/mdns.py)")


@pytest.mark.asyncio
async def test_advertiser_follows_a_claim_without_refresh(emulator: DeviceEmulator) -> None:
    """The cloud's claim confirmation changes the DCT only; ``on_dct_change`` carries it."""
    _require_hook(emulator, "on_dct_change")
    fake = FakePublisher()
    async with Advertiser(emulator, responder=fake) as adv:
        await join_guest(emulator)
        await adv.settle()
        fake.take()
        fake.called.clear()
        # what the device does on spark/device/claim/* (the cloud client's path)
        emulator._apply(emulator.device.receive_cloud_event("spark/device/claim/code"))
        await asyncio.wait_for(fake.called.wait(), 5)
        [(op, _, txt)] = fake.take()
        assert (op, txt["claimed"]) == ("update", "1")


@pytest.mark.asyncio
async def test_listening_record_waits_for_the_access_point(spec_config: SimConfig) -> None:
    """With a listen-start delay the AP comes up after the state change (no new state)."""
    config = dataclasses.replace(spec_config, timing=FAST.with_overrides({"listen_start_s": 2.0}))
    async with DeviceEmulator(config, clock=ManualClock()) as emu:
        assert emu.device.state is DeviceState.LISTENING
        assert not emu.ap_up
        fake = FakePublisher()
        async with Advertiser(emu, responder=fake) as adv:
            await adv.settle()
            assert adv.published == {}  # listening, but no AP (no SSID) yet
            _require_hook(emu, "on_access_point_change")
            fake.called.clear()
            await emu.advance(2.0)
            await asyncio.wait_for(fake.called.wait(), 5)
            assert [op for op, _, _ in fake.take()] == ["publish"]
            assert set(adv.published) == {LISTENING}


@pytest.mark.asyncio
async def test_advertiser_subscribes_to_optional_hooks(emulator: DeviceEmulator) -> None:
    """``on_dct_change`` / ``on_access_point_change`` are used when the emulator has them."""
    hooks: dict[str, list[Any]] = {}
    for name in ("on_dct_change", "on_access_point_change"):
        if not hasattr(emulator, name):
            setattr(emulator, name, [])
        hooks[name] = getattr(emulator, name)
    fake = FakePublisher()
    async with Advertiser(emulator, responder=fake) as adv:
        await adv.settle()
        fake.take()
        fake.called.clear()
        assert all(adv._on_change in callbacks for callbacks in hooks.values())
        emulator.device.dct.mark_claimed()
        for callback in list(hooks["on_dct_change"]):
            callback()
        await asyncio.wait_for(fake.called.wait(), 5)
        [(op, _, txt)] = fake.take()
        assert (op, txt["claimed"]) == ("update", "1")
    assert all(adv._on_change not in callbacks for callbacks in hooks.values())


@pytest.mark.asyncio
async def test_advertiser_records_publish_errors(emulator: DeviceEmulator) -> None:
    class Failing(FakePublisher):
        async def publish(self, record: ServiceRecord) -> None:
            raise OSError("no multicast here")

    async with Advertiser(emulator, responder=Failing()) as adv:
        await adv.settle()
        assert adv.published == {}
        with pytest.raises(Exception, match="no multicast here"):
            adv.check()


# -- the real browse (root: a network namespace with multicast on lo) -----------------
def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=False)


@pytest.fixture
def multicast_netns() -> Iterator[str]:
    """A fresh namespace: ``lo`` up with MULTICAST and a 224.0.0.0/4 route on it."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create a network namespace with multicast (mDNS)")
    if shutil.which("ip") is None:
        pytest.skip("needs the 'ip' command (iproute2) to create a network namespace")
    name = f"softap-mdns-{uuid.uuid4().hex[:8]}"
    added = _ip("netns", "add", name)
    if added.returncode != 0:
        pytest.skip(f"cannot create a network namespace: {added.stderr.strip()}")
    try:
        for step in (
            ("link", "set", "dev", "lo", "multicast", "on", "up"),
            ("route", "add", "224.0.0.0/4", "dev", "lo"),
        ):
            done = _ip("-n", name, *step)
            assert done.returncode == 0, f"ip -n {name} {' '.join(step)}: {done.stderr}"
        yield name
    finally:
        _ip("netns", "delete", name)


def test_browse_finds_device_and_sees_claim(multicast_netns: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("SOFTAP_SIM_CONTROL", None)
    done = subprocess.run(
        [*("ip", "netns", "exec", multicast_netns), sys.executable, "-m", CHILD_MODULE],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, f"child failed:\n{done.stdout}\n{done.stderr}"
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert "error" not in report, report.get("error")

    listening = report["listening"]
    assert listening["record"] == f"{DEVICE_ID}.{LISTENING_TYPE}"
    assert listening["id"] == DEVICE_ID
    assert listening["ssid"] == "Photon-ABCDEF"
    assert listening["state"] == "listening"
    assert listening["claimed"] is False
    assert listening["host"] == "127.0.0.1"
    assert listening["tcp_port"] == report["tcp_port"]
    assert listening["http_port"] == report["http_port"]
    assert listening["firmware"] == "0.7.0"
    assert listening["control_url"] == "http://127.0.0.1:5610"
    assert listening["source"] == "mdns"

    cli = report["discover"]
    assert cli["rc"] == 0, cli["stderr"]
    assert cli["out"]["source"] == "mdns"
    assert [d["id"] for d in cli["out"]["devices"]] == [DEVICE_ID]
    assert cli["out"]["devices"][0]["state"] == "listening"

    operational = report["operational"]
    assert operational["record"] == f"{DEVICE_ID}.{OPERATIONAL_TYPE}"
    assert (operational["state"], operational["claimed"]) == ("online", False)
    assert report["listening_gone_after_join"] is True

    claimed = report["claimed"]
    assert (claimed["record"], claimed["claimed"]) == (operational["record"], True)
    assert report["withdrawn_on_close"] is True
    assert report["bad_interface"].startswith("cannot open mDNS sockets on 192.0.2.123: ")


async def _netns_child() -> dict[str, Any]:
    """Runs inside the namespace: advertise, browse, join, claim, close; a JSON report."""
    config = SimConfig(
        identity=DeviceIdentity(bytes.fromhex(DEVICE_ID), "ABCDEF"),
        key=DeviceKey.generate(1024),
        radio=RadioEnvironment(
            [
                AccessPoint(
                    b"guest",
                    sec.WPA2_MIXED_PSK,
                    6,
                    -52,
                    144400,
                    password=Secret(b"guest-password"),
                )
            ]
        ),
    )
    listening = f"{DEVICE_ID}.{LISTENING_TYPE}"
    operational = f"{DEVICE_ID}.{OPERATIONAL_TYPE}"
    report: dict[str, Any] = {}
    async with Browser(interfaces=LOOPBACK) as browser, DeviceEmulator(config) as emu:
        report["tcp_port"], report["http_port"] = emu.tcp_address[1], emu.http_address[1]
        # its own responder on the emulator's address (127.0.0.1), as `run --advertise`
        adv = Advertiser(emu, control_url="http://127.0.0.1:5610")
        async with adv:
            found = await browser.wait_for(lambda d: listening in d, WAIT_S)
            report["listening"] = found[listening].to_json()

            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "softap_sim.discover",
                "--json",
                "--timeout",
                "2",
                "--interface",
                "127.0.0.1",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await asyncio.wait_for(proc.communicate(), 30)
            report["discover"] = {
                "rc": proc.returncode,
                "out": json.loads(out) if out.strip() else None,
                "stderr": err.decode(),
            }

            await join_guest(emu)
            found = await browser.wait_for(
                lambda d: operational in d and listening not in d, WAIT_S
            )
            report["operational"] = found[operational].to_json()
            report["listening_gone_after_join"] = listening not in found

            emu.device.dct.mark_claimed()  # the cloud's claim confirmation
            adv.refresh()  # (automatic once the emulator has on_dct_change)
            found = await browser.wait_for(
                lambda d: operational in d and d[operational].claimed, WAIT_S
            )
            report["claimed"] = found[operational].to_json()
            adv.check()
        found = await browser.wait_for(lambda d: operational not in d, WAIT_S)
        report["withdrawn_on_close"] = operational not in found
        emu.check()
    try:  # an address no interface has (the namespace has only lo)
        async with Responder(["192.0.2.123"]):
            report["bad_interface"] = None
    except MdnsError as err:
        report["bad_interface"] = str(err)
    return report


def _child_main() -> int:
    try:
        report = asyncio.run(_netns_child())
    except Exception as err:
        report = {"error": f"{err!r}\n{traceback.format_exc()}"}
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(_child_main())
