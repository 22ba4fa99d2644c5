"""A real browser for the dashboard tests: Debian's Chromium, driven over the DevTools protocol.

No Selenium or Playwright: the DevTools protocol is JSON over a WebSocket, and aiohttp (a
runtime dependency already) speaks WebSocket. Chromium starts headless with its own empty
profile and with background networking off (this machine's network is closed: without those
flags it keeps trying to reach Google's hosts), on a DevTools port it picks itself.

Waiting is event-driven: :meth:`Page.wait_for` runs a promise *inside the page* that
re-checks a condition on every animation frame and resolves when it holds, so a test waits
exactly as long as the page needs (bounded by a timeout), never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import re
import select
import shutil
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiohttp

#: where ``apt-get install chromium`` puts it (scripts/test.sh installs it)
CHROMIUM_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
FLAGS = (
    "--headless=new",
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
    "--remote-debugging-port=0",
)
_LISTENING = re.compile(rb"DevTools listening on (ws://\S+)")


def chromium_path() -> str | None:
    for path in CHROMIUM_PATHS:
        if Path(path).exists():
            return path
    return shutil.which("chromium")


def _devtools_url(fd: int, timeout_s: float) -> str:
    """Read Chromium's stderr until "DevTools listening on ws://..."; blocking (a thread)."""
    deadline = time.monotonic() + timeout_s
    seen = b""
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            raise BrowserError(f"chromium exited before DevTools listened: {seen[-500:]!r}")
        seen += chunk
        match = _LISTENING.search(seen)
        if match:
            return match.group(1).decode()
    raise BrowserError(f"chromium's DevTools did not listen within {timeout_s} s")


class BrowserError(Exception):
    """The browser did not start, or a DevTools call failed."""


class Browser:
    """One headless Chromium process; :meth:`open` gives a :class:`Page`."""

    def __init__(self, executable: str | None = None) -> None:
        path = executable or chromium_path()
        if path is None:
            raise BrowserError("chromium is not installed: apt-get install chromium")
        self._path = path
        self._profile = tempfile.TemporaryDirectory(prefix="softap-chromium-")
        self._proc: asyncio.subprocess.Process | None = None
        self._session: aiohttp.ClientSession | None = None
        self.http_url = ""

    async def __aenter__(self) -> Self:
        # Chromium's stderr goes to a pipe of our own that is read (in a thread) only until
        # DevTools says where it listens, then closed: an asyncio pipe transport would stay
        # open as long as any Chromium child process holds the other end.
        read_fd, write_fd = os.pipe()
        try:
            self._proc = await asyncio.create_subprocess_exec(
                self._path,
                *FLAGS,
                f"--user-data-dir={self._profile.name}",
                "about:blank",
                stdout=asyncio.subprocess.DEVNULL,
                stderr=write_fd,
            )
        finally:
            os.close(write_fd)
        try:
            ws_url = await asyncio.to_thread(_devtools_url, read_fd, 30.0)
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        finally:
            os.close(read_fd)
        self.http_url = "http://" + ws_url.split("/")[2]
        self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
        if self._proc is not None and self._proc.returncode is None:
            self._proc.terminate()
            try:
                async with asyncio.timeout(10):
                    await self._proc.wait()
            except TimeoutError:
                self._proc.kill()
                await self._proc.wait()
        self._profile.cleanup()

    async def open(self, url: str) -> Page:
        """A new tab at ``url``, loaded (the load event fired)."""
        assert self._session is not None
        async with self._session.put(f"{self.http_url}/json/new?about:blank") as resp:
            target = await resp.json()
        ws = await self._session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0)
        page = Page(ws)
        page.start()
        await page.call("Page.enable")
        await page.call("Runtime.enable")
        loaded = page.expect("Page.loadEventFired")
        await page.call("Page.navigate", url=url)
        async with asyncio.timeout(30):
            await loaded
        return page


class Page:
    """One tab: DevTools calls, JavaScript evaluation, clicks, screenshots."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._calls: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._waiters: dict[str, list[asyncio.Future[dict[str, Any]]]] = {}
        #: console messages and uncaught exceptions, for assertions and failure output
        self.console: list[str] = []
        self.errors: list[str] = []
        self._reader: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        async for msg in self._ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            if "id" in data:
                fut = self._calls.pop(data["id"], None)
                if fut is not None and not fut.done():
                    fut.set_result(data)
                continue
            method = data.get("method", "")
            params = data.get("params", {})
            if method == "Runtime.consoleAPICalled":
                self.console.append(
                    " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
                )
            elif method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                self.errors.append(
                    details.get("exception", {}).get("description") or details.get("text", "")
                )
            for fut in self._waiters.pop(method, []):
                if not fut.done():
                    fut.set_result(params)

    def expect(self, method: str) -> asyncio.Future[dict[str, Any]]:
        """A future for the next ``method`` event (create it before causing the event)."""
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(method, []).append(fut)
        return fut

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        msg_id = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._calls[msg_id] = fut
        await self._ws.send_str(json.dumps({"id": msg_id, "method": method, "params": params}))
        async with asyncio.timeout(30):
            reply = await fut
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    async def evaluate(self, expression: str) -> Any:
        """The JSON value of ``expression`` (promises are awaited)."""
        result = await self.call(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"{expression[:80]}: {text}")
        return result["result"].get("value")

    async def wait_for(self, condition: str, timeout_s: float = 15.0) -> Any:
        """Wait until the JS expression ``condition`` is truthy; returns its value.

        The check runs in the page on every animation frame, so it sees a change as soon
        as the page has rendered it.
        """
        script = f"""new Promise((resolve, reject) => {{
            const end = performance.now() + {timeout_s * 1000};
            const check = () => {{
                let value;
                try {{ value = ({condition}); }} catch (e) {{ value = undefined; }}
                if (value) return resolve(value);
                if (performance.now() > end)
                    return reject(new Error("timed out: " + {json.dumps(condition)}));
                requestAnimationFrame(check);
            }};
            check();
        }})"""
        return await self.evaluate(script)

    async def click(self, selector: str) -> None:
        """A real mouse click in the middle of the first element matching ``selector``."""
        box = await self.wait_for(
            f"""(() => {{ const e = document.querySelector({json.dumps(selector)});
                if (!e) return null; e.scrollIntoView({{block: "center"}});
                const r = e.getBoundingClientRect();
                return r.width && r.height ? {{x: r.x + r.width / 2, y: r.y + r.height / 2}} : null;
            }})()"""
        )
        for kind in ("mousePressed", "mouseReleased"):
            await self.call(
                "Input.dispatchMouseEvent",
                type=kind,
                x=box["x"],
                y=box["y"],
                button="left",
                clickCount=1,
            )

    async def screenshot(self, path: Path) -> None:
        data = await self.call("Page.captureScreenshot", format="png")
        await asyncio.to_thread(path.write_bytes, base64.b64decode(data["data"]))

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self._ws.close()
