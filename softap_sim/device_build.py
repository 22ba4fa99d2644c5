"""Building the :class:`~firmware_model.Device` an emulator runs, from its configuration.

Either from the state directory (identity, key and DCT loaded, or created on first use)
or in memory (identity from the seed, a given or fresh key). Kept apart from the
emulator so that what a device is made of reads in one place.
"""

from __future__ import annotations

import asyncio
import random

from firmware_model import Dct, Device, DeviceIdentity, DeviceKey, Fault, FaultPlan, Heap
from firmware_model.eras import ERAS
from softap_sim.config import SimConfig
from softap_sim.store import StateStore


async def build_device(cfg: SimConfig, store: StateStore | None) -> tuple[Device, bool]:
    """The device for ``cfg``, and whether its identity was created just now.

    Key generation and the state directory's file I/O run in a thread: a 1024-bit key
    takes tens of milliseconds, which a fleet starting thousands of devices would feel
    on its event loop.
    """
    rng = random.Random(cfg.seed)
    if store is not None:
        dct, key, created = await asyncio.to_thread(
            store.load_or_create,
            rng=rng,
            era=cfg.firmware,
            ssid_prefix=cfg.ssid_prefix,
            key_bits=cfg.key_bits,
        )
    else:
        identity = cfg.identity or DeviceIdentity.generate(
            rng, code_length=ERAS[cfg.firmware].device_code_length, ssid_prefix=cfg.ssid_prefix
        )
        dct = Dct(identity)
        if cfg.key is not None:
            key = cfg.key
        else:
            key = await asyncio.to_thread(DeviceKey.generate, cfg.key_bits)
        created = True
    plan = FaultPlan(rng=random.Random(cfg.seed if cfg.seed is not None else 0))
    for spec in cfg.faults:
        plan.add(Fault.from_mapping(spec))
    heap = Heap(
        heap_after_boot_bytes=cfg.heap_after_boot_bytes,
        app_ram_bytes=cfg.app_ram_bytes,
        gate_bytes=cfg.gate_bytes,
        gate_mode=cfg.gate_mode,
    )
    device = Device(
        dct,
        key,
        cfg.radio,
        cfg.firmware,
        heap=heap,
        timing=cfg.timing,
        faults=plan,
        cloud_available=cfg.cloud_available,
        app=cfg.app,
        cloud_link=cfg.cloud_endpoint is not None and cfg.server_public_key_pem is not None,
    )
    return device, created
