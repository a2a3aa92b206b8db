"""Hygiene gate: ruff lint and format over the tree (skipped when ruff is absent), and
one rule ruff cannot check: no temporary tensor passed to `_native.arg`."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUFF = shutil.which("ruff")


@pytest.mark.skipif(RUFF is None, reason="ruff is not installed (it is in the test extra)")
@pytest.mark.parametrize("args", [["check", "."], ["format", "--check", "."]])
def test_ruff(args):
    r = subprocess.run([RUFF, *args], cwd=ROOT, capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr


def test_no_temporary_is_passed_to_native_arg():
    """`_native.arg(t)` keeps only t's address: `arg(x.float())` frees the copy before the
    kernel reads it (it made the sparse SGD step segfault on a strided 8 MB gradient)."""
    import ast

    bad = []
    for path in [*(ROOT / "pydeepbench").rglob("*.py"), *(ROOT / "models").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            f = node.func if isinstance(node, ast.Call) else None
            if isinstance(f, ast.Attribute) and f.attr == "arg" and node.args:
                inner = node.args[0]
                # a method call that may return a new tensor (views, like t[lo:hi], share
                # storage with a live tensor and are fine)
                if isinstance(inner, ast.Call):
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not bad, f"bind the tensor to a name before _native.arg: {bad}"
