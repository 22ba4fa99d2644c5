"""What the device factories take (``make_softap_device`` and its sync twin) and do with it.

The two factory types are what a test annotates its fixture argument with; the
:class:`ConfigBuilder` turns one call's arguments into the device's config and ports, the
same way for both factories: the test's ``softap_config`` (or ``config=``), the marker's
settings, ``scenario=``, then the ``SimConfig`` field overrides. Every further device of a
test gets its own identity, still reproducible from the seed.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import pytest

if TYPE_CHECKING:
    from firmware_model import Clock
    from softap_sim.config import SimConfig
    from softap_sim.emulator import DeviceEmulator
    from softap_sim.testing.cloud import SoftapCloud
    from softap_sim.testing.marker import SoftapSettings
    from softap_sim.threaded import ThreadedEmulator


class ListenAddress(NamedTuple):
    """Where devices listen (``softap_listen_address``); port 0 picks a free port."""

    host: str = "127.0.0.1"
    tcp_port: int = 0
    http_port: int = 0

    @classmethod
    def from_env(cls) -> ListenAddress:
        """``$SOFTAP_SIM_HOST`` / ``$SOFTAP_SIM_TCP_PORT`` / ``$SOFTAP_SIM_HTTP_PORT``; a bad
        port fails the test that asked (the defaults: 127.0.0.1 and 0)."""
        return cls(
            os.environ.get("SOFTAP_SIM_HOST", "").strip() or "127.0.0.1",
            _env_port("SOFTAP_SIM_TCP_PORT"),
            _env_port("SOFTAP_SIM_HTTP_PORT"),
        )


def _env_port(name: str) -> int:
    text = os.environ.get(name, "").strip()
    if not text:
        return 0
    if not text.isdigit() or int(text) > 65535:
        pytest.fail(f"${name}={text!r} is not a port number (0-65535)", pytrace=False)
    return int(text)


class SoftapDeviceFactory(Protocol):
    """``make_softap_device``: start a device; the fixture closes it at teardown.

    Args:
        config: the base settings (default: ``softap_config`` plus the marker's).
        scenario: a shipped scenario name or TOML file, applied on top.
        cloud: ``softap_cloud``: register the device and give it the cloud's endpoint
            and server key, so that it can connect and claim after ``connect-ap``.
        clock: e.g. a :class:`~firmware_model.ManualClock` (time moves with ``advance``).
        tcp_port, http_port: fixed ports (default: ``softap_listen_address``).
        **overrides: :class:`~softap_sim.config.SimConfig` fields, applied last.
    """

    async def __call__(
        self,
        config: SimConfig | None = None,
        *,
        scenario: str | None = None,
        cloud: SoftapCloud | None = None,
        clock: Clock | None = None,
        tcp_port: int | None = None,
        http_port: int | None = None,
        **overrides: Any,
    ) -> DeviceEmulator: ...


class SoftapSyncDeviceFactory(Protocol):
    """``make_softap_device_sync``: the same for plain tests; returns ThreadedEmulators."""

    def __call__(
        self,
        config: SimConfig | None = None,
        *,
        scenario: str | None = None,
        clock: Clock | None = None,
        tcp_port: int | None = None,
        http_port: int | None = None,
        **overrides: Any,
    ) -> ThreadedEmulator: ...


class ConfigBuilder:
    """Turns factory arguments into a config and ports (shared by both factories)."""

    def __init__(self, settings: SoftapSettings, base: SimConfig, address: ListenAddress) -> None:
        self.settings = settings
        self.base = base
        self.address = address
        self.made = 0

    def next_device(
        self,
        config: SimConfig | None,
        scenario: str | None,
        overrides: Mapping[str, Any],
        tcp_port: int | None,
        http_port: int | None,
    ) -> tuple[SimConfig, int, int]:
        """The config and the TCP and HTTP ports of the factory's next device.

        Fixed ports from ``softap_listen_address`` go to the first device only.
        """
        index, self.made = self.made, self.made + 1
        cfg = self._config(index, config, scenario, overrides)
        first = index == 0
        return (
            cfg,
            tcp_port if tcp_port is not None else (self.address.tcp_port if first else 0),
            http_port if http_port is not None else (self.address.http_port if first else 0),
        )

    def _config(
        self,
        index: int,
        config: SimConfig | None,
        scenario: str | None,
        overrides: Mapping[str, Any],
    ) -> SimConfig:
        from softap_sim.config import SimConfig

        fields = {f.name for f in dataclasses.fields(SimConfig)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise TypeError(
                f"make_softap_device() got an unknown setting {unknown[0]!r}; "
                f"SimConfig fields: {', '.join(sorted(fields))}"
            )
        cfg = self.settings.apply(config if config is not None else self.base)
        if scenario is not None:
            from softap_sim.scenario import load_scenario

            cfg = load_scenario(scenario).apply(cfg)
        if index > 0 and config is None and not {"seed", "identity"} & set(overrides):
            # every further device of the test gets its own identity, still reproducible
            cfg = dataclasses.replace(
                cfg, seed=None if cfg.seed is None else cfg.seed + index, identity=None
            )
        return dataclasses.replace(cfg, **overrides) if overrides else cfg
