"""particle-cli 3.40.0 (the real one, pinned in tests/clients) against the local cloud.

Set up as a user would: ``particle config local apiUrl URL`` and ``particle config
local`` in a temporary HOME, then every cloud command a Photon developer uses, run
non-interactively (answers on stdin where the CLI prompts) and checked on its output and
on the cloud's state. Commands that need hardware or the compile service fail at once
with the CLI's own message, never hang (every call is bounded).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from firmware_model import DeviceKey, DeviceState
from firmware_model.app import UserApp, default_app
from softap_sim import DeviceEmulator
from softap_sim.cloud.errors import InvalidToken
from softap_sim.cloud.service import CloudService
from tests import paths
from tests.cloud.test_link_device import join
from tests.conftest import seeded_key
from tests.linked import Events, linked_cloud

CLIENTS = paths.CLIENTS
PARTICLE = CLIENTS / "node_modules" / ".bin" / "particle"
pytestmark = [
    pytest.mark.skipif(
        not PARTICLE.exists() or shutil.which("node") is None,
        reason="particle-cli is missing: run 'npm ci' in tests/clients (scripts/test.sh does)",
    ),
    pytest.mark.timeout(180),
]
CALL_TIMEOUT_S = 60.0
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def plain(text: str) -> str:
    return ANSI.sub("", text)


@dataclass
class Cli:
    home: Path
    service: CloudService
    emu: DeviceEmulator
    events: Events
    password: str
    device_id: str

    async def run(self, *args: str, stdin: str = "") -> tuple[int, str]:
        """One ``particle`` command; (exit code, stdout+stderr without colour codes)."""
        proc = await asyncio.create_subprocess_exec(
            str(PARTICLE),
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={
                "PATH": os.environ.get("PATH", ""),
                "HOME": str(self.home),
                "PARTICLE_DISABLE_UPDATE": "true",
                "NO_COLOR": "1",
            },
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(stdin.encode()), CALL_TIMEOUT_S)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert proc.returncode is not None
        return proc.returncode, plain(out.decode("utf-8", "replace"))

    async def ok(self, *args: str, stdin: str = "") -> str:
        code, out = await self.run(*args, stdin=stdin)
        assert code == 0, f"particle {' '.join(args)} -> {code}: {out}"
        return out

    async def login(self) -> None:
        out = await self.ok("login", "-u", "developer@softap-sim.test", "-p", self.password)
        assert "Successfully completed login!" in out

    def config(self) -> dict[str, Any]:
        return dict(json.loads((self.home / ".particle" / "local.config.json").read_text()))


def app() -> UserApp:
    base = default_app()
    extra = UserApp.from_mapping(
        {
            "events": {"doorbell": {"data": "ring"}},
            "subscriptions": [{"prefix": "lights"}],
        }
    )
    base.events, base.subscriptions = extra.events, extra.subscriptions
    return base


@pytest_asyncio.fixture
async def cli(tmp_path: Path, device_key: DeviceKey) -> AsyncIterator[Cli]:
    home = tmp_path / "home"
    home.mkdir()
    async with linked_cloud() as cloud:
        config = cloud.device_config(device_key, app=app())
        async with DeviceEmulator(config, before_power_on=cloud.register) as emu:
            await join(emu)  # the device is set up over SoftAP and comes online
            await emu.wait_for_state(DeviceState.ONLINE)
            device_id = emu.device.dct.identity.device_id_hex.lower()
            assert cloud.service.device_server is not None
            await cloud.service.device_server.wait_ready(device_id)
            c = Cli(home, cloud.service, emu, cloud.events, cloud.password, device_id)
            # as the issue says a user would point the CLI at the emulator
            await c.ok("config", "local", "apiUrl", cloud.url)
            await c.ok("config", "local")
            assert c.config()["apiUrl"] == cloud.url
            yield c
            emu.check()


@pytest.mark.asyncio
async def test_login_whoami_logout(cli: Cli) -> None:
    await cli.login()
    token = cli.config()["access_token"]
    assert cli.config()["username"] == "developer@softap-sim.test"
    assert (await cli.ok("whoami")).strip().lstrip("> ") == "developer@softap-sim.test"
    out = await cli.ok("logout")
    assert "You have been logged out from developer@softap-sim.test" in out
    code, out = await cli.run("whoami")
    assert code != 0
    with pytest.raises(InvalidToken):  # logout revoked the CLI's token in the cloud
        await cli.service.backend.principal_for(token)
    # login --token: a token minted with curl (here: the OAuth route, as curl would)
    async with aiohttp.ClientSession() as session:
        assert cli.service.server is not None
        async with session.post(
            cli.service.server.url + "/oauth/token",
            data={
                "grant_type": "password",
                "username": "developer@softap-sim.test",
                "password": cli.password,
            },
            headers={"Authorization": aiohttp.encode_basic_auth("particle", "particle")},
        ) as resp:
            token = (await resp.json())["access_token"]
    await cli.ok("login", "--token", token)
    assert (await cli.ok("whoami")).strip().lstrip("> ") == "developer@softap-sim.test"
    code, out = await cli.run("login", "-u", "developer@softap-sim.test", "-p", "wrong")
    assert code != 0
    assert "error" in out.lower()


@pytest.mark.asyncio
async def test_claim_list_call_get_rename_remove(cli: Cli) -> None:
    await cli.login()
    out = await cli.ok("device", "add", cli.device_id)
    assert f"Successfully claimed device {cli.device_id}" in out
    owner = await cli.service.backend.device_owner(cli.device_id)
    assert owner is not None
    listed = await cli.ok("list")
    assert f"photon_{cli.device_id[-6:]} [{cli.device_id}] (Photon) is online" in listed
    for line in ("temperature (double)", "room (string)", "int lightsOn (String args)"):
        assert line in listed
    assert (await cli.ok("call", cli.device_id, "lightsOn", "livingRoom")).strip() == "1"
    assert (await cli.ok("call", cli.device_id, "echoLen", "livingRoom")).strip() == "10"
    assert (await cli.ok("get", cli.device_id, "temperature")).strip() == "21.5"
    assert (await cli.ok("get", cli.device_id, "room")).strip() == "livingRoom"
    functions = await cli.ok("function", "list")
    assert "int lightsOff (String args)" in functions
    variables = await cli.ok("variable", "list")
    assert "uptime (int32)" in variables
    code, out = await cli.run("call", cli.device_id, "nosuch")
    assert code != 0
    out = await cli.ok("device", "rename", cli.device_id, "kitchen")
    assert f"Successfully renamed device {cli.device_id} to: kitchen" in out
    row = await cli.service.backend.device_row(cli.device_id)
    assert row is not None
    assert row["name"] == "kitchen"
    assert "kitchen [" in await cli.ok("list")
    assert (await cli.ok("get", "kitchen", "uptime")).strip() == "42"  # by name
    out = await cli.ok("nyan", cli.device_id)
    out = await cli.ok("device", "remove", cli.device_id, stdin="y\n")
    assert "releasing device" in out
    assert await cli.service.backend.device_owner(cli.device_id) is None
    assert "No devices found." in await cli.ok("list")


@pytest.mark.asyncio
async def test_token_create_and_revoke(cli: Cli) -> None:
    await cli.login()
    out = await cli.ok("token", "create", stdin=cli.password + "\n")
    match = re.search(r"\b([0-9a-f]{40})\b", out)
    assert match, out
    token = match.group(1)
    principal = await cli.service.backend.principal_for(token)
    assert principal.kind == "user"
    out = await cli.ok("token", "create", "--never-expires", stdin=cli.password + "\n")
    assert re.search(r"\b[0-9a-f]{40}\b", out)
    out = await cli.ok("token", "revoke", token)
    assert "Successfully revoked all provided tokens" in out
    with pytest.raises(InvalidToken):
        await cli.service.backend.principal_for(token)
    # its own token needs --force
    _code, out = await cli.run("token", "revoke", cli.config()["access_token"])
    assert "use --force to delete it" in out


@pytest.mark.asyncio
async def test_publish_reaches_the_device_and_subscribe_sees_device_events(cli: Cli) -> None:
    await cli.login()
    await cli.ok("device", "add", cli.device_id)
    out = await cli.ok("publish", "lights/kitchen", "on")
    assert "Published private event: lights/kitchen" in out
    async with asyncio.timeout(CALL_TIMEOUT_S):
        while not any(
            r["name"] == "lights/kitchen" and r["direction"] == "in" for r in cli.emu.events
        ):
            await cli.emu.settle()
            await asyncio.sleep(0)
    record = next(r for r in cli.emu.events if r["name"] == "lights/kitchen")
    assert (record["data"], record["handled"]) == ("on", True)

    # particle subscribe sees what the device publishes (SSE), until it is stopped
    proc = await asyncio.create_subprocess_exec(
        str(PARTICLE),
        "subscribe",
        "doorbell",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(cli.home),
            "PARTICLE_DISABLE_UPDATE": "true",
        },
    )
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(CALL_TIMEOUT_S):
            line = ""
            while "Subscribing to" not in line:
                line = plain((await proc.stdout.readline()).decode())
            while True:
                # the CLI prints its banner before its stream is open: publish again
                # until one arrives (each round waits for the CLI, not for a clock)
                cli.emu.control.publish({"name": "doorbell"})
                try:
                    raw = await asyncio.wait_for(proc.stdout.readline(), 1.0)
                except TimeoutError:
                    continue
                text = plain(raw.decode()).strip()
                if text.startswith("{"):
                    event = json.loads(text)
                    break
        assert event["name"] == "doorbell"
        assert event["data"] == "ring"
        assert event["coreid"] == cli.device_id
    finally:
        proc.terminate()
        await proc.wait()


@pytest.mark.asyncio
async def test_product_device_list_and_webhooks(cli: Cli) -> None:
    await cli.login()
    product_device = "0123456789abcdef01234567"
    key = seeded_key(11).public_key_pem.decode()
    await cli.service.register_device(product_device, key, product_id=10001)
    out = await cli.ok("product", "device", "list", "10001")
    assert product_device in out
    assert cli.device_id not in out  # not in the product
    assert "Found 0 hooks registered" in await cli.ok("webhook", "list")
    assert "No devices found." in await cli.ok("usb", "list")


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["compile", "photon", "nosuch.ino"], "Compile failed"),
        (["keys", "server"], "No devices found"),
        (["serial", "list"], ""),
        (["flash", "DEVICE", "tinker"], ""),
        (["identify"], ""),
        (["update"], "No devices found"),
        (["library", "search", "neopixel"], "404"),
    ],
)
async def test_out_of_scope_commands_fail_fast(cli: Cli, args: list[str], message: str) -> None:
    """Hardware and the build service are not emulated: the CLI's own error, no hang."""
    await cli.login()
    args = [cli.device_id if a == "DEVICE" else a for a in args]
    code, out = await cli.run(*args)
    assert code != 0
    assert message in out
