"""The "Use it in your tests" example (README.md) runs as written, so it cannot rot.

Every fenced block preceded by ``<!-- file: NAME -->`` is written to ``NAME`` in a fresh
directory (configuration, ``conftest.py``, test module), and pytest runs it in a
subprocess with the plugin loaded through its entry point, as in a user's project.
"""

from __future__ import annotations

import os
import re

import pytest

from tests import paths

pytest_plugins = ["pytester"]

DOC = paths.REPO / "README.md"
FILE_BLOCK = re.compile(r"<!-- file: (\S+) -->\n```[a-z]*\n(.*?)^```", re.DOTALL | re.MULTILINE)


def example_files() -> dict[str, str]:
    return dict(FILE_BLOCK.findall(DOC.read_text(encoding="utf-8")))


def test_the_doc_names_its_example_files() -> None:
    files = example_files()
    assert set(files) == {"pyproject.toml", "conftest.py", "test_softap_example.py"}
    # the section shows the settings it claims to work with
    assert 'asyncio_mode = "strict"' in files["pyproject.toml"]
    assert 'filterwarnings = ["error"]' in files["pyproject.toml"]
    assert "--strict-markers" in files["pyproject.toml"]


def test_the_readme_example_passes(pytester: pytest.Pytester) -> None:
    files = example_files()
    for name, text in files.items():
        (pytester.path / name).write_text(text, encoding="utf-8")
    tests = len(re.findall(r"^(?:async )?def test_", files["test_softap_example.py"], re.M))
    extra: tuple[str, ...] = ()
    if os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
        extra = ("-p", "pytest_asyncio.plugin", "-p", "softap_sim.pytest_plugin")
    result = pytester.runpytest_subprocess(*extra, "-p", "no:cacheprovider", timeout=60)
    result.assert_outcomes(passed=tests)
    assert tests >= 6
