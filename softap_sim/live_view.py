"""A live terminal view of one device (``softap-sim run``) or many (``softap-sim fleet``).

On a terminal it is a `rich <https://github.com/Textualize/rich>`_ ``Live`` display,
redrawn a few times a second (less often when a redraw is costly: the view takes at
most ~10% of the event loop), that stays readable with thousands of devices: a summary
(devices per state, per LED colour, claimed, commands served) and the most recent
changes -- state changes, commands served, claims -- one row each with the device, its
LED, its state, its last command and whether it is claimed. When the output is not a
terminal (or ``plain=True``) it prints plain lines instead: one per state change and
one when a device becomes claimed.

Feeding it: :meth:`LiveView.attach` an emulator before it starts (its
``on_state_change`` callbacks give the state changes), or :meth:`LiveView.attach_fleet`
a :class:`~softap_sim.fleet.Fleet` before ``fleet.start()`` (or anything with its
``on_device_created`` hooks, :class:`DeviceSource`: the view does not import the fleet,
whose command line imports the view). The last command and the claimed flag are read
when the view refreshes (and at every state change): the command from the tail of the
device's transcript (``emu.transcript``; with recording off the view counts commands
from ``emu.dispatcher.served`` and shows ``tcp #n`` instead of the name), the flag from
the device's DCT.

Usage::

    view = LiveView(header=banner)
    view.attach(emu)                 # or view.attach_fleet(fleet)
    await emu.start()
    async with view:                 # the live display (or plain lines) until exit
        await stop.wait()
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Final, Protocol, Self, TextIO, TypeVar

from firmware_model import StateChanged

if TYPE_CHECKING:
    from rich.console import Console, JustifyMethod, RenderableType
    from rich.live import Live
    from rich.table import Table

    from softap_sim.emulator import DeviceEmulator

#: seconds between redraws of the live display
REFRESH_S: Final = 0.25
#: records read from the tail of a transcript per poll
TAIL_RECORDS: Final = 8
#: the view's share of the event loop: it waits at least this many times what one
#: refresh cost (a redraw of 10,000 devices costs tens of ms: then it redraws less often)
COST_FACTOR: Final = 10
#: seconds between polls for claims in plain mode
PLAIN_POLL_S: Final = 1.0
#: rich styles of the LED colours
LED_STYLE: Final = {
    "off": "grey50",
    "white": "bright_white",
    "dark blue": "blue",
    "green": "green",
    "cyan": "cyan",
    "red": "red",
}
#: states in lifecycle order, for the summary
STATE_ORDER: Final = (
    "off",
    "booting",
    "listening",
    "joining",
    "join-retry",
    "cloud-connecting",
    "cloud-retry",
    "online",
    "faulted",
)


class FleetMember(Protocol):
    """What the view reads of a fleet's device (:class:`~softap_sim.fleet.FleetDevice`)."""

    @property
    def index(self) -> int: ...
    @property
    def emulator(self) -> DeviceEmulator: ...
    @property
    def host(self) -> str: ...


M = TypeVar("M", bound=FleetMember)


class DeviceSource(Protocol[M]):
    """What the view needs of a fleet (:class:`~softap_sim.fleet.Fleet`): a hook that is
    called for each device before it starts."""

    @property
    def on_device_created(self) -> list[Callable[[M], None]]: ...


@dataclass(slots=True)
class _Tracked:
    """What the view knows about one device."""

    index: int
    emu: DeviceEmulator
    host: str
    state: str = "starting"
    led: str = "off"
    colour: str = "off"
    last_command: str = ""
    seq: int = 0
    served: int = 0
    claimed: bool = False

    @property
    def started(self) -> bool:
        return self.emu.dispatcher is not None

    @property
    def ssid(self) -> str:
        return self.emu.ssid if self.started else "?"


@dataclass(frozen=True, slots=True)
class Change:
    """One row of the "recent changes" list."""

    when: float
    index: int
    host: str
    ssid: str
    kind: str  # "state", "command" or "claimed"
    text: str
    led: str
    colour: str
    state: str
    last_command: str
    claimed: bool


