"""``softap-sim replay TRANSCRIPT``: re-send a recorded client session, report differences.

Every ``exchange`` record of a transcript (see :mod:`softap_sim.transcript`) is re-sent,
in order, to a running device, and the reply is compared byte for byte with the
recorded one:

* TCP: one new connection per exchange; the request bytes are written (no half-close,
  as real clients do) and the reply is read until the device closes, bounded by the
  timeout. A timeout is reported as *silence* (no reply / connection not closed).
* HTTP: one keep-alive connection per recorded ``conn`` id, opened when first needed
  and closed after its last exchange; exactly one response is read per request (its end
  found by the client codec, :mod:`softap_sim.protocol.client`; the library's 503 line,
  which has no blank line, until the device closes). A timeout is *silence*, and the
  connection is not reused after it.

Claim codes are masked in transcripts (``*`` of the same length) and re-sent as they
are: ``set`` still answers ``{"r":0}``. ``state`` records are not sent; they are shown as
context. With ``ignore_id`` the device id and public key are left out of the comparison
(:func:`normalize_ids`). An exchange whose recorded ``delivery`` was a fault counts as
the same when the replayed device behaves as that fault did on the wire.

Exit status of the command: 0 all exchanges the same, 1 differences (or silence, or a
connection error), 2 the transcript cannot be read.

The modules: :mod:`~softap_sim.replay.records` (reading transcripts),
:mod:`~softap_sim.replay.wire` (re-sending), :mod:`~softap_sim.replay.compare` (bytes),
:mod:`~softap_sim.replay.results` (judging, the report), :mod:`~softap_sim.replay.runner`
(:func:`replay` and the command line).
"""

from __future__ import annotations

from softap_sim.replay.compare import ID_PLACEHOLDER, KEY_PLACEHOLDER, Diff, escape, normalize_ids
from softap_sim.replay.records import Exchange, TranscriptError, load_transcript, parse_exchange
from softap_sim.replay.results import (
    DIFFERENT,
    ERROR,
    EXIT_DIFFERENT,
    EXIT_SAME,
    EXIT_UNREADABLE,
    SAME,
    SILENCE,
    ExchangeResult,
    ReplayReport,
)
from softap_sim.replay.runner import add_parser, replay, replay_main

__all__ = [
    "DIFFERENT",
    "ERROR",
    "EXIT_DIFFERENT",
    "EXIT_SAME",
    "EXIT_UNREADABLE",
    "ID_PLACEHOLDER",
    "KEY_PLACEHOLDER",
    "SAME",
    "SILENCE",
    "Diff",
    "Exchange",
    "ExchangeResult",
    "ReplayReport",
    "TranscriptError",
    "add_parser",
    "escape",
    "load_transcript",
    "normalize_ids",
    "parse_exchange",
    "replay",
    "replay_main",
]
