"""Scenarios: the shipped files, their validation, and each one against a real npm client.

Part 1 needs nothing but Python: every shipped scenario loads and applies, and bad
scenario files give the documented one-line :class:`ConfigError`.

Part 2 runs ``@particle/softap-setup`` 4.1.2 (and, where a scenario says so,
``softap-setup`` 1.x/3.x) through ``tests/clients/scenario_driver.js`` against
``DeviceEmulator(scenario.apply(...))``. Each test checks the failure the scenario's
``expect`` text promises, as the client reports it, and then that the device recovers
the way the firmware does. Where the failure is a timeout the library's own timeout is
shortened (``libTimeoutMs``) and, where the device's delay matters, the emulator runs on
a :class:`ManualClock` so that the delay only ends when the test advances time. These
tests skip, with the reason, when ``tests/clients/node_modules`` is missing.

Not run end to end: ``realistic`` promises no failure (and needs ~15 s of real time).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import importlib.util
import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from firmware_model import (
    DeviceKey,
    DeviceState,
    Fault,
    FirmwareEra,
    GateMode,
    ManualClock,
    RadioEnvironment,
    Secret,
    WifiCredential,
)
from firmware_model import security as sec
from firmware_model.events import ApTornDown, JoinFinished, ListeningTimedOut
from firmware_model.scan_packs import scan_pack
from firmware_model.timing import REALISTIC
from softap_sim.config import SimConfig
from softap_sim.emulator import DeviceEmulator
from softap_sim.errors import ConfigError
from softap_sim.scenario import Scenario, list_scenarios, load_scenario
from tests import paths

SCENARIO_DIR = paths.REPO / "softap_sim" / "scenarios"
CLIENTS_DIR = paths.CLIENTS
NODE_MODULES = CLIENTS_DIR / "node_modules"
DRIVER = CLIENTS_DIR / "scenario_driver.js"

#: every scenario the package ships (a new file must be added here and get a test)
SHIPPED = {
    "slow-function",
    "ap-not-found",
    "ap-stays-up",
    "cloud-unreachable",
    "dhcp-failure",
    "drop-mid-configure",
    "half-open",
    "key-2048",
    "key-corrupt",
    "key-pkcs1",
    "key-unpadded",
    "listening-timeout",
    "low-memory",
    "low-memory-refuse",
    "no-reply",
    "one-http-socket",
    "realistic",
    "refuse-after-setups",
    "reply-never-closes",
    "scan-duplicates",
    "scan-empty",
    "scan-hidden",
    "scan-large",
    "scan-partial",
    "scan-quotes",
    "scan-unicode",
    "silent-close",
    "slow-first-reply",
    "slow-join",
    "slow-scan",
    "wrong-password",
}

_e2e_marks = [
    pytest.mark.asyncio,
    pytest.mark.skipif(
        not NODE_MODULES.is_dir(),
        reason=f"{NODE_MODULES} is missing: run 'npm ci' in {CLIENTS_DIR} to install the "
        "pinned SoftAP client libraries (the project's test script does this first)",
    ),
]
if importlib.util.find_spec("pytest_timeout") is not None:
    _e2e_marks.append(pytest.mark.timeout(60))


def e2e(func: Callable[..., Any]) -> Callable[..., Any]:
    for mark in reversed(_e2e_marks):
        func = mark(func)
    return func


# == part 1: loading and validation =======================================================


def test_list_scenarios_names_every_shipped_file() -> None:
    files = {p.stem for p in SCENARIO_DIR.glob("*.toml")}
    names = [s.name for s in list_scenarios()]
    assert names == sorted(names)
    assert set(names) == files == SHIPPED


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_scenario_loads_and_applies(name: str, device_key: DeviceKey) -> None:
    scenario = load_scenario(name)
    assert scenario.name == name
    assert scenario.source == f"<shipped>/{name}.toml"
    for text in (scenario.description, scenario.pain_point, scenario.expect):
        assert text.strip()
        assert "\n" not in text
    assert scenario.pain_point.startswith("#") or "(#" in scenario.pain_point
    for spec in scenario.settings.get("fault", []):
        Fault.from_mapping(spec)

    base = SimConfig(key=device_key, seed=7)
    config = scenario.apply(base)
    assert config.scenario == name
    assert len(config.faults) == len(scenario.settings.get("fault", []))
    # what the scenario does not set is kept
    if "timing" not in scenario.settings:
        assert config.timing is base.timing
    if "radio" not in scenario.settings:
        assert config.radio is base.radio
    if "key_bits" not in scenario.settings.get("device", {}):
        assert config.key is device_key
    if "seed" not in scenario.settings.get("device", {}):
        assert config.seed == 7
    # applying twice gives equal configs with independent radio environments
    again = scenario.apply(base)
    assert again.faults == config.faults
    if "radio" in scenario.settings:
        assert again.radio is not config.radio
        assert again.radio.to_json() == config.radio.to_json()


def test_apply_sets_each_kind_of_setting(device_key: DeviceKey) -> None:
    base = SimConfig(key=device_key)
    assert load_scenario("one-http-socket").apply(base).firmware is FirmwareEra.V0_5_0
    key2048 = load_scenario("key-2048").apply(base)
    assert key2048.key_bits == 2048
    assert key2048.key is None  # the fixed 1024-bit key cannot be used: a new one is made
    assert load_scenario("cloud-unreachable").apply(base).cloud_available is False
    low = load_scenario("low-memory").apply(base)
    assert (low.app_ram_bytes, low.gate_mode) == (39_500, GateMode.APPEARS)
    assert low.heap_after_boot_bytes - low.app_ram_bytes < low.gate_bytes
    refuse = load_scenario("low-memory-refuse").apply(base)
    assert refuse.gate_mode is GateMode.REFUSE
    assert load_scenario("realistic").apply(base).timing == REALISTIC
    slow = load_scenario("slow-join").apply(base).timing
    assert (slow.name, slow.join_s, slow.dhcp_s, slow.cloud_s, slow.scan_s) == (
        "fast",
        15.0,
        5.0,
        5.0,
        0.0,
    )
    assert load_scenario("listening-timeout").apply(base).timing.listening_timeout_s == 60.0
    assert len(load_scenario("scan-large").apply(base).radio.access_points) == 60
    radio = load_scenario("wrong-password").apply(base).radio
    assert [ap.ssid for ap in radio.access_points] == [b"HomeNetwork", b"guest"]
    assert radio.access_points[0].password.value == b"correct horse battery staple"
    scan = load_scenario("slow-scan").apply(base).faults
    # longer than iOS's 3 s reply timer, shorter than the JS client's 8 s
    assert scan == ({"kind": "latency", "command": "scan-ap", "delay_ms": 4000},)


def test_load_from_path_with_pack_and_networks(tmp_path: Path) -> None:
    path = tmp_path / "My Bench.toml"
    path.write_text(
        'description = "d"\npain_point = "#11"\nexpect = "e"\n'
        '[device]\nfirmware = "1.5.2"\nssid_prefix = "Argon"\nseed = 3\n'
        "[memory]\nheap_after_boot_bytes = 50000\napp_ram_bytes = 1000\ngate_bytes = 20000\n"
        '[timing]\nprofile = "realistic"\nscan_s = 0.5\n'
        '[radio]\npack = "hidden"\n'
        '[[radio.network]]\nssid = "Extra"\nsecurity = "open"\n'
        '[[fault]]\nkind = "latency"\ncommand = "version"\ndelay_ms = 5\n',
        encoding="utf-8",
    )
    scenario = load_scenario(str(path))
    assert scenario.name == "my-bench"  # no name: from the file name
    assert scenario.source == str(path)
    config = scenario.apply(SimConfig())
    assert config.firmware is FirmwareEra.CURRENT
    assert (config.ssid_prefix, config.seed) == ("Argon", 3)
    assert (config.heap_after_boot_bytes, config.app_ram_bytes, config.gate_bytes) == (
        50_000,
        1_000,
        20_000,
    )
    assert config.timing.name == "realistic"
    assert config.timing.scan_s == 0.5
    assert config.timing.join_s == REALISTIC.join_s
    assert [ap.ssid for ap in config.radio.access_points] == [
        b"Visible",
        b"Hidden-Lab",
        b"Hidden-Guest",
        b"Extra",
    ]
    assert config.faults == ({"kind": "latency", "command": "version", "delay_ms": 5},)


HEAD = 'name = "t"\ndescription = "d"\npain_point = "#1"\nexpect = "e"\n'

#: (file text, the one-line message after "scenario file PATH")
BAD_FILES = [
    pytest.param("name = \n", "is not valid TOML", id="toml-syntax"),
    pytest.param(HEAD + "devcie = 1\n", "unknown top-level key 'devcie'; allowed: name,", id="top"),
    pytest.param(
        'pain_point = "#1"\nexpect = "e"\n',
        ": 'description' is required: a non-empty string",
        id="missing-description",
    ),
    pytest.param(
        'description = "d"\npain_point = 11\n',
        ": 'pain_point' must be a string (or left out), got 11",
        id="text-type",
    ),
    pytest.param(
        'name = "Bad Name"\n' + HEAD[HEAD.index("description") :],
        "'name' must be lower-case letters",
        id="bad-name",
    ),
    pytest.param(HEAD + "device = 3\n", "'device' must be a table: [device]", id="not-table"),
    pytest.param(
        HEAD + '[device]\ncolour = "red"\n',
        "unknown key in [device] 'colour'; allowed: firmware, ssid_prefix, seed, key_bits,",
        id="device-key",
    ),
    pytest.param(
        HEAD + "[device]\nfirmware = 0.6\n",
        "[device] firmware must be a quoted version string",
        id="firmware-type",
    ),
    pytest.param(
        HEAD + '[device]\nfirmware = "9.0.0"\n',
        "[device] firmware: device-os 9.0.0 has no SoftAP",
        id="firmware-value",
    ),
    pytest.param(
        HEAD + "[device]\nkey_bits = 4096\n",
        "[device] key_bits must be 1024 (a Photon's key) or 2048, got 4096",
        id="key-bits",
    ),
    pytest.param(
        HEAD + '[device]\ncloud_available = "no"\n',
        "[device] cloud_available must be true or false, got 'no'",
        id="bool",
    ),
    pytest.param(
        HEAD + '[device]\nssid_prefix = "' + "P" * 26 + '"\n',
        "[device] ssid_prefix must be a string of 1-25 bytes",
        id="prefix",
    ),
    pytest.param(
        HEAD + "[memory]\napp_ram_bytes = -1\n",
        "[memory] app_ram_bytes must be a non-negative integer (bytes), got -1",
        id="memory-int",
    ),
    pytest.param(
        HEAD + "[memory]\napp_ram_bytes = 70000\n",
        "[memory] app_ram_bytes (70000) exceeds heap_after_boot_bytes (61440)",
        id="memory-over",
    ),
    pytest.param(
        HEAD + '[memory]\ngate_mode = "explode"\n',
        "[memory] gate_mode must be one of 'appears', 'refuse', got 'explode'",
        id="gate-mode",
    ),
    pytest.param(
        HEAD + '[timing]\nprofile = "slow"\n',
        "[timing] profile: unknown timing profile 'slow'; use one of ['fast', 'realistic']",
        id="profile",
    ),
    pytest.param(
        HEAD + "[timing]\nscan_ms = 3\n",
        "[timing] unknown timing field(s) ['scan_ms']; known:",
        id="timing-key",
    ),
    pytest.param(
        HEAD + "[timing]\njoin_s = -1\n",
        "[timing] timing 'join_s' must be a non-negative number of seconds",
        id="timing-value",
    ),
    pytest.param(
        HEAD + '[radio]\npack = "nope"\n',
        "[radio] pack: unknown scan pack 'nope'; use one of [",
        id="pack",
    ),
    pytest.param(HEAD + "[radio]\n", "[radio] is empty; give pack", id="radio-empty"),
    pytest.param(
        HEAD + "[radio]\nchannel = 6\n", "unknown key in [radio] 'channel'", id="radio-key"
    ),
    pytest.param(
        HEAD + '[[radio.network]]\nsecurity = "open"\n',
        "[[radio.network]] network #1: 'ssid' must be a string",
        id="network",
    ),
    pytest.param(
        HEAD + 'fault = "latency"\n',
        "'fault' must be an array of tables: [[fault]]",
        id="fault-type",
    ),
    pytest.param(
        HEAD + '[[fault]]\nkind = "explode"\n',
        "[[fault]] #1: 'kind' must be one of ['latency',",
        id="fault-kind",
    ),
    pytest.param(
        HEAD + '[[fault]]\nkind = "latency"\ndelay_ms = 5\n[[fault]]\nkind = "join"\n',
        "[[fault]] #2: a join fault needs 'outcome', one of ['ok', 'bad_password',",
        id="fault-field-missing",
    ),
    pytest.param(
        HEAD + '[[fault]]\nkind = "no-reply"\ncmd = "scan-ap"\n',
        "[[fault]] #1: unknown fault field(s) ['cmd']; allowed:",
        id="fault-field-unknown",
    ),
]


@pytest.mark.parametrize(("text", "message"), BAD_FILES)
def test_bad_scenario_file_gives_one_clear_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_scenario(str(path))
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"scenario file {path}"), msg
    assert message in msg, msg


def test_pain_point_and_expect_are_optional(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text('description = "  my   bench  "\n[device]\nseed = 3\n', encoding="utf-8")
    scenario = load_scenario(str(path))
    assert (scenario.name, scenario.description) == ("mine", "my bench")
    assert (scenario.pain_point, scenario.expect) == ("", "")
    assert scenario.apply(SimConfig()).seed == 3


def test_unknown_scenario_name_lists_the_shipped_ones() -> None:
    with pytest.raises(ConfigError) as info:
        load_scenario("no-such-scenario")
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith("unknown scenario 'no-such-scenario': not a shipped scenario")
    assert "'softap-sim scenarios' lists them" in msg
    assert "wrong-password" in msg


def test_missing_or_unreadable_scenario_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^scenario file .*nope\.toml does not exist; give"):
        load_scenario(str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigError, match=r"is a directory; give a \.toml file$"):
        load_scenario(str(tmp_path))
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match=r"is not UTF-8 text; save it as UTF-8$"):
        load_scenario(str(binary))


#: shipped scenarios without an end-to-end test below (they promise no client failure)
NOT_END_TO_END = {"realistic"}


def test_every_other_shipped_scenario_has_an_end_to_end_test() -> None:
    source = Path(__file__).read_text(encoding="utf-8")
    part2 = source[source.index("# == part 2") :]
    assert [n for n in sorted(SHIPPED - NOT_END_TO_END) if f'"{n}"' not in part2] == []


def test_scenario_is_plain_data() -> None:
    s = load_scenario("no-reply")
    assert isinstance(s, Scenario)
    assert json.loads(json.dumps(s.settings)) == s.settings
    assert s.settings == {"fault": [{"kind": "no-reply", "command": "device-id"}]}


# == part 2: end to end with the real npm clients ========================================

LIB4 = "particle-4.1.2"
HOME_SSID = "HomeNetwork"
HOME_PASSWORD = "correct horse battery staple"  # the built-in neighbourhood's
#: the library's own timeout where a scenario's failure is a timeout (default 8000 ms)
LIB_TIMEOUT_MS = 500
#: the driver's per-step watchdog: only reached by clients that would wait for ever
STEP_TIMEOUT_MS = 5_000
HANG_WATCHDOG_MS = 800
DRIVER_TIMEOUT_S = 30.0
FULL = ["deviceInfo", "scan", "publicKey", "setClaimCode", "configure", "connect"]


def claim_code(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()[:63]


@pytest.fixture(scope="module")
def node() -> str:
    path = shutil.which("node")
    if path is None:
        pytest.fail("node is not on PATH, but tests/clients/node_modules exists: install Node.js")
    return path


def config_for(name: str, device_key: DeviceKey, **changes: Any) -> SimConfig:
    """The scenario applied to an in-memory device with the session's RSA key."""
    return load_scenario(name).apply(SimConfig(key=device_key, **changes))


