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
