"""Every other README example is a test too, so README.md cannot drift from the code.

``tests/docs/test_readme_example.py`` runs the pytest example; this module covers the rest:

* the ``softap-sim run`` banner of the 30-second example against a real ``softap-sim run``
  (its line labels, in order: the ids and ports differ from run to run);
* the curl / nc / ``/dev/tcp`` commands of the 30-second example, issued from Python with
  the same bytes against an in-process :class:`DeviceEmulator`, compared with the shown
  output;
* the scenario, networks and app TOML examples (they load), the scenario count, the
  scenario-file and networks-file key tables (every key the loaders accept is documented,
  every documented key is accepted), the security names;
* the fault table and every fault written as JSON anywhere in the README;
* every ``softap-sim ...`` command line of a code block (it parses with the real argparse
  parser; the ``ctl`` ones also run against a live control API), the CLI synopsis and the
  ``run`` option table (options, choices and defaults);
* the control API routes, the lifecycle table, the memory figures, the Python API,
  ``ThreadedEmulator`` and ``@pytest.mark.softap`` examples, the paths the README names.

A failure names the README section and says what to change.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
from functools import cache
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from firmware_model import DeviceState, Fault, FaultKind
from firmware_model.app import EventSpec, FunctionSpec, Subscription, UserApp, VariableSpec
from firmware_model.eras import FirmwareEra
from firmware_model.identity import MAX_SSID_PREFIX_LEN
from firmware_model.memory import (
    DEFAULT_GATE_BYTES,
    DEFAULT_HEAP_AFTER_BOOT_BYTES,
    LISTENING_COST_BYTES,
    REQUEST_HEADROOM_BYTES,
)
from firmware_model.radio import AccessPoint
from firmware_model.security import SECURITY_NAMES, parse_security
from firmware_model.state import LEDS
from firmware_model.timing import REALISTIC, TimingProfile
from softap_sim import DeviceEmulator, SimConfig, scenario
from softap_sim.argtypes import parse_size
from softap_sim.cli import DEFAULT_HTTP_PORT, DEFAULT_TCP_PORT, build_parser, main
from softap_sim.config import load_networks
from softap_sim.control_api import ROUTES, start_control_api
from softap_sim.protocol.client import parse_http_reply
from softap_sim.scenario import list_scenarios, load_scenario
from softap_sim.testing.marker import MarkerError, parse_marker
from softap_sim.threaded import ThreadedEmulator
from tests import paths
from tests.wire import http_exchange, tcp_exchange

ROOT = paths.REPO
README = ROOT / "README.md"
FENCE = re.compile(r"^```([a-z]*)\n(.*?)^```", re.DOTALL | re.MULTILINE)
HEADING = re.compile(r"^(#+) (.+)$", re.MULTILINE)
#: a device id as the examples show one
DEVICE_ID = re.compile(r"[0-9A-F]{24}")
#: the first line of the banner: "softap-sim 0.1.0: firmware 0.7.0 era, timing fast"
BANNER_HEAD = re.compile(r"softap-sim \d[\w.+-]*: ")
#: what a banner line's label is separated from its value by
LABEL_GAP = re.compile(r"\s{2,}")
CLI_TIMEOUT_S = 60.0


# -- reading the README ---------------------------------------------------------------
@cache
def readme() -> str:
    return README.read_text(encoding="utf-8")


def headings() -> list[tuple[int, int, str, int]]:
    """(start, level, title, end) of each markdown heading (not a ``#`` line of a code block)."""
    text = readme()
    in_code = [(m.start(), m.end()) for m in FENCE.finditer(text)]
    return [
        (m.start(), len(m.group(1)), m.group(2).strip(), m.end())
        for m in HEADING.finditer(text)
        if not any(a <= m.start() < b for a, b in in_code)
    ]


def section(title: str) -> str:
    """The text under the heading ``title`` up to the next heading of its level or above."""
    text = readme()
    found = headings()
    for i, (_, level, name, end) in enumerate(found):
        if name == title:
            stop = next((s for s, lv, _, _ in found[i + 1 :] if lv <= level), len(text))
            return text[end:stop]
    raise AssertionError(f"README.md has no heading {title!r}: the test looks for it")


def fences(text: str, *langs: str) -> list[str]:
    """The bodies of the fenced code blocks in ``text`` (of these languages, if given)."""
    return [body for lang, body in FENCE.findall(text) if not langs or lang in langs]


def fence(title: str, lang: str, index: int = 0) -> str:
    blocks = fences(section(title), lang)
    assert len(blocks) > index, f"README section {title!r} lost its ```{lang} example"
    return blocks[index]


def split_row(line: str) -> list[str]:
    """The cells of a markdown table row; a ``|`` inside backticks does not split."""
    cells = re.split(r"\|(?=(?:[^`]*`[^`]*`)*[^`]*$)", line.strip())
    return [c.strip() for c in cells[1:-1]]


def table(text: str, first_header: str) -> list[list[str]]:
    """The body rows of the first table in ``text`` whose first header cell is this."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|") and split_row(line)[0] == first_header:
            rows = []
            for row in lines[i + 2 :]:
                if not row.startswith("|"):
                    break
                rows.append(split_row(row))
            return rows
    raise AssertionError(f"README table with the header {first_header!r} not found")


def codes(text: str) -> list[str]:
    """The `code spans` of a piece of markdown, in order."""
    return re.findall(r"`([^`]+)`", text)


def console(block: str) -> list[tuple[str, list[str]]]:
    """``$ command`` lines of a console block, each with the output lines shown after it."""
    out: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            out.append((line[2:], []))
        elif out:
            out[-1][1].append(line)
    return out


def shell_lines(block: str) -> list[str]:
    """The command lines of a ``sh`` block (continuations joined, comments kept)."""
    return [
        line.strip()
        for line in block.replace("\\\n", " ").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


# -- the parser -----------------------------------------------------------------------
def subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and name in action.choices:
            found: argparse.ArgumentParser = action.choices[name]
            return found
    raise AssertionError(f"'softap-sim' has no sub-command {name!r} (README names it)")


def subcommands(parser: argparse.ArgumentParser) -> set[str]:
    return {
        name
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for name in action.choices
    }


def options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {opt: a for a in parser._actions for opt in a.option_strings}


def run_parser() -> argparse.ArgumentParser:
    return subparser(build_parser(), "run")


def run_actions() -> list[argparse.Action]:
    """The ``run`` options a user can give (not ``--help``)."""
    return [
        a
        for a in run_parser()._actions
        if a.option_strings and not isinstance(a, argparse._HelpAction)
    ]


def parse(argv: list[str], where: str) -> argparse.Namespace:
    try:
        return build_parser().parse_args(argv)
    except SystemExit as err:
        raise AssertionError(
            f"README {where}: 'softap-sim {shlex.join(argv)}' does not parse "
            f"(exit {err.code}; argparse's message is above): fix the README"
        ) from None


def softap_commands() -> list[tuple[str, list[str]]]:
    """Every ``softap-sim`` command line of a sh/console block, as (README line, argv).

    ``./scripts/run.sh ARGS`` is ``softap-sim run ARGS``; ``a && b`` is two commands; the
    banner's ``e.g.  softap-sim ...`` hints count too.
    """
    lines: list[str] = []
    for block in fences(readme(), "sh"):
        lines += shell_lines(block)
    for block in fences(readme(), "console"):
        for command, output in console(block):
            lines.append(command)
            lines += [o.split("e.g.  ", 1)[1] for o in output if "e.g.  softap-sim" in o]
    found = []
    for line in lines:
        try:
            words = shlex.split(line, comments=True)
        except ValueError as err:
            raise AssertionError(
                f"README command line {line!r} is not shell syntax: {err}"
            ) from None
        command: list[str] = []
        for word in [*words, "&&"]:
            if word not in ("&&", ";", "|", "&"):
                if not command and re.fullmatch(r"[A-Z_]+=\S*", word):
                    continue  # VAR=value before the command: the environment
                command.append(word)
                continue
            if command and command[0] in ("softap-sim", ".venv/bin/softap-sim"):
                found.append((line, command[1:]))
            elif command and command[0] == "./scripts/run.sh":
                found.append((line, ["run", *command[1:]]))
            command = []
    return found


# -- the 30-second example: banner ----------------------------------------------------
def banner(lines: list[str]) -> tuple[str, list[str]]:
    """(first line, the labelled lines after it) of a ``softap-sim run`` banner."""
    for i, line in enumerate(lines):
        if BANNER_HEAD.match(line):
            body = []
            for item in lines[i + 1 :]:
                if not item.startswith("  "):
                    break
                body.append(item)
            return line, body
    raise AssertionError("no 'softap-sim VERSION: ...' banner line found")


def label(line: str) -> str:
    """``"  device id  B86E...  (claimed: no)"`` -> ``"device id"``."""
    return LABEL_GAP.split(line.strip(), maxsplit=1)[0]


def shape(head: str) -> str:
    """The banner's first line with its numbers (versions) replaced."""
    return re.sub(r"\d+(?:\.\d+)*", "N", head)


@dataclasses.dataclass
class RealRun:
    stdout: list[str]
    state_dir: Path


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> RealRun:
    """``softap-sim run`` on free ports until "Press Ctrl-C to stop.", then SIGTERM."""
    state_dir = tmp_path_factory.mktemp("readme-run")
    err_path = state_dir.parent / f"{state_dir.name}.stderr"
    ports = ("--tcp-port", "--http-port", "--control-port", "--cloud-port", "--cloud-device-port")
    argv = [sys.executable, "-m", "softap_sim", "run", *(x for p in ports for x in (p, "0"))]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with err_path.open("w+", encoding="utf-8") as err:
        proc = subprocess.Popen(
            [*argv, "--state-dir", str(state_dir)],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=env,
        )
        # a safety net only: a run that never prints "Press Ctrl-C" is killed, not awaited
        watchdog = threading.Timer(CLI_TIMEOUT_S, proc.kill)
        watchdog.start()
        lines: list[str] = []
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line.rstrip("\n"))
                if line.startswith("Press Ctrl-C to stop."):
                    break
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=CLI_TIMEOUT_S)
        finally:
            watchdog.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        err.seek(0)
        stderr = err.read()
    assert lines[-1:] == ["Press Ctrl-C to stop."], (
        f"softap-sim run did not get to 'Press Ctrl-C to stop.':\n{chr(10).join(lines)}\n"
        f"stderr:\n{stderr}"
    )
    assert proc.returncode == 0, stderr
    return RealRun(lines, state_dir)