async def drive(
    node: str,
    emu: DeviceEmulator,
    steps: list[str],
    *,
    protocol: str = "tcp",
    lib: str = LIB4,
    lib_timeout_ms: int | None = None,
    step_timeout_ms: int = STEP_TIMEOUT_MS,
    **extra: Any,
) -> dict[str, Any]:
    """Run the client steps once (continuing after failures); return the driver's report."""
    host, port = emu.tcp_address if protocol == "tcp" else emu.http_address
    args: dict[str, Any] = {
        "lib": lib,
        "protocol": protocol,
        "host": host,
        "port": port,
        "security": "wpa2_aes",
        "ssid": HOME_SSID,
        "password": HOME_PASSWORD,
        "channel": 1,
        "claimCode": claim_code(lib + protocol),
        "steps": steps,
        "stepTimeoutMs": step_timeout_ms,
        "continueOnError": True,
        **extra,
    }
    if lib_timeout_ms is not None:
        args["libTimeoutMs"] = lib_timeout_ms
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOFTAP_")}
    env["SOFTAP_DRIVER_ARGS"] = json.dumps(args)
    proc = await asyncio.create_subprocess_exec(
        node,
        str(DRIVER),
        cwd=str(CLIENTS_DIR),
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), DRIVER_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.communicate()
        pytest.fail(f"scenario_driver.js did not exit within {DRIVER_TIMEOUT_S} s: {steps}")
    lines = out.decode("utf-8", "replace").strip().splitlines()
    if not lines:
        pytest.fail(f"scenario_driver.js printed nothing (exit {proc.returncode}): {err!r}")
    report: dict[str, Any] = json.loads(lines[-1])
    assert not report["error"] or not report["error"].startswith("bad driver input"), report
    return report


