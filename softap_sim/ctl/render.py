"""Control API replies as the short human text ``softap-sim ctl`` prints.

Pure functions from decoded JSON to lines, so the commands only fetch and print, and each
output can be read (and tested) without a running emulator. ``--json`` prints the reply
itself instead.
"""

from __future__ import annotations

from typing import Any


def fmt_bytes(n: Any) -> str:
    return f"{n:,} B" if isinstance(n, int) else "?"


def fault_line(f: dict[str, Any]) -> str:
    """One fault: ``#1 latency on version/tcp delay_ms=500 (2 time(s); seen 0, ...)``."""
    extras = " ".join(
        f"{k}={f[k]}"
        for k in ("delay_ms", "jitter_ms", "count", "outcome", "variant", "nbytes")
        if k in f
    )
    times = "for ever" if f.get("times") is None else f"{f['times']} time(s)"
    skip = f", after {f['skip']} skipped" if f.get("skip") else ""
    return (
        f"#{f.get('id')} {f.get('kind')} on {f.get('command')}/{f.get('transport')}"
        f"{' ' + extras if extras else ''} ({times}{skip}; seen {f.get('seen', 0)}, "
        f"applied {f.get('applied', 0)})"
    )


def short_state(s: dict[str, Any]) -> str:
    """The one line an action prints: state, LED and access point."""
    led = (s.get("led") or {}).get("text", "?")
    ap = "up" if s.get("access_point") is not None else "down"
    return f"state: {s.get('state')} (LED {led}); access point {ap}"


# -- ctl state -----------------------------------------------------------------------
def _access_point_line(s: dict[str, Any]) -> str:
    ap = s.get("access_point")
    if ap is None:
        return "AP           down"
    ports = s.get("ports") or {}
    tcp = "listening" if ap.get("tcp_listening") else "refusing"
    if ap.get("tcp_listening") and not ap.get("tcp_serving"):
        tcp = "accepting, never answering"
    http = "listening" if ap.get("http_listening") else "refusing"
    if ap.get("http_listening") and not ap.get("http_slots"):
        http = "listening, every command 500"
    gate = "  (below the memory gate)" if ap.get("below_memory_gate") else ""
    return f"AP           up: TCP :{ports.get('tcp')} {tcp}, HTTP :{ports.get('http')} {http}{gate}"


def _listening_line(health: dict[str, Any]) -> str:
    text = "gate passed" if health.get("gate_passed") else "gate FAILED"
    if health.get("refused"):
        text += ", listening refused"
    if health.get("failed_components"):
        text += ", failed: " + ", ".join(health["failed_components"])
    free = fmt_bytes(health.get("free_at_trigger_bytes"))
    return f"listening    {text} (free at trigger {free})"


def format_state(s: dict[str, Any]) -> str:
    """The snapshot as a short human summary."""
    led = (s.get("led") or {}).get("text", "?")
    lines = [
        f"state        {s.get('state')}  (LED {led})",
        f"device       {s.get('device_id')}  SSID {s.get('ssid')}  firmware {s.get('firmware')}",
        _access_point_line(s),
    ]
    heap = s.get("heap") or {}
    lines.append(
        f"heap         free {fmt_bytes(heap.get('free_bytes'))}, app RAM "
        f"{fmt_bytes(heap.get('app_ram_bytes'))}, gate {fmt_bytes(heap.get('gate_bytes'))} "
        f"({heap.get('gate_mode')})"
    )
    health = s.get("listening_health")
    if health is not None:
        lines.append(_listening_line(health))
    creds = s.get("credentials") or []
    stored = ", ".join(f"{c.get('ssid')} (ch {c.get('channel')})" for c in creds) or "none"
    lines.append(f"networks     {len(creds)} stored: {stored}")
    claimed = "yes" if s.get("claimed") else "no"
    code = "set" if s.get("claim_code_set") else "not set"
    lines.append(f"claim code   {code}; claimed: {claimed}")
    if s.get("last_join") is not None or s.get("join_attempts"):
        lines.append(f"last join    {s.get('last_join')} ({s.get('join_attempts')} attempt(s))")
    faults = s.get("faults") or []
    lines.append(f"faults       {len(faults) or 'none'}")
    lines += [f"  {fault_line(f)}" for f in faults]
    radio = s.get("radio") or []
    hidden = sum(1 for ap in radio if ap.get("hidden"))
    lines.append(f"radio        {len(radio)} network(s) in range ({hidden} hidden)")
    served = s.get("served") or {}
    lines.append(
        "served       " + (", ".join(f"{k} {v}" for k, v in sorted(served.items())) or "nothing")
    )
    lines.append(f"transcript   {s.get('transcript_seq', 0)} record(s)")
    return "\n".join(lines)


# -- the other read commands -----------------------------------------------------------
def state_lines(snapshot: dict[str, Any]) -> list[str]:
    return [format_state(snapshot)]


def heap_lines(heap: dict[str, Any]) -> list[str]:
    """``ctl heap``: the figures, then one line per listening-mode allocation."""
    free, boot = fmt_bytes(heap.get("free_bytes")), fmt_bytes(heap.get("heap_after_boot_bytes"))
    app, gate = fmt_bytes(heap.get("app_ram_bytes")), fmt_bytes(heap.get("gate_bytes"))
    mode = heap.get("gate_mode")
    lines = [f"free {free} of {boot} after boot; app RAM {app}; gate {gate} ({mode})"]
    lines += [
        f"  {row['bytes']:>6,} B  {row['component']:<14} {row['name']}"
        for row in heap.get("table", [])
    ]
    return lines


def event_lines(records: list[dict[str, Any]]) -> list[str]:
    """``ctl events``: one line per event, ``->`` published, ``<-`` received."""
    lines = []
    for r in records:
        arrow = "->" if r.get("direction") == "out" else "<-"
        handled = (
            ""
            if r.get("direction") == "out"
            else ("  (handled)" if r.get("handled") else "  (no subscription)")
        )
        lines.append(f"[{r.get('t', 0):9.3f}s] {arrow} {r.get('name')}  {r.get('data')!r}{handled}")
    return lines


def health_line(health: dict[str, Any]) -> str:
    states = ", ".join(f"{n} {s}" for s, n in health.get("states", {}).items())
    return f"{health.get('status')}: {health.get('devices')} devices ({states})"


def device_lines(devices: list[dict[str, Any]]) -> list[str]:
    return [
        f"{d['id']}  {d['ssid']:<16} {d['state']:<16} {d['host']}:{d['tcp_port']}" for d in devices
    ]


def radio_lines(radio: dict[str, Any]) -> list[str]:
    """``ctl radio``: the networks in range, then the scan pack names."""
    lines = []
    for ap in radio.get("networks", []):
        hidden = "  (hidden)" if ap.get("hidden") else ""
        lines.append(
            f"  {ap.get('ssid')!r:<36} ch {ap.get('channel'):>2}  {ap.get('rssi')} dBm"
            f"  sec {ap.get('security')}{hidden}"
        )
    lines.append("packs: " + ", ".join(sorted(radio.get("packs", {}))))
    return lines


def fault_lines(faults: list[dict[str, Any]]) -> list[str]:
    return [fault_line(fault) for fault in faults] or ["no active faults"]


__all__ = [
    "device_lines",
    "event_lines",
    "fault_line",
    "fault_lines",
    "fmt_bytes",
    "format_state",
    "health_line",
    "heap_lines",
    "radio_lines",
    "short_state",
    "state_lines",
]
