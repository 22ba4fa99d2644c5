"""The pytest plugin, driven the way users drive it: sample suites run by ``pytester``.

Every sample runs in a subprocess with the plugin loaded through its ``pytest11`` entry
point (as in a user's environment), pytest-asyncio in strict mode, ``--strict-markers``
and ``filterwarnings = error``. The ThreadedEmulator and the client codec are tested
directly at the end.
"""

from __future__ import annotations

import contextlib
import os
import socket
import textwrap
import threading

import pytest

from firmware_model.events import SetupButton
from softap_sim import SimConfig
from softap_sim.errors import ConfigError, LifecycleError, SimulatorError
from softap_sim.protocol.client import (
    SoftapClientError,
    decode_http_reply,
    decode_tcp_reply,
    encode_http_request,
    encode_tcp_request,
    http_response_end,
)
from softap_sim.testing import SoftapSyncClient
from softap_sim.threaded import ThreadedEmulator, ready_timeout_from_env, running_emulators

pytest_plugins = ["pytester"]

INI = """
[pytest]
addopts = --strict-markers -p no:cacheprovider
asyncio_mode = strict
asyncio_default_fixture_loop_scope = function
filterwarnings = error
"""
SUBPROCESS_TIMEOUT_S = 60


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """Run the sample suite in a fresh interpreter, plugins loaded as a user's would be."""
    extra: tuple[str, ...] = ()
    if os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
        extra = ("-p", "pytest_asyncio.plugin", "-p", "softap_sim.pytest_plugin")
    return pytester.runpytest_subprocess(*extra, *args, timeout=SUBPROCESS_TIMEOUT_S)


def suite(pytester: pytest.Pytester, source: str, *, ini: str = INI) -> None:
    pytester.makeini(ini)
    pytester.makepyfile(test_sample=textwrap.dedent(source))


