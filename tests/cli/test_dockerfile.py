"""The Dockerfile (issue 12 item 7), checked without a container runtime.

No docker here or in CI, so the image is never built; what can be checked is: the
command and its options exist, the exposed ports are the CLI's defaults, the state
volume is where the CLI keeps state, it runs as a non-root user, everything it copies
exists, and the HEALTHCHECK command really passes against a healthy control API and
fails against a failing one.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import sys

import pytest

from softap_sim import DeviceEmulator
from softap_sim.cli import build_parser
from softap_sim.control_api import start_control_api
from tests import paths

ROOT = paths.REPO
DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined, comments dropped."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def one(name: str) -> str:
    found = [args for word, args in instructions() if word == name]
    assert len(found) == 1, f"expected one {name} in the Dockerfile, found {len(found)}"
    return found[0]


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list)
    return [str(v) for v in value]


def test_base_image_and_user() -> None:
    assert re.fullmatch(r"python:3\.1[1-9]-slim", one("FROM"))
    user = one("USER")
    assert user not in ("root", "0")
    runs = [a for w, a in instructions() if w == "RUN"]
    assert any(f"useradd --create-home --uid 10001 {user}" in r for r in runs)
    assert any(f"chown {user}:{user} /data" in r for r in runs)  # the volume is writable


def test_the_command_parses_with_the_real_cli() -> None:
    assert exec_form(one("ENTRYPOINT")) == ["softap-sim"]
    argv = exec_form(one("CMD"))
    args = build_parser().parse_args(argv)
    assert args.command == "run"
    # reachable from outside the container, and a plain log (no terminal there)
    assert (args.host, args.control_host, args.cloud_host) == ("0.0.0.0",) * 3
    assert args.cloud_public
    assert args.plain


def test_exposed_ports_are_the_defaults() -> None:
    run = build_parser().parse_args(["run"])
    defaults = {run.tcp_port, run.http_port, run.control_port, run.cloud_port}
    defaults.add(run.cloud_device_port)
    assert {int(p) for p in one("EXPOSE").split()} == defaults


def test_state_lives_in_the_volume() -> None:
    env = dict(shlex.split(a)[0].split("=", 1) for w, a in instructions() if w == "ENV")
    assert exec_form(one("VOLUME")) == [env["SOFTAP_SIM_STATE_DIR"]]


def test_what_it_copies_exists() -> None:
    for word, args in instructions():
        if word == "COPY":
            *sources, _dest = args.split()
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored
    assert "**/node_modules" in ignored


def _healthcheck(port: int) -> list[str]:
    args = one("HEALTHCHECK")
    assert "--start-period" in args
    command = exec_form(args.split("CMD", 1)[1].strip())
    assert command[:2] == ["python", "-c"]
    assert "http://127.0.0.1:5610/v1/health" in command[2]
    return [sys.executable, "-c", command[2].replace(":5610/", f":{port}/")]


@pytest.mark.asyncio
async def test_the_healthcheck_passes_and_fails(emulator: DeviceEmulator) -> None:
    async with await start_control_api(emulator, "127.0.0.1", 0) as server:
        proc = await asyncio.create_subprocess_exec(*_healthcheck(server.port))
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        emulator._record_error(RuntimeError("a bug"))  # health answers 503 now
        proc = await asyncio.create_subprocess_exec(
            *_healthcheck(server.port), stderr=asyncio.subprocess.DEVNULL
        )
        assert await asyncio.wait_for(proc.wait(), 30) != 0
        emulator._errors.clear()
