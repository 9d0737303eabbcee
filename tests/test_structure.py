"""The package's shape: no import circles, short functions, one training package, docs that
point only to files in the repository.

Modules are read as text (``ast``), mapped to their import names through pyproject.toml's
``[tool.setuptools.package-dir]``; every import counts, function-local (lazy) ones included.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_FUNCTION_LINES = 60
OPTIMIZER = re.compile(r"(^|\.)optim\.(AdamW|Adam|SGD|RMSprop)$|^(AdamW|Adam|SGD)$")


def package_dirs() -> dict[str, Path]:
    """Import name -> folder, from pyproject.toml."""
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[tool.setuptools.package-dir]", 1)[1].split("\n[", 1)[0]
    return {
        name: ROOT / folder for name, folder in re.findall(r'"([\w.]+)"\s*=\s*"([\w/]+)"', section)
    }


def modules() -> dict[str, Path]:
    """Every module's import name -> file (the most specific package folder wins)."""
    found: dict[Path, str] = {}
    for name, folder in sorted(package_dirs().items(), key=lambda kv: -len(kv[0])):
        for path in folder.rglob("*.py"):
            parts = [p for p in path.relative_to(folder).with_suffix("").parts if p != "__init__"]
            found.setdefault(path.resolve(), ".".join([name, *parts]))
    return {module: path for path, module in found.items()}


def imports(module: str, path: Path, known: set[str]) -> set[str]:
    """The package modules ``module`` imports (absolute or relative, anywhere in the file)."""
    edges = set()
    package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".") if package else module.split(".")[:-1]
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            names = [base, *(f"{base}.{a.name}" for a in node.names)]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        edges |= {n for n in names if n in known and n != module}
    return edges


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


@pytest.fixture(scope="module")
def package() -> dict[str, Path]:
    return modules()


def test_no_import_circles(package):
    known = set(package)
    graph = {m: imports(m, p, known) for m, p in package.items()}
    assert cycles(graph) == []


def test_no_function_over_60_lines(package):
    long = [
        f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1})"
        for path in package.values()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert long == []


def test_optimisers_are_built_only_in_the_training_package(package):
    sites = {
        module
        for module, path in package.items()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call) and OPTIMIZER.search(ast.unparse(node.func))
    }
    assert sites and all(m.startswith("owsbench.training.") for m in sites), sites


def test_docs_point_only_to_files_in_the_repository(package):
    present = {p.name.lower() for p in ROOT.rglob("*.md") if ".venv" not in p.parts}
    texts = [p.read_text() for p in package.values()]
    texts += [p.read_text() for p in ROOT.rglob("*.md") if ".venv" not in p.parts]
    missing = {
        ref for text in texts for ref in re.findall(r"([\w./-]+\.md)\b", text)
        if ref.split("/")[-1].lower() not in present
    }  # fmt: skip
    assert missing == set()
