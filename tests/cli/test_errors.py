"""Errors and help texts as a new user meets them (issue 12, item 5): each message
names the real problem and what to do, and first-time waits are announced."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from softap_sim.cli import build_parser, main
from tests import paths

REPO = paths.REPO
FREE_PORTS = (
    "--tcp-port",
    "0",
    "--http-port",
    "0",
    "--control-port",
    "0",
    "--cloud-port",
    "0",
    "--cloud-device-port",
    "0",
)


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "softap_sim", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=env,
    )


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# -- a. a state directory that is a file ---------------------------------------------
@pytest.mark.parametrize("cloud", [True, False], ids=["with-cloud", "no-cloud"])
def test_run_with_a_file_as_state_dir_says_so(tmp_path: Path, cloud: bool) -> None:
    state = tmp_path / "state"
    state.write_text("not a directory\n")
    out = run_cli(
        "run", "--state-dir", str(state), *FREE_PORTS, *(() if cloud else ("--no-cloud",))
    )
    assert out.returncode == 1
    line = _one_line(out.stderr)
    assert f"state directory {state} is a file, not a directory" in line
    assert "pass a directory with --state-dir" in line
    assert "cloud database" not in line


def test_run_with_a_state_dir_below_a_file_names_the_file(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    env = {**os.environ, "SOFTAP_SIM_STATE_DIR": str(blocker / "device")}  # the default
    out = run_cli("run", *FREE_PORTS, env=env)
    assert out.returncode == 1
    line = _one_line(out.stderr)
    assert f"{blocker} is a file" in line
    assert "cloud database" not in line


@pytest.mark.parametrize(
    "command", [["client", "list"], ["customer", "list"], ["client", "create", "--name", "x"]]
)
def test_cloud_commands_with_a_file_as_state_dir_say_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    state = tmp_path / "state"
    state.write_text("")
    assert main(["cloud", *command, "--state-dir", str(state)]) == 1
    line = _one_line(capsys.readouterr().err)
    assert f"state directory {state} is a file, not a directory" in line


# -- b. units in the errors of numeric options -----------------------------------------
def _walk(parser: argparse.ArgumentParser, path: list[str]) -> Iterator[tuple[list[str], Any]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, [*path, name])


def _unit_options() -> list[tuple[list[str], str, str]]:
    """(argv to the subcommand, option, unit) of every option taking a time."""
    found = []
    for path, parser in _walk(build_parser(), []):
        for action in parser._actions:
            unit = {"MS": "milliseconds", "SECONDS": "seconds"}.get(str(action.metavar))
            if unit and action.option_strings:
                found.append((path, action.option_strings[-1], unit))
    return found


def test_every_time_option_is_checked() -> None:
    options = {(" ".join(p), o) for p, o, _ in _unit_options()}
    assert ("ctl fault add", "--delay-ms") in options
    assert ("ctl fault add", "--jitter-ms") in options
    assert ("ctl button", "--hold") in options


@pytest.mark.parametrize("bad", ["abc", "-1"])
@pytest.mark.parametrize(
    ("path", "option", "unit"),
    _unit_options(),
    ids=lambda v: "-".join(v) if isinstance(v, list) else v,
)
def test_time_options_name_their_unit(
    capsys: pytest.CaptureFixture[str], path: list[str], option: str, unit: str, bad: str
) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args([*path, f"{option}={bad}"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"argument {option}" in err
    assert re.search(rf"\bnumber of {unit}\b", err), err
    other = "seconds" if unit == "milliseconds" else "milliseconds"
    assert not re.search(rf"\b{other}\b", err), err


def test_ctl_fault_delay_in_milliseconds(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["ctl", "fault", "add", "latency", "--delay-ms", "abc"])
    err = capsys.readouterr().err
    assert "argument --delay-ms: not a number of milliseconds: 'abc'" in err
    assert "number of seconds" not in err


# -- c. read-only cloud commands create nothing ----------------------------------------
READ_ONLY = [["client", "list"], ["customer", "list"], ["client", "delete", "some-client"]]


@pytest.mark.parametrize("command", READ_ONLY, ids=lambda c: "-".join(c))
def test_read_only_cloud_commands_do_not_create_state(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    typo = tmp_path / "stat-dir"
    assert main(["cloud", *command, "--state-dir", str(typo)]) == 1
    line = _one_line(capsys.readouterr().err)
    assert f"no cloud database at {typo / 'cloud.sqlite3'}" in line
    assert f"softap-sim run --state-dir {typo}" in line
    assert "softap-sim cloud serve" in line
    assert not typo.exists()


@pytest.mark.parametrize("command", READ_ONLY, ids=lambda c: "-".join(c))
def test_read_only_cloud_commands_need_the_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    assert main(["cloud", *command, "--state-dir", str(tmp_path)]) == 1  # exists, but empty
    assert "no cloud database at" in _one_line(capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []


def test_read_only_cloud_commands_use_the_default_state_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOFTAP_SIM_STATE_DIR", str(tmp_path / "default"))
    assert main(["cloud", "customer", "list"]) == 1
    assert f"no cloud database at {tmp_path / 'default' / 'cloud.sqlite3'}" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "default").exists()


def test_client_create_makes_the_database_and_keeps_its_first_credentials(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "new"
    assert main(["cloud", "client", "create", "--name", "app", "--state-dir", str(state)]) == 0
    err = capsys.readouterr().err
    assert "cloud: first start, created" in err  # shown once, as 'run' shows them
    creds = state / "cloud-credentials.json"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert main(["cloud", "customer", "list", "--json", "--state-dir", str(state)]) == 0
    assert capsys.readouterr().out.strip() == "[]"


# -- d. help texts: no "(default: None)", no default stated twice ----------------------
#: a default stated in a help text; "the default product" names a thing, not a default
_DEFAULT = re.compile(r"(?<!the )\bdefault\b", re.IGNORECASE)


def test_no_help_text_has_a_useless_or_double_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "1000")  # one line per option: a line is one help text
    problems = []
    parsers = list(_walk(build_parser(), ["softap-sim"]))
    assert len(parsers) > 15  # run, ctl ..., cloud ..., fleet, discover, replay
    for path, parser in parsers:
        for line in parser.format_help().splitlines():
            useless = re.search(r"\(default: (None|\[\]|False)\)", line)
            if useless or len(_DEFAULT.findall(line)) > 1:
                problems.append(f"{' '.join(path)}: {line.strip()}")
    assert problems == []


def test_help_still_shows_useful_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "1000")
    run = next(p for path, p in _walk(build_parser(), []) if path == ["run"])
    text = run.format_help()
    assert "TCP protocol port; 0 picks a free port (default: 5609)" in text
    assert "(default 60k)" in text


# -- e. the first install says what it does -------------------------------------------
_FAKE_TOOL = """#!/bin/sh
echo "$(basename "$0") $*" >> "$FAKE_LOG"
case "$*" in *"import uvloop"*) exit 1 ;; esac
exit 0
"""
_FAKE_PYTHON = """#!/bin/sh
# the system Python of the test: version check passes, -m venv makes a fake venv
echo "python3 $*" >> "$FAKE_LOG"
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
  mkdir -p "$3/bin"
  for tool in python ruff mypy softap-sim; do
    cp "$FAKE_TOOL" "$3/bin/$tool"
    chmod +x "$3/bin/$tool"
  done
