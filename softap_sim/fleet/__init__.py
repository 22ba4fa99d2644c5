"""A fleet: N emulated Photons in one process, each with its own identity, SSID and key.

``async with Fleet(100, cloud=service, key_pool=pool) as fleet:`` starts 100
:class:`~softap_sim.emulator.DeviceEmulator` s. Each device gets

* its own address: ``127.0.{hi}.{lo}`` (device ``i``: ``hi = 1 + i // 254``,
  ``lo = 1 + i % 254``, so device 0 is 127.0.1.1 and device 254 is 127.0.2.1), and on it
  the canonical ports (TCP 5609, HTTP 8080) -- Linux routes all of 127.0.0.0/8 to the
  loopback interface, so binding needs no set-up. Where extra loopback addresses do not
  exist (macOS without ``ifconfig lo0 alias``), the fleet falls back to port offsets on
  127.0.0.1: TCP ``5609 + i``, HTTP ``8080 + i`` (or free ports with port 0);
* its own listening sockets on those ports, or -- where the open-files limit is too low
  for two per device (``listeners="auto"`` decides; a container's hard limit of 20,000
  stops at ~9,500 devices) -- one shared socket per port for the whole fleet, which
  hands each connection to the device whose address was dialled (Linux;
  :mod:`softap_sim.listeners`: a device that is not listening then resets connections
  instead of refusing them);
* its own identity (device id, device code, hence SSID), unique within the fleet;
* its own RSA key, taken from a :class:`~softap_sim.keypool.KeyPool` (only missing
  keys are generated, in parallel worker processes);
* its own persistent state under ``<state_dir>/devices/<i>/`` (``device.json`` and
  ``device_key.pem``, the layout of ``softap-sim run``) when a state directory is given,
  otherwise in-memory state;
* a registration in the cloud (before power-on, batched into few transactions) and the
  cloud's endpoint and public key in its configuration, when a cloud is given;
* per-device scenario overrides: a fleet scenario file's ``[[devices]]`` tables.

Fleet scenario files are scenario files (see :mod:`softap_sim.scenario`) with extra
``[[devices]]`` tables; the texts (``description`` ...) are optional in them::

    name = "mixed-fleet"
    [device]                      # for every device, as in any scenario
    firmware = "1.5.2"

    [[devices]]                   # device 3 only (indices start at 0)
    index = 3
    scenario = "low-memory"       # optional: a shipped scenario or file, applied first
    [devices.memory]              # then any scenario table: device, memory, timing,
    app_ram_bytes = 40960         # radio, app, fault
    [[devices.fault]]
    kind = "no-reply"
    command = "device-id"

    [[devices]]
    index = [10, 11]              # a list of indices, and/or
    range = [20, 29]              # an inclusive range
    [devices.device]
    firmware = "0.6.4"

The package: :mod:`.core` (:class:`Fleet`), :mod:`.addresses` (addresses, ports,
listeners, the open-files limit), :mod:`.scenario` (fleet scenario files),
:mod:`.state_dirs` (identities, per-device state), :mod:`.registrar` (batched cloud
registrations); ``softap-sim fleet`` is :mod:`.cli` (its options: :mod:`.options`),
not imported here: a command line sits above what it runs.
"""

from softap_sim.fleet.addresses import (
    ADDRESS_MODES,
    DEFAULT_HOST_PATTERN,
    DEFAULT_HTTP_PORT,
    DEFAULT_TCP_PORT,
    LISTENER_MODES,
    Placement,
    choose_listeners,
    device_address,
    ensure_nofile,
    loopback_aliases_work,
    plan_addresses,
)
from softap_sim.fleet.core import DEFAULT_CONCURRENCY, Fleet, FleetDevice, StartReport
from softap_sim.fleet.scenario import DeviceOverride, FleetScenario, load_fleet_scenario
from softap_sim.fleet.state_dirs import DEVICES_DIR

__all__ = [
    "ADDRESS_MODES",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_HOST_PATTERN",
    "DEFAULT_HTTP_PORT",
    "DEFAULT_TCP_PORT",
    "DEVICES_DIR",
    "LISTENER_MODES",
    "DeviceOverride",
    "Fleet",
    "FleetDevice",
    "FleetScenario",
    "Placement",
    "StartReport",
    "choose_listeners",
    "device_address",
    "ensure_nofile",
    "load_fleet_scenario",
    "loopback_aliases_work",
    "plan_addresses",
]