# ---------------------------------------------------------------------------------------
# a user's suite that uses every fixture passes
# ---------------------------------------------------------------------------------------
SAMPLE = """
    from __future__ import annotations

    import pytest

    from firmware_model import DeviceState, ManualClock
    from firmware_model.eras import FirmwareEra
    from softap_sim import DeviceEmulator, SimConfig
    from softap_sim.testing import CloudCustomer, SoftapClient
    from softap_sim.threaded import ThreadedEmulator

    CLOSED: list[str] = []
    MADE: list[str] = []


    @pytest.mark.asyncio
    async def test_device_and_client(softap_device, softap_client):
        assert isinstance(softap_device, DeviceEmulator)
        over_tcp = await softap_client.tcp("device-id")
        assert over_tcp == await softap_client.http("device-id")
        assert over_tcp["c"] == "0"
        assert await softap_client.tcp_raw("version") == b'\\n\\n{"v":2}'
        assert await softap_client.tcp_raw("no-such-command") == b""
        raw = await softap_client.http_raw("version")
        assert raw.startswith(b"HTTP/1.1 200 OK\\r\\n") and raw.endswith(b"0\\r\\n\\r\\n")
        assert await softap_client.http("set", body={"k": "cc", "v": "x" * 63}) == {"r": 0}
        assert softap_device.device.dct.claim_code == b"x" * 63


    @pytest.mark.asyncio
    async def test_the_same_seed_gives_the_same_device_every_run(softap_device):
        assert softap_device.config.seed is not None


    @pytest.mark.asyncio
    @pytest.mark.softap(
        firmware="0.6.4",
        app_ram="4k",
        seed=99,
        faults=[{"kind": "no-reply", "command": "version", "transport": "tcp"}],
    )
    async def test_marker_settings(softap_device, softap_client):
        assert softap_device.device.era is FirmwareEra.V0_5_0
        assert softap_device.config.app_ram_bytes == 4096
        assert softap_device.config.seed == 99
        softap_client.timeout_s = 0.2
        with pytest.raises(TimeoutError):
            await softap_client.tcp("version")
        assert await softap_client.http("version") == {"v": 2}


    @pytest.mark.asyncio
    @pytest.mark.softap(scenario="scan-empty")
    async def test_marker_scenario(softap_device, softap_client):
        assert softap_device.config.scenario == "scan-empty"
        assert await softap_client.tcp("scan-ap") == {"scans": []}


    @pytest.mark.asyncio
    async def test_factory(monkeypatch, make_softap_device):
        original = DeviceEmulator.close

        async def close(self):
            CLOSED.append(self.ssid)
            await original(self)

        monkeypatch.setattr(DeviceEmulator, "close", close)
        first = await make_softap_device()
        second = await make_softap_device(firmware=FirmwareEra.V0_4_4, scenario="scan-empty")
        manual = await make_softap_device(clock=ManualClock())
        assert second.device.era is FirmwareEra.V0_4_4
        assert second.config.scenario == "scan-empty"
        ids = {d.device.dct.identity.device_id_hex for d in (first, second, manual)}
        assert len(ids) == 3
        MADE[:] = [first.ssid, second.ssid, manual.ssid]
        with pytest.raises(TypeError, match="unknown setting 'colour'"):
            await make_softap_device(colour="blue")


    def test_the_factory_closed_its_devices_in_reverse_order():
        assert MADE
        assert CLOSED == MADE[::-1]


    @pytest.mark.asyncio
    @pytest.mark.softap(count=4)
    async def test_fleet_from_the_marker(softap_fleet):
        assert len(softap_fleet) == 4
        assert len({d.device.dct.identity.device_id_hex for d in softap_fleet}) == 4
        assert len({d.tcp_address for d in softap_fleet}) == 4
        client = SoftapClient(softap_fleet[0])
        for device in softap_fleet:
            reply = await client.for_device(device).tcp("device-id")
            assert reply["id"] == device.device.dct.identity.device_id_hex


    class TestFleetSizeFixture:
        @pytest.fixture
        def softap_fleet_size(self):
            return 2

        @pytest.mark.asyncio
        async def test_fleet_size_fixture(self, softap_fleet):
            assert len(softap_fleet) == 2


    class TestConfigOverride:
        @pytest.fixture
        def softap_config(self):
            return SimConfig(seed=5, ssid_prefix="Acme")

        @pytest.mark.asyncio
        async def test_override(self, softap_device):
            assert softap_device.ssid.startswith("Acme-")


    @pytest.mark.asyncio
    async def test_cloud_claim(make_softap_device, softap_cloud):
        device = await make_softap_device(cloud=softap_cloud)
        customer = await softap_cloud.customer("owner@example.com")
        assert isinstance(customer, CloudCustomer)
        token, customer_id, email, product_id, _refresh = customer
        assert (email, product_id) == ("owner@example.com", softap_cloud.product.id)
        code = await softap_cloud.claim_code(customer)
        assert len(code) == 63
        await SoftapClient(device).provision(
            "HomeNetwork", "correct horse battery staple", claim_code=code, transport="http"
        )
        await device.wait_for_state(DeviceState.ONLINE)
        owner = await softap_cloud.wait_claimed(device)
        assert owner["customer_id"] == customer_id
        assert softap_cloud.url.startswith("http://127.0.0.1:")


    @pytest.mark.asyncio
    async def test_cloud_helpers(softap_cloud):
        product = await softap_cloud.create_product("Widgets")
        assert product.slug == "widgets" and product.client_id
        client = await softap_cloud.create_client("simple-auth-mobile", product=product)
        assert client.product_id == product.id and client.secret
        customer = await softap_cloud.customer("a@example.com", password="pw-1", product=product)
        assert customer.product_id == product.id
        assert len(await softap_cloud.claim_code(customer.token)) == 63


    def test_sync_device_and_client(softap_device_sync, softap_client_sync):
        assert isinstance(softap_device_sync, ThreadedEmulator)
        assert softap_client_sync.tcp("device-id") == softap_client_sync.http("device-id")
        softap_device_sync.control.add_fault({"kind": "close-without-reply", "command": "version"})
        assert softap_client_sync.tcp_raw("version") == b""
        softap_client_sync.provision("HomeNetwork", "correct horse battery staple")
        softap_device_sync.wait_for_state(DeviceState.ONLINE)


    @pytest.mark.softap(firmware="0.4.0")
    def test_sync_factory(make_softap_device_sync):
        first = make_softap_device_sync()
        second = make_softap_device_sync(ssid_prefix="Other")
        assert first.device.era is FirmwareEra.V0_4_0
        assert second.ssid.startswith("Other-")
        assert first.device.dct.identity != second.device.dct.identity
"""


def test_a_sample_suite_using_every_fixture_passes(pytester: pytest.Pytester) -> None:
    suite(pytester, SAMPLE)
    result = run(pytester)
    result.assert_outcomes(passed=13)


def test_the_marker_is_declared_for_strict_markers(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    result = run(pytester, "--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.softap(scenario=None, firmware=None, *"])
    assert result.ret == 0


