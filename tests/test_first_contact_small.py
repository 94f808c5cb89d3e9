"""Small things a newcomer meets first: did-you-mean for dataset spellings, a quoted reference level,
`vitlab models` at 80 columns, one color scale for rollout maps, what git ignores."""
import subprocess
from pathlib import Path

import numpy as np
import pytest

from vitlab.analysis import figures as afig
from vitlab.cli import main
from vitlab.schema import suggest
from vitlab.errors import UserError
from vitlab.study.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("spelling", ["FashionMNIST", "fashion-mnist", "Fashion_MNIST", "CIFAR100"])
def test_dataset_spellings_get_a_did_you_mean(spelling, capsys):
    assert "did you mean" in suggest(spelling, ["synthetic", "cifar10", "cifar100", "fashion_mnist", "folder"])
    assert main(["config", "show", f"data.name={spelling}"]) == 2
    assert "did you mean" in capsys.readouterr().err
    assert main(["data", "info", spelling]) == 2
    err = capsys.readouterr().err
    assert "did you mean" in err and "\n" not in err.strip()


def test_a_quoted_reference_level_says_why_it_does_not_match(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("base: {data: {name: synthetic}, model: {name: vit_nano}}\nvary:\n  model.num_heads: [2, 4]\n"
                    "reference: {model.num_heads: '4'}\nseeds: 1\n")
    with pytest.raises(UserError, match="'4' is quoted, a string; the level 4 is not: write it unquoted"):
        load_spec(spec)


def test_models_table_fits_80_columns(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) <= 80
    rows = [line.split() for line in lines if line.strip().startswith(("vit_", "mobilevit_"))]
    assert any(r[0] == "vit_nano" and r[-1] == "65×4" for r in rows)  # whole names, whole token counts


def test_one_color_scale_keeps_uniform_attention_uniform():
    uniform, peaked = np.full((4, 4), 1 / 16), np.eye(4) / 4
    top = afig.shared_top([uniform, peaked])
    assert top == pytest.approx(0.25)
    shown = afig._upsample(uniform, 8, 8, top)
    assert np.allclose(shown, 0.25)  # dim and flat, not stretched to 0..1
    assert afig._upsample(peaked, 8, 8, top).max() == pytest.approx(1.0)


def test_study_and_tracking_outputs_are_ignored_by_git():
    for path in ("studies-out/attn/index.sqlite", "mlruns/0/meta.yaml"):
        assert subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT).returncode == 0, path


def test_a_study_worker_gives_tqdm_a_thread_lock_not_a_named_semaphore(monkeypatch):
    """torch.compile's FX interpreter opens a tqdm bar; tqdm's default lock is a multiprocessing RLock,
    which in a spawned worker is a named semaphore that a killed worker leaks (Python's resource tracker
    then warns at exit). The worker replaces it with a thread lock before running anything."""
    import threading

    tqdm = pytest.importorskip("tqdm").tqdm
    from tqdm.std import TqdmDefaultWriteLock

    from vitlab.study import worker

    monkeypatch.setattr(tqdm, "_lock", TqdmDefaultWriteLock(), raising=False)  # restored after the test
    worker._thread_only_tqdm_lock()
    lock = tqdm.get_lock()
    assert not isinstance(lock, TqdmDefaultWriteLock) and isinstance(lock, type(threading.RLock()))
