"""The import-linter contracts in .importlinter hold: every module imports only from the layers below it
(cli -> api/demo -> report/notebook -> study -> analysis -> train -> track/models/data -> identity ->
config/io/stats -> families/datasets -> schema -> yamlsafe -> safepath -> rundir -> jsonread -> errors/version),
counting imports inside functions too.

Run as a subprocess so that the package analysed is the one on this checkout's `src/`, whatever else is
imported in the test process."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("importlinter", reason="import-linter is not installed (pip install -e '.[dev]')")

ROOT = Path(__file__).resolve().parents[1]
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