def readme_run_block() -> list[str]:
    block = fence("30-second example", "console", 0)
    lines = block.splitlines()
    assert lines[0] == "$ ./scripts/run.sh", "the 30-second example starts with ./scripts/run.sh"
    return lines[1:]


def test_readme_banner_has_the_real_banners_lines(real_run: RealRun) -> None:
    real_head, real_body = banner(real_run.stdout)
    doc_head, doc_body = banner(readme_run_block())
    real_labels = [label(x) for x in real_body]
    doc_labels = [label(x) for x in doc_body]
    problems = []
    if shape(doc_head) != shape(real_head):
        problems.append(f"first line: README {doc_head!r}, softap-sim run prints {real_head!r}")
    for i, name in enumerate(real_labels):
        if name not in doc_labels:
            problems.append(
                f"label {name!r} missing from the README banner: add a line like "
                f"{real_body[i]!r} after {real_labels[i - 1] if i else 'the first line'!r}"
            )
    for name in doc_labels:
        if name not in real_labels:
            problems.append(f"label {name!r} is in the README banner but softap-sim run has none")
    common_real = [n for n in real_labels if n in doc_labels]
    common_doc = [n for n in doc_labels if n in real_labels]
    if not problems and common_doc != common_real:
        problems.append(f"label order: README {common_doc}, softap-sim run {common_real}")
    assert not problems, (
        "README '30-second example' banner differs from 'softap-sim run':\n  "
        + "\n  ".join(problems)
        + "\nsoftap-sim run printed:\n"
        + "\n".join([real_head, *real_body])
    )


