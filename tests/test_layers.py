"""The import-linter contracts in .importlinter hold: every module imports only from the layers below it
(cli -> api/demo -> report/notebook -> study -> analysis -> training -> track/models/data -> identity ->
config/io/stats -> families/datasets -> metrics -> schema -> yamlsafe -> safepath -> rundir -> jsonread ->
errors/version), counting imports inside functions too; and imports stand at the top of their module, where
the order of the layers can be read, except those of optional extras.

import-linter runs as a subprocess so that the package analysed is the one on this checkout's `src/`, whatever else is
imported in the test process."""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("importlinter", reason="import-linter is not installed (pip install -e '.[dev]')")

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "vitlab"
CONTRACTS = ROOT / ".importlinter"
#: Runs import-linter on the `vitlab` found first on PYTHONPATH; exit status 0 = every contract kept.
LINT = ("import sys; from importlinter.cli import lint_imports; "
        "sys.exit(lint_imports(config_filename=sys.argv[1], no_cache=True, no_logo=True))")


def lint(src: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run([sys.executable, "-c", LINT, str(CONTRACTS)], cwd=src, env=env, capture_output=True,
                          text=True, timeout=120)


def test_layer_contracts_are_kept():
    proc = lint(ROOT / "src")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


@pytest.mark.parametrize("module, line", [
    ("errors.py", "from . import cli  # a leaf importing the top layer"),
    ("report/analysis_sections.py", "from . import html  # the circle the page module cut"),
    ("study/lock.py", "from . import runner  # a leaf of study importing its command"),
    ("families.py", "from . import models  # the registry importing the families that fill it"),
    ("schema.py", "from . import config  # the engine importing the schema it serves"),
])
def test_a_planted_upward_import_breaks_a_contract(tmp_path, module, line):
    """The contracts are not vacuous: an upward import, even inside a function, is reported."""
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "vitlab", src / "vitlab", ignore=shutil.ignore_patterns("__pycache__"))
    target = src / "vitlab" / module
    target.write_text(target.read_text() + f"\n\ndef _planted():\n    {line}\n")
    proc = lint(src)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "BROKEN" in proc.stdout


LAZY_IMPORTS = frozenset({
    "ray", "mlflow", "wandb", "tensorboard", "torch.utils.tensorboard", "onnx", "onnxruntime", "submitit", "pandas",
    "tqdm",
})
"""Packages a function may import where it uses them: the optional extras of pyproject.toml (absent from
a plain install, and slow to import), and tqdm (not a declared dependency: the worker sets its lock only
when it is there). Every other import, vitlab's own above all, stands at the top of its module."""


def function_level_imports(package: Path) -> list[str]:
    """'path:line: module' of each import inside a function (or a class or block within one), of a
    module not in LAZY_IMPORTS."""
    found = []

    def walk(node: ast.AST, in_function: bool, path: Path) -> None:
        for child in ast.iter_child_nodes(node):
            if in_function and isinstance(child, (ast.Import, ast.ImportFrom)):
                modules = ([a.name for a in child.names] if isinstance(child, ast.Import)
                           else ["." * child.level + (child.module or "")])
                for m in modules:
                    if m.startswith(".") or not any(m == p or m.startswith(p + ".") for p in LAZY_IMPORTS):
                        found.append(f"{path.relative_to(package)}:{child.lineno}: {m}")
            walk(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)), path)

    for path in sorted(package.rglob("*.py")):
        walk(ast.parse(path.read_text(encoding="utf-8")), False, path)
    return found


def test_imports_are_at_module_top():
    assert function_level_imports(PACKAGE) == []


def test_a_function_level_import_is_reported(tmp_path):
    """The check is not vacuous: a vitlab module or a light package imported inside a function (or a method)
    is reported, an optional extra is not."""
    (tmp_path / "mod.py").write_text(
        "import os\n\n\ndef f():\n    from . import config\n    import ray\n\n\n"
        "class C:\n    def m(self):\n        if True:\n            import json\n        import torch.utils.tensorboard\n")
    assert function_level_imports(tmp_path) == ["mod.py:5: .", "mod.py:12: json"]
