"""Real npm SoftAP client libraries against the emulator (clients.md §2, §3).

Each pinned library in ``tests/clients`` (``npm ci`` installs them from the lock file)
is run by ``tests/clients/setup_driver.js`` in a Node subprocess through the whole
setup sequence: deviceInfo, scan, publicKey, setClaimCode, configure (the library
RSA-encrypts the password with the key it fetched) and connect. The driver prints one
JSON report; the tests check it and then look inside the emulated device.

Libraries and transports:

* ``particle-4.1.2``: ``@particle/softap-setup`` 4.1.2, TCP and HTTP
* ``js1``: ``softap-setup`` 1.1.4, TCP only
* ``js3``: ``softap-setup`` 3.0.2, TCP and HTTP
* ``ts``: ``softap-setup-ts`` 1.2.1 (loaded through a module-syntax rewriting loader), TCP and HTTP

The module is skipped, with a reason, only when ``tests/clients/node_modules`` is
missing (run ``npm ci`` in ``tests/clients``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import importlib.util
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from firmware_model import DeviceState, RadioEnvironment, Reply, ReplyKind
from firmware_model.security import SECURITY_NAMES, SecurityFamily, family_of
from softap_sim.config import SimConfig
from softap_sim.emulator import DeviceEmulator
from tests import paths

CLIENTS_DIR = paths.CLIENTS
NODE_MODULES = CLIENTS_DIR / "node_modules"
DRIVER = CLIENTS_DIR / "setup_driver.js"

if not NODE_MODULES.is_dir():
    pytest.skip(
        f"{NODE_MODULES} is missing: run 'npm ci' in {CLIENTS_DIR} to install the pinned "
        "SoftAP client libraries (the project's test script does this first)",
        allow_module_level=True,
    )

_marks = [pytest.mark.asyncio]
if importlib.util.find_spec("pytest_timeout") is not None:
    _marks.append(pytest.mark.timeout(60))
pytestmark = _marks

#: package directory inside node_modules for each driver ``lib`` name
LIB_PACKAGES = {
    "particle-4.1.2": "@particle/softap-setup",
    "js1": "softap-setup-1",
    "js3": "softap-setup-3",
    "ts": "softap-setup-ts",
}
#: every (library, transport) pair the libraries support
LIB_TRANSPORTS = [
    pytest.param("particle-4.1.2", "tcp", id="particle-4.1.2-tcp"),
    pytest.param("particle-4.1.2", "http", id="particle-4.1.2-http"),
    pytest.param("js1", "tcp", id="js1-tcp"),
    pytest.param("js3", "tcp", id="js3-tcp"),
    pytest.param("js3", "http", id="js3-http"),
    pytest.param("ts", "tcp", id="ts-tcp"),
    pytest.param("ts", "http", id="ts-http"),
]
#: the 4.x code base (4.1.2 and its TypeScript port): lower-cases the id, returns the
#: scans list, calls back with no data for set/connect, and warms up with a device-id
JS4_FAMILY = {"particle-4.1.2", "ts"}

FULL_SEQUENCE = ["deviceInfo", "scan", "publicKey", "setClaimCode", "configure", "connect"]
#: what the device sees for the full sequence, per library and transport
EXPECTED_COMMANDS = ["device-id", "scan-ap", "public-key", "set", "configure-ap", "connect-ap"]

ASCII_SSID = "HomeNetwork"
ASCII_CHANNEL = 1
NON_ASCII_SSID = "Café-Net"
NON_ASCII_CHANNEL = 9
SECURITY_NAME = "wpa2_aes"  # in every library's table (js1/js3 have no enterprise names)

#: the simulated neighbourhood: both test networks are in range, so configure-ap's
#: security sniffing finds them (a WPA2 SSID out of range would give r = -2)
NETWORKS = [
    {
        "ssid": ASCII_SSID,
        "security": "wpa2_aes",
        "channel": ASCII_CHANNEL,
        "rssi": -45,
        "password": "the-real-home-password",
    },
    {
        "ssid": NON_ASCII_SSID,
        "security": "wpa2_aes",
        "channel": NON_ASCII_CHANNEL,
        "rssi": -63,
        "password": "croissant-au-beurre",
    },
    {
        "ssid": "guest",
        "security": "wpa2_mixed",
        "channel": 6,
        "rssi": -52,
        "password": "guest-password",
    },
]

#: whole-subprocess bound; each driver step has its own watchdog below it
DRIVER_TIMEOUT_S = 40.0
STEP_TIMEOUT_MS = 10_000


# -- helpers -----------------------------------------------------------------------


def claim_code_for(label: str) -> str:
    """A 63-char code shaped like the cloud's (base64 alphabet, with ``+`` and ``/``)."""
    raw = hashlib.sha256(label.encode()).digest() * 2
    code = base64.b64encode(raw).decode("ascii").rstrip("=")[:63]
    assert len(code) == 63
    return code


