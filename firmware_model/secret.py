"""A small wrapper that keeps secrets out of reprs and therefore out of logs."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Secret:
    """Holds secret bytes (a Wi-Fi password, a claim code); ``repr`` never shows them."""

    value: bytes

    def __repr__(self) -> str:
        return f"Secret(<{len(self.value)} bytes>)"

    __str__ = __repr__

    def __len__(self) -> int:
        return len(self.value)

    def __bool__(self) -> bool:
        return bool(self.value)
