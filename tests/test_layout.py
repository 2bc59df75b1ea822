"""Imports point one way (CONTRIBUTING.md): each package imports only the packages below it, and nothing in the
suite imports from benchmarks/. Read from the source with ast, so a function-local import counts too."""

import ast

from conftest import REPO

# package -> the suite packages it may import (besides itself)
ALLOWED = {
    "utils": set(),
    "dataio": {"utils"},
    "models": {"utils"},
    "diffusion": {"models", "utils"},
    "evaluation": {"dataio", "diffusion", "models", "utils"},
    "training": {"dataio", "diffusion", "evaluation", "models", "utils"},
}
SUITE = set(ALLOWED) | {"benchmarks"}


def imported_packages(path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names & SUITE


def test_packages_import_only_the_layers_below_them():
    wrong = []
    for package, allowed in ALLOWED.items():
        for path in sorted((REPO / package).rglob("*.py")):
            extra = imported_packages(path) - allowed - {package}
            if extra:
                wrong.append(f"{path.relative_to(REPO)} imports {sorted(extra)}")
    assert not wrong, wrong


def test_nothing_in_the_suite_imports_benchmarks():
    commands = [p for p in REPO.glob("*.py")] + sorted((REPO / "scripts").glob("*.py"))
    packages = [p for package in ALLOWED for p in (REPO / package).rglob("*.py")]
    assert not [str(p.relative_to(REPO)) for p in commands + packages if "benchmarks" in imported_packages(p)]


# benchmarks/: one package (or module) per benchmark, shared helpers beside them
SHARED_BENCHMARK_MODULES = {"stats", "markdown", "commands", "entry", "fmnist_recipes"}


def benchmark_imports(path) -> set[str]:
    """The benchmarks.<name> parts `path` imports (absolute imports only; relative ones are refused below)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        modules = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        names |= {m.split(".")[1] for m in modules if m.startswith("benchmarks.")}
        if isinstance(node, ast.ImportFrom) and node.module == "benchmarks":
            names |= {a.name for a in node.names} - {"REPO"}
    return names


def test_benchmarks_import_one_way():
    """Shared modules import no benchmark, a benchmark imports no other benchmark, and every import of benchmark
    code is absolute (`from benchmarks.ttq.rows import ...`): no sys.path edits, no relative or bare sibling imports."""
    root = REPO / "benchmarks"
    stems = {p.stem for p in root.rglob("*.py")} - {"__init__", "__main__"}
    wrong = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        owner = rel.parts[0].removesuffix(".py")
        tree = ast.parse(path.read_text())
        if "sys.path" in path.read_text():
            wrong.append(f"{rel} edits sys.path")
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                wrong.append(f"{rel}: relative import")
            bare = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            wrong += [f"{rel}: bare import {m}" for m in bare if m and m.split(".")[0] in stems]
        others = benchmark_imports(path) - SHARED_BENCHMARK_MODULES - {owner}
        if owner in SHARED_BENCHMARK_MODULES:
            others = benchmark_imports(path) - SHARED_BENCHMARK_MODULES
        wrong += [f"{rel} imports benchmark {o}" for o in sorted(others)]
    assert not wrong, wrong
