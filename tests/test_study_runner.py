"""The study coordinator end to end with the real trainer: results, idempotence, crash safety
(SIGKILL of the coordinator in a loop, of a worker, injected failures), retries and the lock."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vitlab.errors import UserError
from vitlab.io import read_jsonl
from vitlab.study import open_index, rebuild_index, results_rows, run_study, summary_table
from vitlab.study.lock import lock_study
from vitlab.study.worker import Task, run_config

# 2 attention normalizations x 2 seeds, 5 epochs of 5 steps each: seconds per run on a CPU.
# train.threads is fixed so that results are bit-identical whatever the worker count.
TINY = {
    "name": "tiny",
    "base": {
        "device": "cpu",
        "data": {"name": "synthetic", "synthetic_train": 1000, "synthetic_test": 200, "val_fraction": 0.2},
        "model": {"name": "vit_nano", "dim": 32, "depth": 1, "num_heads": 2},
        "sched": {"warmup_epochs": 1},
        "train": {"epochs": 5, "batch_size": 64, "eval_batch_size": 200, "threads": 1},
    },
    "vary": {"model.attn_norm": ["softmax", "cosine"]},
    "seeds": 2,
}
TIMING_KEYS = {"epoch_time_s", "throughput_img_s", "train_time_s", "train_cpu_s", "minutes", "data_time_frac"}


def untimed(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in TIMING_KEYS}


def run_metrics(study: Path, run_id: str) -> tuple[list[dict], dict]:
    r = study / "runs" / run_id
    return [untimed(x) for x in read_jsonl(r / "metrics.jsonl")], untimed(json.loads((r / "summary.json").read_text()))


def table(study: Path) -> list[dict]:
    return [untimed({k: v for k, v in row.items() if k != "attempts"}) for row in results_rows(study)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, write_spec) -> Path:
    """The tiny study run once, uninterrupted, by the API with 2 workers."""
    base = tmp_path_factory.mktemp("ref")
    out = base / "study"
    result = run_study(write_spec(base, TINY), out, workers=2, progress=False)
    assert result.ok and result.counts == {"completed": 4}, result
    return out


# ---------------------------------------------------------------------------------------------- end to end


def test_study_end_to_end(reference, tmp_path):
    index = open_index(reference)
    meta = index.meta()
    assert meta["name"] == "tiny" and meta["kind"] == "study"
    assert meta["factors"] == {"model.attn_norm": ["softmax", "cosine"]}
    assert meta["reference"] == {"model.attn_norm": "softmax"}
    recs = index.runs()
    assert [(r.level_label, r.seed) for r in recs] == [("softmax", 0), ("softmax", 1), ("cosine", 0), ("cosine", 1)]
    for r in recs:
        assert r.status == "completed" and r.attempts == 1 and r.summary["epochs_run"] == 5
        assert [e["epoch"] for e in r.epochs] == [1, 2, 3, 4, 5]
        assert r.config["model"]["attn_norm"] == r.level and r.config["seed"] == r.seed
        assert len(read_jsonl(reference / "runs" / r.run_id / "metrics.jsonl")) == 5
        assert r.epochs[-1]["val_top1"] == read_jsonl(reference / "runs" / r.run_id / "metrics.jsonl")[-1]["val_top1"]
    # the two seeds of a level differ; the summary table lists every level with 2/2 seeds
    assert recs[0].summary["val_loss"] != recs[1].summary["val_loss"]
    text = summary_table(reference)
    assert "softmax (ref)" in text and "cosine" in text and text.count("2/2") == 2
    # rebuilding the index from the directory gives the same records
    before = [(r.run_id, r.factor, r.level, r.seed, r.status, r.summary, r.epochs) for r in recs]
    index.close()
    (reference / "index.sqlite").unlink()
    rebuilt = open_index(reference).runs()
    assert [(r.run_id, r.factor, r.level, r.seed, r.status, r.summary, r.epochs) for r in rebuilt] == before
    rebuild_index(reference)


def test_rerun_is_a_no_op(reference):
    stamps = {p: p.stat().st_mtime_ns for p in (reference / "runs").rglob("*") if p.is_file()}
    result = run_study(reference / ".." / "tiny.yaml", reference, workers=2, progress=False)
    assert result.ok and result.trained == []
    assert {p: p.stat().st_mtime_ns for p in (reference / "runs").rglob("*") if p.is_file()} == stamps


def test_results_where_filters(reference):
    rows = results_rows(reference, where="model.attn_norm == 'cosine' and seed < 1")
    assert [(r["level"], r["seed"]) for r in rows] == [("cosine", 0)]
    assert len(results_rows(reference, where="status == 'completed' and test_top1 >= 0")) == 4
    assert len(results_rows(reference, where="level in ['softmax'] or not seed == 0")) == 3
    with pytest.raises(UserError, match="unknown name 'model.attn_nrom'"):
        results_rows(reference, where="model.attn_nrom == 'x'")
    with pytest.raises(UserError, match="not allowed"):
        results_rows(reference, where="__import__('os').system('true')")


def test_cli_results_and_option_errors(reference, tmp_path, capsys, monkeypatch, write_spec):
    from vitlab.cli import main as cli_main
    from vitlab.study.backends import RayPool

    assert cli_main(["results", str(reference), "--where", "seed == 0", "--format", "csv"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("run_id,factor,level,seed,status") and len(lines) == 3
    assert cli_main(["results", str(reference), "--where", "seed ==", "--format", "md"]) == 2
    assert "--where: cannot parse" in capsys.readouterr().err
    spec = write_spec(tmp_path, TINY)
    assert cli_main(["study", str(spec), "--out", str(tmp_path / "o"), "--gpus-per-run", "0.5"]) == 2
    assert "--gpus-per-run: only used with --backend ray" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the optional extra were not installed
    with pytest.raises(UserError, match="the ray package is not installed"):
        RayPool(2)


def test_threads_are_divided_between_workers_without_changing_the_run():
    cfg = dict(TINY["base"], train={"epochs": 1})
    task = Task(run_id="x", config=cfg, run_dir="/nonexistent", threads=3)
    built = run_config(task)
    assert built.train.threads == 3 and built.train.progress is False
    pinned = run_config(Task(run_id="x", config=dict(cfg, train={"threads": 1}), run_dir="/x", threads=3))
    assert pinned.train.threads == 1  # a value the spec sets is kept


# ---------------------------------------------------------------------------------------------- crash safety


def _children(pid: int) -> list[int]:
    kids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                kids.append(int(d.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _epoch_lines(study: Path) -> int:
    return sum(len(read_jsonl(p)) for p in (study / "runs").glob("*/metrics.jsonl"))


def _mid_run(study: Path, since_ns: int = 0) -> bool:
    """Whether some run has a checkpoint (written at or after `since_ns`) but has not finished: a kill
    now interrupts it between its checkpoints."""
    for ck in (study / "runs").glob("*/checkpoints/last.pt"):
        try:
            if (ck.stat().st_mtime_ns >= since_ns
                    and json.loads((ck.parent.parent / "summary.json").read_text()).get("status") == "running"):
                return True
        except (OSError, ValueError):
            pass
    return False


def _completed_stamps(study: Path) -> dict:
    stamps = {}
    for s in (study / "runs").glob("*/summary.json"):
        try:
            if json.loads(s.read_text()).get("status") == "completed":
                ck = s.parent / "checkpoints" / "last.pt"
                stamps[s.parent.name] = (s.stat().st_mtime_ns, ck.stat().st_mtime_ns)
        except (OSError, ValueError):
            pass
    return stamps


def test_sigkill_coordinator_loop_loses_nothing(reference, tmp_path, write_spec):
    """SIGKILL the coordinator over and over: twice at random moments of its start-up, then three
    times right after the study made progress (so kills land mid-run, 20 epochs in all). Its workers must die with
    it; a final rerun must give exactly the uninterrupted results without training any completed
    run twice."""
    spec = write_spec(tmp_path, TINY)
    out = tmp_path / "study"
    cmd = [sys.executable, "-m", "vitlab.cli", "study", str(spec), "--out", str(out), "--workers", "2"]
    rng = random.Random(1234)
    startup_kills, progress_kills = 2, 3
    kills, mid_run_kills, completed_seen = 0, 0, {}
    while True:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if kills >= startup_kills + progress_kills:
            break  # the last session runs to the end
        if kills < startup_kills:
            time.sleep(rng.uniform(0.2, 4.0))
        else:
            # Wait for this session's progress to reach a checkpoint of an unfinished run: an epoch's
            # metrics line lands before its checkpoint, so waiting for the line alone can kill between them.
            lines0 = _epoch_lines(out) if (out / "runs").exists() else 0
            since_ns = time.time_ns()
            deadline = time.monotonic() + 180
            while proc.poll() is None and time.monotonic() < deadline and not (
                    _epoch_lines(out) > lines0 and _mid_run(out, since_ns)):
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.05))  # shorter than an epoch, so the kill lands mid-run
        if proc.poll() is not None:
            break  # finished by itself: nothing left to interrupt
        kids = _children(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        t0 = time.monotonic()
        while any(_alive(k) for k in kids) and time.monotonic() - t0 < 15:
            time.sleep(0.1)
        assert not any(_alive(k) for k in kids), "workers outlived their coordinator"
        if (out / "runs").exists():
            mid_run_kills += _mid_run(out)
            completed_seen.update(_completed_stamps(out))
    assert kills >= 5, f"only {kills} kills: the study finished too fast to interrupt"
    assert mid_run_kills >= 1, "no kill interrupted a run between its checkpoints"
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()[-2000:]

    assert table(out) == table(reference)
    ref_ids = {r.run_id for r in open_index(reference).runs()}
    assert {r.run_id for r in open_index(out).runs()} == ref_ids
    for rid in ref_ids:
        assert run_metrics(out, rid) == run_metrics(reference, rid), rid
    # a run seen completed at any kill was never touched again
    final = _completed_stamps(out)
    for rid, stamp in completed_seen.items():
        assert final[rid] == stamp, f"{rid} was trained again after it completed"


def flaky_trainer(cfg, out_dir, resume=True, on_epoch=None, progress=None, context=None):
    """The real trainer, made to fail once right after epoch 2 was checkpointed: by an exception
    (softmax runs) or by SIGKILL of its own worker process (cosine runs)."""
    from vitlab.training import run_training

    marker = Path(out_dir) / "failed-once"

    def hook(epoch, row):
        if epoch == 2 and not marker.exists():
            marker.write_text("x")
            if cfg.model.attn_norm == "cosine":
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError("injected failure")
        return on_epoch(epoch, row) if on_epoch else False

    return run_training(cfg, out_dir, resume=resume, on_epoch=hook, progress=progress, context=context)


def test_failed_and_killed_workers_are_retried_and_resume_exactly(reference, tmp_path, write_spec):
    spec = write_spec(tmp_path, dict(TINY, seeds=[0]))
    out = tmp_path / "study"
    result = run_study(spec, out, workers=2, progress=False, trainer=flaky_trainer)
    assert result.ok and result.counts == {"completed": 2}
    recs = open_index(out).runs()
    assert [r.attempts for r in recs] == [2, 2]
    for r in recs:
        assert (out / "runs" / r.run_id / "failed-once").exists()
        assert run_metrics(out, r.run_id) == run_metrics(reference, r.run_id)


def broken_small_lr_trainer(cfg, out_dir, resume=True, on_epoch=None, progress=None, context=None):
    """Always raises for lr < 1; trains for real otherwise (lr 1e8 diverges)."""
    if cfg.optim.lr < 1:
        raise RuntimeError("injected failure")
    from vitlab.training import run_training

    return run_training(cfg, out_dir, resume=resume, on_epoch=on_epoch, progress=progress)


def test_failures_stop_after_max_retries_and_diverged_runs_are_not_retried(tmp_path, write_spec):
    spec = write_spec(tmp_path, dict(TINY, vary={"optim.lr": [1e-3, 1e8]}, seeds=[0]))
    out = tmp_path / "study"
    result = run_study(spec, out, workers=2, progress=False, max_retries=1, trainer=broken_small_lr_trainer)
    assert not result.ok and result.counts == {"failed": 1, "diverged": 1}
    (failed,) = open_index(out).runs(status="failed")
    (diverged,) = open_index(out).runs(status="diverged")
    assert failed.attempts == 2 and "injected failure" in failed.summary["error"]
    assert "injected failure" in result.errors[failed.run_id]
    assert diverged.attempts == 1 and "non-finite loss" in diverged.summary["error"]
    again = run_study(spec, out, workers=2, progress=False, max_retries=1, trainer=broken_small_lr_trainer)
    assert again.trained == []
    more = run_study(spec, out, workers=1, progress=False, max_retries=2, trainer=broken_small_lr_trainer)
    assert more.trained == [failed.run_id]
    assert open_index(out).runs(status="failed")[0].attempts == 3


# ---------------------------------------------------------------------------------------------- lock


def test_lock_refuses_a_second_coordinator_and_dies_with_its_holder(tmp_path, write_spec):
    spec = write_spec(tmp_path, TINY)
    out = tmp_path / "study"
    holder = lock_study(out)
    try:
        with pytest.raises(UserError, match=r"another vitlab coordinator \(pid \d+\) is running this study") as e:
            run_study(spec, out, progress=False)
        assert "\n" not in str(e.value)
    finally:
        holder.release()
    # a SIGKILLed holder leaves no stale lock
    code = f"from vitlab.study.lock import lock_study; lock_study({str(out)!r}); print('locked', flush=True); " \
           "import time; time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"locked"
    with pytest.raises(UserError, match=f"pid {proc.pid}"):
        lock_study(out)
    proc.kill()
    proc.wait()
    lock_study(out).release()
