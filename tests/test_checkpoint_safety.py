"""Checkpoints are untrusted input: they load as plain data (weights_only=True), a pickle payload is
never executed (not on `vitlab train --resume`, not on a study rerun), and every damaged or foreign
checkpoint is a one-line error naming the file."""
from __future__ import annotations

import io
import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from vitlab.cli import main
from vitlab.config import load_config
from vitlab.errors import UserError
from vitlab.rundir import SUMMARY_FILE, checkpoint_path
from vitlab.training import run_training
from vitlab.training.checkpoint import (CHECKPOINT_FORMAT, LAST_KEYS, capture_rng, check_plain, load_checkpoint,
                                     restore_rng, save_checkpoint)

@pytest.fixture(scope="module")
def tiny(tiny_run) -> list[str]:
    """The shared tiny run, 2 epochs: a last and a best checkpoint to tamper with."""
    return tiny_run("data.synthetic_train=160", "data.synthetic_test=40", "data.val_fraction=0.25",
                    "train.eval_batch_size=80", "train.epochs=2")


class Payload:
    """Unpickling this runs `fn(*args)`: what a malicious checkpoint would carry."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def touch_payload(marker: Path) -> Payload:
    return Payload(os.system, f"touch {marker}")


def write_pickle(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(obj, buf)
    path.write_bytes(buf.getvalue())


def test_the_payload_is_real(tmp_path):
    """The payload used below does run when unpickled unsafely: the tests that refuse it can fail."""
    marker = tmp_path / "pwned"
    write_pickle(tmp_path / "x.pt", {"format": CHECKPOINT_FORMAT, "model": touch_payload(marker)})
    torch.load(tmp_path / "x.pt", weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("make", [
    lambda m: touch_payload(m),
    lambda m: Payload(exec, f"open({str(m)!r}, 'w').close()"),
    lambda m: Payload(eval, f"__import__('pathlib').Path({str(m)!r}).touch()"),
])
def test_load_checkpoint_never_runs_a_payload(tmp_path, make):
    marker = tmp_path / "pwned"
    path = tmp_path / "last.pt"
    write_pickle(path, {"format": CHECKPOINT_FORMAT, "model": {}, "rng": make(marker)})
    with pytest.raises(UserError, match="refused") as e:
        load_checkpoint(path, LAST_KEYS)
    assert str(path) in str(e.value) and "\n" not in str(e.value)
    assert not marker.exists()


def test_resume_refuses_a_malicious_checkpoint(tmp_path, capsys, cli_error, tiny):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *tiny, "train.epochs=1", "--quiet"]) == 0
    capsys.readouterr()
    marker = tmp_path / "pwned"
    last = checkpoint_path(out)
    good = torch.load(last, weights_only=True)
    write_pickle(last, {**good, "run_state": touch_payload(marker)})
    summary = json.loads((out / SUMMARY_FILE).read_text())
    (out / SUMMARY_FILE).write_text(json.dumps({**summary, "status": "running"}))  # as if interrupted
    err = cli_error(["train", "--out", str(out), *tiny, "train.epochs=1", "--resume"])
    assert "refused" in err and str(last) in err and "posix.system" in err
    assert not marker.exists()


def test_study_rerun_refuses_a_malicious_checkpoint(tmp_path):
    from vitlab.study import run_study

    spec = {
        "name": "evil",
        "base": {"device": "cpu", "data": {"name": "synthetic", "synthetic_train": 160, "synthetic_test": 40,
                                           "val_fraction": 0.25},
                 "model": {"name": "vit_nano", "dim": 16, "depth": 1, "num_heads": 2},
                 "train": {"epochs": 1, "batch_size": 40, "threads": 1}},
        "vary": {"model.attn_norm": ["softmax"]},
        "seeds": 1,
    }
    spec_path = tmp_path / "evil.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    study = tmp_path / "study"
    assert run_study(spec_path, study, progress=False).ok
    (run_dir,) = [p for p in (study / "runs").iterdir() if p.is_dir()]
    # The study directory came from someone else: its one run looks interrupted and carries a payload.
    marker = tmp_path / "pwned"
    write_pickle(checkpoint_path(run_dir), {"format": CHECKPOINT_FORMAT, "model": touch_payload(marker)})
    summary = json.loads((run_dir / SUMMARY_FILE).read_text())
    (run_dir / SUMMARY_FILE).write_text(json.dumps({**summary, "status": "running"}))
    result = run_study(spec_path, study, progress=False)
    assert not marker.exists()
    assert not result.ok and result.counts == {"failed": 1}
    (error,) = result.errors.values()
    assert "refused" in error and "posix.system" in error


@pytest.mark.parametrize("case", ["no_config", "no_format", "old_numpy", "list", "truncated", "empty",
                                  "wrong_shapes", "bad_run_state"])
def test_damaged_checkpoints_are_one_line_errors(tmp_path, case, cli_error, tiny):
    out = tmp_path / "run"
    cfg = load_config(None, tiny)

    def stop(epoch, row):
        raise KeyboardInterrupt  # leaves an interrupted run with last.pt after epoch 1

    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, out, on_epoch=stop)
    last = checkpoint_path(out)
    good = torch.load(last, weights_only=True)
    fragment = "damaged"
    if case == "no_config":
        write_pickle(last, {k: v for k, v in good.items() if k != "config"})
        fragment = "lacks config"
    elif case == "no_format":
        write_pickle(last, {k: v for k, v in good.items() if k != "format"})
        fragment = "not a vitlab checkpoint"
    elif case == "old_numpy":  # format 1 held numpy arrays: refused, not unpickled
        write_pickle(last, {**good, "format": 1, "rng": {"numpy": np.random.get_state()}})
        fragment = "refused"
    elif case == "list":
        write_pickle(last, [1, 2, 3])
        fragment = "not a vitlab checkpoint"
    elif case == "truncated":
        last.write_bytes(last.read_bytes()[:1000])
        fragment = "cannot read checkpoint"
    elif case == "empty":
        last.write_bytes(b"")
        fragment = "cannot read checkpoint"
    elif case == "wrong_shapes":
        model = {k: torch.zeros(3) for k in good["model"]}
        write_pickle(last, {**good, "model": model})
    elif case == "bad_run_state":
        write_pickle(last, {**good, "run_state": {"epoch": 1, "surprise": 2}})
    err = cli_error(["train", "--out", str(out), *tiny, "--resume"])
    assert fragment in err and str(last) in err, err


def test_rng_state_round_trips_through_a_plain_checkpoint(tmp_path):
    random.seed(3)
    random.gauss(0, 1)  # leaves a cached gaussian in Python's state
    np.random.seed(4)
    np.random.normal()  # and in numpy's legacy state
    gens = {"a": torch.Generator().manual_seed(5)}
    torch.manual_seed(6)
    save_checkpoint(tmp_path / "c.pt", {"rng": capture_rng(gens)})
    expected = (random.gauss(0, 1), random.random(), np.random.normal(), np.random.rand(), torch.rand(2).tolist(),
                torch.rand(2, generator=gens["a"]).tolist())
    random.seed(99), np.random.seed(99), torch.manual_seed(99), gens["a"].manual_seed(99)
    restore_rng(load_checkpoint(tmp_path / "c.pt")["rng"], gens)
    again = (random.gauss(0, 1), random.random(), np.random.normal(), np.random.rand(), torch.rand(2).tolist(),
             torch.rand(2, generator=gens["a"]).tolist())
    assert again == expected


def test_only_plain_data_goes_into_a_checkpoint(tmp_path):
    check_plain({"a": [1, 2.0, "x", None, True, torch.zeros(2)], "b": {"c": (1, 2)}})
    for bad in (np.float64(1.0), np.zeros(2), Path("x"), object()):
        with pytest.raises(TypeError):
            check_plain({"run_state": {"history": [{"v": bad}]}})
        with pytest.raises(TypeError):
            save_checkpoint(tmp_path / "c.pt", {"x": bad})
    assert not (tmp_path / "c.pt").exists()