def test_readme_banner_output_around_the_banner(real_run: RealRun) -> None:
    doc = readme_run_block()
    assert doc[-1] == "Press Ctrl-C to stop.", (
        "the README's run output ends with the real last line"
    )
    # the cloud's first-start note (credentials) comes between banner and "Press Ctrl-C"
    real_note = [x for x in real_run.stdout if x.startswith("cloud: first start")]
    doc_note = [x for x in doc if x.startswith("cloud: first start")]
    assert [x.split(" (")[0] for x in doc_note] == [x.split(" (")[0] for x in real_note]
    # the banner's examples use the ports the README's other examples use
    _, body = banner(doc)
    tcp = next(x for x in body if label(x) == "TCP")
    http = next(x for x in body if label(x) == "HTTP")
    assert f":{DEFAULT_TCP_PORT} " in tcp
    assert f":{DEFAULT_HTTP_PORT} " in http


def test_the_state_directory_table_names_the_files_run_creates(real_run: RealRun) -> None:
    files = [codes(row[0])[0] for row in table(section("State directory"), "file")]
    for name in files:
        path = real_run.state_dir / name
        assert path.is_file(), f"README 'State directory' names {name}; softap-sim run made none"
    assert (real_run.state_dir / "device_key.pem").stat().st_mode & 0o777 == 0o600


# -- the 30-second example: curl, nc, /dev/tcp -----------------------------------------
def od_c(data: bytes) -> list[str]:
    """``od -c`` of ``data``: 16 bytes a line, each in 4 columns, then the end offset."""
    named = {0: "\\0", 7: "\\a", 8: "\\b", 9: "\\t", 10: "\\n", 11: "\\v", 12: "\\f", 13: "\\r"}

    def cell(b: int) -> str:
        if b in named:
            return named[b]
        return chr(b) if 32 <= b < 127 else f"{b:03o}"

    lines = [
        f"{i:07o}" + "".join(f"{cell(b):>4}" for b in data[i : i + 16])
        for i in range(0, len(data), 16)
    ]
    return [*lines, f"{len(data):07o}"]


def printf(fmt: str) -> bytes:
    return fmt.replace("\\n", "\n").encode()


def curl_request(argv: list[str], host: str, port: int) -> tuple[bytes, str]:
    """The request curl 7.88 sends for ``argv``, and its ``-w`` format ('' if none)."""
    data = None
    headers: list[str] = []
    url = ""
    write_out = ""
    it = iter(argv[1:])
    for arg in it:
        if arg == "-s":
            continue
        if arg == "-d":
            data = next(it)
        elif arg == "-H":
            headers.append(next(it))
        elif arg == "-o":
            assert next(it) == "/dev/null", "only -o /dev/null is emulated"
        elif arg == "-w":
            write_out = next(it)
        elif arg.startswith("http://"):
            url = arg
        else:
            raise AssertionError(f"curl option {arg!r} is not emulated by this test; add it")
    match = re.fullmatch(r"http://127\.0\.0\.1:(\d+)(/\S*)", url)
    assert match, f"curl URL {url!r}: the README uses http://127.0.0.1:PORT/..."
    assert int(match.group(1)) == DEFAULT_HTTP_PORT, f"{url}: the banner's HTTP port"
    head = [
        f"{'POST' if data is not None else 'GET'} {match.group(2)} HTTP/1.1",
        f"Host: {host}:{port}",
        "User-Agent: curl/7.88.1",
        "Accept: */*",
        *headers,
    ]
    body = b""
    if data is not None:
        body = data.encode()
        head.append(f"Content-Length: {len(body)}")
        if not any(h.lower().startswith("content-type:") for h in headers):
            head.append("Content-Type: application/x-www-form-urlencoded")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body, write_out


async def curl(emu: DeviceEmulator, argv: list[str]) -> list[str]:
    """What ``curl -s ...`` prints against ``emu``: the body, or the ``-w`` status code."""
    host, port = emu.http_address
    request, write_out = curl_request(argv, host, port)
    reply = parse_http_reply(await http_exchange((host, port), request))
    if write_out:
        assert write_out == "%{http_code}\\n", f"-w {write_out!r} is not emulated"
        return [str(reply.head.status)]
    return reply.body.decode().split("\n")