def test_fixed_ports_from_the_environment_go_to_the_first_device(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("SOFTAP_SIM_HOST", "127.0.0.1")
    monkeypatch.setenv("SOFTAP_SIM_TCP_PORT", str(port))
    suite(
        pytester,
        f"""
        import pytest

        @pytest.mark.asyncio
        async def test_ports(make_softap_device, softap_listen_address):
            assert softap_listen_address.tcp_port == {port}
            first = await make_softap_device()
            second = await make_softap_device()
            assert first.tcp_address == ("127.0.0.1", {port})
            assert second.tcp_address[1] not in (0, {port})
        """,
    )
    run(pytester).assert_outcomes(passed=1)


# ---------------------------------------------------------------------------------------
# clear failures
# ---------------------------------------------------------------------------------------
def test_a_leaked_device_fails_the_test_that_leaked_it(pytester: pytest.Pytester) -> None:
    suite(
        pytester,
        """
        import pytest

        from softap_sim import DeviceEmulator
        from softap_sim.threaded import ThreadedEmulator

        @pytest.mark.asyncio
        async def test_leaks(softap_config):
            emu = DeviceEmulator(softap_config)
            await emu.start()

        def test_leaks_a_thread(softap_config):
            ThreadedEmulator(softap_config).start()

        @pytest.mark.asyncio
        async def test_fails_and_leaks(softap_config):
            await DeviceEmulator(softap_config).start()
            assert 1 == 2

        @pytest.mark.asyncio
        async def test_closes_what_it_starts(softap_config, softap_device):
            async with DeviceEmulator(softap_config, tcp_port=0) as emu:
                assert emu.tcp_address

        @pytest.mark.asyncio
        async def test_without_softap_fixtures_leaks():
            await DeviceEmulator().start()

        def test_after_them():
            pass
        """,
    )
    result = run(pytester)
    result.assert_outcomes(passed=3, failed=3)
    result.stdout.fnmatch_lines(
        [
            "*_ test_leaks _*",
            "softap-sim: this test left 1 DeviceEmulator(s) running (started in the test, "
            "never closed):",
            "  - Photon-* (device id *), TCP 127.0.0.1:*, HTTP 127.0.0.1:*, "
            "started at test_sample.py:9 (the plugin closed it)",
            "Close what you start: `async with DeviceEmulator(...) as emu:`*",
            "*_ test_leaks_a_thread _*",
            "*(a ThreadedEmulator: the plugin stopped it)",
            "*_ test_fails_and_leaks _*",
            "E       assert 1 == 2",
            "*softap-sim: this test left 1 DeviceEmulator(s) running*",
        ]
    )
    assert "test_closes_what_it_starts FAILED" not in result.stdout.str()
    # with --softap-leak-check every test is checked, even one without softap fixtures
    result = run(pytester, "--softap-leak-check", "-k", "without_softap_fixtures")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*started at test_sample.py:26 (the plugin closed it)"])


def test_an_emulator_error_fails_the_test_that_caused_it(pytester: pytest.Pytester) -> None:
    suite(
        pytester,
        """
        import contextlib

        import pytest

        @pytest.mark.asyncio
        async def test_causes_it(softap_device, softap_client, monkeypatch):
            def explode(name, body=b""):
                raise RuntimeError("model exploded")

            monkeypatch.setattr(softap_device.device, "execute", explode)
            with contextlib.suppress(OSError):  # the emulator drops the connection
                await softap_client.tcp("device-id")

        @pytest.mark.asyncio
        async def test_next_one_is_fine(softap_device, softap_client):
            assert (await softap_client.tcp("device-id"))["c"] == "0"

        def test_sync_causes_it(softap_device_sync, softap_client_sync, monkeypatch):
            def explode(name, body=b""):
                raise RuntimeError("sync model exploded")

            monkeypatch.setattr(softap_device_sync.device, "execute", explode)
            with contextlib.suppress(OSError):
                softap_client_sync.http_raw("device-id")

        def test_sync_next_one_is_fine(softap_client_sync):
            assert softap_client_sync.tcp("device-id")["c"] == "0"
        """,
    )
    result = run(pytester)
    result.assert_outcomes(passed=4, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*_ ERROR at teardown of test_causes_it _*",
            '*raise RuntimeError("model exploded")',
            "E       RuntimeError: model exploded",
            "The above exception was the direct cause of the following exception:",
            "E   *SoftapEmulatorError: softap-sim: device Photon-* failed inside the emulator "
            "during this test: RuntimeError('model exploded'). *(emu.check())*",
            "*_ ERROR at teardown of test_sync_causes_it _*",
            "E   *SoftapEmulatorError: softap-sim: device Photon-* failed inside the emulator "
            "during this test: RuntimeError('sync model exploded')*",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "ERROR test_sample.py::test_causes_it - softap_sim.pytest_plugin.SoftapEm*",
            "ERROR test_sample.py::test_sync_causes_it - softap_sim.pytest_plugin.SoftapEm*",
        ]
    )