def shown(report: dict[str, Any]) -> str:
    slim = json.loads(json.dumps(report))
    for name, step in slim.get("steps", {}).items():
        if step.get("ok") and name.startswith(("publicKey", "scan")):
            step["result"] = "<elided>"
    return json.dumps(slim, indent=1, ensure_ascii=False)


def ok(report: dict[str, Any], name: str) -> Any:
    step = report["steps"].get(name)
    assert step is not None, f"step {name} did not run:\n{shown(report)}"
    assert step["ok"], f"step {name} failed: {step.get('error')}\n{shown(report)}"
    return step["result"]


def failed(report: dict[str, Any], name: str) -> str:
    step = report["steps"].get(name)
    assert step is not None, f"step {name} did not run:\n{shown(report)}"
    assert not step["ok"], f"step {name} succeeded unexpectedly:\n{shown(report)}"
    error: str = step["error"]
    return error


def timeout_text(protocol: str) -> str:
    return "TCP socket timed out" if protocol == "tcp" else "HTTP timed out"


def moves(emu: DeviceEmulator) -> list[tuple[str, str, str]]:
    return [(a.value, b.value, c.__name__) for a, b, c in emu.device.lifecycle.moves]


def exchanges(emu: DeviceEmulator, command: str) -> list[dict[str, Any]]:
    assert emu.transcript is not None
    return [
        r for r in emu.transcript.since(0) if r["type"] == "exchange" and r["command"] == command
    ]


