"""The import contracts of pyproject.toml (layers that only point down, no package's modules in a
circle) hold on the package, and still catch an upward import or a circle when one is added."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(tree: Path) -> subprocess.CompletedProcess:
    """lint-imports on the package in ``tree``, with ``tree``'s own pyproject.toml."""
    env = {**os.environ, "PYTHONPATH": str(tree)}  # this tree's package, not the installed one
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", str(tree / "pyproject.toml")],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_package_keeps_its_import_contracts():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    "module, line, contract",
    [
        # the foundation importing the command line: an arrow up the layers, and a circle
        ("schema.py", "from neuronscope import cli", "Layers point down BROKEN"),
        # two modules of one package importing each other, on no layer boundary
        ("explain/budget.py", "from neuronscope.explain import schedule", "circle BROKEN"),
        # the atlas reaching into the explain stage
        ("atlas/table.py", "from neuronscope.explain import workflow", "never the explain stage BROKEN"),
    ],
)
def test_an_added_upward_import_or_circle_breaks_a_contract(tmp_path, module, line, contract):
    shutil.copytree(ROOT / "neuronscope", tmp_path / "neuronscope", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "neuronscope" / module
    target.write_text(target.read_text() + f"\n{line}  # added by the test\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0 and contract in result.stdout, result.stdout + result.stderr
