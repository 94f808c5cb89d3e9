"""`--backend slurm` through submitit's local executor (the same pool, pickles, signals and requeue as on
a cluster, with processes on this machine): a detached study, one task preempted (USR2, SLURM's warning
signal) and requeued, one task killed (as scancel does) and retried, a rerun that attaches to the
running tasks and collects results identical to the local backend's. The real-SLURM check is
benchmarks/slurm_e2e.sh."""
from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest
import yaml

from vitlab.cli import main
from vitlab.io import read_jsonl
from vitlab.study import open_index, run_study, slurm
from vitlab.io import pid_alive
from vitlab.study.status import study_status

pytest.importorskip("submitit")

SPEC = {
    "name": "tiny_slurm",
    "base": {
        "device": "cpu",
        "data": {"name": "synthetic", "synthetic_train": 800, "synthetic_test": 200, "val_fraction": 0.2},
        "model": {"name": "vit_nano", "dim": 32, "depth": 1, "num_heads": 2},
        "train": {"epochs": 3, "batch_size": 32, "eval_batch_size": 200, "threads": 1},
    },
    "vary": {"model.attn_norm": ["softmax", "cosine"]},
    "seeds": [0],
    "slurm": {"executor": "local", "time": 10},
}
#: Fields of a summary or metrics row that depend on timing, not on what was trained.
TIMING = ("time", "throughput", "wall", "_s", "minutes")
WAIT_S = 120


def _trained(d: dict) -> dict:
    return {k: v for k, v in d.items() if not any(t in k for t in TIMING)}


def _task_pid(controller_pid: int) -> int:
    """The task process submitit's local controller started (its only child)."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        children = Path(f"/proc/{controller_pid}/task/{controller_pid}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.1)
    raise AssertionError("the local task never started")


def _after_first_epoch(run_dir: Path) -> tuple[int, int]:
    """Wait until the run has checkpointed an epoch; its job's (controller pid, task pid)."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if len(read_jsonl(run_dir / "metrics.jsonl")) >= 1:
            controller = int(json.loads((run_dir / "slurm_job.json").read_text())["jobs"][-1]["job_id"])
            return controller, _task_pid(controller)
        time.sleep(0.1)
    raise AssertionError(f"{run_dir}: no epoch after {WAIT_S} s")


def test_detached_study_survives_preemption_and_a_cancelled_task(tmp_path, monkeypatch, write_spec):
    monkeypatch.setattr(slurm, "CHECK_S", 0.5)  # look at the jobs more often than on a cluster
    spec = write_spec(tmp_path, SPEC, "spec.yaml")
    base = run_study(spec, tmp_path / "base", workers=2, progress=False)  # the uninterrupted reference
    assert base.ok

    out = tmp_path / "study"
    first = run_study(spec, out, workers=2, backend="slurm", detach=True, progress=False)
    assert first.detached == "2 submitted, 0 attached" and first.ok
    preempted, killed = (out / "runs" / r.run_id for r in open_index(out).runs())
    os.kill(_after_first_epoch(preempted)[1], signal.SIGUSR2)  # SLURM's warning: checkpoint and requeue
    controller, task = _after_first_epoch(killed)
    os.kill(task, signal.SIGKILL)  # scancel / out of memory: no result
    deadline = time.monotonic() + WAIT_S
    while pid_alive(controller) and time.monotonic() < deadline:  # its job ends while no coordinator watches
        time.sleep(0.1)
    assert "job" in study_status(out)

    result = run_study(spec, out, workers=2, backend="slurm", progress=False)  # attaches, retries the killed run
    assert result.ok and result.counts == {"completed": 2}
    pre_jobs = json.loads((preempted / "slurm_job.json").read_text())["jobs"]
    assert len(pre_jobs) == 1  # requeued inside its job, not submitted again
    assert "requeued" in Path(pre_jobs[0]["stdout"]).read_text().lower() + Path(pre_jobs[0]["stderr"]).read_text().lower()
    assert len(json.loads((killed / "slurm_job.json").read_text())["jobs"]) == 2  # retried as a new task
    by_id = {r.run_id: r for r in open_index(out).runs()}
    assert by_id[killed.name].attempts == 1  # its failure happened while no coordinator watched: not counted
    for rec in open_index(tmp_path / "base").runs():
        mine = by_id[rec.run_id]
        assert _trained(mine.summary) == _trained(rec.summary)
        assert [_trained(r) for r in read_jsonl(out / "runs" / rec.run_id / "metrics.jsonl")] == \
               [_trained(r) for r in read_jsonl(tmp_path / "base" / "runs" / rec.run_id / "metrics.jsonl")]
    assert "every run is final" in study_status(out)
    again = run_study(spec, out, workers=2, backend="slurm", progress=False)
    assert again.ok and again.trained == []


