"""pytest plugin: emulated devices and the local cloud as fixtures.

Registered through ``[project.entry-points.pytest11] softap_sim = "softap_sim.pytest_plugin"``,
so it is imported by *every* pytest run in an environment where softap-sim is installed.
It therefore imports only the standard library, pytest and the small helpers of
:mod:`softap_sim.testing` at module level; the emulator, the cloud and ``cryptography`` are
imported inside the fixtures that need them. This module holds the hooks, the fixtures and
the factories behind them; the types a test annotates with (clients, the cloud helper, the
factory types) are in :mod:`softap_sim.testing`.

Fixtures (layered like pytest-httpserver's, async ones on pytest-asyncio like
pytest-aiohttp's; every name carries the ``softap`` stem):

``softap_config``
    The :class:`~softap_sim.config.SimConfig` every device starts from: in memory, fixed
    ``seed`` (the same device id on every run). Override it in a ``conftest.py``.
``softap_listen_address``
    Host and ports the devices bind: ``$SOFTAP_SIM_HOST`` (default 127.0.0.1),
    ``$SOFTAP_SIM_TCP_PORT`` / ``$SOFTAP_SIM_HTTP_PORT`` (default 0 = a free port; fixed
    ports apply to the first device of a test, later ones get free ports).
``make_softap_device``
    Async factory (:class:`~softap_sim.testing.SoftapDeviceFactory`):
    ``await make_softap_device(**overrides)`` returns a started
    :class:`~softap_sim.emulator.DeviceEmulator`. At teardown it closes what it made in
    reverse order and calls ``check()`` on each, so an error raised inside the emulator
    fails the test that caused it.
``softap_device`` / ``softap_fleet``
    One device; N devices with distinct identities (``@pytest.mark.softap(count=N)`` or
    the ``softap_fleet_size`` fixture, default 3).
``softap_client``
    :class:`~softap_sim.testing.SoftapClient` bound to ``softap_device``:
    ``await softap_client.tcp("device-id")``, ``.http(...)``, raw variants, and
    ``provision(ssid, password, claim_code=...)``.
``softap_cloud``
    :class:`~softap_sim.testing.SoftapCloud`: the local cloud in memory (REST API + device
    endpoint), with one-call helpers for products, clients, customers and claim codes.
    Devices made with ``make_softap_device(cloud=softap_cloud)`` are registered and can claim.
``softap_device_sync`` / ``make_softap_device_sync`` / ``softap_client_sync``
    The same for plain ``def`` tests, on :class:`~softap_sim.threaded.ThreadedEmulator`.

Per-test settings: ``@pytest.mark.softap(scenario=..., firmware=..., faults=[...],
app_ram=..., seed=..., count=...)``, read with ``get_closest_marker`` and validated before
the test's fixtures are set up (an unknown argument fails the test and names it). The
marker is declared in ``pytest_configure``, so ``--strict-markers`` works.

Leak check (:mod:`softap_sim.testing.leaks`): a test that uses a softap fixture or the
marker (every test with ``--softap-leak-check`` or ``softap_leak_check = true``) must close
every emulator it starts in its body; one still running when the test returns that no
fixture owns is closed by the plugin and fails the test.

Async fixtures need pytest-asyncio (the ``test`` extra); they never force an
``asyncio_mode`` and work in strict mode (mark tests with ``@pytest.mark.asyncio``).
Without pytest-asyncio the async fixtures fail with a message saying so; the sync ones
keep working.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import pytest

from softap_sim.errors import SimulatorError
from softap_sim.testing.factories import ConfigBuilder, ListenAddress
from softap_sim.testing.leaks import StartRecorder, leak_message, owned
from softap_sim.testing.marker import (
    MARKER_DOC,
    MarkerError,
    SoftapSettings,
    is_int,
    parse_marker,
)

if TYPE_CHECKING:
    from firmware_model import Clock
    from softap_sim.config import SimConfig
    from softap_sim.emulator import DeviceEmulator
    from softap_sim.testing.clients import SoftapClient, SoftapSyncClient
    from softap_sim.testing.cloud import SoftapCloud
    from softap_sim.testing.factories import SoftapDeviceFactory, SoftapSyncDeviceFactory
    from softap_sim.threaded import ThreadedEmulator

    async_fixture = pytest.fixture
else:
    try:  # imported anyway when installed: pytest loads it through its own entry point
        from pytest_asyncio import fixture as async_fixture
    except ImportError:  # the async fixtures then fail with a friendly message
        async_fixture = pytest.fixture

#: the device id of ``softap_config``'s seed is the same on every run
DEFAULT_SEED = 20240611
DEFAULT_FLEET_SIZE = 3
#: the fixtures whose tests get the leak check
FIXTURE_NAMES = frozenset(
    {
        "softap_config",
        "softap_listen_address",
        "make_softap_device",
        "softap_device",
        "softap_fleet",
        "softap_fleet_size",
        "softap_client",
        "softap_cloud",
        "make_softap_device_sync",
        "softap_device_sync",
        "softap_client_sync",
    }
)
_ASYNC_MISSING = (
    "softap-sim's async fixtures (softap_device, make_softap_device, softap_fleet, "
    "softap_client, softap_cloud) need the pytest-asyncio plugin, which is {why}. Install "
    "it with `pip install 'softap-sim[test]'` (or `pip install pytest-asyncio`) and do not "
    "disable it; plain `def` tests can use softap_device_sync / make_softap_device_sync."
)
_NOT_ASYNC_TEST = (
    "{test} uses softap-sim's async fixtures but is not run by pytest-asyncio, so the "
    "emulator's event loop would not run during the test: make it `async def` and mark it "
    "`@pytest.mark.asyncio` (strict mode), or use softap_device_sync / "
    "make_softap_device_sync in a plain `def` test."
)


class SoftapEmulatorError(SimulatorError):
    """An error raised inside an emulator during a test, re-raised at fixture teardown."""


# =======================================================================================
# the marker
# =======================================================================================
_SETTINGS = pytest.StashKey[SoftapSettings]()


def settings_for(node: pytest.Item) -> SoftapSettings:
    """The test's marker settings (validated once, in ``pytest_runtest_setup``)."""
    __tracebackhide__ = True
    settings = node.stash.get(_SETTINGS, None)
    if settings is None:
        mark = node.get_closest_marker("softap")
        try:
            settings = parse_marker(mark) if mark is not None else SoftapSettings()
        except MarkerError as err:
            problem = str(err)
        else:
            node.stash[_SETTINGS] = settings
            return settings
        pytest.fail(problem, pytrace=False)  # outside the except: no chained duplicate
    return settings