@dataclass
class Seen:
    """One command as the device model executed it."""

    name: str
    body: bytes | None
    reply: Reply


@contextmanager
def spy_on_device(emu: DeviceEmulator) -> Iterator[list[Seen]]:
    """Record every command the device model executes, with the exact body it read."""
    device = emu.device
    original: Callable[..., Reply] = device.execute
    seen: list[Seen] = []

    def execute(name: str, body: bytes | None = b"") -> Reply:
        reply = original(name, body)
        seen.append(Seen(name, body, reply))
        return reply

    device.execute = execute  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        del device.execute  # back to the class method


def state_files(state_dir: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(state_dir)): p.read_bytes()
        for p in sorted(state_dir.rglob("*"))
        if p.is_file()
    }


async def run_driver(node: str, args: dict[str, Any]) -> dict[str, Any]:
    """Run setup_driver.js once; return its JSON report (fails the test on anything else)."""
    args = {"stepTimeoutMs": STEP_TIMEOUT_MS, **args}
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
        pytest.fail(
            f"setup_driver.js did not exit within {DRIVER_TIMEOUT_S} s for {args['lib']}"
            f"/{args['protocol']}"
        )
    lines = out.decode("utf-8", "replace").strip().splitlines()
    stderr = err.decode("utf-8", "replace").strip()
    if not lines:
        pytest.fail(f"setup_driver.js printed nothing (exit {proc.returncode}); stderr:\n{stderr}")
    try:
        report: dict[str, Any] = json.loads(lines[-1])
    except ValueError:
        pytest.fail(f"setup_driver.js printed no JSON (exit {proc.returncode}):\n{out!r}\n{stderr}")
    report["_stderr"] = stderr
    report["_exit"] = proc.returncode
    return report


def shown(report: dict[str, Any]) -> str:
    """The report for an assertion message, without the bulky PEM and scan list."""
    slim = json.loads(json.dumps(report))
    for name, step in slim.get("steps", {}).items():
        if step.get("ok") and name.startswith(("publicKey", "scan")):
            step["result"] = "<elided>"
    return json.dumps(slim, indent=1, ensure_ascii=False)


def step_result(report: dict[str, Any], name: str) -> Any:
    step = report["steps"].get(name)
    assert step is not None, f"step {name} did not run:\n{shown(report)}"
    assert step["ok"], f"step {name} failed: {step.get('error')}\n{shown(report)}"
    return step["result"]


def public_numbers_of_pem(pem: str) -> rsa.RSAPublicNumbers:
    key = serialization.load_pem_public_key(pem.encode("ascii"))
    assert isinstance(key, rsa.RSAPublicKey)
    return key.public_numbers()


def utf16_units(text: str) -> int:
    """What JavaScript's ``String.length`` counts (clients.md §2.1)."""
    return len(text.encode("utf-16-le")) // 2


# -- fixtures ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def node() -> str:
    """The node binary plus a check that every pinned library is installed."""
    path = shutil.which("node")
    if path is None:
        pytest.fail("node is not on PATH, but tests/clients/node_modules exists: install Node.js")
    missing = [
        pkg for pkg in LIB_PACKAGES.values() if not (NODE_MODULES / pkg / "package.json").is_file()
    ]
    if missing:
        pytest.fail(f"{NODE_MODULES} lacks {', '.join(missing)}: run 'npm ci' in {CLIENTS_DIR}")
    return path


@pytest.fixture
def sim_config(tmp_path: Path) -> SimConfig:
    return SimConfig(state_dir=tmp_path / "device", radio=RadioEnvironment.from_list(NETWORKS))


def driver_args(lib: str, protocol: str, emu: DeviceEmulator, **extra: Any) -> dict[str, Any]:
    host, port = emu.tcp_address if protocol == "tcp" else emu.http_address
    return {
        "lib": lib,
        "protocol": protocol,
        "host": host,
        "port": port,
        "security": SECURITY_NAME,
        **extra,
    }


# -- tests ---------------------------------------------------------------------------