@pytest.mark.parametrize("args, message", [
    (["--slurm", "partiton=gpu"], "did you mean 'partition'"),
    (["--slurm", "time"], "expected KEY=VALUE"),
    (["--slurm", "mem=lots"], "slurm.mem: must look like 16G"),
    (["--slurm", "executor=pbs"], "slurm.executor"),
])
def test_bad_slurm_resources_are_one_line_errors(tmp_path, capsys, args, message, write_spec):
    spec = write_spec(tmp_path, SPEC, "spec.yaml")
    assert main(["study", str(spec), "--out", str(tmp_path / "s"), "--backend", "slurm", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "s").exists()


def test_slurm_options_need_the_slurm_backend(tmp_path, capsys, write_spec):
    spec = write_spec(tmp_path, SPEC, "spec.yaml")
    assert main(["study", str(spec), "--out", str(tmp_path / "s"), "--detach"]) == 2
    assert "--detach: only used with --backend slurm" in capsys.readouterr().err


def test_spec_slurm_section_is_checked_and_not_part_of_the_study(tmp_path):
    from vitlab.errors import UserError
    from vitlab.study import spec as specmod

    bad = {**SPEC, "slurm": {"cpus_per_tsk": 1}}
    with pytest.raises(UserError, match="slurm.cpus_per_tsk: unknown key.*cpus_per_task"):
        specmod.load_spec(bad)
    a = specmod.spec_to_dict(specmod.resolve(specmod.load_spec(SPEC)))
    b = specmod.spec_to_dict(specmod.resolve(specmod.load_spec({**SPEC, "slurm": {"partition": "gpu"}})))
    assert a == b and "slurm" not in a


def test_sbatch_missing_is_a_one_line_error(tmp_path, capsys, monkeypatch, write_spec):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    spec = write_spec(tmp_path, SPEC, "spec.yaml")
    code = main(["study", str(spec), "--out", str(tmp_path / "s"), "--backend", "slurm", "--slurm", "executor=slurm"])
    assert code == 2 and "sbatch is not on PATH" in capsys.readouterr().err


DOCS = Path(__file__).resolve().parents[1] / "docs"


def _section(page: str, title: str) -> str:
    """The text of a docs page under the heading `title` (# or ##), up to the next ## heading."""
    text = (DOCS / page).read_text(encoding="utf-8")
    return re.split(rf"^#{{1,2}} {re.escape(title)}\n", text, maxsplit=1, flags=re.M)[1].split("\n## ", 1)[0]


def _commands(text: str) -> list[str]:
    """The `vitlab ...` command lines of a section's bash blocks (continuations joined)."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        lines += [ln.split("  #")[0].strip() for ln in block.replace("\\\n", " ").splitlines()]
    return [ln for ln in lines if ln.startswith("vitlab ")]


def test_readme_cluster_and_wandb_commands_parse_and_the_slurm_section_loads(tmp_path):
    import shlex

    from vitlab.cli import build_parser
    from vitlab.study import spec as specmod

    commands = _commands(_section("clusters.md", "Clusters")) + [c for c in _commands(_section("tracking.md", "Tracking and notebooks"))
                                                    if "wandb" in c]
    assert len(commands) == 8
    for cmd in commands:
        args = build_parser().parse_args(shlex.split(cmd)[1:])
        assert args.fn is not None
    block = _section("clusters.md", "Clusters").split("```yaml\n", 1)[1].split("```", 1)[0]
    loaded = specmod.load_spec({**SPEC, **yaml.safe_load(block)})
    assert loaded.slurm.gpus_per_task == 1 and loaded.slurm.extra == {"constraint": "a100"}


def test_a_task_outcome_is_json_and_no_result_pickle_is_ever_loaded(tmp_path):
    """A study directory may be handed over: a planted submitit result pickle must never be unpickled."""
    import json
    import pickle

    from vitlab.jsonread import MalformedFile
    from vitlab.study import slurm

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    pkl = tmp_path / "123_0_result.pkl"
    pkl.write_bytes(pickle.dumps(("success", Payload())))
    with pytest.raises(MalformedFile):  # no outcome JSON beside it: the attempt failed, nothing loaded
        slurm.read_outcome(slurm.outcome_path(pkl), "abc")
    assert not marker.exists()
    assert "pickle_load" not in Path(slurm.__file__).read_text() and "import pickle" not in Path(slurm.__file__).read_text()
    good = {"run_id": "abc", "summary": {"status": "completed", "test_top1": 0.5}, "error": None,
            "user_error": False, "wall_s": 1.5}
    slurm.outcome_path(pkl).write_text(json.dumps(good))
    assert slurm.read_outcome(slurm.outcome_path(pkl), "abc").summary["test_top1"] == 0.5
    with pytest.raises(MalformedFile):  # another run's outcome
        slurm.read_outcome(slurm.outcome_path(pkl), "other")
    slurm.outcome_path(pkl).write_text(json.dumps({**good, "summary": {"status": "<b>"}}))
    with pytest.raises(MalformedFile):
        slurm.read_outcome(slurm.outcome_path(pkl), "abc")
