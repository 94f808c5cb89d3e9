"""What a run records beside its config: the environment that decides bitwise equality, and the data
root it read (a hint that lets analyze/export find the data again; not part of the run's identity)."""
import json

import pytest
import torch

from test_data_fashion_mnist import tiny  # noqa: F401  (a fixture: tiny generated Fashion-MNIST files)
from vitlab.analysis.loading import load_run
from vitlab.config import load_config
from vitlab.data.files import ROOT_ENV
from vitlab.errors import DataError
from vitlab.training import run_training

SMALL = ["data.name=fashion_mnist", "data.download=false", "data.val_fraction=0.2", "model.name=vit_nano",
         "model.dim=16", "model.depth=1", "model.num_heads=2", "model.image_size=32", "train.batch_size=20",
         "train.eval_batch_size=20", "train.epochs=1", "train.progress=false", "train.threads=1",
         "sched.warmup_epochs=0"]


def test_summary_records_environment_and_data_root_and_analysis_finds_the_data(tiny, tmp_path, monkeypatch):  # noqa: F811
    root, _, _ = tiny
    monkeypatch.delenv(ROOT_ENV, raising=False)
    monkeypatch.chdir(root.parent)
    cfg = load_config(None, SMALL + [f"data.root={root.name}"])  # relative: valid only from here
    summary = run_training(cfg, tmp_path / "run")
    env = summary["environment"]
    assert env["torch"] == torch.__version__ and env["threads"] == 1 and env["device"] == "cpu"
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert env["onednn"] is None or env["onednn"][0].isdigit()
    assert summary["data_root"] == str(root.absolute())
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["data_root"] == str(root.absolute())

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the relative data.root no longer resolves: the recorded root is used
    run = load_run(tmp_path / "run")
    assert run.data.name == "fashion_mnist" and len(run.data.test_y) == 20

    monkeypatch.setenv(ROOT_ENV, str(elsewhere))  # an explicit choice wins over the hint
    with pytest.raises(DataError):
        load_run(tmp_path / "run")


def test_synthetic_runs_have_no_data_root(tmp_path):
    cfg = load_config(None, ["data.name=synthetic", "data.synthetic_train=64", "data.synthetic_test=32",
                             "model.name=vit_nano", "model.dim=16", "model.depth=1", "model.num_heads=2",
                             "train.epochs=1", "train.progress=false", "train.batch_size=32"])
    assert run_training(cfg, tmp_path / "run")["data_root"] is None