def stored(emu: DeviceEmulator) -> list[tuple[bytes, bytes]]:
    return [(c.ssid, c.password.value) for c in emu.device.dct.credentials]


async def back_in_listening(emu: DeviceEmulator, ports: tuple[int, int]) -> None:
    """The device is in listening mode with its AP (both listeners) up on the same ports."""
    await emu.wait_for_state(DeviceState.LISTENING, timeout_s=5)
    await emu.settle()
    assert emu.ap_up
    assert emu.tcp_listening
    assert emu.http_listening
    assert (emu.tcp_address[1], emu.http_address[1]) == ports
    assert emu.control.snapshot()["led"]["text"] == "blinking dark blue"


# -- #1 ---------------------------------------------------------------------------------


@e2e
async def test_slow_first_reply_times_out_then_answers(node: str, device_key: DeviceKey) -> None:
    clock = ManualClock()
    async with DeviceEmulator(config_for("slow-first-reply", device_key), clock=clock) as emu:
        # the 10 s never pass until we advance: the client's own timeout fires first; the
        # single HTTP event thread is busy, so a second request waits too
        report = await drive(
            node, emu, ["deviceInfo", "deviceInfo"], protocol="http", lib_timeout_ms=LIB_TIMEOUT_MS
        )
        assert failed(report, "deviceInfo") == "HTTP timed out"
        assert failed(report, "deviceInfo#2") == "HTTP timed out"
        await emu.advance(10.0)
        report = await drive(node, emu, FULL, protocol="http")
        assert report["ok"], shown(report)
        await emu.wait_for_state(DeviceState.ONLINE)
        emu.check()


@e2e
@pytest.mark.parametrize("protocol", ["tcp", "http"])
async def test_drop_mid_configure_saves_but_client_sees_reset(
    node: str, device_key: DeviceKey, protocol: str
) -> None:
    async with DeviceEmulator(config_for("drop-mid-configure", device_key)) as emu:
        report = await drive(
            node, emu, ["publicKey", "configure", "configure", "connect"], protocol=protocol
        )
        first = report["steps"]["configure"]
        # RST after half the reply: ECONNRESET (Node's HTTP parser may say "aborted"); the
        # 4.x TCP client may see the end of the stream instead and call back with no data
        if first["ok"]:
            assert protocol == "tcp", shown(report)
            assert first["result"] is None, shown(report)
        else:
            assert any(e in first["error"] for e in ("ECONNRESET", "aborted", "hang up")), first
        assert [r["delivery"] for r in exchanges(emu, "configure-ap")] == [
            "drop-mid-reply",
            "normal",
        ]
        # the retry answers r=0, the network is stored once, and the setup completes
        assert ok(report, "configure#2") == {"r": 0}
        ok(report, "connect")
        assert stored(emu) == [(HOME_SSID.encode(), HOME_PASSWORD.encode())]
        await emu.wait_for_state(DeviceState.ONLINE)
        emu.check()


# -- #2 / #5: join outcomes ----------------------------------------------------------------


@e2e
@pytest.mark.parametrize(
    ("name", "outcome", "first_password"),
    [
        ("wrong-password", "bad_password", "a-typo-in-the-password"),
        ("ap-not-found", "ap_missing", HOME_PASSWORD),
        ("dhcp-failure", "dhcp_fail", HOME_PASSWORD),
    ],
)
async def test_failed_join_returns_to_listening_then_second_setup_succeeds(
    node: str, device_key: DeviceKey, name: str, outcome: str, first_password: str
) -> None:
    async with DeviceEmulator(config_for(name, device_key)) as emu:
        ports = (emu.tcp_address[1], emu.http_address[1])
        report = await drive(node, emu, FULL, password=first_password)
        # nothing on the SoftAP wire tells the app
        assert report["ok"], shown(report)
        assert ok(report, "configure") == {"r": 0}
        await asyncio.wait_for(emu.setup_complete.wait(), 5)
        await back_in_listening(emu, ports)
        assert emu.control.snapshot()["last_join"] == outcome
        assert ("listening", "joining", ApTornDown.__name__) in moves(emu)
        assert ("joining", "listening", JoinFinished.__name__) in moves(emu)
        assert stored(emu) == [(HOME_SSID.encode(), first_password.encode())]

        # the second setup (other transport, the real password) joins and comes online
        emu.setup_complete.clear()
        report = await drive(node, emu, FULL, protocol="http")
        assert report["ok"], shown(report)
        await emu.wait_for_state(DeviceState.ONLINE)
        assert stored(emu) == [(HOME_SSID.encode(), HOME_PASSWORD.encode())]
        emu.check()


