"""The client codec's errors: a reply that is not what the client expected."""

from __future__ import annotations

from softap_sim.errors import SimulatorError


class SoftapClientError(SimulatorError):
    """The device's reply is not what the client expected (the message shows it)."""


class ChunkedEncodingError(SoftapClientError, ValueError):
    """A chunked reply's framing is broken: a chunk-size line that is not hexadecimal, or
    chunk data not followed by CR LF. A ``ValueError`` too, like the ``int()`` it replaces."""
