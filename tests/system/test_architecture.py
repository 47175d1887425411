"""The layering of the package (issue 26): imports go one way, cli -> train -> engine -> core, the
config depends on no other part of the core but the method registry and the field checker, and every
module has its own test file. Read from
the source (every import, at module level or inside a function), not from a running process."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"


def _imports() -> dict[str, set[str]]:
    """module -> the supermask modules it imports anywhere in its file (TYPE_CHECKING blocks excepted)."""
    out: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        out[name] = _imported(ast.parse(path.read_text()), set())
    return {m: {d for d in deps if d in out and d != m} for m, deps in out.items()}


def _imported(node: ast.AST, found: set[str]) -> set[str]:
    if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test):
        return found
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("supermask"):
        found.add(node.module)
        found.update(f"{node.module}.{a.name}" for a in node.names)
    if isinstance(node, ast.Import):
        found.update(a.name for a in node.names if a.name.startswith("supermask"))
    for child in ast.iter_child_nodes(node):
        _imported(child, found)
    return found


def _layer(module: str) -> int:
    """0 core (and the leaves it uses), 1 engine, 2 train / multitask / sweep / report, 3 cli."""
    if module.startswith("supermask.engine"):
        return 1
    if module in ("supermask.train", "supermask.multitask", "supermask.sweep", "supermask.report"):
        return 2
    if module in ("supermask.cli", "supermask.__main__"):
        return 3
    return 0


def test_imports_go_one_way() -> None:
    upward = [
        f"{m} imports {d}"
        for m, deps in _imports().items()
        if m != "supermask"  # the package's __init__ re-exports the public API
        for d in deps
        if _layer(d) > _layer(m)
    ]
    assert upward == []


def test_the_core_has_no_import_cycle_even_inside_functions() -> None:
    graph = {m: {d for d in deps if d.startswith("supermask.core")} for m, deps in _imports().items()}
    core = {m: deps for m, deps in graph.items() if m.startswith("supermask.core")}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for d in core.get(start, ()):
            if goal.startswith(d + ".") or d.startswith(goal + "."):
                continue  # a package and its own modules
            if d == goal or (d not in seen and (seen.add(d) or reaches(d, goal, seen))):
                return True
        return False

    cycles = [m for m in core if reaches(m, m, set())]
    assert cycles == []


def test_the_config_depends_only_on_the_registry_and_the_field_checker() -> None:
    deps = {d for d in _imports()["supermask.core.config"] if not d.startswith("supermask.core.config.")}
    modules = {d for d in deps if d in _imports()}
    assert modules <= {"supermask.core.registry", "supermask.core.fields", "supermask.core.values", "supermask.errors"}


def _test_file_of(module: Path) -> Path:
    """src/supermask/a/b.py -> tests/a/test_b.py; a package's own code (its __init__) -> tests/a/test_a.py."""
    rel = module.relative_to(SRC / "supermask")
    name = rel.parent.name if rel.name == "__init__.py" else rel.stem
    return SRC.parent / "tests" / rel.parent / f"test_{name}.py"


def test_every_module_has_its_own_test_file() -> None:
    """The tests mirror the package: a module's unit tests are in one file named after it (a package's
    __init__ that only re-exports, and __main__, have none); what crosses modules is in tests/system/."""
    missing = []
    for module in sorted((SRC / "supermask").rglob("*.py")):
        if module.name == "__main__.py":
            continue
        if module.name == "__init__.py" and not re.search(r"^(def|class) ", module.read_text(), re.M):
            continue
        test_file = _test_file_of(module)
        if not test_file.is_file() or "def test_" not in test_file.read_text():
            missing.append(f"{module.relative_to(SRC.parent)} -> {test_file.relative_to(SRC.parent)}")
    assert not missing, "modules without their test file:\n" + "\n".join(missing)
