"""``async with obj:`` for the objects that own sockets or tasks: start, then always close.

Emulators, fleets, the cloud's REST server and the mDNS responders all follow the same
contract (start on entry, close on exit whatever the block raised, both idempotent);
one base class states it once.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self


class AsyncLifetime:
    """Base for objects with ``async start()`` and ``async close()``."""

    async def start(self) -> Any:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