# =======================================================================================
# hooks
# =======================================================================================
def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("softap-sim")
    group.addoption(
        "--softap-leak-check",
        action="store_true",
        default=False,
        help="softap-sim: fail every test that leaves a DeviceEmulator running, "
        "not only the tests that use a softap fixture",
    )
    parser.addini(
        "softap_leak_check",
        type="bool",
        default=False,
        help="softap-sim: like --softap-leak-check",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_DOC)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Validate the marker before any fixture runs: a bad argument fails this test only."""
    if item.get_closest_marker("softap") is not None:
        settings_for(item)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    if not _leak_check_wanted(item):
        return (yield)
    recorder = StartRecorder(item)
    recorder.install()
    try:
        result = yield
    except BaseException as exc:
        leaks = recorder.finish()
        if leaks and isinstance(exc, Exception):
            exc.add_note(leak_message(leaks))
        raise
    leaks = recorder.finish()
    if leaks:
        pytest.fail(leak_message(leaks), pytrace=False)
    return result


def _leak_check_wanted(item: pytest.Item) -> bool:
    config = item.config
    if config.getoption("softap_leak_check") or config.getini("softap_leak_check"):
        return True
    if item.get_closest_marker("softap") is not None:
        return True
    return any(name in FIXTURE_NAMES for name in getattr(item, "fixturenames", ()))


# =======================================================================================
# device factories
# =======================================================================================
def _teardown_error(what: str, err: BaseException) -> SoftapEmulatorError:
    cause = err.__cause__ if isinstance(err, SimulatorError) and err.__cause__ else err
    error = SoftapEmulatorError(
        f"softap-sim: {what} failed inside the emulator during this test: {cause!r}. "
        "The emulator recorded the error in its server task (the client may only have seen "
        "a dropped connection or an HTTP 500); the fixture re-raises it at teardown "
        "(emu.check()) so that the test that caused it fails."
    )
    error.__cause__ = cause
    return error


def _device_name(emu: DeviceEmulator | ThreadedEmulator) -> str:
    try:
        return f"device {emu.ssid}"
    except SimulatorError:
        return "a device that never started"


def _check_closed(
    closed: Sequence[tuple[DeviceEmulator | ThreadedEmulator, str, Exception | None]],
) -> None:
    """The teardown of both factories, once their devices are closed (newest first).

    ``closed``: each device, its name (taken before closing) and what closing it raised.
    Every device is ``check()``-ed; one error is raised as it is, several as a group.
    """
    __tracebackhide__ = True
    errors: list[SoftapEmulatorError] = []
    for emu, name, close_error in closed:
        if close_error is not None:
            errors.append(_teardown_error(f"{name} (while closing)", close_error))
        try:
            emu.check()
        except SimulatorError as err:
            errors.append(_teardown_error(name, err))
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ExceptionGroup(f"softap-sim: {len(errors)} emulator errors in this test", errors)


_Emu = TypeVar("_Emu", "DeviceEmulator", "ThreadedEmulator")


class _Factory(Generic[_Emu]):
    """What both factories share: the test, its config builder, the devices made (in order)."""

    def __init__(self, node: pytest.Item, builder: ConfigBuilder) -> None:
        self._node = node
        self._builder = builder
        self._made: list[_Emu] = []

    def _newest_first(self) -> list[tuple[_Emu, str]]:
        """Take the devices made, newest first, with the names they had."""
        made, self._made = self._made[::-1], []
        return [(emu, _device_name(emu)) for emu in made]


class _AsyncDeviceFactory(_Factory["DeviceEmulator"]):
    async def __call__(
        self,
        config: SimConfig | None = None,
        *,
        scenario: str | None = None,
        cloud: SoftapCloud | None = None,
        clock: Clock | None = None,
        tcp_port: int | None = None,
        http_port: int | None = None,
        **overrides: Any,
    ) -> DeviceEmulator:
        from softap_sim.emulator import DeviceEmulator

        cfg, tcp, http = self._builder.next_device(config, scenario, overrides, tcp_port, http_port)
        before: Callable[[DeviceEmulator], Awaitable[None]] | None = None
        if cloud is not None:
            cfg = cloud.device_config(cfg)
            before = cloud.register_device
        emu = DeviceEmulator(
            cfg,
            host=self._builder.address.host,
            tcp_port=tcp,
            http_port=http,
            clock=clock,
            before_power_on=before,
        )
        owned(self._node).add(emu)
        self._made.append(emu)  # before start(): a half-started device is closed too
        if cloud is not None:
            cloud.adopt(emu)
        await emu.start()
        return emu

    async def aclose(self) -> None:
        """Close every device in reverse order, then re-raise what went wrong inside."""
        __tracebackhide__ = True
        closed: list[tuple[DeviceEmulator | ThreadedEmulator, str, Exception | None]] = []
        for emu, name in self._newest_first():
            try:
                await emu.close()
            except Exception as err:
                closed.append((emu, name, err))
            else:
                closed.append((emu, name, None))
        _check_closed(closed)


class _SyncDeviceFactory(_Factory["ThreadedEmulator"]):
    def __call__(
        self,
        config: SimConfig | None = None,
        *,
        scenario: str | None = None,
        clock: Clock | None = None,
        tcp_port: int | None = None,
        http_port: int | None = None,
        **overrides: Any,
    ) -> ThreadedEmulator:
        from softap_sim.threaded import ThreadedEmulator

        cfg, tcp, http = self._builder.next_device(config, scenario, overrides, tcp_port, http_port)
        host = self._builder.address.host
        emu = ThreadedEmulator(cfg, host=host, tcp_port=tcp, http_port=http, clock=clock)
        owned(self._node).add(emu.emulator)
        self._made.append(emu)
        emu.start()
        return emu

    def close(self) -> None:
        """Stop every device in reverse order (a stop keeps its errors for ``check()``)."""
        __tracebackhide__ = True
        made = self._newest_first()
        for emu, _name in made:
            emu.stop()
        _check_closed([(emu, name, None) for emu, name in made])


# =======================================================================================
# fixtures
# =======================================================================================
@pytest.fixture
def softap_listen_address() -> ListenAddress:
    """Where devices listen: ``$SOFTAP_SIM_HOST`` / ``$SOFTAP_SIM_TCP_PORT`` /
    ``$SOFTAP_SIM_HTTP_PORT`` (defaults 127.0.0.1 and 0). Replaces ``host=``/``*_port=``
    arguments in every test (pytest-httpserver's ``httpserver_listen_address``)."""
    return ListenAddress.from_env()


@pytest.fixture
def softap_config() -> SimConfig:
    """The settings every device of a test starts from; redefine it to change them all.

    Default: an in-memory device (no state directory) with a fixed ``seed``, so the
    device id is the same on every run; the marker and factory arguments go on top.
    """
    from softap_sim.config import SimConfig

    return SimConfig(seed=DEFAULT_SEED)


@pytest.fixture
def softap_fleet_size() -> int:
    """How many devices ``softap_fleet`` makes unless the marker says ``count=``."""
    return DEFAULT_FLEET_SIZE


@pytest.fixture
def _softap_asyncio(request: pytest.FixtureRequest) -> None:
    """Fail with a clear message where the async fixtures cannot work."""
    pm = request.config.pluginmanager
    try:
        from pytest_asyncio import is_async_test
    except ImportError:
        pytest.fail(_ASYNC_MISSING.format(why="not installed"), pytrace=False)
    if not (pm.has_plugin("asyncio") or pm.has_plugin("pytest_asyncio.plugin")):
        pytest.fail(_ASYNC_MISSING.format(why="disabled in this run"), pytrace=False)
    if not is_async_test(request.node):
        pytest.fail(_NOT_ASYNC_TEST.format(test=request.node.name), pytrace=False)


@async_fixture
async def make_softap_device(
    request: pytest.FixtureRequest,
    softap_config: SimConfig,
    softap_listen_address: ListenAddress,
    _softap_asyncio: None,
) -> AsyncIterator[SoftapDeviceFactory]:
    """Start devices on demand; all are closed (LIFO) and ``check()``-ed at teardown.

    Replaces ``async with DeviceEmulator(...)`` blocks and their ``check()`` calls.
    """
    __tracebackhide__ = True
    builder = ConfigBuilder(settings_for(request.node), softap_config, softap_listen_address)
    factory = _AsyncDeviceFactory(request.node, builder)
    try:
        yield factory
    finally:
        await factory.aclose()


@async_fixture
async def softap_device(make_softap_device: SoftapDeviceFactory) -> DeviceEmulator:
    """One started device in listening mode, honouring ``@pytest.mark.softap``."""
    return await make_softap_device()


@async_fixture
async def softap_fleet(
    request: pytest.FixtureRequest,
    make_softap_device: SoftapDeviceFactory,
    softap_fleet_size: int,
) -> list[DeviceEmulator]:
    """``count`` devices (marker) or ``softap_fleet_size``, each with its own identity."""
    count = settings_for(request.node).count or softap_fleet_size
    if not is_int(count) or count < 1:
        pytest.fail(f"softap_fleet_size must be an integer >= 1, got {count!r}", pytrace=False)
    return [await make_softap_device() for _ in range(count)]


@pytest.fixture
def softap_client(softap_device: DeviceEmulator) -> SoftapClient:
    """An async client of ``softap_device`` over TCP and HTTP (``.for_device(other)``)."""
    from softap_sim.testing.clients import SoftapClient

    return SoftapClient(softap_device)


@async_fixture
async def softap_cloud(_softap_asyncio: None) -> AsyncIterator[SoftapCloud]:
    """The local cloud in memory: REST API and device endpoint on free loopback ports."""
    from softap_sim.cloud.service import CloudService
    from softap_sim.testing.cloud import SoftapCloud

    service = CloudService(None)
    try:
        await service.open()
        await service.serve("127.0.0.1", 0)
        await service.serve_devices("127.0.0.1", 0)
        cloud = SoftapCloud(service)
    except BaseException:
        await service.close()
        raise
    try:
        yield cloud
    finally:
        await cloud.aclose()


@pytest.fixture
def make_softap_device_sync(
    request: pytest.FixtureRequest,
    softap_config: SimConfig,
    softap_listen_address: ListenAddress,
) -> Iterator[SoftapSyncDeviceFactory]:
    """``make_softap_device`` for plain ``def`` tests: returns started ThreadedEmulators."""
    __tracebackhide__ = True
    builder = ConfigBuilder(settings_for(request.node), softap_config, softap_listen_address)
    factory = _SyncDeviceFactory(request.node, builder)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def softap_device_sync(make_softap_device_sync: SoftapSyncDeviceFactory) -> ThreadedEmulator:
    """One started device on a background thread, for plain ``def`` tests."""
    return make_softap_device_sync()


@pytest.fixture
def softap_client_sync(softap_device_sync: ThreadedEmulator) -> SoftapSyncClient:
    """A blocking client of ``softap_device_sync`` over TCP and HTTP."""
    from softap_sim.testing.clients import SoftapSyncClient

    return SoftapSyncClient(softap_device_sync)
