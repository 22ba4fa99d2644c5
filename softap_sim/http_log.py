"""aiohttp's own error logging, made quiet and secret-free (the cloud API, the control API).

aiohttp logs every request its parser rejects (bad request line, header bytes, chunked
framing, a corrupt body encoding, …) with ``logger.exception``: a traceback at ERROR level
per malformed request, which buries everything else exactly when someone is debugging a
bad client, and whose message echoes the offending header line (an ``Authorization``
token). :class:`ProtocolLogger` is passed to ``web.AppRunner(logger=…)``.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError

#: malformed-request warnings per minute before they are only counted
MALFORMED_WARNINGS_PER_MINUTE = 20


class ProtocolLogger:
    """The ``logger`` of aiohttp's request handler, for errors outside any route.

    A parser rejection becomes one WARNING line without a traceback, its text redacted
    (the redacted detail at DEBUG, ``-vv``); anything else is passed on unchanged.
    """

    def __init__(
        self,
        target: logging.Logger,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = target
        self._clock = clock
        self._window_start = float("-inf")
        self._in_window = 0
        self._suppressed = 0

    def exception(self, msg: str, *args: Any, exc_info: Any = True, **kw: Any) -> None:
        bad_input = _client_fault(exc_info)
        if bad_input is not None:
            self._malformed(args[0] if args else "a client", bad_input)
            return
        self._log.error(msg, *args, exc_info=exc_info, **kw)

    def _malformed(self, peer: object, exc: HttpProcessingError) -> None:
        """One WARNING line per request, at most :data:`MALFORMED_WARNINGS_PER_MINUTE`
        a minute (a hostile client cannot flood the log); the rest are counted."""
        now = self._clock()
        if now - self._window_start >= 60.0:
            if self._suppressed:
                self._log.warning(
                    "cloud: %d more malformed HTTP requests in the last minute (not logged)",
                    self._suppressed,
                )
            self._window_start, self._in_window, self._suppressed = now, 0, 0
        if self._in_window >= MALFORMED_WARNINGS_PER_MINUTE:
            self._suppressed += 1
        else:
            self._in_window += 1
            self._log.warning("cloud: malformed HTTP request from %s: %s", peer, _short(exc))
        if self._log.isEnabledFor(logging.DEBUG):
            # the parser echoes the offending line: an Authorization header's token would
            # reach the log, so the detail is redacted text, never the raw exception
            self._log.debug("cloud: the parser's error in full: %s", redact_headers(str(exc)))

    def debug(self, msg: str, *args: Any, **kw: Any) -> None:
        self._log.debug(msg, *args, **kw)

    def warning(self, msg: str, *args: Any, **kw: Any) -> None:
        self._log.warning(msg, *args, **kw)

    def error(self, msg: str, *args: Any, **kw: Any) -> None:
        self._log.error(msg, *args, **kw)

    def info(self, msg: str, *args: Any, **kw: Any) -> None:
        self._log.info(msg, *args, **kw)

    def isEnabledFor(self, level: int) -> bool:  # logging.Logger's name
        return self._log.isEnabledFor(level)


def _client_fault(exc: object) -> HttpProcessingError | None:
    """The parser error behind ``exc`` (itself, or a cause: aiohttp wraps a corrupt body's
    decoding error in ``RequestPayloadError`` when it drains an unread body), else None."""
    seen = 0
    while isinstance(exc, BaseException) and seen < 8:
        if isinstance(exc, HttpProcessingError):
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


_SECRET_HEADER_RE = re.compile(
    r"(?i)((?:proxy-)?authorization|cookie|set-cookie|x-api-key)(\s*:\s*)[^\r\n']*"
)


def redact_headers(text: str) -> str:
    """``text`` with the values of credential-bearing headers replaced by ``<redacted>``."""
    return _SECRET_HEADER_RE.sub(r"\1\2<redacted>", text)


def _short(exc: HttpProcessingError) -> str:
    """``400, message: Invalid method …`` without the echoed bytes beyond a bound."""
    message = str(getattr(exc, "message", "") or exc).splitlines()[0] if str(exc) else ""
    name = type(exc).__name__
    return f"{name}: {redact_headers(message)[:160]!r}" if message else name
