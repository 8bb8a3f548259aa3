"""The layering rules DESIGN.md states, checked on the source (imports only, via ast)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "sails"


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def _offenders(part: str, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    """Module -> the forbidden imports it makes, for a package folder or one module."""
    root = SRC / part
    bad = {}
    for path in [root] if root.is_file() else sorted(root.rglob("*.py")):
        hits = sorted(m for m in imports_of(path)
                      if any(m == f or m.startswith(f + ".") for f in forbidden))
        if hits:
            bad[str(path.relative_to(SRC))] = hits
    return bad


@pytest.mark.parametrize("folder, forbidden", [
    # job-side code: runs in CASA's Python, never opens the catalog or talks to a scheduler
    ("casa", ("sails.catalog", "sails.stages", "sails.flows", "sails.cli", "sails.execution",
              "sails.report", "prefect")),
    # stages build jobs; the steps run only inside the job
    ("stages", ("sails.casa.steps", "casatools", "casatasks")),
    # the stage table is pure data everyone may import
    ("pipeline.py", ("sails.catalog", "sails.stages", "sails.config", "sails.execution")),
    # the catalog knows nothing of what runs the stages
    ("catalog", ("sails.stages", "sails.execution", "sails.flows", "sails.casa", "sails.cli")),
])
def test_layering(folder, forbidden):
    assert _offenders(folder, forbidden) == {}


def test_the_job_contract_is_standard_library_only():
    """It is shipped to platform jobs: the standard library, and sails modules that are."""
    import sys

    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    todo, seen = ["sails.casa.contract"], set()
    while todo:
        mod = todo.pop()
        seen.add(mod)
        for name in imports_of(SRC.parent / (mod.replace(".", "/") + ".py")):
            if name.split(".")[0] == "sails":
                if (SRC.parent / (name.replace(".", "/") + ".py")).is_file() \
                        and name not in seen:
                    todo.append(name)
            else:
                assert name.split(".")[0] in stdlib, (mod, name)
    assert seen == {"sails.casa.contract", "sails.atomic"}


def test_backends_import_the_contract_not_each_other():
    assert _offenders("execution/base.py", ("sails.execution.local",
                                            "sails.execution.canfar")) == {}