@e2e
async def test_wrong_password_is_checked_against_the_radio_after_the_first_join(
    node: str, device_key: DeviceKey
) -> None:
    async with DeviceEmulator(config_for("wrong-password", device_key)) as emu:
        ports = (emu.tcp_address[1], emu.http_address[1])
        await drive(node, emu, ["publicKey", "configure", "connect"])  # the scripted failure
        await back_in_listening(emu, ports)
        report = await drive(
            node, emu, ["publicKey", "configure", "connect"], password="a-typo-in-the-password"
        )
        assert ok(report, "configure") == {"r": 0}
        assert report["ok"], shown(report)
        await back_in_listening(emu, ports)
        snap = emu.control.snapshot()
        assert (snap["last_join"], snap["join_attempts"]) == ("bad_password", 2)
        emu.check()


@e2e
async def test_cloud_unreachable_blinks_cyan_until_the_cloud_answers(
    node: str, device_key: DeviceKey
) -> None:
    clock = ManualClock()
    async with DeviceEmulator(config_for("cloud-unreachable", device_key), clock=clock) as emu:
        report = await drive(node, emu, FULL)
        assert report["ok"], shown(report)
        await emu.wait_for_state(DeviceState.CLOUD_RETRY)
        await emu.advance(10.0)  # retries for ever, never back to listening
        assert emu.device.state in (DeviceState.CLOUD_RETRY, DeviceState.CLOUD_CONNECTING)
        assert emu.device.lifecycle.cloud_attempts > 5
        snap = emu.control.snapshot()
        assert snap["led"] == {
            "colour": "cyan",
            "pattern": "fast blinking",
            "text": "fast blinking cyan",
        }
        assert snap["last_join"] == "ok"
        assert snap["access_point"] is None
        states = [new for _old, new, _cause in moves(emu)]
        assert "listening" not in states[states.index("joining") :]
        emu.device.cloud_available = True
        await emu.advance(1.0)
        await emu.wait_for_state(DeviceState.ONLINE)
        emu.check()


@e2e
async def test_slow_join_online_25_s_after_connect(node: str, device_key: DeviceKey) -> None:
    clock = ManualClock()
    async with DeviceEmulator(config_for("slow-join", device_key), clock=clock) as emu:
        report = await drive(node, emu, FULL)
        assert report["ok"], shown(report)
        await emu.wait_for_state(DeviceState.JOINING)
        assert emu.control.snapshot()["led"]["text"] == "blinking green"
        await emu.advance(19.9)
        assert emu.device.state is DeviceState.JOINING
        await emu.advance(0.2)
        assert emu.device.state is DeviceState.CLOUD_CONNECTING
        await emu.advance(4.8)
        assert emu.device.state is DeviceState.CLOUD_CONNECTING
        await emu.advance(0.2)
        assert emu.device.state is DeviceState.ONLINE
        emu.check()


# -- #3 ---------------------------------------------------------------------------------


@e2e
@pytest.mark.parametrize("protocol", ["tcp", "http"])
async def test_no_reply_times_out_the_js4_client(
    node: str, device_key: DeviceKey, protocol: str
) -> None:
    async with DeviceEmulator(config_for("no-reply", device_key)) as emu:
        report = await drive(
            node, emu, ["deviceInfo", "scan"], protocol=protocol, lib_timeout_ms=LIB_TIMEOUT_MS
        )
        assert failed(report, "deviceInfo") == timeout_text(protocol)
        assert len(ok(report, "scan")) == 7  # the neighbourhood, without the hidden network
        assert emu.device.state is DeviceState.LISTENING
        emu.check()


@e2e
@pytest.mark.parametrize("lib", ["js1", "js3"])
async def test_no_reply_hangs_old_clients_for_ever(
    node: str, device_key: DeviceKey, lib: str
) -> None:
    async with DeviceEmulator(config_for("no-reply", device_key)) as emu:
        report = await drive(node, emu, ["deviceInfo"], lib=lib, step_timeout_ms=HANG_WATCHDOG_MS)
        assert failed(report, "deviceInfo").startswith("driver watchdog: no callback")
        assert emu.device.state is DeviceState.LISTENING
        emu.check()


@e2e
@pytest.mark.parametrize("protocol", ["tcp", "http"])
async def test_half_open_configure_saves_but_times_out(
    node: str, device_key: DeviceKey, protocol: str
) -> None:
    async with DeviceEmulator(config_for("half-open", device_key)) as emu:
        report = await drive(
            node, emu, ["publicKey", "configure"], protocol=protocol, lib_timeout_ms=LIB_TIMEOUT_MS
        )
        assert failed(report, "configure") == timeout_text(protocol)
        # saved although the app saw an error; the device keeps blinking blue
        assert stored(emu) == [(HOME_SSID.encode(), HOME_PASSWORD.encode())]
        assert emu.device.state is DeviceState.LISTENING
        assert emu.control.snapshot()["led"]["text"] == "blinking dark blue"
        report = await drive(node, emu, ["publicKey", "configure", "connect"], protocol=protocol)
        assert ok(report, "configure") == {"r": 0}
        await emu.wait_for_state(DeviceState.ONLINE)
        emu.check()


@e2e
async def test_reply_never_closes_times_out_js4_over_tcp_only(
    node: str, device_key: DeviceKey
) -> None:
    async with DeviceEmulator(config_for("reply-never-closes", device_key)) as emu:
        report = await drive(node, emu, ["setClaimCode"], lib_timeout_ms=LIB_TIMEOUT_MS)
        assert failed(report, "setClaimCode") == "TCP socket timed out"
        # the JSON arrived and the command took effect
        assert exchanges(emu, "set")[-1]["reply"].endswith('{"r":0}')
        assert emu.device.dct.claim_code == claim_code(LIB4 + "tcp").encode()
        # 1.x/3.x read the first data and succeed; HTTP is unaffected
        for lib in ("js1", "js3"):
            report = await drive(node, emu, ["deviceInfo", "publicKey", "configure"], lib=lib)
            assert report["ok"], shown(report)
        report = await drive(node, emu, ["deviceInfo"], protocol="http")
        assert report["ok"], shown(report)
        assert emu.device.state is DeviceState.LISTENING
        emu.check()


