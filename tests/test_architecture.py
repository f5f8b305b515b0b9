"""The shape of the code: imports point down the package stack, modules and functions stay small,
no code outside ``ppo.py`` names PPO, and roles and task formats are defined once."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STACK = ("spice_env", "agents", "algorithms", "benchmarks", "spice_cli", "spice_verifiers")
"""Bottom to top: a package may import only those before it (and itself)."""
MAX_MODULE_LINES = 520
MAX_FUNCTION_LINES = 65
LONG_ON_PURPOSE = {("spice_cli/main.py", "build_parser")}  # the CLI's argument table


def modules() -> list[Path]:
    return sorted(p for package in STACK for p in (ROOT / package).rglob("*.py"))


def imported(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", STACK)
def test_imports_point_down_the_stack(package: str) -> None:
    above = set(STACK[STACK.index(package) + 1:])
    wrong = {str(path.relative_to(ROOT)): sorted(imported(ast.parse(path.read_text())) & above)
             for path in (ROOT / package).rglob("*.py")}
    assert not {name: found for name, found in wrong.items() if found}


def test_modules_and_functions_stay_small() -> None:
    long_modules, long_functions = [], []
    for path in modules():
        text = path.read_text()
        name = str(path.relative_to(ROOT))
        if text.count("\n") > MAX_MODULE_LINES:
            long_modules.append(name)
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES and (name, node.name) not in LONG_ON_PURPOSE:
                    long_functions.append(f"{name}:{node.name} ({length} lines)")
    assert not long_modules and not long_functions


def test_nothing_outside_ppo_names_it() -> None:
    naming = []
    for path in modules():
        if path.name == "ppo.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.id] if isinstance(node, ast.Name) else \
                [node.attr] if isinstance(node, ast.Attribute) else \
                [alias.name for alias in node.names] if isinstance(node, ast.ImportFrom) else []
            if any(n in ("PPO", "PPOConfig", "prepare_ppo") for n in names):
                naming.append(str(path.relative_to(ROOT)))
            if isinstance(node, ast.Compare) and any(
                    isinstance(c, ast.Constant) and c.value == "ppo" for c in node.comparators):
                naming.append(str(path.relative_to(ROOT)))
    # the registry lists the shipped algorithms by class
    assert sorted(set(naming)) == ["algorithms/registry.py"]


def test_roles_and_task_formats_are_defined_once() -> None:
    definitions: dict[str, list[str]] = {"Role": [], "TaskFormat": [], "TaskKind": []}
    for path in modules():
        for node in ast.parse(path.read_text()).body:
            targets = [node.target] if isinstance(node, ast.AnnAssign) else \
                node.targets if isinstance(node, ast.Assign) else []
            for target in targets:
                if isinstance(target, ast.Name) and target.id in definitions:
                    definitions[target.id].append(str(path.relative_to(ROOT)))
    assert definitions == {"Role": ["spice_env/types.py"], "TaskFormat": ["spice_env/types.py"],
                           "TaskKind": []}