def test_a_bad_marker_argument_fails_clearly(pytester: pytest.Pytester) -> None:
    suite(
        pytester,
        """
        import pytest

        @pytest.mark.asyncio
        @pytest.mark.softap(scenaro="scan-empty")
        async def test_typo(softap_device):
            pass

        @pytest.mark.softap("scan-empty")
        def test_positional(softap_device_sync):
            pass

        @pytest.mark.softap(scenario="no-such-scenario")
        def test_unknown_scenario():
            pass

        @pytest.mark.softap(faults=[{"kind": "nope"}])
        def test_bad_fault():
            pass

        @pytest.mark.softap(firmware="5.0.0")
        def test_bad_firmware():
            pass

        @pytest.mark.softap(count=0)
        def test_bad_count():
            pass

        @pytest.mark.softap(app_ram="lots")
        def test_bad_size():
            pass

        @pytest.mark.softap(app_ram="52k", count=2)
        def test_good_one(make_softap_device_sync):
            assert make_softap_device_sync().emulator.config.app_ram_bytes == 52 * 1024
        """,
    )
    result = run(pytester)
    result.assert_outcomes(passed=1, errors=7)
    result.stdout.fnmatch_lines(
        [
            "*_ ERROR at setup of test_typo _*",
            "@pytest.mark.softap got an unknown argument 'scenaro' (did you mean 'scenario'?); "
            "allowed: scenario, firmware, faults, app_ram, seed, count",
            "*_ ERROR at setup of test_positional _*",
            "@pytest.mark.softap takes keyword arguments only (*); got positional 'scan-empty'",
            "*_ ERROR at setup of test_unknown_scenario _*",
            "@pytest.mark.softap(scenario='no-such-scenario'): unknown scenario*",
            "*_ ERROR at setup of test_bad_fault _*",
            "@pytest.mark.softap(faults=...): fault #1: 'kind' must be one of *",
            "*_ ERROR at setup of test_bad_firmware _*",
            "@pytest.mark.softap(firmware='5.0.0'): device-os 5.0.0 has no SoftAP*",
            "*_ ERROR at setup of test_bad_count _*",
            "@pytest.mark.softap(count=...) must be an integer >= 1, got 0",
            "*_ ERROR at setup of test_bad_size _*",
            "@pytest.mark.softap(app_ram=...) must be a size in bytes *, got 'lots'",
        ]
    )
    # one line each, no traceback; the short test summary may repeat the message, or
    # truncate it, depending on the terminal width of the run
    text = result.stdout.str()
    assert text.count("did you mean 'scenario'") in (1, 2)
    assert "Traceback" not in text


def test_async_fixtures_explain_what_is_missing(pytester: pytest.Pytester) -> None:
    suite(
        pytester,
        """
        import pytest

        async def test_not_marked(softap_device):
            pass

        def test_sync_test_with_an_async_fixture(softap_device):
            pass

        def test_sync_fixtures_do_not_need_it(softap_client_sync):
            assert softap_client_sync.tcp("device-id")["c"] == "0"
        """,
    )
    result = run(pytester)
    result.assert_outcomes(passed=1, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*_ ERROR at setup of test_not_marked _*",
            "test_not_marked uses softap-sim's async fixtures but is not run by pytest-asyncio*",
            "*_ ERROR at setup of test_sync_test_with_an_async_fixture _*",
            "*mark it `@pytest.mark.asyncio` (strict mode), or use softap_device_sync*",
        ]
    )
    # pytest-asyncio switched off: the async fixtures say so, the sync ones still work
    pytester.makeini("[pytest]\naddopts = -p no:cacheprovider\n")
    result = run(pytester, "-p", "no:asyncio")
    result.assert_outcomes(passed=1, errors=2)
    result.stdout.fnmatch_lines(
        [
            "softap-sim's async fixtures (*) need the pytest-asyncio plugin, which is disabled "
            "in this run. Install it with `pip install 'softap-sim[[]test]'`*",
        ]
    )


