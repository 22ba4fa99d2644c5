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


@dataclass(slots=True)
class UserApp:
    functions: dict[str, FunctionSpec] = field(default_factory=dict)
    variables: dict[str, VariableSpec] = field(default_factory=dict)

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
        """``{"functions": {name: {...}}, "variables": {name: {"type":..., "value":...}}}``."""
        unknown = set(data) - {"functions", "variables"}
        if unknown:
            raise ValueError(f"unknown app key(s) {sorted(unknown)}: use functions, variables")
        app = cls()
        for name, spec in (data.get("functions") or {}).items():
            app.functions[name] = _function(name, spec)
        for name, spec in (data.get("variables") or {}).items():
            app.variables[name] = _variable(name, spec)
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
