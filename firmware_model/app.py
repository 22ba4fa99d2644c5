"""The emulated user application: the cloud functions and variables it declares.

A real Photon app registers them with ``Particle.function``/``Particle.variable``; the
cloud learns them through Describe (types 1 bool, 2 int32, 4 string, 9 double —
cloud-api.md §8.4) and calls them over the device link. Scenario files declare them.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: REST type name -> Describe type code
TYPE_CODES = {"bool": 1, "int32": 2, "string": 4, "double": 9}
MAX_FUNCTION_NAME = 12  # USER_FUNC_KEY_LENGTH on the Photon
MAX_VARIABLE_NAME = 12


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    """``int fn(String arg)``: returns ``returns`` (or the argument's length)."""

    name: str
    returns: int = 1
    #: ``"constant"`` returns ``returns``; ``"length"`` returns ``len(arg)``
    mode: str = "constant"
    #: seconds the function takes (the cloud call waits; a long one times out)
    delay_s: float = 0.0
    #: never answers (the cloud call times out)
    hang: bool = False

    def call(self, arg: str) -> int:
        value = len(arg) if self.mode == "length" else self.returns
        return max(-(2**31), min(2**31 - 1, value))


@dataclass(frozen=True, slots=True)
class VariableSpec:
    name: str
    type: str
    value: Any

    def encode(self) -> bytes:
        """The wire form: int32 big-endian, double *little*-endian, bool 1 byte, string raw."""
        if self.type == "int32":
            return struct.pack(">i", int(self.value))
        if self.type == "double":
            return struct.pack("<d", float(self.value))
        if self.type == "bool":
            return b"\x01" if self.value else b"\x00"
        return str(self.value).encode("utf-8")


#: ``Particle.publish`` limits (Device OS: name 63 characters, data 622 bytes)
MAX_EVENT_NAME = 63
MAX_EVENT_DATA = 622
#: subscription scopes (``MY_DEVICES`` sends ``?u``; ``ALL_DEVICES``: public events too)
SCOPES = ("my_devices", "all_devices")


@dataclass(frozen=True, slots=True)
class EventSpec:
    """``Particle.publish(name, data, ttl, PRIVATE|PUBLIC)``, every ``period_s`` or on demand."""

    name: str
    data: str = ""
    #: seconds between publishes while online; 0 = only when asked (control API)
    period_s: float = 0.0
    private: bool = True
    ttl: int = 60


@dataclass(frozen=True, slots=True)
class Subscription:
    """``Particle.subscribe(prefix, handler, scope)``: events whose name starts with it."""

    prefix: str
    scope: str = "my_devices"

    def matches(self, name: str) -> bool:
        return name.startswith(self.prefix)


@dataclass(slots=True)
class UserApp:
    functions: dict[str, FunctionSpec] = field(default_factory=dict)
    variables: dict[str, VariableSpec] = field(default_factory=dict)
    events: dict[str, EventSpec] = field(default_factory=dict)
    subscriptions: list[Subscription] = field(default_factory=list)

    def subscribed(self, name: str) -> bool:
        """Whether an event of this name reaches the application's handlers."""
        return any(s.matches(name) for s in self.subscriptions)

    def describe(self) -> bytes:
        """The application Describe JSON: ``{"f":[...],"v":{name:type code}}``."""
        return json.dumps(
            {
                "f": sorted(self.functions),
                "v": {n: TYPE_CODES[v.type] for n, v in sorted(self.variables.items())},
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> UserApp:
        """``{"functions": {name: {...}}, "variables": {name: {"type":..., "value":...}},
        "events": {name: {...}}, "subscriptions": [{"prefix": ..., "scope": ...}]}``."""
        unknown = set(data) - {"functions", "variables", "events", "subscriptions"}
        if unknown:
            raise ValueError(
                f"unknown app key(s) {sorted(unknown)}: use functions, variables, events, "
                "subscriptions"
            )
        app = cls()
        for name, spec in (data.get("functions") or {}).items():
            app.functions[name] = _function(name, spec)
        for name, spec in (data.get("variables") or {}).items():
            app.variables[name] = _variable(name, spec)
        events = data.get("events") or {}
        if not isinstance(events, Mapping):
            raise ValueError("[app.events] must be a table of event tables")
        for name, spec in events.items():
            app.events[name] = event_spec(name, spec)
        subs = data.get("subscriptions") or []
        if not isinstance(subs, list):
            raise ValueError(
                "app 'subscriptions' must be an array of tables ([[app.subscriptions]])"
            )
        app.subscriptions = [_subscription(i, spec) for i, spec in enumerate(subs)]
        return app


def _function(name: str, spec: Any) -> FunctionSpec:
    if not isinstance(spec, Mapping):
        raise ValueError(f"function {name!r} must be a table")
    if not name or len(name) > MAX_FUNCTION_NAME:
        raise ValueError(f"function name {name!r} must be 1-{MAX_FUNCTION_NAME} characters")
    unknown = set(spec) - {"returns", "mode", "delay_s", "hang"}
    if unknown:
        raise ValueError(f"function {name!r}: unknown key(s) {sorted(unknown)}")
    returns = spec.get("returns", 1)
    mode = spec.get("mode", "constant")
    delay = spec.get("delay_s", 0.0)
    hang = spec.get("hang", False)
    if not isinstance(returns, int) or isinstance(returns, bool):
        raise ValueError(f"function {name!r}: 'returns' must be an integer")
    if mode not in ("constant", "length"):
        raise ValueError(f"function {name!r}: 'mode' must be constant or length")
    if not isinstance(delay, int | float) or isinstance(delay, bool) or delay < 0:
        raise ValueError(f"function {name!r}: 'delay_s' must be a non-negative number")
    if not isinstance(hang, bool):
        raise ValueError(f"function {name!r}: 'hang' must be true or false")
    return FunctionSpec(name, returns, mode, float(delay), hang)


def check_event_name(name: Any) -> str:
    if not isinstance(name, str) or not name or len(name) > MAX_EVENT_NAME:
        raise ValueError(f"an event name must be 1-{MAX_EVENT_NAME} characters, got {name!r}")
    if not name.isprintable():
        raise ValueError(f"event name {name!r} must be printable text")
    return name


def check_event_data(data: Any) -> str:
    if not isinstance(data, str) or len(data.encode("utf-8", "surrogatepass")) > MAX_EVENT_DATA:
        raise ValueError(f"event data must be text of at most {MAX_EVENT_DATA} bytes")
    try:
        data.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("event data must be valid UTF-8 text") from None
    return data


def event_spec(name: str, spec: Any) -> EventSpec:
    """An event table (``[app.events.NAME]``) or a control API request, validated."""
    if not isinstance(spec, Mapping):
        raise ValueError(f"event {name!r} must be a table")
    check_event_name(name)
    unknown = set(spec) - {"data", "period_s", "private", "ttl"}
    if unknown:
        raise ValueError(f"event {name!r}: unknown key(s) {sorted(unknown)}")
    data = check_event_data(spec.get("data", ""))
    period = spec.get("period_s", 0.0)
    private = spec.get("private", True)
    ttl = spec.get("ttl", 60)
    if not isinstance(period, int | float) or isinstance(period, bool) or not 0 <= period < 1e9:
        raise ValueError(f"event {name!r}: 'period_s' must be a number of seconds >= 0")
    if 0 < period < 1:
        raise ValueError(
            f"event {name!r}: 'period_s' must be 0 (on demand) or >= 1 (the "
            "firmware allows about one publish a second)"
        )
    if not isinstance(private, bool):
        raise ValueError(f"event {name!r}: 'private' must be true or false")
    if not isinstance(ttl, int) or isinstance(ttl, bool) or not 0 <= ttl <= 0xFFFFFFFF:
        raise ValueError(f"event {name!r}: 'ttl' must be an integer number of seconds >= 0")
    return EventSpec(name, data, float(period), private, ttl)


def _subscription(index: int, spec: Any) -> Subscription:
    if not isinstance(spec, Mapping) or "prefix" not in spec:
        raise ValueError(f"subscription #{index + 1} must be a table with 'prefix'")
    unknown = set(spec) - {"prefix", "scope"}
    if unknown:
        raise ValueError(f"subscription #{index + 1}: unknown key(s) {sorted(unknown)}")
    prefix = spec["prefix"]
    if not isinstance(prefix, str) or not prefix or len(prefix) > MAX_EVENT_NAME:
        raise ValueError(
            f"subscription #{index + 1}: 'prefix' must be 1-{MAX_EVENT_NAME} characters"
        )
    scope = spec.get("scope", "my_devices")
    if scope not in SCOPES:
        raise ValueError(f"subscription #{index + 1}: 'scope' must be one of {list(SCOPES)}")
    return Subscription(prefix, scope)


def _variable(name: str, spec: Any) -> VariableSpec:
    if not isinstance(spec, Mapping) or set(spec) != {"type", "value"}:
        raise ValueError(f"variable {name!r} must be a table with 'type' and 'value'")
    if not name or len(name) > MAX_VARIABLE_NAME:
        raise ValueError(f"variable name {name!r} must be 1-{MAX_VARIABLE_NAME} characters")
    vtype, value = spec["type"], spec["value"]
    checks = {
        "int32": lambda v: isinstance(v, int) and not isinstance(v, bool) and -(2**31) <= v < 2**31,
        "double": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "bool": lambda v: isinstance(v, bool),
        "string": lambda v: isinstance(v, str) and len(v.encode()) <= 622,
    }
    if vtype not in checks:
        raise ValueError(f"variable {name!r}: 'type' must be one of {sorted(checks)}")
    if not checks[vtype](value):
        raise ValueError(f"variable {name!r}: value {value!r} is not a valid {vtype}")
    return VariableSpec(name, vtype, value)


def default_app() -> UserApp:
    """A small app in the spirit of the setup guides: a light switch and a few readings."""
    return UserApp(
        functions={
            "lightsOn": FunctionSpec("lightsOn", 1),
            "lightsOff": FunctionSpec("lightsOff", 0),
            "echoLen": FunctionSpec("echoLen", mode="length"),
        },
        variables={
            "temperature": VariableSpec("temperature", "double", 21.5),
            "uptime": VariableSpec("uptime", "int32", 42),
            "ready": VariableSpec("ready", "bool", True),
            "room": VariableSpec("room", "string", "livingRoom"),
        },
    )
