"""Transcripts (JSON lines, secrets redacted), determinism, and ``softap-sim replay``.

Every emulator here runs on a :class:`ManualClock`: delayed replies come out when a test
advances the clock, never after a sleep. The only real-time waits are bounded
assertion windows proving a silence (as in ``tests/wire.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import padding

from firmware_model import DeviceIdentity, DeviceKey, ManualClock, RadioEnvironment
from softap_sim import DeviceEmulator, SimConfig
from softap_sim.protocol.client import decode_chunked, http_response_end
from softap_sim.replay import (
    DIFFERENT,
    ID_PLACEHOLDER,
    KEY_PLACEHOLDER,
    SAME,
    SILENCE,
    Diff,
    ReplayReport,
    add_parser,
    escape,
    load_transcript,
    normalize_ids,
    replay,
)
from softap_sim.transcript import read_transcript, record_bytes
from tests.conftest import SPEC_DEVICE_ID
from tests.wire import expect_silence, read_http_response, tcp_exchange

CLAIM_CODE = "my-claim-code-1234-XYZ"
PASSWORD = b"guest-password"
SCAN_LATENCY = {"kind": "latency", "command": "scan-ap", "delay_ms": 500, "jitter_ms": 200}
#: how far the manual clock moves per step while a delayed reply is due
STEP_S = 0.01
#: a replay timeout for exchanges expected to be silent (a bounded assertion window)
SILENCE_S = 0.3


def encrypt_hex(key: DeviceKey, plaintext: bytes) -> str:
    return key._key.public_key().encrypt(plaintext, padding.PKCS1v15()).hex()


def frame(name: str, body: bytes = b"") -> bytes:
    return b"%s\n%d\n\n%s" % (name.encode(), len(body), body)


def http_get(path: str) -> bytes:
    return b"GET /%s HTTP/1.1\r\nHost: 192.168.0.1\r\n\r\n" % path.encode()


def http_post(path: str, body: bytes) -> bytes:
    return b"POST /%s HTTP/1.1\r\nHost: 192.168.0.1\r\nContent-Length: %d\r\n\r\n%s" % (
        path.encode(),
        len(body),
        body,
    )


def set_body(code: str = CLAIM_CODE) -> bytes:
    return b'{"k":"cc","v":"%s"}' % code.encode()


def configure_body(ciphertext_hex: str) -> bytes:
    return b'{"idx":0,"ssid":"guest","sec":4194310,"ch":6,"pwd":"%s"}' % ciphertext_hex.encode()


def exchanges(emu: DeviceEmulator) -> list[dict[str, Any]]:
    assert emu.transcript is not None
    return [r for r in emu.transcript.records if r["type"] == "exchange"]


def without_peer(records: Any) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "peer"} for r in records]


@asynccontextmanager
async def device(config: SimConfig) -> AsyncIterator[DeviceEmulator]:
    async with DeviceEmulator(config, clock=ManualClock()) as emu:
        yield emu
        emu.check()


class HttpClient:
    """One keep-alive HTTP connection, one complete response per request."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, emu: DeviceEmulator) -> HttpClient:
        return cls(*await asyncio.open_connection(*emu.http_address))

    async def send(self, request: bytes) -> bytes:
        self.writer.write(request)
        await self.writer.drain()
        return await read_http_response(self.reader)

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def let_timers_run(emu: DeviceEmulator, limit_s: float = 5.0) -> float:
    """Advance the manual clock in small steps until no timer is pending; the time moved.

    The clock always stops on a step boundary, so the time a delayed reply takes is
    the same on every run with the same seed.
    """
    assert emu.scheduler is not None
    moved = 0.0
    while emu.scheduler.pending():
        assert moved < limit_s, "a timer never fell due"
        await emu.advance(STEP_S)
        moved += STEP_S
    return moved


async def delayed(emu: DeviceEmulator, reply: Awaitable[bytes]) -> bytes:
    """Await a reply that only comes out when the manual clock moves.

    The request first has to reach the device (a few loop iterations, no time): wait
    until its delayed reply is scheduled, then move the clock until it is sent.
    """
    assert emu.scheduler is not None
    task = asyncio.ensure_future(reply)
    for _ in range(10_000):
        if emu.scheduler.pending() or task.done():
            break
        await asyncio.sleep(0)  # yield to the loop; the manual clock does not move
    await let_timers_run(emu)
    return await asyncio.wait_for(task, 5)


