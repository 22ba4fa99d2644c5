"""The event loop the long-running commands (``run``, ``fleet``) use.

uvloop (libuv) takes about a third off our server CPU per onboarding
(scripts/bench_setup.py, ``--what-if asyncio-loop``); the wire bytes are the same on
both loops (the whole test suite runs on each: scripts/test.sh). uvloop has no Windows
build, so ``auto`` falls back to asyncio's own loop where it is not installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import signal
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from softap_sim.errors import ConfigError

T = TypeVar("T")

#: ``--loop`` choices
LOOP_CHOICES = ("auto", "uvloop", "asyncio")


class LoopError(ConfigError, ValueError):
    """An unknown or unavailable ``--loop``: the CLI reports it in one line."""


def uvloop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's ``new_event_loop`` when the module is importable, else ``None``."""
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory for ``--loop name`` (``None``: asyncio's default loop).

    Raises :class:`LoopError` with what to do when ``uvloop`` is asked for and missing.
    """
    if name not in LOOP_CHOICES:
        raise LoopError(f"unknown event loop {name!r}; use one of {', '.join(LOOP_CHOICES)}")
    if name == "asyncio":
        return None
    factory = uvloop_factory()
    if factory is None and name == "uvloop":
        raise LoopError(
            "--loop uvloop: uvloop is not installed (pip install uvloop; no Windows build), "
            "or use --loop asyncio"
        )
    return factory


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """``uvloop`` or ``asyncio``: what a status line reports."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


def run(main: Coroutine[Any, Any, T], loop: str = "auto") -> T:
    """``asyncio.run`` on the chosen loop."""
    try:
        factory = loop_factory(loop)
    except LoopError:
        main.close()
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM, for the commands that run until stopped.

    Where the loop has no signal handlers (Windows' proactor), Ctrl-C still raises
    ``KeyboardInterrupt`` and the command's ``finally`` blocks clean up.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    return stop
