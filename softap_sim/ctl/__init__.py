"""``softap-sim ctl``: steer a running ``softap-sim run`` through its control API.

A small client of :mod:`softap_sim.control_api` built on the standard library only
(``urllib``, :mod:`softap_sim.control_client`), so it starts quickly and needs no event
loop::

    softap-sim ctl state                      # human summary; --json for the raw snapshot
    softap-sim ctl button --hold 10           # hold SETUP 10 s: clear stored networks
    softap-sim ctl power cycle                # or off / on
    softap-sim ctl app-ram 40k                # the application's RAM use (k = 1024)
    softap-sim ctl gate --bytes 22016 --mode refuse
    softap-sim ctl radio --pack unicode       # or --file networks.toml
    softap-sim ctl fault add no-reply --command version --transport tcp --times 1
    softap-sim ctl fault list | rm ID | clear
    softap-sim ctl transcript --since 10 --follow

The control URL comes from ``--control URL``, else ``$SOFTAP_SIM_CONTROL``, else
``http://127.0.0.1:5610``.

Wiring (``cli.py``)::

    from softap_sim import ctl
    ctl.add_parser(subparsers)          # registers "ctl" and its sub-commands
    ...
    if args.command == "ctl":
        return args.ctl_func(args)      # == ctl.ctl_main(args): runs the action, -> exit code

:func:`main` runs the same parser stand-alone (``python -m softap_sim.ctl state``).

The package: :mod:`~softap_sim.ctl.parser` (the parsers, :func:`ctl_main`),
:mod:`~softap_sim.ctl.commands` (one function per action) and
:mod:`~softap_sim.ctl.render` (replies as text).
"""

from __future__ import annotations

from softap_sim.control_client import CONTROL_ENV, DEFAULT_CONTROL_URL, DEVICE_ENV
from softap_sim.ctl.commands import FOLLOW_INTERVAL_S, CtlError
from softap_sim.ctl.parser import add_parser, build_parser, ctl_main, main
from softap_sim.ctl.render import format_state

__all__ = [
    "CONTROL_ENV",
    "DEFAULT_CONTROL_URL",
    "DEVICE_ENV",
    "FOLLOW_INTERVAL_S",
    "CtlError",
    "add_parser",
    "build_parser",
    "ctl_main",
    "format_state",
    "main",
]