# ==================================================================================
# (a) records
# ==================================================================================
@pytest.mark.asyncio
async def test_tcp_and_http_exchanges_are_recorded_with_their_fields(
    spec_config: SimConfig,
) -> None:
    async with device(spec_config) as emu:
        tcp_replies = [
            await tcp_exchange(emu.tcp_address, frame("device-id")),
            await tcp_exchange(emu.tcp_address, frame("version")),
        ]
        first = await HttpClient.open(emu)
        second = await HttpClient.open(emu)
        http_replies = [
            await first.send(http_get("version")),
            await first.send(http_get("device-id")),
            await second.send(http_get("hello")),
        ]
        http_peers = [
            first.writer.get_extra_info("sockname"),
            second.writer.get_extra_info("sockname"),
        ]
        await first.close()
        await second.close()
        recs = exchanges(emu)

    assert [(r["transport"], r["conn"], r["command"]) for r in recs] == [
        ("tcp", 1, "device-id"),
        ("tcp", 2, "version"),
        ("http", 1, "version"),
        ("http", 1, "device-id"),  # the same keep-alive connection
        ("http", 2, "/hello"),  # not a command: the path
    ]
    for rec, reply in zip(recs, tcp_replies + http_replies, strict=True):
        assert set(rec) == {
            "type", "t", "transport", "conn", "peer", "command", "request", "reply",
            "delivery", "state_before", "state_after", "seq",
        }  # fmt: skip
        assert rec["t"] == 0.0  # the manual clock never moved
        assert rec["delivery"] == "normal"
        assert rec["state_before"] == rec["state_after"] == "listening"
        assert record_bytes(rec, "reply") == reply  # exactly the bytes the client got
        assert rec["peer"].startswith("127.0.0.1:")
    assert record_bytes(recs[0], "request") == frame("device-id")
    assert record_bytes(recs[2], "request") == http_get("version")
    assert recs[0]["reply"] == '\n\n{"id":"%s","c":"0"}' % SPEC_DEVICE_ID
    assert [r["peer"] for r in recs[2:]] == [
        f"{http_peers[0][0]}:{http_peers[0][1]}",
        f"{http_peers[0][0]}:{http_peers[0][1]}",
        f"{http_peers[1][0]}:{http_peers[1][1]}",
    ]
    seqs = [r["seq"] for r in recs]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == len(seqs)


@pytest.mark.asyncio
async def test_boot_state_changes_are_recorded(spec_config: SimConfig) -> None:
    async with device(spec_config) as emu:
        assert emu.transcript is not None
        states = [r for r in emu.transcript.records if r["type"] == "state"]
    assert [(s["old"], s["new"], s["cause"]) for s in states[:2]] == [
        ("off", "booting", "PowerOn"),
        ("booting", "listening", "BootDone"),
    ]
    assert states[1]["led"] == "blinking dark blue"
    assert isinstance(states[1]["detail"], dict)


@pytest.mark.asyncio
async def test_delivery_fault_and_delay_are_recorded(spec_config: SimConfig) -> None:
    config = SimConfig(
        identity=spec_config.identity,
        key=spec_config.key,
        radio=spec_config.radio,
        seed=5,
        faults=(
            {"kind": "close-without-reply", "command": "version", "transport": "tcp", "times": 1},
            SCAN_LATENCY,
        ),
    )
    async with device(config) as emu:
        got = await tcp_exchange(emu.tcp_address, frame("version"))
        scan = await delayed(emu, tcp_exchange(emu.tcp_address, frame("scan-ap")))
        after = await tcp_exchange(emu.tcp_address, frame("version"))
        recs = exchanges(emu)
    assert got == b""  # the fault: closed without a reply
    assert recs[0]["delivery"] == "close-without-reply"
    assert record_bytes(recs[0], "reply") == b'\n\n{"v":2}'  # what the model answered
    assert recs[1]["command"] == "scan-ap"
    assert recs[1]["delivery"] == "normal"  # a latency fault only delays
    assert record_bytes(recs[1], "reply") == scan
    assert after == b'\n\n{"v":2}'
    # recorded when the command ran; the next one only after the jittered delay
    assert recs[1]["t"] == 0.0
    assert 0.3 <= recs[2]["t"] <= 0.71


