"""``ThreadedEmulator``: a :class:`~softap_sim.emulator.DeviceEmulator` for synchronous code.

The emulator runs on a private event loop in a daemon thread, the way aiosmtpd's
``Controller`` runs an SMTP server (``aiosmtpd/controller.py``), so plain ``def`` tests,
scripts and tools can use it without an event loop of their own::

    with ThreadedEmulator(SimConfig()) as emu:
        host, port = emu.tcp_address
        emu.control.add_fault({"kind": "no-reply", "command": "scan-ap"})
        ...
        emu.check()

:meth:`ThreadedEmulator.start` waits up to ``ready_timeout`` seconds (default 10, or
``$SOFTAP_SIM_READY_TIMEOUT``) for the device to be up and re-raises a start-up error
(e.g. a port in use) in the caller. Calls that touch the running device are marshalled
onto the loop thread: :attr:`~ThreadedEmulator.control` does it for every control
operation, :meth:`~ThreadedEmulator.call` and :meth:`~ThreadedEmulator.run` do it for
anything else. Errors raised on the loop thread are kept and re-raised by
:meth:`~ThreadedEmulator.check`, together with the emulator's own.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import os
import threading
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast

from softap_sim.config import SimConfig
from softap_sim.emulator import DeviceEmulator
from softap_sim.errors import ConfigError, LifecycleError, SimulatorError

if TYPE_CHECKING:
    from firmware_model import Clock, Device, DeviceState
    from softap_sim.control import Control

log = logging.getLogger(__name__)

_T = TypeVar("_T")

#: seconds ``start()`` waits for the device when neither the argument nor the env var is set
DEFAULT_READY_TIMEOUT_S = 10.0
READY_TIMEOUT_ENV = "SOFTAP_SIM_READY_TIMEOUT"
#: seconds a marshalled call, or ``stop()``, may take before it is reported as hung
DEFAULT_CALL_TIMEOUT_S = 30.0

#: started and not yet stopped; the pytest plugin's leak check reads it
_running: weakref.WeakSet[ThreadedEmulator] = weakref.WeakSet()


def running_emulators() -> list[ThreadedEmulator]:
    """Every :class:`ThreadedEmulator` that was started and not stopped yet."""
    return list(_running)


def ready_timeout_from_env() -> float:
    """``$SOFTAP_SIM_READY_TIMEOUT`` in seconds, or :data:`DEFAULT_READY_TIMEOUT_S`."""
    text = os.environ.get(READY_TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_READY_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigError(f"{READY_TIMEOUT_ENV}={text!r}: give a number of seconds > 0, e.g. 10")
    return value


class ThreadedEmulator:
    """A :class:`DeviceEmulator` on its own event loop in a daemon thread.

    Args:
        config: the device settings, as for :class:`DeviceEmulator`.
        host, tcp_port, http_port, clock, before_power_on: passed to
            :class:`DeviceEmulator` (``before_power_on`` runs on the loop thread).
        ready_timeout: seconds :meth:`start` waits for the device; ``None`` reads
            ``$SOFTAP_SIM_READY_TIMEOUT`` (default 10).
        call_timeout: seconds a marshalled call or :meth:`stop` may take.
    """

    def __init__(
        self,
        config: SimConfig | None = None,
        *,
        host: str = "127.0.0.1",
        tcp_port: int = 0,
        http_port: int = 0,
        clock: Clock | None = None,
        before_power_on: Callable[[DeviceEmulator], Awaitable[None]] | None = None,
        ready_timeout: float | None = None,
        call_timeout: float = DEFAULT_CALL_TIMEOUT_S,
    ) -> None:
        self.ready_timeout = (
            ready_timeout if ready_timeout is not None else ready_timeout_from_env()
        )
        self.call_timeout = call_timeout
        #: the emulator itself; touch its state only through call()/run() while running
        self.emulator = DeviceEmulator(
            config,
            host=host,
            tcp_port=tcp_port,
            http_port=http_port,
            clock=clock,
            before_power_on=before_power_on,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._errors: list[BaseException] = []
        self._control = cast("Control", _MarshalledControl(self))

    # -- lifecycle -----------------------------------------------------------------
    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._loop is not None

    def start(self) -> None:
        """Start the loop thread and the device; re-raise a start-up error. Idempotent.

        Raises:
            TimeoutError: the device was not up within ``ready_timeout`` seconds.
            Exception: whatever ``DeviceEmulator.start()`` raised (e.g. ``OSError`` for
                a port in use), re-raised here in the caller's thread.
        """
        if self._loop is not None:
            return
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(self._on_loop_error)
        thread = threading.Thread(
            target=self._run_loop, args=(loop,), name="softap-sim-emulator", daemon=True
        )
        self._loop, self._thread = loop, thread
        _running.add(self)
        thread.start()
        future = asyncio.run_coroutine_threadsafe(self.emulator.start(), loop)
        try:
            future.result(self.ready_timeout)
        except TimeoutError:
            future.cancel()
            self._shutdown(close_emulator=True)
            raise TimeoutError(
                f"softap-sim: the emulator did not start within {self.ready_timeout:g} s "
                f"(ready_timeout, or ${READY_TIMEOUT_ENV})"
            ) from None
        except BaseException:
            self._shutdown(close_emulator=True)
            raise
        log.debug("threaded emulator %s started", self.emulator.ssid)

    def stop(self) -> None:
        """Close the device, stop the loop and join the thread. Idempotent."""
        if self._loop is None:
            return
        self._shutdown(close_emulator=True)

    def _shutdown(self, *, close_emulator: bool) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            if close_emulator and thread.is_alive():
                future = asyncio.run_coroutine_threadsafe(self.emulator.close(), loop)
                try:
                    future.result(self.call_timeout)
                except Exception as err:  # kept for check(); stopping must go on
                    self._errors.append(err)
        finally:
            if thread.is_alive():
                loop.call_soon_threadsafe(loop.stop)
                thread.join(self.call_timeout)
            self._loop = self._thread = None
            _running.discard(self)
        if thread.is_alive():
            self._errors.append(
                LifecycleError(f"the emulator thread did not stop within {self.call_timeout:g} s")
            )

    def _run_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            if tasks:
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        except Exception as err:
            self._errors.append(err)
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """Errors nobody awaited on the loop thread: keep them for :meth:`check`."""
        err = context.get("exception")
        if not isinstance(err, BaseException):
            err = SimulatorError(str(context.get("message", "unknown event loop error")))
        self._errors.append(err)
        loop.default_exception_handler(context)

    # -- running code on the loop thread -------------------------------------------
    def _require_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise LifecycleError("the threaded emulator is not running; call start() first")
        return self._loop

    def run(self, coro: Coroutine[Any, Any, _T], *, timeout: float | None = None) -> _T:
        """Run a coroutine on the emulator's loop and return its result.

        E.g. ``emu.run(emu.emulator.wait_for_state(DeviceState.ONLINE))``.
        """
        if self._loop is None:
            coro.close()  # never awaited: close it, or Python warns about it later
        loop = self._require_loop()
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result(self.call_timeout if timeout is None else timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    def call(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """Call ``fn(*args, **kwargs)`` on the loop thread, then let the device settle.

        Access-point changes the call asked for are carried out before it returns, so
        ``emu.call(emu.emulator.control.press_button, 3)`` returns with the AP up.
        """
        if self._thread is not None and threading.current_thread() is self._thread:
            return fn(*args, **kwargs)

        async def on_loop() -> _T:
            result = fn(*args, **kwargs)
            await self.emulator.settle()
            return result

        return self.run(on_loop())

    def settle(self) -> None:
        """Wait until every access-point change asked for so far was carried out."""
        self.run(self.emulator.settle())

    def advance(self, seconds: float) -> None:
        """Move a :class:`~firmware_model.ManualClock` forward (see ``DeviceEmulator``)."""
        self.run(self.emulator.advance(seconds))

    def wait_for_state(self, *states: DeviceState, timeout_s: float | None = 10.0) -> None:
        """Block until the device is in one of ``states``."""
        self.run(
            self.emulator.wait_for_state(*states, timeout_s=timeout_s),
            timeout=None if timeout_s is None else timeout_s + self.call_timeout,
        )

    # -- what tests read -----------------------------------------------------------
    @property
    def control(self) -> Control:
        """``emu.control`` of the emulator; every call runs on the loop thread."""
        return self._control

    def check(self) -> None:
        """Re-raise the first error of the emulator or of its loop thread, if any."""
        if self._loop is not None:
            self.call(self.emulator.check)
        else:
            self.emulator.check()
        if self._errors:
            err = self._errors[0]
            raise SimulatorError(f"the emulator's thread failed: {err!r}") from err

    @property
    def device(self) -> Device:
        """The firmware model (read it from the test thread only while the device is idle)."""
        return self.emulator.device

    @property
    def ssid(self) -> str:
        return self.emulator.ssid

    @property
    def tcp_address(self) -> tuple[str, int]:
        return self.emulator.tcp_address

    @property
    def http_address(self) -> tuple[str, int]:
        return self.emulator.http_address

    @property
    def http_url(self) -> str:
        return self.emulator.http_url

    def url_for(self, path: str) -> str:
        return self.emulator.url_for(path)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<ThreadedEmulator {state}>"


class _MarshalledControl:
    """Stands in for ``emu.control``: each method call runs on the loop thread."""

    def __init__(self, owner: ThreadedEmulator) -> None:
        self._owner = owner

    def __getattr__(self, name: str) -> Any:
        owner = self._owner
        attr = getattr(owner.emulator.control, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        def marshalled(*args: Any, **kwargs: Any) -> Any:
            if owner.running:
                return owner.call(attr, *args, **kwargs)
            return attr(*args, **kwargs)

        return marshalled


__all__ = [
    "DEFAULT_READY_TIMEOUT_S",
    "READY_TIMEOUT_ENV",
    "ThreadedEmulator",
    "ready_timeout_from_env",
    "running_emulators",
]