@pytest.mark.parametrize(("lib", "protocol"), LIB_TRANSPORTS)
async def test_full_setup_sequence_stores_what_the_client_sent(
    node: str, sim_config: SimConfig, lib: str, protocol: str
) -> None:
    password = "the-real-home-password"  # the simulated AP's: the join succeeds
    claim_code = claim_code_for(f"{lib}-{protocol}")
    async with DeviceEmulator(sim_config, host="127.0.0.1", tcp_port=0, http_port=0) as emu:
        device = emu.device
        with spy_on_device(emu) as seen:
            report = await run_driver(
                node,
                driver_args(
                    lib,
                    protocol,
                    emu,
                    ssid=ASCII_SSID,
                    password=password,
                    channel=ASCII_CHANNEL,
                    claimCode=claim_code,
                ),
            )
        assert report["ok"], shown(report)
        assert list(report["steps"]) == FULL_SEQUENCE, shown(report)
        assert report["uncaught"] == [], shown(report)
        assert report["extraCallbacks"] == {}, shown(report)

        # deviceInfo: unclaimed; the id as the device prints it (upper case), which the
        # 4.x code base lower-cases and 1.x/3.x pass on as sent
        info = step_result(report, "deviceInfo")
        device_id = device.dct.identity.device_id_hex
        assert info == {
            "id": device_id.lower() if lib in JS4_FAMILY else device_id,
            "claimed": False,
        }

        # scan: 4.x returns the list, 1.x/3.x the whole {"scans": [...]} object
        scan = step_result(report, "scan")
        scans = scan if lib in JS4_FAMILY else scan["scans"]
        assert {s["ssid"] for s in scans} == {n["ssid"] for n in NETWORKS}

        # publicKey: the library's PEM is the device's RSA-1024 key
        pem = step_result(report, "publicKey")
        assert pem.startswith("-----BEGIN PUBLIC KEY-----")
        assert public_numbers_of_pem(pem) == public_numbers_of_pem(
            device.key.public_key_pem.decode("ascii")
        )
        assert device.key.bits == 1024

        # set / configure / connect: raw results (4.x checks r itself for set and connect
        # and calls back with no data; it does NOT check configure's r: we do)
        ok_result = None if lib in JS4_FAMILY else {"r": 0}
        assert step_result(report, "setClaimCode") == ok_result
        assert step_result(report, "configure") == {"r": 0}
        assert step_result(report, "connect") == ok_result

        # what the device stored
        creds = list(device.dct.credentials)
        assert len(creds) == 1
        cred = creds[0]
        assert cred.ssid == ASCII_SSID.encode("utf-8")
        assert cred.password.value == password.encode("utf-8")
        assert family_of(cred.security) is family_of(SECURITY_NAMES[SECURITY_NAME])
        assert family_of(cred.security) is SecurityFamily.WPA2
        assert cred.channel == ASCII_CHANNEL
        assert device.dct.claim_code == claim_code.encode("ascii")
        assert device.dct.claimed is False

        # what the device saw: one extra device-id from the 4.x TCP warm-up connection
        names = [s.name for s in seen]
        warm_up = ["device-id"] if lib in JS4_FAMILY and protocol == "tcp" else []
        assert names == warm_up + EXPECTED_COMMANDS
        # 1.x sends connect-ap with no body; the others send {"idx":0} (never read)
        assert all(s.reply.kind is ReplyKind.JSON for s in seen)

        # connect-ap answered, then the access point went down and the device joined
        await asyncio.wait_for(emu.setup_complete.wait(), 5)
        await emu.wait_for_state(DeviceState.ONLINE)
        assert not emu.ap_up
        emu.check()


@pytest.mark.parametrize(("lib", "protocol"), LIB_TRANSPORTS)
async def test_non_ascii_password_is_stored_as_exact_utf8(
    node: str, sim_config: SimConfig, lib: str, protocol: str
) -> None:
    # 11 UTF-16 units, 15 UTF-8 bytes; only its (hex) ciphertext goes on the wire
    password = "pässwörd-ü€"
    async with DeviceEmulator(sim_config, host="127.0.0.1", tcp_port=0, http_port=0) as emu:
        report = await run_driver(
            node,
            driver_args(
                lib,
                protocol,
                emu,
                ssid=ASCII_SSID,
                password=password,
                channel=ASCII_CHANNEL,
                claimCode=claim_code_for("pw"),
                steps=["publicKey", "configure", "connect"],
            ),
        )
        assert report["ok"], shown(report)
        assert step_result(report, "configure") == {"r": 0}
        creds = list(emu.device.dct.credentials)
        assert [(c.ssid, c.password.value) for c in creds] == [
            (ASCII_SSID.encode(), password.encode())
        ]
        assert family_of(creds[0].security) is SecurityFamily.WPA2
        emu.check()


