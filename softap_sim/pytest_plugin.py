"""pytest plugin: emulated devices and the local cloud as fixtures.

Registered through ``[project.entry-points.pytest11] softap_sim = "softap_sim.pytest_plugin"``,
so it is imported by *every* pytest run in an environment where softap-sim is installed.
It therefore imports only the standard library and pytest at module level; the emulator,
the cloud and ``cryptography`` are imported inside the fixtures that need them.

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
    Async factory (:class:`SoftapDeviceFactory`): ``await make_softap_device(**overrides)``
    returns a started :class:`~softap_sim.emulator.DeviceEmulator`. At teardown it closes
    what it made in reverse order and calls ``check()`` on each, so an error raised inside
    the emulator fails the test that caused it.
``softap_device`` / ``softap_fleet``
    One device; N devices with distinct identities (``@pytest.mark.softap(count=N)`` or
    the ``softap_fleet_size`` fixture, default 3).
``softap_client``
    :class:`SoftapClient` bound to ``softap_device``: ``await softap_client.tcp("device-id")``,
    ``.http(...)``, raw variants, and ``provision(ssid, password, claim_code=...)``.
``softap_cloud``
    :class:`SoftapCloud`: the local cloud in memory (REST API + device endpoint), with
    one-call helpers for products, clients, customers and claim codes. Devices made with
    ``make_softap_device(cloud=softap_cloud)`` are registered and can claim.
``softap_device_sync`` / ``make_softap_device_sync`` / ``softap_client_sync``
    The same for plain ``def`` tests, on :class:`~softap_sim.threaded.ThreadedEmulator`.

Per-test settings: ``@pytest.mark.softap(scenario=..., firmware=..., faults=[...],
app_ram=..., seed=..., count=...)``, read with ``get_closest_marker`` and validated before
the test's fixtures are set up (an unknown argument fails the test and names it). The
marker is declared in ``pytest_configure``, so ``--strict-markers`` works.

Leak check: a test that uses a softap fixture or the marker (every test with
``--softap-leak-check`` or ``softap_leak_check = true``) must close every emulator it
starts in its body. The plugin records each ``DeviceEmulator.start()`` during the test
call (it wraps the method for that time only, like ``monkeypatch``); one still running
when the test returns that no fixture owns is closed by the plugin and fails the test.

Async fixtures need pytest-asyncio (the ``test`` extra); they never force an
``asyncio_mode`` and work in strict mode (mark tests with ``@pytest.mark.asyncio``).
Without pytest-asyncio the async fixtures fail with a message saying so; the sync ones
keep working.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import pytest

from softap_sim.errors import SimulatorError

if TYPE_CHECKING:
    import asyncio
    from types import FrameType

    from firmware_model import Clock
    from firmware_model.eras import FirmwareEra
    from softap_sim.cloud.service import CloudService
    from softap_sim.config import SimConfig
    from softap_sim.emulator import DeviceEmulator
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
#: seconds a client waits for a device's reply
DEFAULT_CLIENT_TIMEOUT_S = 5.0
MARKER_ARGS = ("scenario", "firmware", "faults", "app_ram", "seed", "count")
MARKER_DOC = (
    "softap(scenario=None, firmware=None, faults=(), app_ram=None, seed=None, count=None): "
    "per-test settings of the softap-sim devices (a shipped scenario name or a TOML file, a "
    "device-os version, fault tables, the application's RAM in bytes or '52k', the identity "
    "seed, softap_fleet's size)"
)
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

Body = str | bytes | Mapping[str, Any] | None


class SoftapEmulatorError(SimulatorError):
    """An error raised inside an emulator during a test, re-raised at fixture teardown."""


class SoftapClientError(SimulatorError):
    """The device's reply is not what the client helper expected (the message shows it)."""


class ListenAddress(NamedTuple):
    """Where devices listen (``softap_listen_address``); port 0 picks a free port."""

    host: str = "127.0.0.1"
    tcp_port: int = 0
    http_port: int = 0


# =======================================================================================
# marker
# =======================================================================================
@dataclasses.dataclass(frozen=True)
class SoftapSettings:
    """The validated arguments of ``@pytest.mark.softap``."""

    scenario: str | None = None
    firmware: FirmwareEra | None = None
    faults: tuple[Mapping[str, Any], ...] = ()
    app_ram: int | None = None
    seed: int | None = None
    count: int | None = None

    def apply(self, config: SimConfig) -> SimConfig:
        """``config`` with these settings (scenario first, then the others on top)."""
        if self.scenario is not None:
            from softap_sim.scenario import load_scenario

            config = load_scenario(self.scenario).apply(config)
        changes: dict[str, Any] = {}
        if self.firmware is not None:
            changes["firmware"] = self.firmware
        if self.faults:
            changes["faults"] = (*config.faults, *self.faults)
        if self.app_ram is not None:
            changes["app_ram_bytes"] = self.app_ram
        if self.seed is not None:
            changes["seed"] = self.seed
        return dataclasses.replace(config, **changes) if changes else config


