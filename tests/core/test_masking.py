"""Claim codes never reach a log or a transcript, whatever the body's bytes (issue 11).

A ``set`` body with ``\\r\\n\\r\\n`` inside is accepted by the device (jsmn skips the
whitespace) but once fooled the transcript's mask into looking for the end of an HTTP
head inside the TCP body. Masking now follows the parsed structure: the transport's
framing, then the device's own jsmn tokens and ``parse_json_request`` positions.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import stat
from pathlib import Path

import aiohttp
import pytest

from firmware_model import ManualClock
from softap_sim import DeviceEmulator, SimConfig
from softap_sim.control_api import start_control_api
from softap_sim.log import sanitize
from softap_sim.protocol.client import decode_chunked
from softap_sim.transcript import Transcript, mask_claim_code
from tests.wire import read_http_response, tcp_exchange

CODE = "CRLF-claim-code-7c1e9a-SECRET"
CRLF_BODY = b'{"k":"cc","v":"%s"\r\n\r\n}' % CODE.encode()
HTTP_CODE = "HTTP-claim-code-55d0b2-SECRET"


def frame(name: str, body: bytes) -> bytes:
    return b"%s\n%d\n\n%s" % (name.encode(), len(body), body)


def http_post(path: str, body: bytes) -> bytes:
    return b"POST /%s HTTP/1.1\r\nHost: 192.168.0.1\r\nContent-Length: %d\r\n\r\n%s" % (
        path.encode(),
        len(body),
        body,
    )


@pytest.mark.asyncio
async def test_crlf_body_claim_code_never_logged_or_recorded(
    spec_config: SimConfig, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "transcript.jsonl"
    config = dataclasses.replace(spec_config, transcript_path=path)
    # -vv: every softap_sim logger at DEBUG (named ones too: 'softap_sim run' without -v
    # leaves softap_sim.dispatch at INFO, and the cli tests run it in this process)
    for name in (
        "softap_sim",
        "softap_sim.dispatch",
        "softap_sim.transcript",
        "softap_sim.transports.tcp_server",
        "softap_sim.transports.http_server",
        "softap_sim.control_api",
        "firmware_model",
    ):
        caplog.set_level(logging.DEBUG, logger=name)
    async with DeviceEmulator(config, clock=ManualClock()) as emu:
        server = await start_control_api(emu)
        try:
            # TCP: the body the issue names, CR LF CR LF inside the object
            got = await tcp_exchange(emu.tcp_address, frame("set", CRLF_BODY))
            assert got == b'\n\n{"r":0}'
            assert emu.device.dct.claim_code == CODE.encode()  # the device did store it
            # HTTP: a claim code with CR LF CR LF in the body too, and a plain one
            hcode = HTTP_CODE.encode()
            for body in (
                b'{"k":"cc","v":"%s"\r\n\r\n}' % hcode,
                b'{"k":"cc",\r\n\r\n"v":"%s"}' % hcode,
                b'{"k":"cc","v":"%s"}' % hcode,
            ):
                reader, writer = await asyncio.open_connection(*emu.http_address)
                writer.write(http_post("set", body))
                await writer.drain()
                reply = await read_http_response(reader)
                writer.close()
                head, _, chunks = reply.partition(b"\r\n\r\n")
                assert b"".join(decode_chunked(chunks)) == b'{"r":0}', head
                assert emu.device.dct.claim_code == HTTP_CODE.encode()
            async with (
                aiohttp.ClientSession() as session,
                session.get(server.url + "/v1/transcript") as resp,
            ):
                api_text = await resp.text()
        finally:
            await server.close()
        emu.check()
    file_text = path.read_text(encoding="utf-8")
    commands = [json.loads(line).get("command") for line in file_text.splitlines()]
    assert commands.count("set") == 4
    logs = [r.getMessage() for r in caplog.records if r.name.startswith(("softap_sim", "firmware"))]
    assert sum("request body" in m for m in logs) == 4  # the -vv lines were produced
    places = {"transcript file": [file_text], "control API": [api_text], "log": logs}
    leaks = [
        (where, code)
        for where, texts in places.items()
        for text in texts
        for code in (CODE, HTTP_CODE)
        if code in text or code in json.loads(json.dumps(text))
    ]
    assert leaks == [], leaks


def test_mask_hits_the_value_the_device_parses() -> None:
    # the TCP framing is parsed as the device does; the body as jsmn + parse_json_request
    raw = frame("set", CRLF_BODY)
    masked = mask_claim_code(raw, "tcp")
    assert len(masked) == len(raw)
    assert masked == raw.replace(CODE.encode(), b"*" * len(CODE))
    assert mask_claim_code(raw) == masked  # transport guessed from the framing
    http = http_post("set", CRLF_BODY)
    assert mask_claim_code(http, "http") == http.replace(CODE.encode(), b"*" * len(CODE))
    assert mask_claim_code(http) == mask_claim_code(http, "http")
    # the -vv log gets the body alone, CR LF CR LF or not
    assert CODE.encode() not in sanitize("set", CRLF_BODY)
    assert sanitize("set", CRLF_BODY) == CRLF_BODY.replace(CODE.encode(), b"*" * len(CODE))


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"k":"cc","v":"%s"}' % CODE.encode(), id="plain"),
        pytest.param(b'\r\n\r\n{"k":"cc","v":"%s"}' % CODE.encode(), id="crlf-first"),
        pytest.param(b'{"k":"cc"\n\n,"v":"%s"}' % CODE.encode(), id="lflf-inside"),
        pytest.param(b'{"k":"cc","v":%s}' % CODE.encode(), id="primitive"),
        pytest.param(b'{"k":"cc","v":"%s"}\x00%s' % (CODE.encode(), CODE.encode()), id="nul"),
        pytest.param(b'{"k":["cc"],"k":"%s"}' % CODE.encode(), id="array-under-k"),
        pytest.param(b'{"k":"cc","v":"%s"}{"v":"%s"}' % (CODE.encode(), CODE.encode()), id="2"),
        pytest.param(b'{"k":"cc","v":"%s' % CODE.encode(), id="truncated"),
        pytest.param(b'"%s"' % CODE.encode(), id="top-level-string"),
    ],
)
@pytest.mark.parametrize("transport", ["tcp", "http", None])
def test_no_body_shape_leaks_the_code(body: bytes, transport: str | None) -> None:
    raw = frame("set", body) if transport != "http" else http_post("set", body)
    masked = mask_claim_code(raw, transport)
    assert len(masked) == len(raw)
    assert CODE.encode() not in masked
    assert CODE.encode()[:6] not in masked
    assert CODE.encode() not in sanitize("set", body)


def test_configure_ap_log_redacts_unquoted_and_crlf_secrets() -> None:
    for body in (
        b'{"idx":0,"ssid":"s","sec":4194310,"ch":6,"pwd":"0123abcd"}',
        b'{"idx":0,"ssid":"s","sec":4194310,"ch":6,pwd:0123abcd}',
        b'{"idx":0,"ssid":"s",\r\n\r\n"pwd"\r\n:\r\n"0123abcd"}',
    ):
        assert b"0123abcd" not in sanitize("configure-ap", body)


def test_transcript_file_is_created_0600(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    old = os.umask(0o022)
    try:
        Transcript(path).close()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        # an existing, looser file is tightened when it is opened again
        path.chmod(0o644)
        Transcript(path).close()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        os.umask(old)