@pytest.mark.asyncio
async def test_connect_ap_exchange_then_state_changes(spec_config: SimConfig) -> None:
    async with device(spec_config) as emu:
        pwd = encrypt_hex(emu.device.key, PASSWORD)
        assert await tcp_exchange(emu.tcp_address, frame("configure-ap", configure_body(pwd))) == (
            b'\n\n{"r":0}'
        )
        assert await tcp_exchange(emu.tcp_address, frame("connect-ap", b'{"idx":0}')) == (
            b'\n\n{"r":0}'
        )
        await asyncio.wait_for(emu.setup_complete.wait(), 5)
        await let_timers_run(emu)
        assert emu.transcript is not None
        records = list(emu.transcript.records)
    connect = next(r for r in records if r.get("command") == "connect-ap")
    assert connect["state_before"] == "listening"
    later = [r for r in records if r["seq"] > connect["seq"]]
    assert later, "leaving listening mode is recorded after the exchange"
    assert all(r["type"] == "state" for r in later)
    assert later[0]["old"] == "listening"
    assert later[0]["new"] != "listening"


@pytest.mark.asyncio
async def test_jsonl_file_round_trips(spec_config: SimConfig, tmp_path: Path) -> None:
    path = tmp_path / "session.jsonl"
    config = SimConfig(
        identity=spec_config.identity,
        key=spec_config.key,
        radio=spec_config.radio,
        transcript_path=path,
    )
    async with device(config) as emu:
        replies = [
            await tcp_exchange(emu.tcp_address, frame("public-key")),
            await tcp_exchange(emu.tcp_address, b"\xff\x00bin\n0\n\n"),  # any byte value
        ]
        http = await HttpClient.open(emu)
        replies.append(await http.send(http_get("scan-ap")))
        await http.close()
        assert emu.transcript is not None
        in_memory = list(emu.transcript.records)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(in_memory)
    assert all(line.isascii() for line in lines)  # ensure_ascii: one record per line
    from_file = list(read_transcript(path))
    assert from_file == [json.loads(json.dumps(r)) for r in in_memory]
    recs = [r for r in from_file if r["type"] == "exchange"]
    assert [record_bytes(r, "reply") for r in recs] == replies
    assert record_bytes(recs[1], "request") == b"\xff\x00bin\n0\n\n"
    assert load_transcript(path)[0]["_line"] == 1


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("body", "stored"),
    [
        pytest.param(set_body(), CLAIM_CODE, id="plain"),
        pytest.param(b'{ "k" : "cc" , "v" : "%s" }' % CLAIM_CODE.encode(), CLAIM_CODE, id="spaces"),
        pytest.param(b'{"v":"%s","k":"cc"}' % CLAIM_CODE.encode(), CLAIM_CODE, id="value-first"),
        # jsmn validates escapes but does not decode them: the device stores them raw
        pytest.param(
            b'{"k":"cc","v":"ab\\"%s"}' % CLAIM_CODE.encode(),
            'ab\\"' + CLAIM_CODE,
            id="escaped-quote",
        ),
    ],
)
async def test_claim_codes_are_masked(
    spec_config: SimConfig, tmp_path: Path, body: bytes, stored: str
) -> None:
    path = tmp_path / "t.jsonl"
    config = dataclasses.replace(spec_config, transcript_path=path)
    async with device(config) as emu:
        assert await tcp_exchange(emu.tcp_address, frame("set", body)) == b'\n\n{"r":0}'
        http = await HttpClient.open(emu)
        reply = await http.send(http_post("set", body))
        await http.close()
        assert reply.endswith(b"\r\n0\r\n\r\n")
        assert emu.device.dct.claim_code == stored.encode()  # the device got the real one
        assert emu.transcript is not None
        in_memory = json.dumps(list(emu.transcript.records))
        recs = exchanges(emu)
    text = path.read_text(encoding="utf-8")
    assert CLAIM_CODE not in text
    assert CLAIM_CODE not in in_memory
    assert [r["command"] for r in recs] == ["set", "set"]
    masked = b"*" * len(stored)
    for rec, sent in zip(recs, (frame("set", body), http_post("set", body)), strict=True):
        request = record_bytes(rec, "request")
        assert len(request) == len(sent)  # the framing still fits: a replay can re-send it
        assert request == sent.replace(stored.encode(), masked)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{k:cc,v:"%s"}' % CLAIM_CODE.encode(), id="unquoted-keys"),
        pytest.param(b'{"k":"cc","v":%s}' % CLAIM_CODE.encode(), id="primitive-value"),
        pytest.param(b'{"k":"cc","v":"%s"' % CLAIM_CODE.encode(), id="truncated-json"),
    ],
)
async def test_rejected_claim_codes_are_masked_too(spec_config: SimConfig, body: bytes) -> None:
    async with device(spec_config) as emu:
        assert await tcp_exchange(emu.tcp_address, frame("set", body)) == b"\n\n"  # no JSON
        assert emu.device.dct.claim_code == b""
        (rec,) = exchanges(emu)
    request = record_bytes(rec, "request")
    assert CLAIM_CODE.encode() not in request
    assert len(request) == len(frame("set", body))


