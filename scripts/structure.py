"""Measure the code base's shape: module sizes, import cycles, upward imports, long functions.

Why: issue 14 asks for "no module over ~500 lines, 0 import cycles", measured before and after
a restructuring, and for the layering to hold (the firmware model never imports the simulator,
codecs never import transports). This script is that measurement, for CI and closing notes.

Imports are read with ``ast`` from every module of ``firmware_model`` and ``softap_sim``.
Function-level imports count: an import moved into a function to dodge a cycle is still a
cycle. Imports under ``if TYPE_CHECKING:`` count too by default: they never run, but a
type-level cycle is still two modules that cannot be read one without the other;
``--runtime-only`` leaves them out.

Usage: ``python scripts/structure.py [--json] [--max-lines N] [--check]``; ``--check`` exits 1
when a cycle or an upward import exists or a module is over the limit.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("firmware_model", "softap_sim")

# Lower number = lower layer. A module may import its own layer or lower ones only. Modules not
# listed sit at layer 4 (the emulator, fleet, control and the rest of the simulator's core).
LAYERS: tuple[tuple[str, int], ...] = (
    ("firmware_model", 0),
    # building blocks with no knowledge of devices: errors, files, codecs, logging, timers
    ("softap_sim.errors", 1),
    ("softap_sim.atomic", 1),
    ("softap_sim.lifetime", 1),
    ("softap_sim.net", 1),
    ("softap_sim.protocol", 1),
    ("softap_sim.transcript", 1),
    ("softap_sim.log", 1),
    ("softap_sim.http_log", 1),
    ("softap_sim.scheduler", 1),
    ("softap_sim.argtypes", 1),
    ("softap_sim.store", 1),
    ("softap_sim.keypool", 1),
    ("softap_sim.config", 2),
    ("softap_sim.dispatch", 2),
    # the I/O around the model and the codecs
    ("softap_sim.transports", 3),
    ("softap_sim.cloud", 3),
    # layer 4: everything else (emulator, registry, fleet, control, replay, live view)
    ("softap_sim.testing", 5),
    # entry points: command lines and the pytest plugin
    ("softap_sim.pytest_plugin", 6),
    ("softap_sim.cli", 6),
    ("softap_sim.ctl", 6),
    ("softap_sim.cloud_cli", 6),
    ("softap_sim.discover", 6),
    ("softap_sim.fleet.cli", 6),
    ("softap_sim.__main__", 7),
)


def layer_of(module: str) -> int:
    for prefix, layer in LAYERS:
        if module == prefix or module.startswith(prefix + "."):
            return layer
    return 4


@dataclass
class Module:
    name: str
    path: Path
    lines: int
    imports: set[str] = field(default_factory=set)
    long_functions: list[tuple[str, int]] = field(default_factory=list)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(current: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = current.split(".")
    if not is_package:
        base = base[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(
    tree: ast.Module, current: str, is_package: bool, known: set[str], typing_too: bool
) -> set[str]:
    found: set[str] = set()

    def target(name: str) -> str | None:
        while name:
            if name in known:
                return name
            name = name.rpartition(".")[0]
        return None

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test) and not typing_too:
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                hit = target(alias.name)
                if hit:
                    found.add(hit)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(current, is_package, node)
            for alias in node.names:
                hit = target(f"{base}.{alias.name}") or target(base)
                if hit:
                    found.add(hit)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    found.discard(current)
    return found


def _long_functions(tree: ast.Module, limit: int) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (child.end_lineno or child.lineno) - child.lineno + 1
                if length > limit:
                    out.append((prefix + child.name, length))
                visit(child, prefix + child.name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")

    visit(tree, "")
    return out


def load(function_limit: int = 50, typing_too: bool = True) -> dict[str, Module]:
    paths = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]
    known = {module_name(p) for p in paths}
    modules: dict[str, Module] = {}
    for path in paths:
        name = module_name(path)
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text, filename=str(path))
        mod = Module(name, path, text.count("\n"))
        mod.imports = _imports(tree, name, path.name == "__init__.py", known, typing_too)
        # A package's own __init__ is imported implicitly by its submodules; not an edge.
        mod.imports = {i for i in mod.imports if not name.startswith(i + ".")}
        mod.long_functions = _long_functions(tree, function_limit)
        modules[name] = mod
    return modules


def cycles(modules: dict[str, Module]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    sys.setrecursionlimit(10_000)

    def strong(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(modules[v].imports):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp: list[str] = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(modules):
        if v not in index:
            strong(v)
    return out


def upward(modules: dict[str, Module]) -> list[tuple[str, str]]:
    return sorted(
        (m.name, i) for m in modules.values() for i in m.imports if layer_of(i) > layer_of(m.name)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--max-lines", type=int, default=500, help="module size limit (default 500)"
    )
    parser.add_argument("--function-lines", type=int, default=50, help="long-function limit")
    parser.add_argument(
        "--runtime-only", action="store_true", help="ignore imports under TYPE_CHECKING"
    )
    parser.add_argument(
        "--check", action="store_true", help="exit 1 on any cycle, upward import or big module"
    )
    args = parser.parse_args(argv)
    modules = load(args.function_lines, typing_too=not args.runtime_only)
    big = sorted(
        ((m.name, m.lines) for m in modules.values() if m.lines > args.max_lines),
        key=lambda x: -x[1],
    )
    cyc = cycles(modules)
    up = upward(modules)
    longf = sorted(
        ((f"{m.name}.{f}", n) for m in modules.values() for f, n in m.long_functions),
        key=lambda x: -x[1],
    )
    report = {
        "modules": len(modules),
        "lines": sum(m.lines for m in modules.values()),
        "largest": sorted(((m.name, m.lines) for m in modules.values()), key=lambda x: -x[1])[:10],
        "over_limit": big,
        "cycles": cyc,
        "upward_imports": up,
        "long_functions": len(longf),
        "long_function_list": longf,
    }
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(f"{report['modules']} modules, {report['lines']} lines")
        print(f"over {args.max_lines} lines: {len(big)}")
        for name, n in big:
            print(f"  {n:5d} {name}")
        print(f"import cycles: {len(cyc)}")
        for comp in cyc:
            print("  " + " <-> ".join(comp))
        print(f"upward imports: {len(up)}")
        for a, b in up:
            print(f"  {a} -> {b}")
        print(f"functions over {args.function_lines} lines: {len(longf)}")
        for name, n in longf:
            print(f"  {n:4d} {name}")
    if args.check and (big or cyc or up):
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
