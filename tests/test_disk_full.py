"""A full disk (ENOSPC, injected or a real 1 MiB tmpfs): a failed atomic write removes its temporary
file, the last good checkpoint is kept, summary.json says `failed` with the reason where it can still
be written, `vitlab train` exits 1 with one line, and `--resume` continues once there is room.
Temporary files of killed processes are removed when a run starts again in their directory."""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fsutil import tiny_disk
from vitlab import io as vio
from vitlab.cli import main
from vitlab.config import load_config
from vitlab.errors import RunError
from vitlab.io import atomic_write_bytes, remove_stale_temp_files
from vitlab.rundir import SUMMARY_FILE, checkpoint_path
from vitlab.training import run_training

@pytest.fixture(scope="module")
def tiny(tiny_run) -> list[str]:
    """The shared tiny run, 3 epochs: room for a disk to fill between them."""
    return tiny_run("train.epochs=3")


def enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "injected")


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if vio.TEMP_MARK in p.name]


def test_a_failed_atomic_write_removes_its_temp_file(tmp_path, monkeypatch):
    target = tmp_path / "f.json"
    target.write_text("old")
    monkeypatch.setattr(vio.os, "fsync", enospc)
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"new")
    assert target.read_text() == "old" and temp_files(tmp_path) == []


def fail_writes_after_epoch(monkeypatch, epoch: int, also_summary: bool):
    """From the end of `epoch` on, fsync of a checkpoint's temporary file fails with ENOSPC (and of
    every file when `also_summary`), as when the disk fills up; returns the on_epoch hook."""
    state = {"full": False}
    real = os.fsync

    def fsync(fd):
        if state["full"]:
            name = os.readlink(f"/proc/self/fd/{fd}")
            if also_summary or f".pt{vio.TEMP_MARK}" in name:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)

    def on_epoch(e, row):
        if e == epoch:
            state["full"] = True
        return False

    return on_epoch


@pytest.mark.parametrize("also_summary", [False, True])
def test_disk_full_mid_run_keeps_the_last_checkpoint_and_resumes(tmp_path, monkeypatch, also_summary, tiny):
    cfg = load_config(None, tiny)
    out = tmp_path / "run"
    reference = run_training(cfg, tmp_path / "ref")
    on_epoch = fail_writes_after_epoch(monkeypatch, 1, also_summary)
    with pytest.raises(RunError) as e:
        run_training(cfg, out, on_epoch=on_epoch)
    msg = str(e.value)
    assert "\n" not in msg and "No space left on device" in msg and "--resume" in msg
    assert torch.load(checkpoint_path(out), weights_only=True)["run_state"]["epoch"] == 1  # the last good one
    summary = json.loads((out / SUMMARY_FILE).read_text())
    if also_summary:
        assert summary["status"] == "running"  # could not be written: still exit 1 with one line
    else:
        assert summary["status"] == "failed" and "No space left on device" in summary["error"]
    assert temp_files(out) == []
    monkeypatch.undo()  # room again
    resumed = run_training(cfg, out, resume=True)
    assert resumed["status"] == "completed" and resumed["test_top1"] == reference["test_top1"]


def test_cli_exits_1_with_one_line(tmp_path, monkeypatch, capsys, tiny):
    import vitlab.training.checkpoint as ck

    monkeypatch.setattr(ck, "atomic_torch_save", enospc)
    assert main(["train", "--out", str(tmp_path / "run"), *tiny]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "No space left" in err
    assert json.loads((tmp_path / "run" / SUMMARY_FILE).read_text())["status"] == "failed"


def test_real_full_disk(tmp_path, capsys, tiny):
    """A 1 MiB tmpfs, filled right after epoch 1's checkpoint: the run stops with one line, its
    checkpoint loads, no temporary file is left, and it completes after room is made."""
    with tiny_disk(tmp_path / "disk", "1m") as disk:
        out = disk / "run"
        cfg = load_config(None, tiny)
        filler = disk / "filler"

        def fill(e, row):
            if e == 1:
                with open(filler, "wb") as f:
                    try:
                        while True:
                            f.write(b"\0" * 65536)
                            f.flush()
                    except OSError:
                        pass
            return False

        with pytest.raises(RunError, match="No space left on device"):
            run_training(cfg, out, on_epoch=fill)
        assert torch.load(checkpoint_path(out), weights_only=True)["run_state"]["epoch"] == 1
        assert temp_files(out) == []
        # the CLI on the still-full disk: one line, exit 1
        assert main(["train", "--out", str(out), *tiny, "--resume"]) == 1
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "No space left on device" in err
        assert temp_files(out) == []
        filler.unlink()
        assert run_training(cfg, out, resume=True)["status"] == "completed"


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temp_files_of_dead_processes_are_removed(tmp_path, tiny):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    dead = dead_pid()
    stale = [run / f".summary.json.tmp-{dead}", run / "checkpoints" / f".last.pt.tmp-{dead}"]
    live = [run / ".notes.txt.tmp-1", run / "checkpoints" / ".best.pt.tmp-1"]  # pid 1 always runs
    keep = [run / "notes.tmp-123", run / f".x.tmp-{dead}abc"]  # not our pattern
    for p in stale + live + keep:
        p.write_bytes(b"partial")
    assert sorted(remove_stale_temp_files(run) + remove_stale_temp_files(run / "checkpoints")) == sorted(stale)
    assert all(p.exists() for p in live + keep)
    for p in keep:
        p.unlink()
    (run / f".config.yaml.tmp-{dead}").write_bytes(b"partial")
    run_training(load_config(None, tiny + ["train.epochs=1"]), run)
    assert not (run / f".config.yaml.tmp-{dead}").exists() and not stale[1].exists()
    assert all(p.exists() for p in live)