fi
exit 0
"""


@pytest.fixture
def script_copy(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The real scripts in a scratch root, a fake Python whose venv holds fake tools."""
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    (root / "tests" / "clients").mkdir(parents=True)
    for name in ("_env.sh", "run.sh", "test.sh"):
        shutil.copy(REPO / "scripts" / name, root / "scripts" / name)
    (root / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    fakes = tmp_path / "fakes"
    fakes.mkdir()
    tool = fakes / "tool"
    tool.write_text(_FAKE_TOOL)
    python = fakes / "python3"
    python.write_text(_FAKE_PYTHON)
    npm = fakes / "npm"
    npm.write_text(_FAKE_TOOL)
    for f in (tool, python, npm):
        f.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{fakes}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHON": str(python),
        "SOFTAP_SIM_VENV": str(tmp_path / "venv"),
        "FAKE_TOOL": str(tool),
        "FAKE_LOG": str(tmp_path / "calls.log"),
    }
    return root, env


def _script(root: Path, env: dict[str, str], name: str) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        ["bash", str(root / "scripts" / name), "--tcp-port", "0"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    return out


@pytest.mark.parametrize("name", ["run.sh", "test.sh"])
def test_first_use_says_what_it_installs_then_stays_quiet(
    script_copy: tuple[Path, dict[str, str]], name: str
) -> None:
    root, env = script_copy
    venv = Path(env["SOFTAP_SIM_VENV"])
    first = _script(root, env, name).stderr.splitlines()
    assert first[0] == f"softap-sim: first run: creating the virtualenv {venv} ..."
    assert first[1].startswith("softap-sim: first run: installing softap-sim and its dependencies")
    assert "about a minute" in first[1]
    calls = Path(env["FAKE_LOG"]).read_text()
    assert f"python3 -m venv {venv}" in calls
    assert f"-m pip install --quiet --disable-pip-version-check -e {root}[test]" in calls
    # installed: nothing more to say
    assert not [
        line for line in _script(root, env, name).stderr.splitlines() if "softap-sim:" in line
    ]
    # a newer pyproject.toml: reinstalled, and said so
    later = (venv / ".softap-sim-installed").stat().st_mtime + 10
    os.utime(root / "pyproject.toml", (later, later))
    again = _script(root, env, name).stderr.splitlines()
    assert again[0].startswith("softap-sim: pyproject.toml is newer than the install: reinstalling")
