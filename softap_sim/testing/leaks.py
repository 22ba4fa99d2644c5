"""The plugin's leak check: emulators a test started in its body and never closed.

While a checked test's body runs, ``DeviceEmulator.start`` is wrapped (for that time only,
like ``monkeypatch``) to record each start and where in the test it came from. An
emulator still running when the body returns that no fixture owns (:func:`owned`) is
closed here and described, so the plugin can fail the test that leaked it.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sys
import threading
import weakref
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from softap_sim.errors import SimulatorError

if TYPE_CHECKING:
    from types import FrameType

    from softap_sim.emulator import DeviceEmulator

_OWNED = pytest.StashKey["weakref.WeakSet[DeviceEmulator]"]()
#: frames in these files are not "where the test started it"
_SKIP_FILES = (
    str(Path(__file__).resolve().parent.parent),  # softap_sim
    str(Path(asyncio.__file__).resolve().parent),
    str(Path(threading.__file__).resolve()),
)


def owned(node: pytest.Item) -> weakref.WeakSet[DeviceEmulator]:
    """The emulators a fixture of this test made: the fixture closes them, not the check."""
    found = node.stash.get(_OWNED, None)
    if found is None:
        found = node.stash[_OWNED] = weakref.WeakSet()
    return found


class StartRecorder:
    """Records every ``DeviceEmulator.start()`` while the test body runs."""

    def __init__(self, item: pytest.Item) -> None:
        self.item = item
        self.started: list[tuple[DeviceEmulator, asyncio.AbstractEventLoop, str]] = []
        #: False once the test body returned: a wrapper that outlives the test (a user's
        #: own monkeypatch of ``start`` restored it) then records nothing
        self.active = True
        self._patch = pytest.MonkeyPatch()

    def install(self) -> None:
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
        by_fixtures = self.item.stash.get(_OWNED, None)
        leaks: list[str] = []
        seen: set[int] = set()
        for emu, loop, where in self.started:
            if (
                id(emu) in seen
                or (by_fixtures is not None and emu in by_fixtures)
                or not _running(emu)
            ):
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
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        filename = str(Path(frame.f_code.co_filename).resolve())
        if not filename.startswith(_SKIP_FILES):
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


def leak_message(leaks: list[str]) -> str:
    lines = [
        f"softap-sim: this test left {len(leaks)} DeviceEmulator(s) running "
        "(started in the test, never closed):",
        *(f"  - {leak}" for leak in leaks),
        "Close what you start: `async with DeviceEmulator(...) as emu:` (or "
        "`with ThreadedEmulator(...)`), `await emu.close()` in a `finally`, or let the "
        "make_softap_device fixture own the device.",
    ]
    return "\n".join(lines)
