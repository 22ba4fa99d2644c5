"""bench_setup's ``--serve`` process: our fleet behind two pipes to the driver.

The parent hands this process two pipe ends: ready/claimed events go straight to the
node driver, recycle requests come straight back, so the bench process is not in the
loop of a setup. Its stdin takes ``go`` and ``stats``; closing it ends the process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
from collections.abc import Sequence
from typing import Any, Final

from benchlib import BenchError, announce, leave_sigint_to_parent, read_pipe
from setup_fleet import FleetHost


async def _serve(args: argparse.Namespace) -> None:
    import cProfile
    import logging

    # the library default: no logging configured, warnings only (the CLI logs every
    # command at INFO; that is not what is measured here)
    logging.getLogger("softap_sim").setLevel(logging.WARNING)
    loop = asyncio.get_running_loop()
    events_file = os.fdopen(args.events_fd, "wb", buffering=0)
    events, _ = await loop.connect_write_pipe(asyncio.Protocol, events_file)

    def emit(obj: dict[str, Any]) -> None:
        events.write(json.dumps(obj, separators=(",", ":")).encode() + b"\n")

    host = FleetHost(args, emit)
    profiler = cProfile.Profile() if args.profile_out else None
    try:
        try:
            info = await host.start()
        except BenchError as err:
            announce({"error": str(err)})
            return
        import softap_sim

        # where the devices' code came from: the parent checks a --baseline-rev server
        module = os.path.dirname(softap_sim.__file__)  # noqa: PTH120
        announce({"pid": os.getpid(), "module": module, **info})

        requests = await read_pipe(os.fdopen(args.requests_fd, "rb", buffering=0), limit=1 << 20)

        async def driver_requests() -> None:
            while line := await requests.readline():
                msg = json.loads(line)
                if msg.get("op") == "recycle":
                    host.recycle(int(msg["d"]))

        reader_task = loop.create_task(driver_requests())
        control = await read_pipe()
        while line := await control.readline():
            op = json.loads(line).get("op")
            if op == "go":
                if profiler is not None:
                    profiler.enable()
                host.go()
                announce({"reply": "go"})
            elif op == "stats":
                if profiler is not None:
                    profiler.disable()
                announce({"reply": host.stats()})
        reader_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader_task
    finally:
        if profiler is not None and args.profile_out:
            profiler.disable()
            profiler.dump_stats(args.profile_out)
        await host.close()
        events.close()


#: what-ifs measured as variants of ours (``--what-if A+B``), in the server process only
TWEAKS: Final = {
    "asyncio-loop": "asyncio's own event loop instead of uvloop (the default of 'softap-sim "
    "run' and 'fleet', softap_sim/event_loop.py): what the uvloop dependency buys",
    "no-record": "SimConfig(record=False): no in-memory transcript",
    "persistent": "a state directory per device: every DCT change written atomically (fsync)",
    "python-rsa": "DeviceKey's RSA-1024 CRT private operation with the builtin pow instead "
    "of gmpy2's GMP powmod (firmware_model.keys.use_powmod): what the gmpy2 dependency buys",
}


def apply_tweaks(tweaks: Sequence[str]) -> None:
    """Install the what-ifs that choose a different implementation, through public knobs."""
    if "python-rsa" in tweaks:
        from firmware_model.keys import use_powmod

        use_powmod("builtin")


def serve_main(args: argparse.Namespace) -> int:
    leave_sigint_to_parent()
    apply_tweaks(args.tweak)
    from softap_sim import event_loop

    # the loop 'softap-sim run' and 'fleet' use by default: uvloop when installed
    event_loop.run(_serve(args), "asyncio" if "asyncio-loop" in args.tweak else "auto")
    return 0