class _MarkerError(SimulatorError):
    pass


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_marker(mark: pytest.Mark) -> SoftapSettings:
    """Validate ``@pytest.mark.softap(...)``; ``_MarkerError`` names the bad argument."""
    where = "@pytest.mark.softap"
    if mark.args:
        raise _MarkerError(
            f"{where} takes keyword arguments only ({', '.join(a + '=' for a in MARKER_ARGS)}); "
            f"got positional {mark.args[0]!r}"
        )
    unknown = [key for key in mark.kwargs if key not in MARKER_ARGS]
    if unknown:
        import difflib

        bad = unknown[0]
        close = difflib.get_close_matches(bad, MARKER_ARGS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise _MarkerError(
            f"{where} got an unknown argument {bad!r}{hint}; allowed: {', '.join(MARKER_ARGS)}"
        )
    kw = mark.kwargs
    out: dict[str, Any] = {}
    if kw.get("scenario") is not None:
        from softap_sim.errors import ConfigError
        from softap_sim.scenario import load_scenario

        scenario = os.fspath(kw["scenario"])
        try:
            load_scenario(scenario)
        except ConfigError as err:
            raise _MarkerError(f"{where}(scenario={scenario!r}): {err}") from None
        out["scenario"] = scenario
    if kw.get("firmware") is not None:
        from firmware_model.eras import FirmwareEra

        firmware = kw["firmware"]
        if isinstance(firmware, FirmwareEra):
            out["firmware"] = firmware
        elif isinstance(firmware, str):
            try:
                out["firmware"] = FirmwareEra.parse(firmware)
            except ValueError as err:
                raise _MarkerError(f"{where}(firmware={firmware!r}): {err}") from None
        else:
            raise _MarkerError(
                f'{where}(firmware=...) must be a version string such as "0.6.4", got {firmware!r}'
            )
    if kw.get("faults"):
        from firmware_model import Fault

        faults = kw["faults"]
        if isinstance(faults, Mapping) or not isinstance(faults, list | tuple):
            raise _MarkerError(
                f"{where}(faults=...) must be a list of fault tables, e.g. "
                f'[{{"kind": "no-reply", "command": "scan-ap"}}], got {faults!r}'
            )
        for i, spec in enumerate(faults):
            try:
                Fault.from_mapping(spec)
            except ValueError as err:
                raise _MarkerError(f"{where}(faults=...): fault #{i + 1}: {err}") from None
        out["faults"] = tuple(dict(f) for f in faults)
    if kw.get("app_ram") is not None:
        out["app_ram"] = _marker_size(kw["app_ram"], where)
    if kw.get("seed") is not None:
        if not _is_int(kw["seed"]):
            raise _MarkerError(f"{where}(seed=...) must be an integer, got {kw['seed']!r}")
        out["seed"] = kw["seed"]
    if kw.get("count") is not None:
        count = kw["count"]
        if not _is_int(count) or count < 1:
            raise _MarkerError(f"{where}(count=...) must be an integer >= 1, got {count!r}")
        out["count"] = count
    return SoftapSettings(**out)


def _marker_size(value: object, where: str) -> int:
    if _is_int(value):
        assert isinstance(value, int)
        if value >= 0:
            return value
    elif isinstance(value, str):
        import argparse

        from softap_sim.argtypes import parse_size

        try:
            return parse_size(value)
        except argparse.ArgumentTypeError:
            pass
    raise _MarkerError(
        f"{where}(app_ram=...) must be a size in bytes (53248) or a string such as '52k', "
        f"got {value!r}"
    )


_SETTINGS = pytest.StashKey[SoftapSettings]()


def settings_for(node: pytest.Item) -> SoftapSettings:
    """The test's marker settings (validated once, in ``pytest_runtest_setup``)."""
    __tracebackhide__ = True
    settings = node.stash.get(_SETTINGS, None)
    if settings is None:
        mark = node.get_closest_marker("softap")
        try:
            settings = parse_marker(mark) if mark is not None else SoftapSettings()
        except _MarkerError as err:
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
    recorder = _StartRecorder(item)
    recorder.install()
    try:
        result = yield
    except BaseException as exc:
        leaks = recorder.finish()
        if leaks and isinstance(exc, Exception):
            exc.add_note(_leak_message(leaks))
        raise
    leaks = recorder.finish()
    if leaks:
        pytest.fail(_leak_message(leaks), pytrace=False)
    return result


def _leak_check_wanted(item: pytest.Item) -> bool:
    config = item.config
    if config.getoption("softap_leak_check") or config.getini("softap_leak_check"):
        return True
    if item.get_closest_marker("softap") is not None:
        return True
    return any(name in FIXTURE_NAMES for name in getattr(item, "fixturenames", ()))


# =======================================================================================
# leak check
# =======================================================================================
_OWNED = pytest.StashKey["weakref.WeakSet[DeviceEmulator]"]()


def _owned(node: pytest.Item) -> weakref.WeakSet[DeviceEmulator]:
    owned = node.stash.get(_OWNED, None)
    if owned is None:
        owned = node.stash[_OWNED] = weakref.WeakSet()
    return owned


class _StartRecorder:
    """Records every ``DeviceEmulator.start()`` while the test body runs."""

    def __init__(self, item: pytest.Item) -> None:
        self.item = item
        self.started: list[tuple[DeviceEmulator, asyncio.AbstractEventLoop, str]] = []
        #: False once the test body returned: a wrapper that outlives the test (a user's
        #: own monkeypatch of ``start`` restored it) then records nothing
        self.active = True
        self._patch = pytest.MonkeyPatch()

    def install(self) -> None:
        import asyncio
        import functools

        from softap_sim.emulator import DeviceEmulator

        original = DeviceEmulator.start
        recorder = self
        rootpath = str(self.item.config.rootpath)

        @functools.wraps(original)
        async def start(emu: DeviceEmulator) -> None:
            if recorder.active:
                recorder.started.append((emu, asyncio.get_running_loop(), _caller(rootpath)))
            await original(emu)

        self._patch.setattr(DeviceEmulator, "start", start)

    def finish(self) -> list[str]:
        """Undo the wrapper; close what leaked and describe it (empty: no leak)."""
        self.active = False
        self._patch.undo()
        owned = self.item.stash.get(_OWNED, None)
        leaks: list[str] = []
        seen: set[int] = set()
        for emu, loop, where in self.started:
            if id(emu) in seen or (owned is not None and emu in owned) or not _running(emu):
                continue
            seen.add(id(emu))
            text = _describe(emu)
            if where:
                text += f", started at {where}"
            leaks.append(text + _close_leaked(emu, loop))
        self.started.clear()
        return leaks


def _caller(rootpath: str) -> str:
    """``file:line`` of the first frame outside softap-sim, asyncio and threading."""
    import asyncio
    import threading
    from pathlib import Path

    skip = (
        str(Path(__file__).resolve().parent),
        str(Path(asyncio.__file__).resolve().parent),
        str(Path(threading.__file__).resolve()),
    )
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        filename = str(Path(frame.f_code.co_filename).resolve())
        if not filename.startswith(skip):
            try:
                shown = os.path.relpath(filename, rootpath)
            except ValueError:
                shown = filename
            if shown.startswith(".."):
                shown = filename
            return f"{shown}:{frame.f_lineno}"
        frame = frame.f_back
    return ""


def _running(emu: DeviceEmulator) -> bool:
    # a started emulator always holds its TCP port (reserved or listening) until close()
    try:
        _ = emu.tcp_address
    except SimulatorError:
        return False
    return True


def _describe(emu: DeviceEmulator) -> str:
    try:
        text = f"{emu.ssid} (device id {emu.device.dct.identity.device_id_hex})"
    except SimulatorError:
        return "a device that never started"
    for name, prop in (("TCP", "tcp_address"), ("HTTP", "http_address")):
        try:
            host, port = getattr(emu, prop)
        except SimulatorError:
            continue
        text += f", {name} {host}:{port}"
    return text


def _close_leaked(emu: DeviceEmulator, loop: asyncio.AbstractEventLoop) -> str:
    import asyncio

    threaded = sys.modules.get("softap_sim.threaded")
    try:
        if threaded is not None:
            for owner in threaded.running_emulators():
                if owner.emulator is emu:
                    owner.stop()
                    return " (a ThreadedEmulator: the plugin stopped it)"
        if loop.is_closed():
            return " (its event loop is already closed: the plugin could not close it)"
        if loop.is_running():
            asyncio.run_coroutine_threadsafe(emu.close(), loop).result(10)
        else:
            loop.run_until_complete(emu.close())
    except Exception as err:
        return f" (closing it failed: {err!r})"
    return " (the plugin closed it)"


def _leak_message(leaks: list[str]) -> str:
    lines = [
        f"softap-sim: this test left {len(leaks)} DeviceEmulator(s) running "
        "(started in the test, never closed):",
        *(f"  - {leak}" for leak in leaks),
        "Close what you start: `async with DeviceEmulator(...) as emu:` (or "
        "`with ThreadedEmulator(...)`), `await emu.close()` in a `finally`, or let the "
        "make_softap_device fixture own the device.",
    ]
    return "\n".join(lines)


# =======================================================================================
# errors at teardown
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


def _raise_all(errors: list[SoftapEmulatorError]) -> None:
    __tracebackhide__ = True
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ExceptionGroup(f"softap-sim: {len(errors)} emulator errors in this test", errors)


def _device_name(emu: DeviceEmulator | ThreadedEmulator) -> str:
    try:
        return f"device {emu.ssid}"
    except SimulatorError:
        return "a device that never started"


# =======================================================================================
# device factories
# =======================================================================================
class SoftapDeviceFactory(Protocol):
    """``make_softap_device``: start a device; the fixture closes it at teardown.

    Args:
        config: the base settings (default: ``softap_config`` plus the marker's).
        scenario: a shipped scenario name or TOML file, applied on top.
        cloud: ``softap_cloud``: register the device and give it the cloud's endpoint
            and server key, so that it can connect and claim after ``connect-ap``.
        clock: e.g. a :class:`~firmware_model.ManualClock` (time moves with ``advance``).
        tcp_port, http_port: fixed ports (default: ``softap_listen_address``).
        **overrides: :class:`~softap_sim.config.SimConfig` fields, applied last.
    """

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
    ) -> DeviceEmulator: ...


