"""softap_sim/event_loop.py: the ``--loop`` choice of ``run`` and ``fleet``."""

from __future__ import annotations

import asyncio
import inspect

import pytest

from softap_sim import event_loop
from softap_sim.cli import build_parser


async def _loop_name() -> str:
    return event_loop.loop_name(asyncio.get_running_loop())


def test_auto_uses_uvloop_when_installed() -> None:
    assert event_loop.uvloop_factory() is not None  # a runtime dependency off Windows
    assert event_loop.run(_loop_name()) == "uvloop"
    assert event_loop.run(_loop_name(), "uvloop") == "uvloop"


def test_asyncio_loop_on_request() -> None:
    assert event_loop.run(_loop_name(), "asyncio") == "asyncio"


def test_auto_falls_back_without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(event_loop, "uvloop_factory", lambda: None)
    assert event_loop.run(_loop_name(), "auto") == "asyncio"


def test_uvloop_missing_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(event_loop, "uvloop_factory", lambda: None)
    coro = _loop_name()
    with pytest.raises(ValueError, match=r"pip install uvloop.*--loop asyncio"):
        event_loop.run(coro, "uvloop")
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED  # no "never awaited"


def test_unknown_loop_name() -> None:
    with pytest.raises(ValueError, match="auto, uvloop, asyncio"):
        event_loop.loop_factory("trio")


@pytest.mark.parametrize("command", [["run"], ["fleet", "--count", "2"]])
def test_cli_loop_option(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    assert parser.parse_args(command).loop == "auto"
    assert parser.parse_args([*command, "--loop", "asyncio"]).loop == "asyncio"
    with pytest.raises(SystemExit):
        parser.parse_args([*command, "--loop", "trio"])
    assert "invalid choice: 'trio'" in capsys.readouterr().err


def test_run_reports_missing_uvloop(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from softap_sim.cli import main

    monkeypatch.setattr(event_loop, "uvloop_factory", lambda: None)
    assert main(["run", "--loop", "uvloop", "--no-cloud"]) == 1
    assert "pip install uvloop" in capsys.readouterr().err