@e2e
@pytest.mark.parametrize(
    ("protocol", "error"),
    [
        ("tcp", "uncaught exception: Cannot read properties of undefined (reading 'c')"),
        ("http", "socket hang up"),
    ],
)
async def test_silent_close_breaks_device_info(
    node: str, device_key: DeviceKey, protocol: str, error: str
) -> None:
    async with DeviceEmulator(config_for("silent-close", device_key)) as emu:
        report = await drive(node, emu, ["deviceInfo", "publicKey"], protocol=protocol)
        assert failed(report, "deviceInfo") == error
        ok(report, "publicKey")
        assert {r["delivery"] for r in exchanges(emu, "device-id")} == {"close-without-reply"}
        assert emu.device.state is DeviceState.LISTENING
        emu.check()


@e2e
async def test_refuse_after_setups_until_the_ap_restarts(node: str, device_key: DeviceKey) -> None:
    async with DeviceEmulator(config_for("refuse-after-setups", device_key)) as emu:
        ports = (emu.tcp_address[1], emu.http_address[1])
        steps = ["deviceInfo", "scan", "publicKey", "setClaimCode"]  # 5 TCP connections
        report = await drive(node, emu, steps)
        for name in steps[:3]:
            ok(report, name)
        assert failed(report, "setClaimCode") == f"connect ECONNREFUSED 127.0.0.1:{ports[0]}"
        assert not emu.tcp_listening
        report = await drive(node, emu, ["deviceInfo"], protocol="http")
        assert report["ok"], shown(report)
        # the AP restarts (power cycle): the port accepts again, the fault is used up
        emu.control.power("cycle")
        await back_in_listening(emu, ports)
        report = await drive(node, emu, [*steps, "configure", "connect"])
        assert report["ok"], shown(report)
        await emu.wait_for_state(DeviceState.ONLINE)
        emu.check()


@e2e
@pytest.mark.parametrize("protocol", ["tcp", "http"])
async def test_slow_scan_times_out_a_short_timeout_client(
    node: str, device_key: DeviceKey, protocol: str
) -> None:
    clock = ManualClock()
    async with DeviceEmulator(config_for("slow-scan", device_key), clock=clock) as emu:
        report = await drive(node, emu, ["scan"], protocol=protocol, lib_timeout_ms=LIB_TIMEOUT_MS)
        assert failed(report, "scan") == timeout_text(protocol)
        if protocol == "http":
            # the scan blocks the single HTTP event thread until its 4 s are over
            report = await drive(
                node, emu, ["deviceInfo"], protocol=protocol, lib_timeout_ms=LIB_TIMEOUT_MS
            )
            assert failed(report, "deviceInfo") == "HTTP timed out"
        await emu.advance(4.0)
        report = await drive(node, emu, ["deviceInfo"], protocol=protocol)
        assert report["ok"], shown(report)
        assert emu.device.state is DeviceState.LISTENING
        emu.check()


@e2e
async def test_one_http_socket_refuses_a_second_connection(
    node: str, device_key: DeviceKey
) -> None:
    async with DeviceEmulator(config_for("one-http-socket", device_key)) as emu:
        assert emu.device.profile.http_sockets == 1
        host, port = emu.http_address
        # another client (a browser tab's idle keep-alive socket) holds the only socket
        reader, writer = await asyncio.open_connection(host, port)
        report = await drive(node, emu, ["deviceInfo"], protocol="http")
        assert failed(report, "deviceInfo") == "socket hang up"
        report = await drive(node, emu, ["deviceInfo"])  # TCP is unaffected
        assert report["ok"], shown(report)
        writer.close()
        await writer.wait_closed()
        assert await reader.read() == b""
        await _until(lambda: not emu._http.connections)  # type: ignore[union-attr]
        report = await drive(node, emu, FULL, protocol="http")
        assert report["ok"], shown(report)
        await emu.wait_for_state(DeviceState.ONLINE)
        emu.check()


async def _until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Let the event loop run until ``condition`` holds (the server saw a close)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0)


# -- #4 ---------------------------------------------------------------------------------


@e2e
async def test_listening_timeout_joins_and_the_slow_app_is_refused(
    node: str, device_key: DeviceKey
) -> None:
    clock = ManualClock()
    async with DeviceEmulator(config_for("listening-timeout", device_key), clock=clock) as emu:
        port = emu.tcp_address[1]
        report = await drive(node, emu, ["publicKey", "configure"])
        assert ok(report, "configure") == {"r": 0}
        await emu.advance(59.9)
        assert emu.device.state is DeviceState.LISTENING
        assert emu.ap_up
        await emu.advance(0.2)
        await emu.wait_for_state(DeviceState.ONLINE)  # joined without connect-ap
        assert ("listening", "joining", ListeningTimedOut.__name__) in moves(emu)
        assert not emu.ap_up
        report = await drive(node, emu, ["connect"])
        assert failed(report, "connect") == f"connect ECONNREFUSED 127.0.0.1:{port}"
        emu.check()


@e2e
async def test_listening_timeout_without_networks_restarts_listening(
    node: str, device_key: DeviceKey
) -> None:
    clock = ManualClock()
    async with DeviceEmulator(config_for("listening-timeout", device_key), clock=clock) as emu:
        ports = (emu.tcp_address[1], emu.http_address[1])
        await emu.advance(60.1)
        assert ("listening", "listening", ListeningTimedOut.__name__) in moves(emu)
        await back_in_listening(emu, ports)
        report = await drive(node, emu, ["deviceInfo"])
        assert report["ok"], shown(report)
        emu.check()


