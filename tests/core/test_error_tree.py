"""Every error type of the project derives from one base (issue 14 item 4).

``firmware_model.errors.SoftapSimError`` is the root (the lowest layer owns it);
``FirmwareError`` and ``softap_sim.errors.SimulatorError`` are its two branches. The test
imports every module of both packages and checks each exception class they define, so a
new ``class XError(Exception)`` fails here.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import firmware_model
import softap_sim
from firmware_model.errors import FirmwareError, SoftapSimError
from softap_sim.errors import SimulatorError

#: modules that need an optional extra or only run inside a test harness
SKIP = {"softap_sim.__main__"}


def _modules() -> list[str]:
    names = []
    for package in (firmware_model, softap_sim):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if info.name not in SKIP:
                names.append(info.name)
    return names


def _exception_classes() -> list[type[BaseException]]:
    found = []
    for name in _modules():
        module = importlib.import_module(name)
        for _attr, obj in inspect.getmembers(module, inspect.isclass):
            if obj.__module__ == name and issubclass(obj, BaseException):
                found.append(obj)
    return found


def test_the_tree() -> None:
    assert issubclass(FirmwareError, SoftapSimError)
    assert issubclass(SimulatorError, SoftapSimError)
    assert not issubclass(FirmwareError, SimulatorError)


@pytest.mark.parametrize("cls", _exception_classes(), ids=lambda c: f"{c.__module__}.{c.__name__}")
def test_every_error_derives_from_the_root(cls: type[BaseException]) -> None:
    assert issubclass(cls, SoftapSimError), f"{cls.__module__}.{cls.__name__}: {cls.__mro__}"
    if cls is not SoftapSimError:  # the root itself sits in firmware_model.errors
        assert issubclass(cls, FirmwareError) == cls.__module__.startswith("firmware_model")