class SoftapSyncDeviceFactory(Protocol):
    """``make_softap_device_sync``: the same for plain tests; returns ThreadedEmulators."""

    def __call__(
        self,
        config: SimConfig | None = None,
        *,
        scenario: str | None = None,
        clock: Clock | None = None,
        tcp_port: int | None = None,
        http_port: int | None = None,
        **overrides: Any,
    ) -> ThreadedEmulator: ...


class _Builder:
    """Turns factory arguments into a config and ports (shared by both factories)."""

    def __init__(self, node: pytest.Item, base: SimConfig, address: ListenAddress) -> None:
        self.node = node
        self.settings = settings_for(node)
        self.base = base
        self.address = address
        self.made = 0

    def config(
        self, config: SimConfig | None, scenario: str | None, overrides: Mapping[str, Any]
    ) -> SimConfig:
        from softap_sim.config import SimConfig

        index, self.made = self.made, self.made + 1
        fields = {f.name for f in dataclasses.fields(SimConfig)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise TypeError(
                f"make_softap_device() got an unknown setting {unknown[0]!r}; "
                f"SimConfig fields: {', '.join(sorted(fields))}"
            )
        cfg = self.settings.apply(config if config is not None else self.base)
        if scenario is not None:
            from softap_sim.scenario import load_scenario

            cfg = load_scenario(scenario).apply(cfg)
        if index > 0 and config is None and not {"seed", "identity"} & set(overrides):
            # every further device of the test gets its own identity, still reproducible
            cfg = dataclasses.replace(
                cfg, seed=None if cfg.seed is None else cfg.seed + index, identity=None
            )
        return dataclasses.replace(cfg, **overrides) if overrides else cfg

    def ports(self, tcp_port: int | None, http_port: int | None) -> tuple[int, int]:
        first = self.made == 1  # config() counted this device already
        return (
            tcp_port if tcp_port is not None else (self.address.tcp_port if first else 0),
            http_port if http_port is not None else (self.address.http_port if first else 0),
        )


class _AsyncDeviceFactory:
    def __init__(self, builder: _Builder) -> None:
        self._builder = builder
        self._made: list[DeviceEmulator] = []

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

        builder = self._builder
        cfg = builder.config(config, scenario, overrides)
        tcp, http = builder.ports(tcp_port, http_port)
        before: Callable[[DeviceEmulator], Awaitable[None]] | None = None
        if cloud is not None:
            cfg = cloud.device_config(cfg)
            before = cloud.register_device
        emu = DeviceEmulator(
            cfg,
            host=builder.address.host,
            tcp_port=tcp,
            http_port=http,
            clock=clock,
            before_power_on=before,
        )
        _owned(builder.node).add(emu)
        self._made.append(emu)  # before start(): a half-started device is closed too
        if cloud is not None:
            cloud.adopt(emu)
        await emu.start()
        return emu

    async def aclose(self) -> None:
        """Close every device in reverse order, then re-raise what went wrong inside."""
        __tracebackhide__ = True
        errors: list[SoftapEmulatorError] = []
        while self._made:
            emu = self._made.pop()
            name = _device_name(emu)
            try:
                await emu.close()
            except Exception as err:
                errors.append(_teardown_error(f"{name} (while closing)", err))
            try:
                emu.check()
            except SimulatorError as err:
                errors.append(_teardown_error(name, err))
        _raise_all(errors)


class _SyncDeviceFactory:
    def __init__(self, builder: _Builder) -> None:
        self._builder = builder
        self._made: list[ThreadedEmulator] = []

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

        builder = self._builder
        cfg = builder.config(config, scenario, overrides)
        tcp, http = builder.ports(tcp_port, http_port)
        emu = ThreadedEmulator(
            cfg, host=builder.address.host, tcp_port=tcp, http_port=http, clock=clock
        )
        _owned(builder.node).add(emu.emulator)
        self._made.append(emu)
        emu.start()
        return emu

    def close(self) -> None:
        __tracebackhide__ = True
        errors: list[SoftapEmulatorError] = []
        while self._made:
            emu = self._made.pop()
            name = _device_name(emu)
            emu.stop()
            try:
                emu.check()
            except SimulatorError as err:
                errors.append(_teardown_error(name, err))
        _raise_all(errors)


# =======================================================================================
# clients (one sans-IO codec, an async and a sync transport)
# =======================================================================================
class SoftapTarget(Protocol):
    """Anything with device addresses: a DeviceEmulator or a ThreadedEmulator."""

    @property
    def tcp_address(self) -> tuple[str, int]: ...

    @property
    def http_address(self) -> tuple[str, int]: ...


def _body_bytes(body: Body) -> bytes | None:
    if body is None or isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    return json.dumps(dict(body), separators=(",", ":")).encode()


def encode_tcp_request(command: str, body: Body = None) -> bytes:
    """``<command>\\n<length>\\n\\n<body>`` (softap-protocol.md §2)."""
    data = _body_bytes(body) or b""
    return b"%s\n%d\n\n%s" % (command.encode(), len(data), data)


def decode_tcp_reply(raw: bytes) -> Any:
    """The reply's JSON; ``None`` for silence (unknown command) or a reply without JSON."""
    if not raw:
        return None
    if not raw.startswith(b"\n\n"):
        raise SoftapClientError(f"not a SoftAP TCP reply: {raw[:80]!r}")
    text = raw[2:]
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        raise SoftapClientError(f"the reply is not JSON: {raw[:80]!r}") from None


def encode_http_request(
    address: tuple[str, int], command: str, body: Body = None, *, method: str | None = None
) -> bytes:
    """One HTTP/1.1 request, head and body in one write (the device parses one segment)."""
    data = _body_bytes(body)
    verb = method or ("GET" if data is None else "POST")
    path = command if command.startswith("/") else "/" + command
    host, port = address
    head = f"{verb} {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
    if data is not None:
        head += f"Content-Length: {len(data)}\r\n"
    return head.encode() + b"\r\n" + (data or b"")


def http_response_length(buf: bytes) -> int | None:
    """The length of the complete response at the start of ``buf``, or None if partial."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = buf[: end + 4]
    pos = end + 4
    if b"\r\nTransfer-Encoding: chunked\r\n" in head:
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                return None
            try:
                size = int(buf[pos:eol].split(b";")[0], 16)
            except ValueError:
                raise SoftapClientError(f"bad chunk size in {buf[pos : pos + 20]!r}") from None
            if size == 0:
                return eol + 4 if len(buf) >= eol + 4 else None
            pos = eol + 2 + size + 2
            if len(buf) < pos:
                return None
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            total = pos + int(line.split(b":", 1)[1])
            return total if len(buf) >= total else None
    return pos


def decode_http_reply(raw: bytes, command: str) -> Any:
    """The JSON body of a ``200`` response (``None`` if empty); other statuses raise."""
    if not raw:
        raise SoftapClientError(f"{command}: the device closed the connection without a reply")
    head, _, rest = raw.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise SoftapClientError(f"{command}: not an HTTP response: {raw[:80]!r}")
    if parts[1] != "200":
        raise SoftapClientError(f"{command}: the device answered {status_line!r}")
    if b"\r\nTransfer-Encoding: chunked\r\n" in head + b"\r\n":
        body, pos = b"", 0
        while True:
            eol = rest.index(b"\r\n", pos)
            size = int(rest[pos:eol].split(b";")[0], 16)
            if size == 0:
                break
            body += rest[eol + 2 : eol + 2 + size]
            pos = eol + 2 + size + 2
    else:
        body = rest
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        raise SoftapClientError(f"{command}: the body is not JSON: {body[:80]!r}") from None


def _der_length(der: bytes) -> int:
    """The length of the DER SEQUENCE at the start of ``der`` (the key area is padded)."""
    if len(der) < 2 or der[0] != 0x30:
        raise SoftapClientError("public-key: not a DER SEQUENCE")
    if der[1] < 0x80:
        return 2 + der[1]
    n = der[1] & 0x7F
    return 2 + n + int.from_bytes(der[2 : 2 + n], "big")


def provision_steps(
    ssid: str,
    password: str,
    *,
    security: str | int,
    channel: int,
    claim_code: str | None,
) -> Generator[tuple[str, Body], Any, None]:
    """The app's side of a setup, sans-IO: yields ``(command, body)``, receives replies.

    ``public-key``, then ``set`` (claim code, if any), ``configure-ap`` with the password
    RSA-encrypted with the device's key, and ``connect-ap``, as particle's setup apps do.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    from firmware_model.security import parse_security

    sec = parse_security(security)
    reply = yield "public-key", None
    if not isinstance(reply, dict) or reply.get("r") != 0 or not isinstance(reply.get("b"), str):
        raise SoftapClientError(f"public-key answered {reply!r}")
    der = bytes.fromhex(reply["b"])
    key = serialization.load_der_public_key(der[: _der_length(der)])
    if not isinstance(key, rsa.RSAPublicKey):
        raise SoftapClientError("public-key: not an RSA key")
    if claim_code is not None:
        reply = yield "set", {"k": "cc", "v": claim_code}
        _expect_ok("set", reply)
    settings: dict[str, Any] = {"idx": 0, "ssid": ssid, "sec": sec, "ch": channel}
    if password:
        settings["pwd"] = key.encrypt(password.encode(), padding.PKCS1v15()).hex()
    reply = yield "configure-ap", settings
    _expect_ok("configure-ap", reply)
    reply = yield "connect-ap", {"idx": 0}
    _expect_ok("connect-ap", reply)


def _expect_ok(command: str, reply: Any) -> None:
    if not isinstance(reply, dict) or reply.get("r") != 0:
        raise SoftapClientError(f"{command} answered {reply!r}, not {{'r': 0}}")


class SoftapClient:
    """A tiny async client of both SoftAP transports (one connection per request).

    ``await client.tcp("device-id")`` → ``{"id": ..., "c": "0"}``; ``None`` when the device
    answers with silence or without JSON. ``await client.http("set", body={...})`` is the
    same over HTTP (GET without a body, POST with one; a non-200 status raises
    :class:`SoftapClientError`). ``tcp_raw`` / ``http_raw`` return the exact bytes.
    Every read is bounded by ``timeout_s``.
    """

    def __init__(self, device: SoftapTarget, *, timeout_s: float = DEFAULT_CLIENT_TIMEOUT_S):
        self.device = device
        self.timeout_s = timeout_s

    def for_device(self, device: SoftapTarget) -> SoftapClient:
        """A client of another device (e.g. one of ``softap_fleet``)."""
        return SoftapClient(device, timeout_s=self.timeout_s)

    async def tcp_raw(self, command: str, body: Body = None) -> bytes:
        """Send one request on port 5609's protocol; every byte until the device closes."""
        import asyncio

        reader, writer = await asyncio.open_connection(*self.device.tcp_address)
        try:
            writer.write(encode_tcp_request(command, body))
            await writer.drain()
            async with asyncio.timeout(self.timeout_s):
                return await reader.read()
        finally:
            writer.close()

    async def tcp(self, command: str, body: Body = None) -> Any:
        return decode_tcp_reply(await self.tcp_raw(command, body))

    async def http_raw(
        self, command: str, body: Body = None, *, method: str | None = None
    ) -> bytes:
        """One HTTP request; the complete response (head and body) as bytes."""
        import asyncio

        address = self.device.http_address
        reader, writer = await asyncio.open_connection(*address)
        try:
            writer.write(encode_http_request(address, command, body, method=method))
            await writer.drain()
            buf = b""
            async with asyncio.timeout(self.timeout_s):
                while (n := http_response_length(buf)) is None:
                    chunk = await reader.read(65536)
                    if not chunk:
                        return buf
                    buf += chunk
            return buf[:n]
        finally:
            writer.close()

    async def http(self, command: str, body: Body = None, *, method: str | None = None) -> Any:
        return decode_http_reply(await self.http_raw(command, body, method=method), command)

    async def provision(
        self,
        ssid: str,
        password: str = "",
        *,
        security: str | int = "wpa2_aes",
        channel: int = 1,
        claim_code: str | None = None,
        transport: str = "tcp",
    ) -> None:
        """Set the device up like a setup app: public-key, set, configure-ap, connect-ap.

        Raises:
            SoftapClientError: a step did not answer ``{"r": 0}``.
        """
        send = self._sender(transport)
        steps = provision_steps(
            ssid, password, security=security, channel=channel, claim_code=claim_code
        )
        request = next(steps)
        while True:
            reply = await send(*request)
            try:
                request = steps.send(reply)
            except StopIteration:
                return

    def _sender(self, transport: str) -> Callable[[str, Body], Awaitable[Any]]:
        if transport == "tcp":
            return self.tcp
        if transport == "http":
            return self.http
        raise ValueError(f"transport must be 'tcp' or 'http', got {transport!r}")


class SoftapSyncClient:
    """:class:`SoftapClient` for plain tests (blocking sockets, same codec and methods)."""

    def __init__(self, device: SoftapTarget, *, timeout_s: float = DEFAULT_CLIENT_TIMEOUT_S):
        self.device = device
        self.timeout_s = timeout_s

    def for_device(self, device: SoftapTarget) -> SoftapSyncClient:
        return SoftapSyncClient(device, timeout_s=self.timeout_s)

    def tcp_raw(self, command: str, body: Body = None) -> bytes:
        import socket

        with socket.create_connection(self.device.tcp_address, timeout=self.timeout_s) as sock:
            sock.sendall(encode_tcp_request(command, body))
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
            return b"".join(chunks)

    def tcp(self, command: str, body: Body = None) -> Any:
        return decode_tcp_reply(self.tcp_raw(command, body))

    def http_raw(self, command: str, body: Body = None, *, method: str | None = None) -> bytes:
        import socket

        address = self.device.http_address
        with socket.create_connection(address, timeout=self.timeout_s) as sock:
            sock.sendall(encode_http_request(address, command, body, method=method))
            buf = b""
            while (n := http_response_length(buf)) is None:
                chunk = sock.recv(65536)
                if not chunk:
                    return buf
                buf += chunk
            return buf[:n]

    def http(self, command: str, body: Body = None, *, method: str | None = None) -> Any:
        return decode_http_reply(self.http_raw(command, body, method=method), command)

    def provision(
        self,
        ssid: str,
        password: str = "",
        *,
        security: str | int = "wpa2_aes",
        channel: int = 1,
        claim_code: str | None = None,
        transport: str = "tcp",
    ) -> None:
        """See :meth:`SoftapClient.provision`."""
        if transport not in ("tcp", "http"):
            raise ValueError(f"transport must be 'tcp' or 'http', got {transport!r}")
        send = self.tcp if transport == "tcp" else self.http
        steps = provision_steps(
            ssid, password, security=security, channel=channel, claim_code=claim_code
        )
        request = next(steps)
        while True:
            reply = send(*request)
            try:
                request = steps.send(reply)
            except StopIteration:
                return


# =======================================================================================
# the cloud
# =======================================================================================
class CloudProduct(NamedTuple):
    """A product and its two-legged (server) OAuth client."""

    id: int
    slug: str
    name: str
    client_id: str
    client_secret: str


class CloudClient(NamedTuple):
    id: str
    secret: str
    preset: str
    product_id: int | None


class CloudCustomer(NamedTuple):
    """A product customer with a fresh access token (``token, *_ = await cloud.customer(..)``)."""

    token: str
    id: str
    email: str
    product_id: int
    refresh_token: str | None


class SoftapCloud:
    """The local cloud of one test (``softap_cloud``), in memory.

    Attributes:
        service: the :class:`~softap_sim.cloud.service.CloudService`.
        backend: its :class:`~softap_sim.cloud.backend.CloudBackend` (the verbs).
        url: the REST API's base URL (point particle-api-js or requests at it).
        device_address: the device endpoint (Photon protocol, TCP).
        product: the default product (slug ``softap-sim``) and its server client.
        developer: the developer user: ``{"id", "email", "password"}``.
    """

    def __init__(self, service: CloudService) -> None:
        creds = service.created_credentials
        assert creds is not None
        assert service.server is not None
        assert service.device_server is not None
        self.service = service
        self.backend = service.backend
        self.url = service.server.url
        self.device_address = (service.device_server.host, service.device_server.port)
        self.product = CloudProduct(
            creds["product"]["id"],
            creds["product"]["slug"],
            creds["product"]["name"],
            creds["client"]["id"],
            creds["client"]["secret"],
        )
        self.developer: dict[str, str] = dict(creds["user"])
        self._devices: list[DeviceEmulator] = []

    @property
    def server_public_key_pem(self) -> bytes:
        return self.service.server_public_key_pem

    async def create_product(self, name: str, *, slug: str | None = None) -> CloudProduct:
        """A new product owned by the developer, with a two-legged client, in one call."""
        import re

        slug = slug or re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "product"
        product, client, secret = await self.backend.create_product_with_client(
            name, slug, self.developer["id"]
        )
        return CloudProduct(product["id"], product["slug"], product["name"], client["id"], secret)

    async def create_client(
        self,
        preset: str = "simple-auth-mobile",
        *,
        name: str = "softap-sim test client",
        product: CloudProduct | None = None,
    ) -> CloudClient:
        """An OAuth client of a product (presets: two-legged, simple-auth-mobile/-web)."""
        pid = (product or self.product).id
        redirect = "http://127.0.0.1/callback" if preset == "simple-auth-web" else None
        client, secret = await self.backend.create_client(
            preset=preset, name=name, type="", scope=None, product_id=pid, redirect_uri=redirect
        )
        return CloudClient(client["id"], secret, preset, pid)

    async def customer(
        self, email: str, *, password: str | None = None, product: CloudProduct | None = None
    ) -> CloudCustomer:
        """A customer of the product (a shadow one without ``password``) and its token.

        The token is what ``POST /oauth/token`` with the product's two-legged client and
        ``scope=customer=<email>`` returns.
        """
        prod = product or self.product
        cust, tokens = await self.backend.create_customer_with_token(
            prod.id, prod.client_id, email, password
        )
        return CloudCustomer(
            tokens["access_token"], cust["id"], cust["email"], prod.id, tokens.get("refresh_token")
        )

    async def claim_code(self, owner: CloudCustomer | str) -> str:
        """A fresh 63-character claim code for a customer (or any user/customer token)."""
        token = owner.token if isinstance(owner, CloudCustomer) else owner
        principal = await self.backend.principal_for(token)
        product_id = principal.product_id if principal.is_customer else None
        code, _ids = await self.backend.create_claim_code(principal, product_id)
        return code

    def device_config(self, config: SimConfig) -> SimConfig:
        """``config`` pointed at this cloud (endpoint and server key, as in a device's DCT)."""
        return dataclasses.replace(
            config,
            cloud_endpoint=self.device_address,
            server_public_key_pem=self.server_public_key_pem,
        )

    async def register_device(self, emu: DeviceEmulator) -> None:
        """Put the device (id and public key) into the registry, so it can connect."""
        device = emu.device
        await self.service.register_device(
            device.dct.identity.device_id_hex, device.key.public_key_pem.decode("ascii")
        )

    def adopt(self, emu: DeviceEmulator) -> None:
        """Close ``emu`` before the cloud at teardown, so it never sees the cloud vanish."""
        self._devices.append(emu)

    async def wait_claimed(
        self, device: DeviceEmulator | str, *, timeout_s: float = 10.0
    ) -> dict[str, Any]:
        """Wait (event-driven) until the cloud has an owner for the device.

        Returns:
            ``{"device_id", "user_id", "customer_id", "product_id"}``.
        """
        import asyncio

        device_id = (
            device if isinstance(device, str) else device.device.dct.identity.device_id_hex
        ).lower()
        claimed = asyncio.get_running_loop().create_future()

        def on_event(event: dict[str, Any]) -> None:
            if (
                event["name"] == "spark/device/claim/confirm"
                and event["coreid"] == device_id
                and not claimed.done()
            ):
                claimed.set_result(None)

        subscribers = self.backend.subscribers
        subscribers.add(on_event)
        try:
            found = await self.backend.device_owner(device_id)
            if found is None:
                await asyncio.wait_for(claimed, timeout_s)
                found = await self.backend.device_owner(device_id)
        finally:
            subscribers.discard(on_event)
        assert found is not None
        return found

    async def aclose(self) -> None:
        while self._devices:
            await self._devices.pop().close()
        await self.service.close()


# =======================================================================================
# fixtures
# =======================================================================================
def _env_port(name: str) -> int:
    text = os.environ.get(name, "").strip()
    if not text:
        return 0
    if not text.isdigit() or int(text) > 65535:
        pytest.fail(f"${name}={text!r} is not a port number (0-65535)", pytrace=False)
    return int(text)


@pytest.fixture
def softap_listen_address() -> ListenAddress:
    """Where devices listen: ``$SOFTAP_SIM_HOST`` / ``$SOFTAP_SIM_TCP_PORT`` /
    ``$SOFTAP_SIM_HTTP_PORT`` (defaults 127.0.0.1 and 0). Replaces ``host=``/``*_port=``
    arguments in every test (pytest-httpserver's ``httpserver_listen_address``)."""
    return ListenAddress(
        os.environ.get("SOFTAP_SIM_HOST", "").strip() or "127.0.0.1",
        _env_port("SOFTAP_SIM_TCP_PORT"),
        _env_port("SOFTAP_SIM_HTTP_PORT"),
    )


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
    factory = _AsyncDeviceFactory(_Builder(request.node, softap_config, softap_listen_address))
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
    if not _is_int(count) or count < 1:
        pytest.fail(f"softap_fleet_size must be an integer >= 1, got {count!r}", pytrace=False)
    return [await make_softap_device() for _ in range(count)]


@pytest.fixture
def softap_client(softap_device: DeviceEmulator) -> SoftapClient:
    """An async client of ``softap_device`` over TCP and HTTP (``.for_device(other)``)."""
    return SoftapClient(softap_device)


@async_fixture
async def softap_cloud(_softap_asyncio: None) -> AsyncIterator[SoftapCloud]:
    """The local cloud in memory: REST API and device endpoint on free loopback ports."""
    from softap_sim.cloud.service import CloudService

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
    factory = _SyncDeviceFactory(_Builder(request.node, softap_config, softap_listen_address))
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
    return SoftapSyncClient(softap_device_sync)


__all__ = [
    "CloudClient",
    "CloudCustomer",
    "CloudProduct",
    "ListenAddress",
    "SoftapClient",
    "SoftapClientError",
    "SoftapCloud",
    "SoftapDeviceFactory",
    "SoftapEmulatorError",
    "SoftapSettings",
    "SoftapSyncClient",
    "SoftapSyncDeviceFactory",
    "SoftapTarget",
]