@e2e
async def test_ap_stays_up_after_the_first_connect(node: str, device_key: DeviceKey) -> None:
    async with DeviceEmulator(config_for("ap-stays-up", device_key)) as emu:
        ports = (emu.tcp_address[1], emu.http_address[1])
        report = await drive(node, emu, ["publicKey", "configure", "connect", "deviceInfo"])
        assert report["ok"], shown(report)  # still answering after connect-ap
        await back_in_listening(emu, ports)
        assert not emu.setup_complete.is_set()
        assert emu.control.snapshot()["join_attempts"] == 0
        report = await drive(node, emu, ["connect"])
        assert report["ok"], shown(report)
        await emu.wait_for_state(DeviceState.ONLINE)
        assert not emu.ap_up
        emu.check()


# -- #6 ---------------------------------------------------------------------------------


@e2e
@pytest.mark.parametrize(
    ("lib", "protocol"), [(LIB4, "tcp"), (LIB4, "http"), ("js1", "tcp"), ("js3", "tcp")]
)
async def test_key_2048_breaks_the_22_byte_slice(
    node: str, device_key: DeviceKey, lib: str, protocol: str
) -> None:
    async with DeviceEmulator(config_for("key-2048", device_key)) as emu:
        assert emu.device.key.bits == 2048
        report = await drive(
            node, emu, ["deviceInfo", "publicKey", "configure"], lib=lib, protocol=protocol
        )
        ok(report, "deviceInfo")
        assert failed(report, "publicKey") == "uncaught exception: Expected 0x2: got 0x30"
        assert "Must retrieve public key" in failed(report, "configure")
        assert emu.device.state is DeviceState.LISTENING
        emu.check()


@e2e
@pytest.mark.parametrize(("lib", "protocol"), [(LIB4, "tcp"), (LIB4, "http"), ("js3", "tcp")])
async def test_key_pkcs1_gives_an_asn1_error(
    node: str, device_key: DeviceKey, lib: str, protocol: str
) -> None:
    async with DeviceEmulator(config_for("key-pkcs1", device_key)) as emu:
        report = await drive(node, emu, ["publicKey", "configure"], lib=lib, protocol=protocol)
        # the clients skip 22 bytes that are not there and parse modulus bytes as ASN.1:
        # which error depends on the key ("encoding too long" as in particle-cli#154,
        # or a tag mismatch)
        assert re.fullmatch(
            r"uncaught exception: (encoding too long|Expected 0x2: got 0x[0-9a-f]+)",
            failed(report, "publicKey"),
        ), shown(report)
        assert "Must retrieve public key" in failed(report, "configure")
        assert emu.device.state is DeviceState.LISTENING
        emu.check()


def served_key(emu: DeviceEmulator) -> bytes:
    reply = exchanges(emu, "public-key")[-1]["reply"]
    return bytes.fromhex(json.loads(reply.strip())["b"])


def public_numbers(pem: str) -> rsa.RSAPublicNumbers:
    key = serialization.load_pem_public_key(pem.encode("ascii"))
    assert isinstance(key, rsa.RSAPublicKey)
    return key.public_numbers()


@e2e
async def test_key_unpadded_npm_clients_cope(node: str, device_key: DeviceKey) -> None:
    async with DeviceEmulator(config_for("key-unpadded", device_key)) as emu:
        report = await drive(node, emu, ["publicKey", "configure", "connect"])
        assert report["ok"], shown(report)
        assert len(served_key(emu)) == 162  # 324 hex digits, not 588
        assert public_numbers(ok(report, "publicKey")) == public_numbers(
            device_key.public_key_pem.decode()
        )
        assert ok(report, "configure") == {"r": 0}
        await emu.wait_for_state(DeviceState.ONLINE)
        emu.check()


@e2e
async def test_key_corrupt_every_parser_rejects_it(node: str, device_key: DeviceKey) -> None:
    async with DeviceEmulator(config_for("key-corrupt", device_key)) as emu:
        report = await drive(node, emu, ["publicKey", "configure"])
        der = served_key(emu)
        assert der[25] == 0x05  # the modulus INTEGER tag
        spki = der[: 3 + der[2]]  # 30 81 9f ...: the DER without the padding
        with pytest.raises(ValueError):
            serialization.load_der_public_key(spki)
        assert not report["ok"], shown(report)
        assert "Expected 0x2: got 0x5" in json.dumps(report["steps"]["publicKey"]), shown(report)
        assert emu.device.state is DeviceState.LISTENING
        emu.check()


# -- #8 ---------------------------------------------------------------------------------


@e2e
async def test_low_memory_seems_to_save_then_recovers_with_free_ram(
    node: str, device_key: DeviceKey
) -> None:
    async with DeviceEmulator(config_for("low-memory", device_key)) as emu:
        ports = (emu.tcp_address[1], emu.http_address[1])
        snap = emu.control.snapshot()
        assert snap["listening_health"]["gate_passed"] is False
        assert snap["listening_health"]["free_at_trigger_bytes"] == 21_940
        assert snap["access_point"]["below_memory_gate"] is True
        report = await drive(node, emu, FULL)
        assert report["ok"], shown(report)  # every step "succeeds" ...
        assert ok(report, "configure") == {"r": 0}
        assert exchanges(emu, "set")[-1]["reply"].endswith('{"r":0}')
        # ... but nothing was saved, so the device comes straight back to listening mode
        assert stored(emu) == []
        assert emu.device.dct.claim_code == b""
        await asyncio.wait_for(emu.setup_complete.wait(), 5)
        await back_in_listening(emu, ports)
        assert emu.control.snapshot()["join_attempts"] == 0
        # the firmware's way out: free application RAM and enter listening mode again
        emu.control.set_app_ram(0)
        emu.control.power("cycle")
        await back_in_listening(emu, ports)
        assert emu.control.snapshot()["listening_health"]["gate_passed"] is True
        report = await drive(node, emu, FULL)
        assert report["ok"], shown(report)
        await emu.wait_for_state(DeviceState.ONLINE)
        assert stored(emu) == [(HOME_SSID.encode(), HOME_PASSWORD.encode())]
        emu.check()