#: what each client reports when the device answers configure-ap with no JSON
#: (TCP "\n\n" then close; HTTP 200 with an empty chunked body), clients.md §4 #8
NO_JSON_REPORT = {
    # JS4 over TCP: the socket closes with nothing parseable -> success, no data
    ("particle-4.1.2", "tcp"): {"ok": True, "result": None},
    ("ts", "tcp"): {"ok": True, "result": None},
    # everyone else: JSON.parse fails
    ("particle-4.1.2", "http"): {"ok": False, "error": "Invalid JSON received from device."},
    ("ts", "http"): {"ok": False, "error": "Invalid JSON received from device."},
    ("js1", "tcp"): {"ok": False, "error": "Invalid JSON received from device."},
    ("js3", "tcp"): {"ok": False, "error": "Invalid JSON received from device."},
    ("js3", "http"): {"ok": False, "error": "Invalid JSON received from device."},
}
CONFIGURE_CUT_RE = re.compile(
    rb'\{"idx":0,"ssid":"Caf\xc3\xa9-Net","sec":%d,"ch":%d,"pwd":"[0-9a-f]{256}"\Z'
    % (SECURITY_NAMES[SECURITY_NAME], NON_ASCII_CHANNEL)
)


@pytest.mark.parametrize(("lib", "protocol"), LIB_TRANSPORTS)
async def test_non_ascii_ssid_body_is_cut_short_and_nothing_is_stored(
    node: str, sim_config: SimConfig, tmp_path: Path, lib: str, protocol: str
) -> None:
    """Clients announce UTF-16 units; the device reads that many bytes (softap-protocol.md §2.1).

    ``é`` is one UTF-16 unit but two UTF-8 bytes, so the device's read stops one byte
    short: the body lacks its closing ``}``, jsmn rejects it, the device writes no JSON
    and stores nothing, exactly like a Photon.
    """
    async with DeviceEmulator(sim_config, host="127.0.0.1", tcp_port=0, http_port=0) as emu:
        device = emu.device
        before = state_files(tmp_path / "device")
        with spy_on_device(emu) as seen:
            report = await run_driver(
                node,
                driver_args(
                    lib,
                    protocol,
                    emu,
                    ssid=NON_ASCII_SSID,
                    password="croissant-au-beurre",
                    channel=NON_ASCII_CHANNEL,
                    claimCode=claim_code_for("cafe"),
                    steps=["publicKey", "configure"],
                ),
            )

        # the library's own report
        step = dict(report["steps"].get("configure", {}))
        step.pop("ms", None)
        assert step == NO_JSON_REPORT[(lib, protocol)], shown(report)
        assert report["uncaught"] == [], shown(report)

        # the device read exactly the announced UTF-16 length and answered with no JSON
        configure = [s for s in seen if s.name == "configure-ap"]
        assert len(configure) == 1, [s.name for s in seen]
        body = configure[0].body
        assert body is not None
        full_json = (body + b"}").decode("utf-8")  # what the client serialised
        assert len(body) == utf16_units(full_json) == len(full_json.encode("utf-8")) - 1
        assert CONFIGURE_CUT_RE.match(body), body
        assert configure[0].reply.kind is ReplyKind.NO_JSON

        # and NOTHING was stored: no network, no claim code, no change on disk
        assert list(device.dct.credentials) == []
        assert device.credentials_changed is False
        assert device.dct.claim_code == b""
        assert device.dct.claimed is False
        assert state_files(tmp_path / "device") == before
        assert emu.ap_up
        emu.check()


async def test_configure_without_channel_sends_null_and_stores_channel_zero(
    node: str, sim_config: SimConfig
) -> None:
    """JS clients put ``"ch":null`` on the wire when no channel is given (clients.md §2.1)."""
    async with DeviceEmulator(sim_config, host="127.0.0.1", tcp_port=0, http_port=0) as emu:
        with spy_on_device(emu) as seen:
            report = await run_driver(
                node,
                driver_args(
                    "particle-4.1.2",
                    "tcp",
                    emu,
                    ssid=ASCII_SSID,
                    password="correct-horse-42",
                    channel=None,
                    claimCode=claim_code_for("null-ch"),
                    steps=["publicKey", "configure"],
                ),
            )
        assert step_result(report, "configure") == {"r": 0}
        body = next(s.body for s in seen if s.name == "configure-ap")
        assert body is not None
        assert b'"ch":null' in body
        creds = list(emu.device.dct.credentials)
        assert [(c.ssid, c.channel) for c in creds] == [(ASCII_SSID.encode(), 0)]
        emu.check()
