"""The layout rules of docs/architecture.md: imports flow one way between packages, packages stay
small, modules stay under 500 lines."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# package -> the project packages it may import (besides itself)
ALLOWED = {
    "common": set(),
    "inputs": {"common"},
    "quantization": {"common"},
    "accuracy": {"common"},
    "backends": {"common", "inputs", "quantization"},
    "harness": {"common", "inputs", "backends"},
    "reporting": {"common", "inputs", "harness"},
    "tasks": {"common", "inputs", "accuracy", "backends", "harness"},
    "mlsubmit": {"common", "inputs", "accuracy", "harness"},
}
ENTRY_POINTS = {"main", "SUT_offline", "SUT_server", "dataset", "processorca", "evaluation", "compliance",
                "submission"}
PROJECT = set(ALLOWED) | ENTRY_POINTS


def _project_imports(path: Path) -> set[str]:
    """Top-level names of the project's modules and packages that `path` imports, at any depth."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= {n.split(".")[0] for n in names} & PROJECT
    return found


def test_imports_flow_one_way():
    wrong = []
    for package, allowed in ALLOWED.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            extra = _project_imports(path) - allowed - {package}
            if extra:
                wrong.append(f"{path.relative_to(ROOT)} imports {sorted(extra)}")
    assert not wrong, "\n".join(wrong)


def test_no_package_imports_an_entry_point():
    wrong = [f"{p.relative_to(ROOT)} imports {sorted(_project_imports(p) & ENTRY_POINTS)}"
             for package in ALLOWED for p in (ROOT / package).rglob("*.py")
             if _project_imports(p) & ENTRY_POINTS]
    assert not wrong, "\n".join(wrong)


def test_packages_and_modules_stay_small():
    too_many = [str(d.relative_to(ROOT)) for d in ROOT.rglob("__init__.py")
                if not any(part.startswith(".") or part == "tests" for part in d.relative_to(ROOT).parts)
                and len([p for p in d.parent.glob("*.py") if p.name != "__init__.py"]) > 10]
    assert not too_many, f"packages with more than 10 modules: {too_many}"
    skip = {"tests", "benchmarks", "build"}
    too_long = [f"{p.relative_to(ROOT)}: {n} lines" for p in ROOT.rglob("*.py")
                if not skip & set(p.relative_to(ROOT).parts)
                and not any(part.startswith(".") for part in p.relative_to(ROOT).parts)
                and (n := len(p.read_text().splitlines())) > 500]
    assert not too_long, "modules over 500 lines: " + ", ".join(too_long)


def test_every_package_says_what_it_owns_and_may_import():
    for package in ALLOWED:
        doc = ast.get_docstring(ast.parse((ROOT / package / "__init__.py").read_text())) or ""
        assert "May import" in doc, f"{package}/__init__.py: docstring must say what it may import"