def expected_pattern(shown: list[str]) -> re.Pattern[str]:
    """The README's output as a pattern: a device id matches any id, ``...`` anything."""
    text = "\n".join(re.sub(r"\s+#.*$", "", line) for line in shown)
    pattern = re.escape(text)
    pattern = DEVICE_ID.sub("[0-9A-F]{24}", pattern)
    return re.compile(pattern.replace(re.escape("..."), ".*"), re.DOTALL)


@pytest.mark.asyncio
async def test_the_30_second_example_commands_give_the_shown_output() -> None:
    block = fence("30-second example", "console", 1)
    commands = console(block)
    assert len(commands) >= 6
    nc = re.compile(
        r"printf '([^']*)' \| nc (?:-q1 )?127\.0\.0\.1 (\d+)( \| od -c \| head -(\d+))?"
    )
    dev_tcp = re.compile(
        r"exec 3<>/dev/tcp/127\.0\.0\.1/(\d+); printf '([^']*)' >&3; cat <&3; exec 3<&-"
    )
    async with DeviceEmulator(SimConfig()) as emu:  # the built-in neighbourhood, as run.sh
        for command, shown in commands:
            if command.startswith("#"):
                assert not shown
                continue
            if command.startswith("curl "):
                got = await curl(emu, shlex.split(command))
            elif match := nc.fullmatch(command):
                assert int(match.group(2)) == DEFAULT_TCP_PORT, command
                reply = await tcp_exchange(emu.tcp_address, printf(match.group(1)))
                if match.group(3):
                    got = od_c(reply)[: int(match.group(4))]
                else:
                    got = reply.decode().split("\n")
            elif match := dev_tcp.fullmatch(command):
                assert int(match.group(1)) == DEFAULT_TCP_PORT, command
                reply = await tcp_exchange(emu.tcp_address, printf(match.group(2)))
                got = reply.decode().split("\n")
            else:
                raise AssertionError(
                    f"README 30-second example: this test cannot run {command!r}; teach it"
                )
            pattern = expected_pattern(shown)
            assert pattern.fullmatch("\n".join(got)), (
                f"README 30-second example: '$ {command}' shows\n{chr(10).join(shown)}\n"
                f"but the emulator gives\n{chr(10).join(got)}"
            )
        emu.check()


def test_the_30_second_example_shows_one_device() -> None:
    ids = set(DEVICE_ID.findall(section("30-second example")))
    assert len(ids) == 1, f"the banner and the replies show different device ids: {ids}"


# -- scenarios ------------------------------------------------------------------------
def test_readme_scenario_count_is_the_shipped_count() -> None:
    match = re.search(r"lists (\d+) ready-made", section("Scenarios"))
    assert match, "README 'Scenarios' says how many scenarios ship: 'lists N ready-made'"
    shipped = len(list_scenarios())
    assert int(match.group(1)) == shipped, (
        f"README 'Scenarios' says {match.group(1)} ready-made scenarios, "
        f"softap_sim/scenarios/ has {shipped}: change the number in README.md"
    )


@pytest.fixture
def scenario_example(tmp_path: Path) -> Path:
    path = tmp_path / "my-case.toml"
    path.write_text(fence("Scenarios", "toml"), encoding="utf-8")
    return path


def test_readme_scenario_example_loads(scenario_example: Path) -> None:
    loaded = load_scenario(str(scenario_example))
    assert loaded.name == "my-case"
    assert (loaded.pain_point, loaded.expect) == ("", "")  # optional: left out
    config = loaded.apply(SimConfig())
    assert config.scenario == "my-case"
    assert config.timing.name == "realistic"
    assert config.timing.scan_s == 2.5
    for spec in config.faults:
        Fault.from_mapping(spec)
    # the command line the README gives for it
    args = parse(["run", "--scenario", str(scenario_example)], "Scenarios")
    assert args.scenario == str(scenario_example)


