"""The docs site builds with `mkdocs build --strict` (a broken link, a missing page or an API object
that no longer exists fails it), and its generated reference pages cover every CLI command and every
config key."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install -e '.[docs]')")
pytest.importorskip("mkdocstrings", reason="mkdocstrings is not installed (pip install -e '.[docs]')")

from vitlab.cli import build_parser  # noqa: E402
from vitlab.config import RunConfig  # noqa: E402
from vitlab.schema import describe_keys  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f", str(ROOT / "mkdocs.yml"),
                           "-d", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def test_every_page_of_the_nav_is_built(site):
    for page in ("index.html", "getting-started/index.html", "concepts/index.html", "study/index.html",
                 "reference-api/index.html", "findings/index.html"):
        assert (site / page).is_file(), page


def test_cli_reference_has_every_command(site):
    import argparse

    page = (site / "reference-cli" / "index.html").read_text()
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    missing = [name for name in sub.choices if f"usage: vitlab {name}" not in page]
    assert not missing and sub.choices


def test_keys_reference_has_every_config_key(site):
    page = (site / "reference-keys" / "index.html").read_text()
    missing = [key for key, _, _ in describe_keys(RunConfig) if f"<code>{key}</code>" not in page]
    assert not missing


def test_api_reference_documents_the_study_object(site):
    page = (site / "reference-api" / "index.html").read_text()
    for name in ("vitlab.api.Study", "RunOptions", "run_study", "load_results", "analyze_run"):
        assert name in page, name


def test_spec_keys_reference_has_every_spec_key(site):
    from vitlab.study.spec import describe_spec_keys

    page = (site / "reference-spec-keys" / "index.html").read_text()
    missing = [key for key, _, _ in describe_spec_keys() if f"<code>{key}</code>" not in page]
    assert not missing
