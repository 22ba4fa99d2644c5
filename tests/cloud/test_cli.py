"""``softap-sim cloud`` and the cloud inside ``softap-sim run``, as a newcomer uses them."""

from __future__ import annotations

import json
import signal
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from softap_sim.cli import main
from softap_sim.cloud.app import CloudServer


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "softap_sim", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_client_lifecycle_and_customer_list(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sd = str(tmp_path)
    assert (
        main(
            [
                "cloud",
                "client",
                "create",
                "--name",
                "My App",
                "--preset",
                "mobile",
                "--state-dir",
                sd,
            ]
        )
        == 0
    )
    created = json.loads(capsys.readouterr().out)
    assert created["scope"] == "customers:create"
    assert len(created["secret"]) == 40
    assert main(["cloud", "client", "list", "--json", "--state-dir", sd]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert created["id"] in [c["id"] for c in listed]
    assert all("secret" not in c for c in listed)  # shown once only
    assert main(["cloud", "client", "delete", created["id"], "--state-dir", sd]) == 0
    capsys.readouterr()
    assert main(["cloud", "client", "delete", created["id"], "--state-dir", sd]) == 1
    assert "no client" in capsys.readouterr().err
    assert main(["cloud", "customer", "list", "--json", "--state-dir", sd]) == 0
    assert json.loads(capsys.readouterr().out) == []
    # the database holds hashes only
    dump = "\n".join(sqlite3.connect(tmp_path / "cloud.sqlite3").iterdump())
    assert created["secret"] not in dump


def test_web_client_needs_a_redirect_uri(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(
            [
                "cloud",
                "client",
                "create",
                "--name",
                "w",
                "--preset",
                "web",
                "--state-dir",
                str(tmp_path),
            ]
        )
        == 1
    )
    assert "--redirect-uri" in capsys.readouterr().err


def test_cloud_binds_loopback_unless_told(tmp_path: Path) -> None:
    out = run_cli("cloud", "--host", "0.0.0.0", "--port", "0", "--state-dir", str(tmp_path))
    assert out.returncode == 1
    assert (
        "--cloud-public" in out.stderr or "allow_remote" in out.stderr or "loopback" in out.stderr
    )
    assert "Traceback" not in out.stderr
    with pytest.raises(ValueError, match="loopback"):
        CloudServer(object(), "0.0.0.0")  # type: ignore[arg-type]


def _start_run(tmp_path: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "softap_sim",
            "run",
            "--state-dir",
            str(tmp_path),
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
    # the first-start credentials follow the banner
    return proc, "".join(lines)


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    out, _err = proc.communicate(timeout=20)
    assert proc.returncode == 0
    return out


def test_run_starts_the_cloud_with_the_device_registered(tmp_path: Path) -> None:
    proc, banner = _start_run(tmp_path)
    rest = _stop(proc)
    assert "  cloud      http://127.0.0.1:" in banner
    assert "first start, created" in banner
    assert "stopped" in rest
    creds_file = tmp_path / "cloud-credentials.json"
    assert stat.S_IMODE(creds_file.stat().st_mode) == 0o600
    creds = json.loads(creds_file.read_text())
    assert creds["client"]["secret"] in banner  # printed once ...
    device_id = next(
        line.split()[2] for line in banner.splitlines() if line.strip().startswith("device id")
    )
    conn = sqlite3.connect(tmp_path / "cloud.sqlite3")
    assert conn.execute("SELECT id FROM devices").fetchall() == [(device_id.lower(),)]
    conn.close()
    proc, banner = _start_run(tmp_path)
    rest = _stop(proc)
    assert creds["client"]["secret"] not in banner + rest  # ... and never again
    assert "first start" not in banner