def test_softap_sim_scenarios_shows_the_readme_example(
    scenario_example: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["scenarios", str(scenario_example)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("my-case\n  Wrong password on the first try")
    assert main(["scenarios", str(scenario_example), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["name"] == "my-case"
    assert (shown["pain_point"], shown["expect"]) == ("", "")
    assert shown["settings"]["fault"] == [{"kind": "join", "outcome": "bad_password", "times": 1}]


def scenario_keys() -> set[str]:
    """Every key a scenario file may hold, as the README writes it (``device.seed`` ...)."""
    tables = {"device", "memory", "timing", "radio", "fault", "app"}
    keys = {k for k in scenario.TOP_LEVEL_KEYS if k not in tables}
    keys |= {f"device.{k}" for k in scenario.DEVICE_KEYS}
    keys |= {f"memory.{k}" for k in scenario.MEMORY_KEYS}
    keys |= {"timing.profile"}
    keys |= {f"timing.{f.name}" for f in dataclasses.fields(TimingProfile) if f.name != "name"}
    keys |= {f"radio.{k}" for k in scenario.RADIO_KEYS}
    keys |= {f"app.functions.NAME.{f.name}" for f in dataclasses.fields(FunctionSpec)}
    keys |= {f"app.variables.NAME.{f.name}" for f in dataclasses.fields(VariableSpec)}
    keys |= {f"app.events.NAME.{f.name}" for f in dataclasses.fields(EventSpec)}
    keys |= {f"app.subscriptions[].{f.name}" for f in dataclasses.fields(Subscription)}
    keys -= {"app.functions.NAME.name", "app.variables.NAME.name", "app.events.NAME.name"}
    return keys | {"fault"}


def fault_fields() -> list[str]:
    """The keys ``Fault.from_mapping`` allows (from its own error message)."""
    with pytest.raises(ValueError) as info:
        Fault.from_mapping({"kind": "reset", "?": 1})
    allowed = ast.literal_eval(str(info.value).split("allowed: ", 1)[1])
    assert isinstance(allowed, list)
    return [str(x) for x in allowed]


def test_every_scenario_key_is_documented() -> None:
    rows = table(section("Scenarios"), "key")
    documented: dict[str, str] = {}
    for row in rows:
        for key in codes(row[0]):
            documented[key] = row[1]
    expected = scenario_keys()
    missing = sorted(expected - set(documented))
    extra = sorted(set(documented) - expected)
    assert not missing, f"README 'Scenarios' key table lacks {missing}: add a row for each"
    assert not extra, f"README 'Scenarios' key table documents {extra}, which load_scenario rejects"
    fault_row = codes(documented["fault"])
    assert [k for k in fault_fields() if k not in fault_row] == [], (
        "README 'Scenarios' row `fault` must list every key of Fault.from_mapping"
    )
    assert f"1\N{EN DASH}{MAX_SSID_PREFIX_LEN} bytes" in documented["device.ssid_prefix"]
    for key, value in [
        ("memory.heap_after_boot_bytes", DEFAULT_HEAP_AFTER_BOOT_BYTES),
        ("memory.gate_bytes", DEFAULT_GATE_BYTES),
    ]:
        assert f"; {value})" in documented[key], f"README 'Scenarios' {key}: default {value}"
    required = [k for k in scenario.TEXT_KEYS if k in scenario.REQUIRED_TEXT_KEYS]
    for key in scenario.TEXT_KEYS:
        word = "required" if key in required else "optional"
        assert documented[key].startswith(word), f"README: `{key}` is {word}: say so first"


def test_the_readme_scan_packs_are_the_shipped_packs() -> None:
    from firmware_model.scan_packs import PACKS

    row = next(r for r in table(section("Scenarios"), "key") if codes(r[0]) == ["radio.pack"])
    assert codes(row[1]) == list(PACKS), "README 'Scenarios' row radio.pack: list every pack"


def test_readme_app_example_loads_in_a_scenario(tmp_path: Path) -> None:
    example = fence("Device ↔ cloud: claiming over the real Photon protocol", "toml")
    path = tmp_path / "app.toml"
    path.write_text('description = "functions and variables"\n' + example, encoding="utf-8")
    app = load_scenario(str(path)).apply(SimConfig()).app
    assert isinstance(app, UserApp)
    assert app.functions["lightsOn"].delay_s == 3.0
    assert app.variables["temperature"].value == 21.5
    # the comment's alternative: hang = true
    hang = UserApp.from_mapping({"functions": {"lightsOn": {"hang": True}}})
    assert hang.functions["lightsOn"].hang


# -- networks file --------------------------------------------------------------------
def test_readme_networks_example_loads(tmp_path: Path) -> None:
    example = fence("Networks file", "toml")
    path = tmp_path / "networks.toml"
    path.write_text(example, encoding="utf-8")
    radio = load_networks(path)
    assert [ap.ssid for ap in radio.access_points] == [b"HomeNetwork", b"Hidden-Lab"]
    home, hidden = radio.access_points
    assert (home.channel, home.rssi, home.max_data_rate) == (1, -45, 144400)
    assert hidden.hidden
    assert not home.hidden
    # "or a WICED integer, e.g. 4194308"
    path.write_text(example.replace('"wpa2_aes"', "4194308"), encoding="utf-8")
    assert [ap.security for ap in load_networks(path).access_points] == [
        ap.security for ap in radio.access_points
    ]


def literal(text: str) -> Any:
    """A default cell (`6`, `false`, `""`, `wpa2_mixed`) as the value a TOML file holds."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def test_every_network_key_is_documented_with_its_default() -> None:
    rows = table(section("Networks file"), "`[[network]]` key")
    documented = {key: row for row in rows for key in codes(row[0])}
    fields = {f.name for f in dataclasses.fields(AccessPoint)}
    assert fields - set(documented) == set(), "README 'Networks file': a key is not in the table"
    plain = AccessPoint.from_mapping({"ssid": "x"})
    for key, row in documented.items():
        if key == "ssid":
            continue
        default = codes(row[1])
        assert default, f"README 'Networks file' row {key}: give the default in `code`"
        value = literal(default[0])
        field = "max_data_rate" if key == "mdr" else key
        if key == "bssid":
            expected = default[0].replace("NN", "00")
            assert plain.bssid == expected, f"README: bssid default {default[0]}"
            assert AccessPoint.from_mapping({"ssid": "x", key: "5c:96:9d:33:44:01"})
        elif key == "security":
            assert plain.security == parse_security(value)
        elif key == "password":
            assert plain.password.value == value.encode()
        else:
            assert getattr(plain, field) == value, f"README 'Networks file': default of {key}"
        # the key is accepted, with its documented default
        AccessPoint.from_mapping({"ssid": "x", key: value})


def test_the_security_names_are_the_accepted_names() -> None:
    text = section("Networks file")
    sentence = re.search(r"Security names:.*?\.\s", text, re.DOTALL)
    assert sentence, "README 'Networks file' lost its 'Security names: ...' sentence"
    paragraph = sentence.group(0)
    suffixes = re.search(r"\(`\*`: ([^;]*);", paragraph)
    assert suffixes, "README: the security names say what `*` stands for"
    stars = codes(suffixes.group(1))
    names = set()
    for name in codes(paragraph.replace(suffixes.group(0), "")):
        names |= {name.replace("*", s) for s in stars} if "*" in name else {name}
    assert names == set(SECURITY_NAMES), (
        f"README security names: missing {sorted(set(SECURITY_NAMES) - names)}, "
        f"unknown {sorted(names - set(SECURITY_NAMES))}"
    )
    for name in names:
        assert parse_security(name) == SECURITY_NAMES[name]


# -- faults ---------------------------------------------------------------------------
def fault_rows() -> list[tuple[str, list[tuple[str, list[str]]]]]:
    """(kind, [(parameter, its documented values)]) per row of the Faults table."""
    out = []
    for row in table(section("Faults"), "kind"):
        kind = codes(row[0])[0]
        params = []
        for part in row[1].split(";"):
            names = codes(part.split(":")[0])
            values = codes(part.split(":", 1)[1]) if ":" in part else []
            for i, name in enumerate(names):
                params.append((name, values if i == len(names) - 1 else []))
        out.append((kind, params))
    return out


NUMERIC_SAMPLES = {"delay_ms": 500, "jitter_ms": 100, "bytes": 3, "count": 2}


def test_the_fault_table_lists_every_kind() -> None:
    kinds = [kind for kind, _ in fault_rows()]
    assert sorted(kinds) == sorted(k.value for k in FaultKind), (
        f"README 'Faults' table: missing {sorted({k.value for k in FaultKind} - set(kinds))}, "
        f"unknown {sorted(set(kinds) - {k.value for k in FaultKind})}"
    )


@pytest.mark.parametrize(("kind", "params"), fault_rows(), ids=[k for k, _ in fault_rows()])
def test_every_fault_table_row_parses(kind: str, params: list[tuple[str, list[str]]]) -> None:
    base: dict[str, Any] = {"kind": kind, "command": "*", "transport": "*", "skip": 0, "times": 1}
    for name, values in params:
        base[name] = values[0] if values else NUMERIC_SAMPLES[name]
    specs = [base]  # every parameter of the row at once, then each documented value
    specs += [{**base, name: value} for name, values in params for value in values]
    for spec in specs:
        try:
            Fault.from_mapping(spec)
        except ValueError as err:
            raise AssertionError(f"README 'Faults' row {kind}: {spec} is refused: {err}") from None


def readme_json_faults() -> list[str]:
    """Every ``{"kind": ...}`` object of the README (Python, JSON, --fault arguments)."""
    return re.findall(r"\{\s*\"kind\"\s*:[^{}]*\}", readme())


def test_every_json_fault_in_the_readme_parses() -> None:
    found = readme_json_faults()
    assert len(found) >= 6
    for text in found:
        try:
            spec = json.loads(text)
        except ValueError as err:
            raise AssertionError(f"README fault {text!r} is not JSON: {err}") from None
        try:
            Fault.from_mapping(spec)
        except ValueError as err:
            raise AssertionError(f"README fault {text}: {err}") from None


# -- command lines --------------------------------------------------------------------
def test_every_softap_sim_command_line_parses() -> None:
    commands = softap_commands()
    assert len(commands) >= 20
    for line, argv in commands:
        args = parse(argv, f"command line {line!r}")
        for spec in getattr(args, "fault", None) or []:
            Fault.from_mapping(spec)


def test_the_ctl_command_lines_run_against_a_control_api(
    capsys: pytest.CaptureFixture[str],
) -> None:
    lines = [(line, argv) for line, argv in softap_commands() if argv[:1] == ["ctl"]]
    assert len(lines) >= 5
    with ThreadedEmulator(SimConfig()) as emu:
        server = emu.run(start_control_api(emu.emulator, "127.0.0.1", 0))
        try:
            for line, argv in lines:
                rest = argv[1:]
                if "--control" in rest:  # the banner's hint: the README's URL
                    i = rest.index("--control")
                    del rest[i : i + 2]
                if "--follow" in rest:
                    parse(argv, line)  # runs until Ctrl-C: parsing is all we can do
                    continue
                code = main(["ctl", "--control", server.url, *rest])
                out = capsys.readouterr()
                assert code == 0, f"README {line!r} fails against a running device: {out.err}"
        finally:
            emu.run(server.close())
        emu.check()


def synopsis() -> list[str]:
    """The CLI reference's commands, one string each (continuation lines joined)."""
    block = fences(section("CLI reference"), "")[0]
    out: list[str] = []
    for line in block.splitlines():
        if line.startswith("softap-sim "):
            out.append(line)
        else:
            out[-1] += " " + line.strip()
    return out


def test_the_cli_synopsis_matches_the_parser() -> None:
    parser = build_parser()
    commands = synopsis()
    assert {c.split()[1] for c in commands} <= subcommands(parser)
    for command in commands:
        name = command.split()[1]
        sub = subparser(parser, name)
        opts = options(sub)
        text = re.sub(r"\(.*?\)", "", command)  # "(softap-sim fleet --help)"
        for opt in re.findall(r"(?<![\w-])(--?[a-z][a-z-]*)", text):
            assert opt in opts, f"README synopsis of {name}: {opt} is not an option"
        for opt, choices in re.findall(r"\[(--[a-z-]+) ([a-z0-9.-]+(?:\|[a-z0-9.-]+)+)\]", text):
            assert set(choices.split("|")) == set(opts[opt].choices or ()), (
                f"README synopsis of {name}: {opt} takes {sorted(opts[opt].choices or ())}"
            )
        bare = re.sub(r"\[[^]]*\]", "", text)
        for choices in re.findall(r"(?<![\w-])([a-z-]+(?:\|[a-z-]+)+)", bare):
            assert set(choices.split("|")) == subcommands(sub), (
                f"README synopsis of {name}: the sub-commands are {sorted(subcommands(sub))}"
            )
    run = next(c for c in commands if c.startswith("softap-sim run "))
    undocumented = [
        a.option_strings
        for a in run_actions()
        if not set(a.option_strings) & set(re.findall(r"(?<![\w-])--?[a-z][a-z-]*", run))
    ]
    assert not undocumented, f"README synopsis of run lacks {undocumented}"


def option_rows() -> list[tuple[list[str], list[str], str]]:
    """(options, defaults, meaning) per row of the ``run`` option table."""
    rows = table(section("CLI reference"), "`run` option")
    return [(codes(r[0]), codes(r[1]) or [r[1]], r[2]) for r in rows]


def test_every_run_option_of_the_table_exists() -> None:
    opts = options(run_parser())
    documented: set[str] = set()
    for names, _, _ in option_rows():
        for name in names:
            repeated = re.fullmatch(r"-([a-z])\1+", name)  # "-vv": -v twice
            assert name in opts or (repeated and f"-{repeated.group(1)}" in opts), (
                f"README 'run' option table: {name} is not an option of softap-sim run"
            )
            documented.add(name)
    missing = [a.option_strings for a in run_actions() if not set(a.option_strings) & documented]
    assert not missing, f"README 'run' option table: add a row for {missing}"


#: ``run`` options whose default (None in the parser) is SimConfig's / the model's
MODEL_DEFAULTS: dict[str, Any] = {
    "--firmware": FirmwareEra.CURRENT.value,
    "--ssid-prefix": SimConfig().ssid_prefix,
    "--app-ram": SimConfig().app_ram_bytes,
    "--heap": SimConfig().heap_after_boot_bytes,
    "--gate": SimConfig().gate_bytes,
    "--gate-mode": SimConfig().gate_mode.value,
    "--timing": SimConfig().timing.name,
    "--listening-timeout": SimConfig().timing.listening_timeout_s,
}


def same(shown: str, value: Any) -> bool:
    if shown == str(value):
        return True
    with contextlib.suppress(argparse.ArgumentTypeError, ValueError, TypeError):
        if isinstance(value, int) and parse_size(shown) == value:
            return True
    with contextlib.suppress(ValueError, TypeError):
        return float(shown) == float(value)
    return False


def test_the_run_option_table_gives_the_real_defaults() -> None:
    opts = options(run_parser())
    checked = 0
    for names, defaults, _ in option_rows():
        if len(defaults) != len(names):  # one default for several options: no value to check
            continue
        for name, shown in zip(names, defaults, strict=True):
            action = opts.get(name)
            if action is None or shown.startswith("$"):
                continue
            value = action.default if isinstance(action, argparse._StoreAction) else None
            if value is None:
                value = MODEL_DEFAULTS.get(name)
            if value is None or not shown.strip():
                continue
            assert same(shown, value), f"README 'run' option {name}: default {shown}, is {value}"
            checked += 1
    assert checked >= 12


# -- control API ----------------------------------------------------------------------
def control_api_examples() -> list[tuple[str, str, str | None]]:
    """(method, path, body) per route of the 'Control API' paragraph."""
    text = section("Control API and `softap-sim ctl`").split("\n\n")[1]
    out: list[tuple[str, str, str | None]] = []
    methods = ["GET"]
    for code in codes(text):
        if "/v1/" not in code:
            continue  # `softap-sim run`, the URL, `{"networks":[…]}` (the body of the last)
        match = re.fullmatch(r"(?:([A-Z|]+) )?(/v1/\S+?)(?:\?\S*)?(?: (\{.*\}))?", code)
        assert match, f"README control API: cannot read {code!r} (METHOD /v1/path {{body}})"
        if match.group(1):
            methods = match.group(1).split("|")
        out += [(m, match.group(2), match.group(3)) for m in methods]
    return out


def test_the_control_api_routes_exist() -> None:
    examples = control_api_examples()
    routes = {(m, p) for m, p, _ in ROUTES}
    assert len(examples) >= 12
    for method, path, _ in examples:
        assert (method, path) in routes, f"README control API: {method} {path} is not a route"


@pytest.mark.asyncio
async def test_the_control_api_examples_answer() -> None:
    async with (
        DeviceEmulator(SimConfig()) as emu,
        await start_control_api(emu, "127.0.0.1", 0) as server,
        aiohttp.ClientSession() as session,
    ):
        for method, path, body in control_api_examples():
            data = None
            if body is not None:
                try:
                    data = json.loads(body)
                except ValueError:
                    continue  # "{"pack":…}": elided
            elif method != "GET":
                continue
            query = "?since=0" if path == "/v1/transcript" else ""
            async with session.request(method, server.url + path + query, json=data) as reply:
                text = await reply.text()
                assert reply.status == 200, f"README control API {method} {path} {body}: {text}"
        emu.check()


# -- the rest -------------------------------------------------------------------------
def test_the_lifecycle_table_names_real_states_and_leds() -> None:
    rows = table(section("The device lifecycle"), "state")
    for row in rows:
        for name in codes(row[0]):
            state = DeviceState(name)
            assert row[1].startswith(LEDS[state].describe()), (
                f"README lifecycle: {name} has LED {LEDS[state].describe()!r}, not {row[1]!r}"
            )


def test_the_memory_figures() -> None:
    text = section("Memory and the 21.5 KB gate")
    assert f"{LISTENING_COST_BYTES:,} B)" in text
    assert f"Table + one configure-ap = {DEFAULT_GATE_BYTES:,} B = the gate" in text
    assert LISTENING_COST_BYTES + REQUEST_HEADROOM_BYTES == DEFAULT_GATE_BYTES
    assert f"default {DEFAULT_HEAP_AFTER_BOOT_BYTES // 1024} KiB" in text
    assert parse_size("21.5k") == DEFAULT_GATE_BYTES


@pytest.mark.asyncio
async def test_the_python_api_example() -> None:
    block = fence("Python API", "python")
    imports, rest = block.split("\n\n", 1)
    live, manual = rest.split("\n# deterministic time", 1)
    manual = "# deterministic time" + manual
    namespace: dict[str, Any] = {}
    exec(imports, namespace)
    # the first part waits for a setup and the cloud: its names must exist on a device
    tree = ast.parse(live)
    chains = set()
    for node in ast.walk(tree):
        names: list[str] = []
        while isinstance(node, ast.Attribute):
            names.insert(0, node.attr)
            node = node.value
        if isinstance(node, ast.Name) and node.id == "emu" and names:
            chains.add(tuple(names))
    assert len(chains) >= 8
    async with DeviceEmulator(SimConfig(), tcp_port=0, http_port=0) as emu:
        for chain in sorted(chains):
            obj: Any = emu
            for name in chain:
                assert hasattr(obj, name), f"README Python API: emu.{'.'.join(chain)} is wrong"
                obj = getattr(obj, name)
    # the second part runs as written
    code = compile(manual, "README", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    coroutine = eval(code, namespace)
    if coroutine is not None:
        await coroutine
    assert namespace["emu"].device.state is DeviceState.LISTENING
    assert "2 s boot + 1.5 s listening-mode start-up" in manual
    assert (REALISTIC.boot_s, REALISTIC.listen_start_s) == (2.0, 1.5)
    assert "SimConfig(state_dir=None)` (the default)" in readme()
    assert SimConfig().state_dir is None


def test_the_threaded_emulator_example_runs() -> None:
    block = fence("Sync tests and tools: `ThreadedEmulator`", "python")
    namespace: dict[str, Any] = {}
    exec(block, namespace)
    assert namespace["port"] > 0


def test_the_marker_example_is_valid() -> None:
    block = fence("Per-test settings: `@pytest.mark.softap`", "python")
    namespace: dict[str, Any] = {"pytest": pytest}
    exec(block + "def test_x():\n    pass\n", namespace)
    (mark,) = namespace["test_x"].pytestmark
    settings = parse_marker(mark)
    assert settings.count == 5
    shown = fences(section("Per-test settings: `@pytest.mark.softap`"), "")[0].splitlines()
    with pytest.raises(MarkerError) as info:
        parse_marker(pytest.mark.softap(scenaro="slow-scan").mark)
    assert shown[1] == str(info.value), "README marker error message"


def test_the_paths_the_readme_names_exist() -> None:
    named = re.findall(r"`((?:scripts|tests|firmware_model|softap_sim|docs)/[^` ]+)`", readme())
    named += re.findall(r"\]\(([^)#]+)\)", readme())
    assert len(named) >= 10
    missing = sorted({p for p in named if not (ROOT / p).exists()})
    assert not missing, f"README names files that do not exist: {missing}"


def test_the_events_example_loads() -> None:
    import tomllib

    [block] = [b for b in fences(readme(), "toml") if "[app.events." in b]
    app = UserApp.from_mapping(tomllib.loads(block)["app"])
    assert app.events["heartbeat"].period_s == 30
    assert app.events["doorbell"].private is False
    assert app.subscribed("lights/kitchen")


def test_the_particle_cli_commands_shown_are_tested() -> None:
    """Every ``particle …`` line of 'With particle-cli' is run by test_particle_cli.py."""
    block = next(b for b in fences(readme(), "sh") if "particle config local apiUrl" in b)
    tested = (paths.TESTS / "cloud" / "test_particle_cli.py").read_text()
    commands = [shlex.split(line, comments=True) for line in shell_lines(block)]
    assert len(commands) >= 18
    for words in commands:
        assert words[0] == "particle"
        if words[1:3] == ["config", "particle"]:
            continue  # switching back to the real cloud: not something to test here
        depth = {"product": 3, "device": 2, "function": 2, "variable": 2, "token": 2}
        verbs = words[1 : 1 + depth.get(words[1], 1)]
        if words[1] == "config":
            verbs = words[1:3]
        quoted = ", ".join(f'"{v}"' for v in verbs)
        assert quoted in tested, f"README 'particle {' '.join(words[1:])}' is not tested"
