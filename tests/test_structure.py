"""The house rules of the code base, as measured by ``scripts/structure.py`` (issue 14).

No import cycle (type-only imports included), no import from a lower layer to a higher one
(the firmware model never imports the simulator, codecs never import transports, transports
never import the emulator), and no module over 500 lines. A change that breaks one of these
fails here with the cycle, the arrow or the module named.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

import pytest

from tests import paths


@pytest.fixture(scope="module")
def structure() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "structure", paths.REPO / "scripts" / "structure.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("structure", module)
    spec.loader.exec_module(module)
    return module


def test_no_import_cycles(structure: ModuleType) -> None:
    assert structure.cycles(structure.load()) == []


def test_imports_only_point_down(structure: ModuleType) -> None:
    assert structure.upward(structure.load()) == []


def test_no_module_over_500_lines(structure: ModuleType) -> None:
    big = {m.name: m.lines for m in structure.load().values() if m.lines > 500}
    assert big == {}


def test_the_measure_sees_a_cycle_and_an_upward_import(structure: ModuleType) -> None:
    """The checks above would pass on a tool that finds nothing; this one proves it finds."""
    modules = structure.load()
    fake = modules["firmware_model.device"]
    fake.imports = fake.imports | {"softap_sim.emulator"}
    assert ("firmware_model.device", "softap_sim.emulator") in structure.upward(modules)
    assert any(
        "firmware_model.device" in comp and "softap_sim.emulator" in comp
        for comp in structure.cycles(modules)
    )