@e2e
async def test_low_memory_refuse_has_no_ap(node: str, device_key: DeviceKey) -> None:
    async with DeviceEmulator(config_for("low-memory-refuse", device_key)) as emu:
        ports = (emu.tcp_address[1], emu.http_address[1])
        snap = emu.control.snapshot()
        assert snap["state"] == "listening"
        assert snap["led"]["text"] == "blinking dark blue"
        assert snap["access_point"] is None
        assert snap["listening_health"]["refused"] is True
        for protocol, port in zip(("tcp", "http"), ports, strict=True):
            report = await drive(node, emu, ["deviceInfo"], protocol=protocol)
            assert failed(report, "deviceInfo") == f"connect ECONNREFUSED 127.0.0.1:{port}"
        emu.control.set_app_ram(0)
        emu.control.power("cycle")
        await back_in_listening(emu, ports)
        report = await drive(node, emu, ["deviceInfo"], protocol="http")
        assert report["ok"], shown(report)
        emu.check()


# -- #11 --------------------------------------------------------------------------------


def pack_ssids(pack: str) -> list[str]:
    return [
        ap.advertised_ssid.decode("utf-8")
        for ap in scan_pack(pack).access_points
        if ap.advertised_ssid
    ]


@e2e
@pytest.mark.parametrize(
    ("name", "ssids"),
    [
        ("scan-empty", []),
        ("scan-large", [f"Apartment-{i:02d}" for i in range(60)]),
        ("scan-unicode", pack_ssids("unicode")),
        ("scan-hidden", ["Visible"]),
        ("scan-duplicates", ["Mesh", "Mesh", "Mesh", "Cafe", "Cafe"]),
        ("scan-partial", ["guest", "Cafe"]),
    ],
)
@pytest.mark.parametrize("protocol", ["tcp", "http"])
async def test_scan_pack_as_the_client_sees_it(
    node: str, device_key: DeviceKey, name: str, ssids: list[str], protocol: str
) -> None:
    async with DeviceEmulator(config_for(name, device_key)) as emu:
        report = await drive(node, emu, ["scan"], protocol=protocol)
        assert [s["ssid"] for s in ok(report, "scan")] == ssids
        emu.check()


@e2e
@pytest.mark.parametrize(
    ("name", "ssid", "result"),
    [
        ("scan-empty", HOME_SSID, {"r": -2}),
        ("scan-hidden", "Hidden-Lab", {"r": -2}),
        ("scan-partial", HOME_SSID, {"r": 0}),
    ],
)
async def test_configure_a_network_missing_from_the_scan(
    node: str, device_key: DeviceKey, name: str, ssid: str, result: dict[str, int]
) -> None:
    async with DeviceEmulator(config_for(name, device_key)) as emu:
        report = await drive(node, emu, ["publicKey", "configure", "connect"], ssid=ssid)
        assert ok(report, "configure") == result
        if result["r"] == 0:
            await emu.wait_for_state(DeviceState.ONLINE)
        else:
            assert stored(emu) == []
        emu.check()


@e2e
@pytest.mark.parametrize(
    ("lib", "protocol", "error"),
    [
        (LIB4, "tcp", "uncaught exception: Cannot read properties of undefined (reading 'scans')"),
        (LIB4, "http", "Invalid JSON received from device."),
        ("js1", "tcp", "Invalid JSON received from device."),
        ("js3", "tcp", "Invalid JSON received from device."),
    ],
)
async def test_scan_quotes_is_invalid_json(
    node: str, device_key: DeviceKey, lib: str, protocol: str, error: str
) -> None:
    async with DeviceEmulator(config_for("scan-quotes", device_key)) as emu:
        report = await drive(node, emu, ["scan", "deviceInfo"], lib=lib, protocol=protocol)
        assert failed(report, "scan") == error
        ok(report, "deviceInfo")
        assert emu.device.state is DeviceState.LISTENING
        emu.check()


# -- user firmware: slow and stuck functions (needs the cloud's device link) -------------


@pytest.mark.asyncio
async def test_slow_function_waits_and_stuck_function_times_out(device_key: DeviceKey) -> None:
    """``slow-function``: lightsOn answers after 3 s of model time; stuck never does."""
    from softap_sim.cloud.errors import DeviceTimeout
    from softap_sim.cloud.service import CloudService

    service = CloudService(None)
    await service.open()
    try:
        await service.serve_devices("127.0.0.1", 0)
        assert service.device_server is not None
        server = service.device_server

        async def register(e: DeviceEmulator) -> None:
            await service.register_device(
                e.device.dct.identity.device_id_hex, e.device.key.public_key_pem.decode()
            )

        config = dataclasses.replace(
            load_scenario("slow-function").apply(SimConfig(key=device_key)),
            radio=RadioEnvironment.from_list(
                [{"ssid": "HomeNet", "security": "wpa2_aes", "password": "home-wifi-pw"}]
            ),
            cloud_endpoint=("127.0.0.1", server.port),
            server_public_key_pem=service.server_public_key_pem,
        )
        async with DeviceEmulator(config, clock=ManualClock(), before_power_on=register) as emu:
            emu.device.dct.credentials.add(
                WifiCredential(b"HomeNet", Secret(b"home-wifi-pw"), sec.WPA2_AES_PSK, 6)
            )
            emu.control.press_button(0.5)  # leave listening mode: join, connect
            await emu.wait_for_state(DeviceState.ONLINE)
            device_id = emu.device.dct.identity.device_id_hex.lower()
            await server.wait_ready(device_id)
            call = asyncio.ensure_future(server.call_function(device_id, "lightsOn", "x", 10.0))
            done, _ = await asyncio.wait({call}, timeout=0.2)
            assert not done  # the function is still running on the device
            await emu.advance(3.0)
            assert await asyncio.wait_for(call, 5) == 1
            with pytest.raises(DeviceTimeout):
                await server.call_function(device_id, "stuck", "", 0.3)
            assert await server.get_variable(device_id, "temperature", 5) == 21.5
            emu.check()
    finally:
        await service.close()