class LiveView:
    """The live view; see the module documentation.

    Args:
        stream: where to draw or print (stdout).
        plain: force plain lines (True) or the live display (False); None: live
            display when ``stream`` is a terminal.
        recent: how many recent changes the live display lists (fewer if the terminal
            is short).
        header: text shown above the summary (e.g. the banner).
        refresh_s: seconds between redraws.
    """

    _STATE_ARROW: ClassVar[str] = "->"

    def __init__(
        self,
        *,
        stream: TextIO | None = None,
        plain: bool | None = None,
        recent: int = 12,
        header: str = "",
        refresh_s: float = REFRESH_S,
    ) -> None:
        self.stream: TextIO = stream or sys.stdout
        tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.plain = (not tty) if plain is None else plain
        self.recent: collections.deque[Change] = collections.deque(maxlen=max(1, recent))
        self.header = header
        self.refresh_s = refresh_s
        self.devices: list[_Tracked] = []
        self._t0 = time.monotonic()
        self._task: asyncio.Task[None] | None = None
        self._live: Live | None = None
        self._console: Console | None = None
        #: logging handlers pointed at the live display's stdout/stderr proxies, with
        #: the streams they had before
        self._rerouted: list[tuple[logging.StreamHandler[Any], Any]] = []
        self.lines_printed = 0

    # -- feeding ---------------------------------------------------------------------
    def attach(self, emu: DeviceEmulator, *, index: int | None = None, host: str = "") -> None:
        """Follow ``emu``; call before it starts so that its first change is seen."""
        tracked = _Tracked(len(self.devices) if index is None else index, emu, host or emu.host)
        self.devices.append(tracked)

        def on_change(change: StateChanged, _t: float) -> None:
            self._on_state(tracked, change)

        emu.on_state_change.append(on_change)

    def attach_fleet(self, fleet: DeviceSource[M]) -> None:
        """Follow every device of ``fleet``; call before ``fleet.start()``."""

        def created(device: M) -> None:
            self.attach(device.emulator, index=device.index, host=device.host)

        fleet.on_device_created.append(created)

    def _on_state(self, tracked: _Tracked, change: StateChanged) -> None:
        tracked.state = change.new
        tracked.led = change.led.describe()
        tracked.colour = change.led.colour.value
        self._poll_one(tracked, record=False)
        text = f"{change.old} {self._STATE_ARROW} {change.new} on {change.cause}"
        if change.detail.get("last_join"):
            text += f" (join: {change.detail['last_join']})"
        if change.detail.get("gate_passed") is False:
            text += " (below the memory gate)"
        self._add(tracked, "state", text)

    def _add(self, tracked: _Tracked, kind: str, text: str) -> None:
        change = Change(
            time.monotonic(),
            tracked.index,
            tracked.host,
            tracked.ssid,
            kind,
            text,
            tracked.led,
            tracked.colour,
            tracked.state,
            tracked.last_command,
            tracked.claimed,
        )
        self.recent.append(change)
        if self.plain and kind != "command":
            self._print(change)

    def _poll_one(self, tracked: _Tracked, *, record: bool) -> None:
        """Read the device's last command and claimed flag; note what changed."""
        emu = tracked.emu
        if emu.dispatcher is None:
            return
        transcript = emu.transcript
        if transcript is not None and transcript.enabled:
            if transcript.seq != tracked.seq:
                # only the newest few records: the last command is among them (or older)
                recent = transcript.since(max(tracked.seq, transcript.seq - TAIL_RECORDS))
                for rec in reversed(recent):
                    if rec["type"] == "exchange":
                        tracked.last_command = f"{rec['transport']} {rec['command']}"
                        if record:
                            self._add(tracked, "command", tracked.last_command)
                        break
                tracked.seq = transcript.seq
        else:
            served = sum(emu.dispatcher.served.values())
            if served != tracked.served:
                tracked.last_command = f"#{served}"
                if record:
                    self._add(tracked, "command", f"command #{served}")
        tracked.served = sum(emu.dispatcher.served.values())
        claimed = emu.device.dct.claimed
        if claimed != tracked.claimed:
            tracked.claimed = claimed
            if record:
                self._add(tracked, "claimed", "claimed" if claimed else "unclaimed")

    def poll(self) -> None:
        """Read every device's last command and claimed flag (each refresh)."""
        for tracked in self.devices:
            self._poll_one(tracked, record=True)

    # -- plain lines -----------------------------------------------------------------
    def format_line(self, change: Change) -> str:
        t = change.when - self._t0
        last = change.last_command or "-"
        return (
            f"[{t:9.3f}s] #{change.index:<5} {change.host:<15} {change.ssid:<16} "
            f"LED {change.led:<22} {change.text}  last: {last}  "
            f"claimed: {'yes' if change.claimed else 'no'}"
        )

    def _print(self, change: Change) -> None:
        try:
            print(self.format_line(change), file=self.stream, flush=True)
        except (BrokenPipeError, ValueError):  # the reader went away / stream closed
            return
        self.lines_printed += 1

    # -- the live display --------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Counts for the summary: per state, per LED, claimed, commands served."""
        states: collections.Counter[str] = collections.Counter()
        leds: collections.Counter[str] = collections.Counter()
        claimed = served = 0
        for tracked in self.devices:
            states[tracked.state] += 1
            leds[tracked.led] += 1
            claimed += tracked.claimed
            served += tracked.served
        return {
            "devices": len(self.devices),
            "states": dict(states),
            "leds": dict(leds),
            "claimed": claimed,
            "served": served,
        }

    def render(self, height: int | None = None) -> RenderableType:
        """The live display's content (also for tests)."""
        from rich.console import Group
        from rich.text import Text

        parts: list[RenderableType] = []
        if self.header:
            parts.append(Text(self.header, style="dim"))
        s = self.summary()
        order = {name: i for i, name in enumerate(STATE_ORDER)}
        states = Text()
        states.append(f"{s['devices']} devices  ", style="bold")
        for name, n in sorted(s["states"].items(), key=lambda kv: order.get(kv[0], 99)):
            states.append(f"{name} {n}  ")
        states.append(f"claimed {s['claimed']}  ", style="bold")
        states.append(f"commands {s['served']}")
        leds = Text("LED  ")
        colour_of = {t.led: t.colour for t in self.devices}
        for text, n in sorted(s["leds"].items(), key=lambda kv: -kv[1]):
            style = LED_STYLE.get(colour_of.get(text, "off"), "")
            leds.append("● ", style=style)
            leds.append(f"{text} {n}   ")
        parts += [states, leds]
        rows = list(self.recent)
        if height is not None:
            used = (self.header.count("\n") + 1 if self.header else 0) + 2 + 5
            rows = rows[-max(1, height - used) :]
        parts.append(self._table(rows))
        return Group(*parts)

    def _table(self, rows: list[Change]) -> Table:
        """The "most recent changes" table, newest first."""
        from rich.table import Table
        from rich.text import Text

        table = Table(
            title="most recent changes", title_justify="left", expand=False, show_edge=False
        )
        columns: tuple[tuple[str, JustifyMethod], ...] = (
            ("t", "right"),
            ("device", "left"),
            ("LED", "left"),
            ("state", "left"),
            ("change", "left"),
            ("last command", "left"),
            ("claimed", "left"),
        )
        for name, justify in columns:
            table.add_column(name, justify=justify, no_wrap=True)
        for c in reversed(rows):
            led = Text("● ", style=LED_STYLE.get(c.colour, ""))
            led.append(c.led)
            table.add_row(
                f"{c.when - self._t0:.1f}s",
                f"#{c.index} {c.host} {c.ssid}",
                led,
                c.state,
                c.text,
                c.last_command or "-",
                "yes" if c.claimed else "no",
            )
        return table

    # -- running -----------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def start(self) -> None:
        """Start redrawing (or, plain, watching for claims) in a task."""
        if self._task is not None:
            return
        if not self.plain:
            from rich.console import Console
            from rich.live import Live

            self._console = Console(file=self.stream)
            self._live = Live(
                console=self._console,
                auto_refresh=False,  # redrawn from the event loop: no thread reads our state
                redirect_stdout=True,
                redirect_stderr=True,
                transient=False,
            )
            before = {id(sys.stdout): "stdout", id(sys.stderr): "stderr"}
            self._live.start()
            self._reroute_logging(before)
        self._task = asyncio.get_running_loop().create_task(self._run())

    def _reroute_logging(self, before: dict[int, str]) -> None:
        """Send log lines through rich's stdout/stderr proxies while the view is live.

        A handler made before the view (``logging.basicConfig``) holds the real stream;
        writing there would tear the display, while the proxies print above it.
        """
        for handler in logging.getLogger().handlers:
            if not isinstance(handler, logging.StreamHandler) or isinstance(
                handler, logging.FileHandler
            ):
                continue  # a log file is not the terminal
            name = before.get(id(handler.stream))
            if name is None:
                continue
            proxy = getattr(sys, name)  # rich's proxy, or the same stream if it has none
            if proxy is not handler.stream:
                self._rerouted.append((handler, handler.setStream(proxy)))

    async def _run(self) -> None:
        while True:
            t0 = time.perf_counter()
            self.refresh()
            cost = time.perf_counter() - t0
            interval = self.refresh_s if not self.plain else PLAIN_POLL_S
            await asyncio.sleep(max(interval, cost * COST_FACTOR))

    def refresh(self) -> None:
        """Poll the devices and redraw once."""
        self.poll()
        if self._live is not None and self._console is not None:
            self._live.update(self.render(self._console.size.height), refresh=True)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._live is not None:
            with contextlib.suppress(Exception):
                self.refresh()
            self._live.stop()
            self._live = None
        for handler, stream in self._rerouted:
            handler.setStream(stream)
        self._rerouted.clear()


__all__ = ["Change", "LiveView"]
