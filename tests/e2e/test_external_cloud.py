"""Several processes share one cloud (issue 12 item 6).

``softap-sim cloud serve`` now serves the device endpoint too; ``softap-sim run`` and
``softap-sim fleet`` take ``--cloud URL`` (+ a token that may register devices), read the
device endpoint and server key from ``GET /v1/softap-sim/cloud`` and register their
devices with ``POST /v1/provisioning/{id}``. Tested with real processes: a device set up
over TCP joins and comes online in the other process's cloud, and so does a fleet device.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from softap_sim.cli import main
from tests.wire import tcp_exchange

pytestmark = pytest.mark.timeout(120)
WAIT_S = 30.0
OPEN_NETWORK = b'{"idx":0,"ssid":"Cafe","sec":0,"ch":11}'


@asynccontextmanager
async def process(
    *args: str, env: dict[str, str] | None = None
) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "softap_sim",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def read_until(proc: asyncio.subprocess.Process, marker: str) -> list[str]:
    assert proc.stdout is not None
    lines: list[str] = []
    async with asyncio.timeout(WAIT_S):
        while True:
            raw = await proc.stdout.readline()
            if not raw:
                err = await proc.stderr.read() if proc.stderr else b""
                raise AssertionError(f"exited before {marker!r}: {lines} {err.decode()}")
            lines.append(raw.decode().rstrip("\n"))
            if marker in lines[-1]:
                return lines


async def token_for(session: aiohttp.ClientSession, url: str, state_dir: Path) -> str:
    """A product-client token (client_credentials), as the serve banner suggests."""
    creds = json.loads((state_dir / "cloud-credentials.json").read_text())
    client = creds["client"]
    async with session.post(
        url + "/oauth/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": aiohttp.encode_basic_auth(client["id"], client["secret"])},
    ) as resp:
        assert resp.status == 200, await resp.text()
        return str((await resp.json())["access_token"])


async def developer_token(session: aiohttp.ClientSession, url: str, state_dir: Path) -> str:
    creds = json.loads((state_dir / "cloud-credentials.json").read_text())
    async with session.post(
        url + "/oauth/token",
        data={
            "grant_type": "password",
            "username": creds["user"]["email"],
            "password": creds["user"]["password"],
        },
        headers={"Authorization": aiohttp.encode_basic_auth("particle", "particle")},
    ) as resp:
        assert resp.status == 200, await resp.text()
        return str((await resp.json())["access_token"])


async def claim_when_online(
    session: aiohttp.ClientSession, url: str, token: str, device_id: str
) -> dict[str, Any]:
    """Claim by id (needs the device online in this cloud), then read it back."""
    headers = {"Authorization": f"Bearer {token}"}
    async with asyncio.timeout(WAIT_S):
        while True:  # the join and handshake run in the other process
            async with session.get(
                f"{url}/v1/softap-sim/cloud", headers=headers
            ) as resp:  # a cheap round trip between attempts, no sleep
                assert resp.status == 200
            async with session.post(
                url + "/v1/devices", json={"id": device_id}, headers=headers
            ) as resp:
                if resp.status == 200:
                    break
    async with session.get(f"{url}/v1/devices/{device_id}", headers=headers) as resp:
        assert resp.status == 200
        return dict(await resp.json())


async def setup_over_tcp(address: tuple[str, int]) -> None:
    body = OPEN_NETWORK
    reply = await tcp_exchange(address, b"configure-ap\n%d\n\n" % len(body) + body)
    assert reply == b'\n\n{"r":0}'
    assert await tcp_exchange(address, b'connect-ap\n9\n\n{"idx":0}') == b'\n\n{"r":0}'


@pytest.mark.asyncio
async def test_run_and_fleet_share_one_cloud(tmp_path: Path) -> None:
    cloud_dir = tmp_path / "cloud"
    async with (
        process(
            "cloud", "serve", "--port", "0", "--device-port", "0", "--state-dir", str(cloud_dir)
        ) as cloud,
        aiohttp.ClientSession() as session,
    ):
        banner = await read_until(cloud, "Press Ctrl-C")
        url = next(x for x in banner if "REST API on" in x).split()[5]
        assert any(line.strip().startswith("devices    TCP") for line in banner)
        assert any("--cloud " + url in line for line in banner)
        async with session.get(url + "/v1/softap-sim/cloud") as resp:
            info = await resp.json()
        assert info["device_endpoint"]["port"] > 0
        assert "BEGIN PUBLIC KEY" in info["server_public_key"]
        token = await token_for(session, url, cloud_dir)

        run_args = ["--tcp-port", "0", "--http-port", "0", "--control-port", "0"]
        async with process(
            "run",
            *("--cloud", url, "--cloud-token", token, "--json", *run_args),
            *("--state-dir", str(tmp_path / "dev")),
        ) as run:
            ready = json.loads((await read_until(run, '"event": "ready"'))[-1])
            endpoint = info["device_endpoint"]
            assert ready["cloud"] == {
                "url": url,
                "device_endpoint": f"{endpoint['host']}:{endpoint['port']}",
            }
            await setup_over_tcp((ready["tcp"]["host"], ready["tcp"]["port"]))
            dev_token = await developer_token(session, url, cloud_dir)
            device = await claim_when_online(session, url, dev_token, ready["device_id"].lower())
            assert device["online"] is True

        # a fleet in a third process, the token from the environment this time
        async with process(
            "fleet",
            *("--count", "2", "--cloud", url, "--port-offset", "--plain", *run_args),
            *("--key-pool", str(tmp_path / "pool"), "--state-dir", str(tmp_path / "fleet")),
            env={"SOFTAP_SIM_CLOUD_TOKEN": token},
        ) as fleet:
            lines = await read_until(fleet, "Press Ctrl-C")
            cloud_line = next(x for x in lines if x.strip().startswith("cloud "))
            assert "external" in cloud_line
            assert "2 registered" in cloud_line
            control = next(x for x in lines if x.strip().startswith("control ")).split()[1]
            async with session.get(control + "/v1/devices") as resp:
                devices = await resp.json()
            assert len(devices) == 2
            second = devices[1]
            await setup_over_tcp((second["host"], second["tcp_port"]))
            device = await claim_when_online(session, url, dev_token, second["id"].lower())
            assert device["online"] is True


@pytest.mark.parametrize(
    ("extra", "env", "message"),
    [
        ([], {}, "needs a token"),
        (["--cloud-token", "t"], {}, "cannot reach the cloud at http://127.0.0.1:9"),
        (["--cloud-token", "t", "--no-cloud"], {}, "exclude each other"),
        (["--cloud-token", "t", "--cloud-device", "nohostport"], {}, "HOST:PORT"),
    ],
)
def test_cloud_option_errors_are_one_line(
    extra: list[str],
    env: dict[str, str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SOFTAP_SIM_CLOUD_TOKEN", raising=False)
    argv = ["run", "--cloud", "http://127.0.0.1:9", *extra, "--state-dir", str(tmp_path)]
    try:
        code = main([*argv, "--tcp-port", "0", "--http-port", "0", "--no-control"])
    except SystemExit as exit_:  # argparse rejected the value
        code = int(exit_.code or 0)
    err = capsys.readouterr().err
    assert code in (1, 2)
    assert message in err
    assert "Traceback" not in err


@pytest.mark.asyncio
async def test_a_refused_token_says_so(tmp_path: Path) -> None:
    from softap_sim.cloud.service import CloudService
    from softap_sim.cloud_remote import RemoteCloud, RemoteCloudError

    service = CloudService(None)
    await service.open()
    server = await service.serve("127.0.0.1", 0)
    await service.serve_devices("127.0.0.1", 0)
    try:
        remote = await RemoteCloud.connect(server.url, "not-a-token")
        try:
            assert remote.endpoint == ("127.0.0.1", service.device_server.port)  # type: ignore[union-attr]
            with pytest.raises(RemoteCloudError, match="refused the token"):
                await remote.register_device("a" * 24, "-----BEGIN PUBLIC KEY-----")
        finally:
            await remote.close()
    finally:
        await service.close()
