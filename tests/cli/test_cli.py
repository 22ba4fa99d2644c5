"""The CLI as a newcomer uses it: help, banner, clear one-line errors."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from softap_sim.cli import build_parser, main


def run_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "softap_sim", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_help_texts() -> None:
    out = run_cli("--help")
    assert out.returncode == 0
    assert "run" in out.stdout
    run_help = run_cli("run", "--help").stdout
    for flag in (
        "--host",
        "--tcp-port",
        "--http-port",
        "--state-dir",
        "--networks",
        "--firmware",
        "-v",
    ):
        assert flag in run_help


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_bad_firmware_version() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--firmware", "4.1.0"])


def test_port_in_use_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = run_cli(
            "run", "--state-dir", str(tmp_path), "--tcp-port", str(port), "--http-port", "0"
        )
    assert out.returncode == 1
    assert "already in use" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not toml [", "is not valid TOML"),
        ("[x]\na = 1\n", "must contain [[network]] tables"),
        ('[[network]]\nssid = "a"\nsecurity = "rot13"\n', "unknown security"),
        ('[[network]]\nssid = "a"\nchannel = "six"\n', "'channel' must be an integer"),
        ('[[network]]\nssid = "a"\ncolour = "blue"\n', "unknown key"),
    ],
)
def test_bad_networks_file(tmp_path: Path, content: str, message: str) -> None:
    f = tmp_path / "nets.toml"
    f.write_text(content)
    out = run_cli(
        "run",
        "--state-dir",
        str(tmp_path / "s"),
        "--networks",
        str(f),
        "--tcp-port",
        "0",
        "--http-port",
        "0",
    )
    assert out.returncode == 1
    assert message in out.stderr
    assert "Traceback" not in out.stderr


def test_missing_networks_file(tmp_path: Path) -> None:
    out = run_cli("run", "--networks", str(tmp_path / "nope.toml"), "--state-dir", str(tmp_path))
    assert out.returncode == 1
    assert "cannot read networks file" in out.stderr


def test_corrupt_state_is_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "device.json").write_text("{")
    (tmp_path / "device_key.pem").write_text("x")
    # every port free-picked: a softap-sim running on this machine must not change the outcome
    free_ports = ("--tcp-port", "0", "--http-port", "0", "--control-port", "0")
    cloud_ports = ("--cloud-port", "0", "--cloud-device-port", "0")
    out = run_cli("run", "--state-dir", str(tmp_path), *free_ports, *cloud_ports)
    assert out.returncode == 1
    assert "device.json" in out.stderr
    assert "Traceback" not in out.stderr


def test_run_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    import signal

    nets = tmp_path / "nets.toml"
    nets.write_text('[[network]]\nssid = "Lab"\nsecurity = "wpa2_aes"\npassword = "labpass123"\n')
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "softap_sim",
            "run",
            "--state-dir",
            str(tmp_path / "s"),
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
            "--networks",
            str(nets),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("Press Ctrl-C"):
            break
    banner = "".join(lines)
    tcp_line = next(x for x in lines if x.strip().startswith("TCP"))
    host_port = tcp_line.split()[1]
    host, port = host_port.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"scan-ap\n0\n\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    assert data == b'\n\n{"scans":[{"ssid":"Lab","rssi":-55,"sec":4194308,"ch":6,"mdr":72200}]}'
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "stopped" in out
    assert "Photon-" in banner
    assert "scan-ap" in err  # each command served is logged