# ---------------------------------------------------------------------------------------
# ThreadedEmulator (directly)
# ---------------------------------------------------------------------------------------
def test_threaded_emulator_serves_from_its_own_thread(spec_config: SimConfig) -> None:
    threads = threading.active_count()
    with ThreadedEmulator(spec_config) as emu:
        assert emu in running_emulators()
        client = SoftapSyncClient(emu)
        assert client.tcp("device-id") == {"id": "320020001847333531323135", "c": "0"}
        assert client.http("version") == {"v": 2}
        snapshot = emu.control.snapshot()  # marshalled onto the loop thread
        assert snapshot["state"] == "listening"
        assert emu.call(emu.emulator.fire, SetupButton(11.0)) is None  # 10 s: clear networks
        emu.settle()
        emu.check()
        assert emu.url_for("version").startswith(emu.http_url)
    assert not emu.running
    assert emu not in running_emulators()
    assert threading.active_count() == threads
    emu.stop()  # idempotent


def test_threaded_emulator_reraises_a_startup_error(spec_config: SimConfig) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        emu = ThreadedEmulator(spec_config, tcp_port=port)
        with pytest.raises(OSError) as info:
            emu.start()
    assert info.value.errno is not None
    assert not emu.running
    assert emu not in running_emulators()


def test_threaded_emulator_ready_timeout(spec_config: SimConfig) -> None:
    import asyncio

    async def slow(_emu: object) -> None:
        await asyncio.sleep(60)  # cancelled when start() gives up

    emu = ThreadedEmulator(spec_config, before_power_on=slow, ready_timeout=0.2)
    with pytest.raises(TimeoutError, match=r"did not start within 0\.2 s"):
        emu.start()
    assert not emu.running
    assert emu not in running_emulators()


def test_threaded_emulator_errors_and_misuse(
    spec_config: SimConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu = ThreadedEmulator(spec_config)
    with pytest.raises(LifecycleError, match="not running"):
        emu.settle()
    with emu:

        def explode(name: str, body: bytes | None = b"") -> None:
            raise RuntimeError("inside")

        monkeypatch.setattr(emu.device, "execute", explode)
        with contextlib.suppress(OSError):  # the emulator drops the connection
            assert SoftapSyncClient(emu).http_raw("device-id") == b""
        with pytest.raises(SimulatorError, match="RuntimeError"):
            emu.check()


def test_ready_timeout_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOFTAP_SIM_READY_TIMEOUT", raising=False)
    assert ready_timeout_from_env() == 10.0
    monkeypatch.setenv("SOFTAP_SIM_READY_TIMEOUT", "2.5")
    assert ready_timeout_from_env() == 2.5
    assert ThreadedEmulator().ready_timeout == 2.5
    for bad in ("soon", "0", "-1"):
        monkeypatch.setenv("SOFTAP_SIM_READY_TIMEOUT", bad)
        with pytest.raises(ConfigError, match="SOFTAP_SIM_READY_TIMEOUT"):
            ready_timeout_from_env()


# ---------------------------------------------------------------------------------------
# the client codec
# ---------------------------------------------------------------------------------------
def test_client_codec_round_trips() -> None:
    assert encode_tcp_request("set", {"k": "cc", "v": "x"}) == b'set\n18\n\n{"k":"cc","v":"x"}'
    assert encode_tcp_request("version") == b"version\n0\n\n"
    assert decode_tcp_reply(b"") is None
    assert decode_tcp_reply(b"\n\n") is None
    assert decode_tcp_reply(b'\n\n{"r":0}') == {"r": 0}
    with pytest.raises(SoftapClientError):
        decode_tcp_reply(b"garbage")
    get = encode_http_request(("127.0.0.1", 80), "version")
    assert get == b"GET /version HTTP/1.1\r\nHost: 127.0.0.1:80\r\n\r\n"
    post = encode_http_request(("h", 1), "set", b"{}")
    assert post.startswith(b"POST /set HTTP/1.1\r\n")
    assert post.endswith(b"\r\n\r\n{}")
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    full = head + b"1\r\n{\r\n1\r\n}\r\n0\r\n\r\n"
    for cut in range(len(full)):
        assert http_response_end(full[:cut]) is None
    assert http_response_end(full + b"extra") == len(full)
    assert decode_http_reply(full, "x") == {}
    plain = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
    assert http_response_end(plain) == len(plain)
    with pytest.raises(SoftapClientError, match="404 Not Found"):
        decode_http_reply(plain, "x")
    with pytest.raises(SoftapClientError, match="without a reply"):
        decode_http_reply(b"", "x")