@pytest.mark.asyncio
async def test_passwords_never_appear(spec_config: SimConfig, tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    config = SimConfig(
        identity=spec_config.identity,
        key=spec_config.key,
        radio=spec_config.radio,
        transcript_path=path,
    )
    async with device(config) as emu:
        key = emu.device.key
        ct_tcp, ct_http = encrypt_hex(key, PASSWORD), encrypt_hex(key, PASSWORD)
        body = configure_body(ct_tcp)
        assert await tcp_exchange(emu.tcp_address, frame("configure-ap", body)) == (b'\n\n{"r":0}')
        http = await HttpClient.open(emu)
        await http.send(http_post("configure-ap", configure_body(ct_http)))
        await http.send(http_post("connect-ap", b'{"idx":0}'))
        await http.close()
        await asyncio.wait_for(emu.setup_complete.wait(), 5)
        await let_timers_run(emu)
        assert emu.device.dct.credentials  # the device did decrypt and store it
        assert emu.transcript is not None
        in_memory = json.dumps(list(emu.transcript.records))
    text = path.read_text(encoding="utf-8")
    for secret in (PASSWORD.decode(), PASSWORD.hex(), PASSWORD.hex().upper()):
        assert secret not in text
        assert secret not in in_memory
    assert ct_tcp in text  # the ciphertext is kept: a replay needs it
    assert ct_http in text


@pytest.mark.asyncio
async def test_repeated_requests_and_replies_are_kept_once(spec_config: SimConfig) -> None:
    """The ring shares one bytes object per distinct request and reply (memory, and the
    reply buffers of a busy client are freed at once instead of kept 10,000 deep)."""
    async with device(spec_config) as emu:
        for _ in range(3):
            await tcp_exchange(emu.tcp_address, frame("device-id"))
        assert emu.transcript is not None
        kept = [r for r in emu.transcript._ring if r[0] == "x"]
        assert len(kept) == 3
        assert kept[0][7] is kept[1][7] is kept[2][7]  # request
        assert kept[0][8] is kept[1][8] is kept[2][8]  # reply
        assert [r["reply"] for r in emu.transcript.records if r["type"] == "exchange"] == [
            '\n\n{"id":"%s","c":"0"}' % SPEC_DEVICE_ID
        ] * 3


@pytest.mark.asyncio
async def test_record_false_records_nothing(spec_config: SimConfig, tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    config = SimConfig(
        identity=spec_config.identity,
        key=spec_config.key,
        radio=spec_config.radio,
        record=False,
        transcript_path=path,
    )
    async with device(config) as emu:
        assert await tcp_exchange(emu.tcp_address, frame("version")) == b'\n\n{"v":2}'
        http = await HttpClient.open(emu)
        await http.send(http_post("set", set_body()))
        await http.close()
        assert emu.transcript is not None
        assert list(emu.transcript.records) == []
        assert emu.transcript.seq == 0
    assert not path.exists() or path.read_text() == ""


# ==================================================================================
# (b) determinism
# ==================================================================================
async def scripted_session(emu: DeviceEmulator, ciphertext: str) -> None:
    """A client session with delayed (jittered) scans; time moves only by the script."""
    tcp = emu.tcp_address
    await tcp_exchange(tcp, frame("device-id"))
    await delayed(emu, tcp_exchange(tcp, frame("scan-ap")))
    http = await HttpClient.open(emu)
    await http.send(http_get("version"))
    await delayed(emu, http.send(http_get("scan-ap")))
    await emu.advance(1.5)  # the user reads the list
    await http.send(http_get("public-key"))
    await tcp_exchange(tcp, frame("set", set_body()))
    await tcp_exchange(tcp, frame("configure-ap", configure_body(ciphertext)))
    await delayed(emu, tcp_exchange(tcp, frame("scan-ap")))
    await http.send(http_post("connect-ap", b'{"idx":0}'))
    await http.close()
    await asyncio.wait_for(emu.setup_complete.wait(), 5)
    await let_timers_run(emu)


async def run_scripted(
    identity: DeviceIdentity,
    key: DeviceKey,
    radio: RadioEnvironment,
    seed: int,
    ciphertext: str,
) -> list[dict[str, Any]]:
    config = SimConfig(seed=seed, identity=identity, key=key, radio=radio, faults=(SCAN_LATENCY,))
    async with device(config) as emu:
        await scripted_session(emu, ciphertext)
        assert emu.transcript is not None
        return list(emu.transcript.records)


@pytest.mark.asyncio
async def test_same_scenario_and_seed_give_the_same_transcript(
    spec_identity: DeviceIdentity, device_key: DeviceKey, spec_radio: RadioEnvironment
) -> None:
    # PKCS#1 v1.5 encryption is randomised: the client sends the same ciphertext twice
    ciphertext = encrypt_hex(device_key, PASSWORD)
    first = await run_scripted(spec_identity, device_key, spec_radio, 7, ciphertext)
    second = await run_scripted(spec_identity, device_key, spec_radio, 7, ciphertext)
    assert without_peer(first) == without_peer(second)

    ex = [r for r in first if r["type"] == "exchange"]
    assert [r["command"] for r in ex] == [
        "device-id", "scan-ap", "version", "scan-ap", "public-key", "set", "configure-ap",
        "scan-ap", "connect-ap",
    ]  # fmt: skip
    assert any(r["type"] == "state" and r["cause"] != "PowerOn" for r in first[-3:])
    # the jitter is visible: each scan delays the next exchange by 0.3-0.7 s
    times = [r["t"] for r in ex]
    assert 0.3 <= times[2] - times[1] <= 0.71
    assert 0.3 <= times[4] - times[3] - 1.5 <= 0.71

    other = await run_scripted(spec_identity, device_key, spec_radio, 8, ciphertext)
    assert [r["t"] for r in other if r["type"] == "exchange"] != times  # the seed matters


# ==================================================================================
# (c) replay
# ==================================================================================
async def full_session(emu: DeviceEmulator) -> None:
    """All seven commands over both transports, ending with connect-ap."""
    key = emu.device.key
    tcp = emu.tcp_address
    for request in (
        frame("version"),
        frame("device-id"),
        frame("scan-ap"),
        frame("public-key"),
        frame("set", set_body()),
        frame("configure-ap", configure_body(encrypt_hex(key, PASSWORD))),
    ):
        assert (await tcp_exchange(tcp, request)).startswith(b"\n\n{")
    http = await HttpClient.open(emu)
    for request in (
        http_get("version"),
        http_get("device-id"),
        http_get("scan-ap"),
        http_get("public-key"),
        http_post("set", set_body("another-claim-code")),
        http_post("configure-ap", configure_body(encrypt_hex(key, PASSWORD))),
        http_post("connect-ap", b'{"idx":0}'),
    ):
        assert (await http.send(request)).startswith(b"HTTP/1.1 200 OK\r\n")
    await http.close()
    await asyncio.wait_for(emu.setup_complete.wait(), 5)


async def record_full_session(config: SimConfig, path: Path) -> list[dict[str, Any]]:
    async with device(dataclasses.replace(config, transcript_path=path)) as emu:
        await full_session(emu)
    return load_transcript(path)


async def replay_against(
    config: SimConfig, records: list[dict[str, Any]], *, ignore_id: bool = False
) -> ReplayReport:
    async with device(config) as emu:
        report = await replay(records, emu.tcp_address, emu.http_address, 5.0, ignore_id)
        await emu.settle()
    return report


def statuses(report: ReplayReport) -> list[tuple[str, str, str]]:
    return [(r.exchange.transport, r.exchange.command, r.status) for r in report.results]


@pytest.fixture(scope="module")
def other_key() -> DeviceKey:
    return DeviceKey.generate(1024)


@pytest.mark.asyncio
async def test_replay_against_the_same_device_has_no_differences(
    spec_config: SimConfig, tmp_path: Path
) -> None:
    config = dataclasses.replace(spec_config, seed=11)
    records = await record_full_session(config, tmp_path / "s.jsonl")
    text = (tmp_path / "s.jsonl").read_text()
    assert CLAIM_CODE not in text
    assert "another-claim-code" not in text

    report = await replay_against(config, records)
    assert len(report.results) == 13
    assert report.ok, report.format()
    assert report.exit_code == 0
    assert {c for _, c, _ in statuses(report)} == {
        "version", "device-id", "scan-ap", "public-key", "set", "configure-ap", "connect-ap",
    }  # fmt: skip
    assert report.trailing_context  # leaving listening mode, shown as context
    assert "13 exchanges: 13 same" in report.format()


@pytest.mark.asyncio
async def test_replay_against_another_device_reports_differences(
    spec_config: SimConfig, other_key: DeviceKey, tmp_path: Path
) -> None:
    records = await record_full_session(spec_config, tmp_path / "s.jsonl")
    other = SimConfig(
        identity=DeviceIdentity(bytes.fromhex("0123456789ABCDEF01234567"), "QWERTY"),
        key=other_key,
        radio=spec_config.radio,
    )
    report = await replay_against(other, records)
    assert report.exit_code == 1
    different = {(t, c) for t, c, s in statuses(report) if s != SAME}
    assert different == {
        (t, c) for t in ("tcp", "http") for c in ("device-id", "public-key", "configure-ap")
    }
    assert all(r.status == DIFFERENT for r in report.differences)
    dev_id = next(r for r in report.results if r.exchange.command == "device-id")
    assert dev_id.diff is not None
    assert dev_id.diff.offset == len(b'\n\n{"id":"')  # the first byte of the id
    assert "[320020001847333531323135" in dev_id.diff.expected
    assert "[0123456789ABCDEF01234567" in dev_id.diff.got

    lenient = await replay_against(other, records, ignore_id=True)
    # only the real differences remain: the password was encrypted for the other key
    assert {(t, c) for t, c, s in statuses(lenient) if s != SAME} == {
        ("tcp", "configure-ap"),
        ("http", "configure-ap"),
    }
    configure = next(r for r in lenient.results if r.exchange.command == "configure-ap")
    assert configure.diff is not None
    assert '{"r":0}' in configure.diff.expected.replace("[", "")
    assert lenient.exit_code == 1


@pytest.mark.asyncio
async def test_replay_silence_and_recorded_faults(spec_config: SimConfig) -> None:
    no_reply = dataclasses.replace(
        spec_config, faults=({"kind": "no-reply", "command": "version", "transport": "tcp"},)
    )
    # recorded on a healthy device, replayed on one that never answers version
    async with device(spec_config) as emu:
        await tcp_exchange(emu.tcp_address, frame("version"))
        healthy = list(emu.transcript.records) if emu.transcript else []
    async with device(no_reply) as emu:
        report = await replay(healthy, emu.tcp_address, emu.http_address, SILENCE_S, False)
        assert statuses(report) == [("tcp", "version", SILENCE)]
        assert report.results[0].note == "no reply / connection not closed"
        assert report.exit_code == 1

        # recorded under the fault: the same silence counts as the same
        got, closed = await expect_silence(emu.tcp_address, frame("version"), SILENCE_S)
        assert (got, closed) == (b"", False)
        faulty = [r for r in exchanges(emu) if r["delivery"] == "no-reply"][-1:]
        assert faulty
        again = await replay(faulty, emu.tcp_address, emu.http_address, SILENCE_S, False)
        assert statuses(again) == [("tcp", "version", SAME)]
        assert again.results[0].note == "as delivered (no-reply)"
    # ... and so does the model's reply on a healthy device
    async with device(spec_config) as emu:
        healthy_replay = await replay(faulty, emu.tcp_address, emu.http_address, 5.0, False)
    assert healthy_replay.ok


@pytest.mark.asyncio
async def test_replay_cli_exit_codes_and_json(
    spec_config: SimConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "s.jsonl"
    async with device(dataclasses.replace(spec_config, transcript_path=path)) as emu:
        await tcp_exchange(emu.tcp_address, frame("device-id"))
        http = await HttpClient.open(emu)
        await http.send(http_get("device-id"))
        await http.close()

    parser = argparse.ArgumentParser(prog="softap-sim")
    add_parser(parser.add_subparsers(dest="command"))

    async def run(argv: list[str]) -> int:
        args = parser.parse_args(argv)
        func: Callable[[argparse.Namespace], int] = args.replay_func
        return await asyncio.to_thread(func, args)  # replay_main runs its own loop

    defaults = parser.parse_args(["replay", str(path)])
    assert (defaults.host, defaults.tcp_port, defaults.http_port) == ("127.0.0.1", 5609, 8080)
    assert (defaults.timeout, defaults.ignore_id, defaults.json) == (5.0, False, False)

    async with device(spec_config) as emu:
        ports = ["--tcp-port", str(emu.tcp_address[1]), "--http-port", str(emu.http_address[1])]
        assert await run(["replay", str(path), *ports]) == 0
        out = capsys.readouterr().out
        assert "2 exchanges: 2 same" in out
        assert await run(["replay", str(path), *ports, "--json"]) == 0
        data = json.loads(capsys.readouterr().out)
        assert (data["exchanges"], data["same"], data["ok"]) == (2, 2, True)

    other = SimConfig(
        identity=DeviceIdentity(bytes.fromhex("AAAAAAAAAAAAAAAAAAAAAAAA"), "ZZZZZZ"),
        key=spec_config.key,
        radio=spec_config.radio,
    )
    async with device(other) as emu:
        ports = ["--tcp-port", str(emu.tcp_address[1]), "--http-port", str(emu.http_address[1])]
        assert await run(["replay", str(path), *ports, "--json"]) == 1
        data = json.loads(capsys.readouterr().out)
        assert data["different"] == 2
        assert data["results"][0]["diff"]["offset"] == len(b'\n\n{"id":"')
        assert await run(["replay", str(path), *ports]) == 1
        out = capsys.readouterr().out
        assert "first difference at byte 9" in out
        assert await run(["replay", str(path), *ports, "--ignore-id"]) == 0
        capsys.readouterr()


@pytest.mark.parametrize(
    ("content", "line", "what"),
    [
        pytest.param('{"type":"state"}\n{"type": "exch', 2, "not JSON", id="truncated"),
        pytest.param("\n\n[1, 2]\n", 3, "not a transcript record", id="not-an-object"),
        pytest.param(
            '{"type":"exchange","transport":"udp","conn":1,"request":"","reply":""}\n',
            1,
            "'transport' must be 'tcp' or 'http'",
            id="bad-transport",
        ),
        pytest.param(
            '{"type":"exchange","transport":"tcp","conn":1,"reply":""}\n',
            1,
            "'request' must be a string",
            id="no-request",
        ),
        pytest.param(
            '{"type":"exchange","transport":"tcp","conn":1,"request":"\\u20ac","reply":""}\n',
            1,
            "above U+00FF",
            id="not-latin-1",
        ),
    ],
)
def test_corrupt_transcript_exits_2_with_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, line: int, what: str
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    parser = argparse.ArgumentParser(prog="softap-sim")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["replay", str(path), "--tcp-port", "1", "--http-port", "1"])
    assert args.replay_func(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.strip()
    assert "\n" not in err
    assert err.startswith(f"softap-sim replay: error: {path}:{line}: ")
    assert what in err


def test_missing_or_binary_transcript_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser(prog="softap-sim")
    add_parser(parser.add_subparsers(dest="command"))
    missing = tmp_path / "missing.jsonl"
    args = parser.parse_args(["replay", str(missing), "--json"])
    assert args.replay_func(args) == 2
    captured = capsys.readouterr()
    assert f"{missing}: cannot read transcript" in captured.err
    assert json.loads(captured.out)["exit_code"] == 2
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(b'{"type":"state"}\n\xff\xfe\n')
    args = parser.parse_args(["replay", str(binary)])
    assert args.replay_func(args) == 2
    assert f"{binary}:2: not UTF-8" in capsys.readouterr().err


# ==================================================================================
# replay helpers
# ==================================================================================
def test_http_response_end() -> None:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    body = b"1\r\n{\r\n5\r\n0\r\n\r\n\r\n1\r\n}\r\n0\r\n\r\n"  # a chunk holding "0\r\n\r\n"
    assert http_response_end(head + body) == len(head + body)
    assert http_response_end(head + body + b"HTTP/1.1") == len(head + body)
    assert http_response_end(head + body[:-2]) is None
    assert http_response_end(head + body[:12]) is None  # cut inside the "0\r\n\r\n" chunk
    fixed = b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nabc"
    assert http_response_end(fixed) == len(fixed)
    assert http_response_end(fixed[:-1]) is None
    assert http_response_end(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n") is None


def test_normalize_ids_keeps_the_chunk_framing() -> None:
    key = "30819F" + "A1" * 291
    assert len(key) == 588
    chunks = [b'{"', b"b", b'":"', *(c.encode() for c in key), b'","r":0}']
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    wire = head + b"".join(b"%x\r\n%b\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    out = normalize_ids(wire)
    assert len(out) == len(wire)
    assert http_response_end(out) == len(out)  # still valid chunking
    assert b"".join(decode_chunked(out[len(head) :])) == b'{"b":"%s","r":0}' % KEY_PLACEHOLDER
    tcp = b'\n\n{"id":"%s","c":"0"}' % SPEC_DEVICE_ID.encode()
    assert normalize_ids(tcp) == b'\n\n{"id":"%s","c":"0"}' % ID_PLACEHOLDER
    assert normalize_ids(b'\n\n{"b":"%s","r":0}' % key.encode()) == (
        b'\n\n{"b":"%s","r":0}' % KEY_PLACEHOLDER
    )
    assert normalize_ids(b"0123456789abcdef0123456789") == b"0123456789abcdef0123456789"  # 26


def test_diff_and_escape() -> None:
    assert escape(b'a\r\n\t\\\x00\xff"') == 'a\\r\\n\\t\\\\\\x00\\xff"'
    d = Diff.of(b'\n\n{"r":0}', b'\n\n{"r":-1}')
    assert (d.offset, d.expected, d.got) == (7, '\\n\\n{"r":[0}]', '\\n\\n{"r":[-1}]')
    longer = Diff.of(b"abc", b"abcdef")
    assert (longer.offset, longer.expected, longer.got) == (3, "abc[]", "abc[def]")
    far = Diff.of(b"x" * 100 + b"A" + b"y" * 100, b"x" * 100 + b"B" + b"y" * 100)
    assert far.expected.startswith("...xxxx")
    assert far.expected.endswith("...]")
    assert "[A" in far.expected


def test_replay_rejects_malformed_records() -> None:
    bad: list[Mapping[str, Any]] = [{"type": "exchange", "transport": "tcp", "conn": "x"}]
    with pytest.raises(ValueError, match="'conn' must be an integer"):
        asyncio.run(replay(bad, ("127.0.0.1", 1), ("127.0.0.1", 1), 1.0, False))
