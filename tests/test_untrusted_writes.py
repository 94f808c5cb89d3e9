"""Directories handed over by someone else: writes never follow a planted link (run, study and storage
directories), results written by `vitlab analyze` survive a storage-backed rerun, hostile storage
contents and output paths are one line (never a traceback), SIGTERM stops a study like Ctrl-C, and no
CSV vitlab writes can carry a spreadsheet formula. Every case is checked by its effect."""
from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from PIL import Image

from vitlab.cli import main
from vitlab.config import load_config
from vitlab.io import append_jsonl, atomic_write_json, atomic_write_text, mark_interrupted, read_json_object, read_jsonl
from vitlab.safepath import UnsafePathError, check_tree, inside, writable_run_dir
from vitlab.study import open_index, run_study
from vitlab.study import plan as planmod
from vitlab.study import spec as specmod
from vitlab.study import storage as storagemod
from vitlab.study.query import format_rows
from vitlab.study.lock import DirLock
from vitlab.study.runsync import StudyStore
from vitlab.study.storage import open_storage
from vitlab.training import run_training
from vitlab.training.loop import write_confusion

SRC = Path(__file__).resolve().parents[1] / "src"
SPEC = {
    "name": "untrusted_writes",
    "base": {"device": "cpu",
             "data": {"name": "synthetic", "synthetic_train": 200, "synthetic_test": 60, "val_fraction": 0.2},
             "model": {"name": "vit_nano", "dim": 32, "depth": 1, "num_heads": 2},
             "train": {"epochs": 1, "batch_size": 50, "threads": 1}},
    "vary": {"model.attn_norm": ["softmax", "cosine", "zscore"]},
    "seeds": 1,
}
@pytest.fixture(scope="module")
def tiny(tiny_run) -> list[str]:
    """The shared tiny run, width 32, for the run directories these tests plant links in."""
    return tiny_run("data.synthetic_train=200", "data.synthetic_test=60", "model.dim=32", "train.batch_size=50")
FORMULA = "=HYPERLINK(\"http://x\",\"y\")"


def fake_trainer(cfg, out_dir, resume=True, on_epoch=None, progress=None, context=None):
    """A finished run directory in milliseconds (what a real trainer leaves, minus checkpoints)."""
    out = Path(out_dir)
    atomic_write_text(out / "config.yaml", yaml.safe_dump({"seed": cfg.seed}))
    atomic_write_text(out / "metrics.jsonl", json.dumps({"epoch": 1, "val_top1": 0.5}) + "\n")
    summary = {"status": "completed", "epochs_run": 1, "best_epoch": 1, "val_top1": 0.5, "test_top1": 0.5}
    atomic_write_json(out / "summary.json", summary)
    return summary


def run_ids(spec: dict = SPEC) -> list[str]:
    return [r.run_id for r in planmod.expand(specmod.resolve(specmod.load_spec(spec)))]


def victim(tmp_path: Path) -> tuple[Path, dict]:
    """A directory outside every root vitlab writes to, and a snapshot of its files."""
    d = tmp_path / "victim"
    d.mkdir(exist_ok=True)
    (d / "config.yaml").write_text("mine\n")
    (d / "events.out.tfevents.1.host").write_bytes(b"precious")
    (d / "summary.json").write_text('{"secret": 1}')
    return d, snapshot(d)


def snapshot(d: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny):
    out = tmp_path_factory.mktemp("run") / "tiny"
    run_training(load_config(None, tiny), out)
    return out


def copy_run(run: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(run, dest)
    return dest


# ---------------------------------------------------------------------------------------------- the rule


def test_inside_refuses_links_below_the_root_and_paths_that_leave_it(tmp_path):
    root = tmp_path / "root"
    (root / "real").mkdir(parents=True)
    (root / "link").symlink_to(tmp_path)
    assert inside(root, "real/new/file.txt") == root / "real" / "new" / "file.txt"
    with pytest.raises(UnsafePathError, match="symbolic link"):
        inside(root, "link/file.txt")
    with pytest.raises(UnsafePathError, match="leaves"):
        inside(root, "real/../../x")
    linked_root = tmp_path / "via"
    linked_root.symlink_to(root)  # the root itself may be a link: the user pointed there
    assert inside(linked_root, "real/x").parent == linked_root / "real"
    with pytest.raises(UnsafePathError, match="symbolic link"):
        check_tree(root)


def test_paths_relative_to_the_working_directory_are_checked_where_they_point(tmp_path, monkeypatch):
    """A study run with a relative `--out findings/x` hands relative run paths to the write checks: they
    check and write where the path points, not at ROOT/ROOT/... (a Ctrl-C'd run's summary once landed in
    RUN/findings/x/runs/ID/summary.json, and a planted run-folder link went unseen)."""
    monkeypatch.chdir(tmp_path)
    run = Path("study", "runs", "abc123")
    run.mkdir(parents=True)
    atomic_write_json(run / "summary.json", {"status": "running"}, root=run)
    assert mark_interrupted(run)
    assert read_json_object(run / "summary.json")["status"] == "interrupted"
    assert sorted(p.name for p in run.iterdir()) == ["summary.json"]  # nothing nested under the run
    vic, before = victim(tmp_path)
    linked = Path("study", "runs", "linked")
    linked.symlink_to(vic)
    with pytest.raises(UnsafePathError, match="symbolic link"):
        writable_run_dir(linked)
    with pytest.raises(UnsafePathError, match="symbolic link"):
        atomic_write_json(linked / "summary.json", {"status": "completed"}, root=Path("study"))
    with pytest.raises(UnsafePathError, match="symbolic link"):
        DirLock(linked, root=Path("study")).try_acquire()
    assert snapshot(vic) == before and not Path("study", "study").exists()


def test_file_writes_never_follow_a_link_at_the_name(tmp_path):
    target = tmp_path / "target.txt"
    target.write_text("keep")
    (tmp_path / "summary.json").symlink_to(target)
    atomic_write_json(tmp_path / "summary.json", {"a": 1})  # replaces the link, not the file it names
    assert target.read_text() == "keep" and not (tmp_path / "summary.json").is_symlink()
    (tmp_path / "metrics.jsonl").symlink_to(target)
    with pytest.raises(OSError):
        append_jsonl(tmp_path / "metrics.jsonl", {"epoch": 1})
    (tmp_path / f".c.yaml.tmp-{os.getpid()}").symlink_to(target)  # a planted temporary name
    with pytest.raises(OSError):
        atomic_write_text(tmp_path / "c.yaml", "x")
    assert target.read_text() == "keep"
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UnsafePathError):
        atomic_write_text(tmp_path / "link" / "x", "x", root=tmp_path)
    assert list((tmp_path / "elsewhere").iterdir()) == []


# ---------------------------------------------------------------------------------------------- storage


@pytest.mark.parametrize("kind", ["path", "file"])
def test_storage_never_reads_or_writes_through_links(kind, tmp_path):
    root = tmp_path / "bucket"
    st = open_storage(str(root) if kind == "path" else f"file://{root}")
    st.put("runs/ok/summary.json", b"{}")
    vic, before = victim(tmp_path)
    (root / "runs" / "linked").symlink_to(vic)
    (root / "runs" / "ok" / "secret.json").symlink_to(vic / "summary.json")
    (root / "runs" / "loop").symlink_to(root / "runs" / "loop")
    for op in (lambda: st.put("runs/linked/config.yaml", b"x"), lambda: st.get("runs/linked/config.yaml"),
               lambda: st.delete("runs/linked/config.yaml"), lambda: st.get("runs/ok/secret.json"),
               lambda: st.put("runs/loop/x", b"x")):
        with pytest.raises(UnsafePathError, match="symbolic link"):
            op()
    keys = st.list("runs")  # neither the linked folder nor the loop is entered
    assert "runs/ok/summary.json" in keys and not any(k.startswith(("runs/linked/", "runs/loop/")) for k in keys)
    assert snapshot(vic) == before


def test_bad_object_keys_are_skipped_with_a_warning(tmp_path, capsys):
    url = f"memory://vitlab-tests/{tmp_path.name}-keys"
    store = StudyStore(tmp_path / "study", url)
    store.storage.put("runs/good/summary.json", b'{"status": "completed"}')
    real = store.storage._raw_list
    store.storage._raw_list = lambda prefix: {**real(prefix), "runs/a/../../x/summary.json": 3,
                                              "runs//b/summary.json": 3}
    assert store.fetch_all() == ["good"]  # no ValueError: the coordinator goes on
    assert "not a plain relative path" in capsys.readouterr().err
    assert (tmp_path / "study" / "runs" / "good" / "summary.json").is_file()
    with pytest.raises(storagemod.StorageKeyError, match="bad storage key"):
        store.storage.get("runs/a/../b")


def test_deeply_nested_spec_in_storage_is_one_line_and_leaves_no_out(tmp_path, cli_error):
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    (bucket / "spec.yaml").write_text("[" * 50_000 + "]" * 50_000)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    err = cli_error(["study", spec, "--out", tmp_path / "new", "--storage", bucket])
    assert "spec.yaml" in err and not (tmp_path / "new").exists()


@pytest.mark.parametrize("kind", ["inplace", "path", "file"])
def test_study_refuses_linked_run_folders_and_completes_the_rest(kind, tmp_path, capsys):
    """A run folder that is a link (in storage or in the study directory), a run whose file in storage
    is a link out of it, and a link loop: those runs fail with one line (not retried), nothing is
    written through the links or copied out of them, the other run completes, and a rerun goes on."""
    vic, before = victim(tmp_path)
    out = tmp_path / "study"
    linked, leaking, healthy = run_ids()
    if kind == "inplace":
        runs, storage = out / "runs", None
    else:
        runs = tmp_path / "bucket" / "runs"
        storage = str(tmp_path / "bucket") if kind == "path" else f"file://{tmp_path}/bucket"
    runs.mkdir(parents=True)
    (runs / linked).symlink_to(vic)
    (runs / leaking).mkdir()
    (runs / leaking / "summary.json").symlink_to(vic / "summary.json")
    (runs / "loop").symlink_to(runs / "loop")
    for attempt in range(2):
        result = run_study(SPEC, out, workers=1, progress=False, storage=storage, trainer=fake_trainer)
        assert result.counts == {"completed": 1, "failed": 2}, result.counts
        assert set(result.errors) == {linked, leaking} and all("symbolic link" in e for e in result.errors.values())
        assert snapshot(vic) == before
        assert read_json_object(out / "runs" / healthy / "summary.json")["status"] == "completed"
        assert not (out / "runs" / leaking / "summary.json").exists() or kind == "inplace"
        with open_index(out) as index:
            record = next(r for r in index.runs() if r.run_id == linked)
        assert (record.status, record.attempts) == ("failed", 1 + attempt)  # bad input: not retried in a session
    assert "Traceback" not in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- commands


def test_report_analyze_track_export_refuse_linked_output_dirs(trained, tmp_path, cli_error, tiny):
    run = copy_run(trained, tmp_path / "run")
    vic, before = victim(tmp_path)
    (run / "analysis").symlink_to(vic)
    assert "symbolic link" in cli_error(["analyze", run, "--sections", "calibration"])
    assert "symbolic link" in cli_error(["report", run])
    assert "symbolic link" in cli_error(["export", run])
    (run / "analysis").unlink()
    (run / "tensorboard").symlink_to(vic)
    assert "symbolic link" in cli_error(["track", run, "--to", "tensorboard"])
    (run / "tensorboard").unlink()
    (run / "checkpoints" / "more").symlink_to(vic)
    assert "symbolic link" in cli_error(["train", *tiny, "--out", run, "--resume"])
    assert snapshot(vic) == before  # nothing written, and track deleted no event file


def test_study_report_refuses_a_linked_report_dir(tmp_path, cli_error):
    out = tmp_path / "study"
    run_study(SPEC, out, workers=1, progress=False, trainer=fake_trainer)
    vic, before = victim(tmp_path)
    (out / "report").symlink_to(vic)
    assert "symbolic link" in cli_error(["report", out])
    assert snapshot(vic) == before


def test_export_checks_its_output_before_the_work(trained, tmp_path, monkeypatch, cli_error):
    from vitlab.analysis import export

    monkeypatch.setattr(export, "load_run", lambda *a, **k: pytest.fail("exported before checking -o"))
    (tmp_path / "file").write_text("x")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    for bad in (tmp_path, "/", "/proc/vitlab-model.onnx", tmp_path / "file" / "m.onnx", tmp_path / "loop"):
        cli_error(["export", trained, "-o", bad])


def test_export_then_analyze_calibration(trained, tmp_path, capsys):
    run = copy_run(trained, tmp_path / "run")
    assert main(["export", str(run)]) == 0
    assert main(["analyze", str(run), "--sections", "calibration"]) == 0
    out = capsys.readouterr().out
    assert "calibration: ECE" in out and "efficiency: not measured yet" in out
    assert main(["report", str(run)]) == 0


def test_one_class_folder_is_one_line(tmp_path, cli_error):
    (tmp_path / "data" / "only").mkdir(parents=True)
    for i in range(4):
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(tmp_path / "data" / "only" / f"img{i}.png")
    err = cli_error(["train", "data.name=folder", f"data.folder_path={tmp_path / 'data'}", "device=cpu",
                     "--out", tmp_path / "run"])
    assert "only one class" in err and not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------- storage: analysis survives


def test_analysis_of_a_storage_backed_run_survives_a_rerun(tmp_path):
    spec = {**SPEC, "vary": {"model.attn_norm": ["softmax"]}}
    out, bucket = tmp_path / "study", tmp_path / "bucket"
    assert run_study(spec, out, workers=1, progress=False, storage=str(bucket)).ok
    rid = run_ids(spec)[0]
    assert main(["analyze", str(out / "runs" / rid), "--sections", "calibration"]) == 0
    assert run_study(spec, out, workers=1, progress=False).trained == []  # the rerun mirrors storage again
    summary = read_json_object(out / "runs" / rid / "summary.json")
    assert isinstance(summary.get("calib_overconfidence"), float)
    assert json.loads((bucket / "runs" / rid / "summary.json").read_text())["calib_overconfidence"] == \
        summary["calib_overconfidence"]
    assert (bucket / "runs" / rid / "analysis" / "analysis.json").is_file()
    with open_index(out) as index:
        assert index.runs()[0].summary["calib_overconfidence"] == summary["calib_overconfidence"]


# ---------------------------------------------------------------------------------------------- SIGTERM


def session_processes(sid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            if fields[0] != "Z" and int(fields[3]) == sid:
                pids.append(int(entry.name))
    return pids


@pytest.mark.parametrize("kind", ["inplace", "storage"])
def test_sigterm_stops_a_study_like_ctrl_c(kind, tmp_path):
    long = {**SPEC, "base": {**SPEC["base"], "train": {**SPEC["base"]["train"], "epochs": 30}},
            "vary": {"model.attn_norm": ["softmax"]}}
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(long))
    out, scratch = tmp_path / "study", tmp_path / "scratch"
    cmd = [sys.executable, "-m", "vitlab", "study", str(spec), "--out", str(out), "--workers", "1"]
    if kind == "storage":
        cmd += ["--storage", f"file://{tmp_path}/bucket"]
    env = {**os.environ, "PYTHONPATH": str(SRC), "VITLAB_SCRATCH": str(scratch)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    metrics = (tmp_path / "bucket" if kind == "storage" else out) / "runs" / run_ids(long)[0] / "metrics.jsonl"
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None and not read_jsonl(metrics):
            time.sleep(0.05)
        assert proc.poll() is None, "the study ended before it could be stopped"
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + signal.SIGTERM
    assert err.strip().splitlines()[-1].startswith("terminated") and "Traceback" not in err, err  # after progress
    with open_index(out) as index:
        assert {r.status for r in index.runs()} == {"pending"}
    assert not [p for p in scratch.rglob("*") if p.is_file()]  # no checkpoints left in the temp dir
    for _ in range(50):
        if not session_processes(proc.pid):
            break
        time.sleep(0.1)
    assert session_processes(proc.pid) == []


# ---------------------------------------------------------------------------------------------- CSV


def test_every_csv_defuses_formulas(tmp_path):
    import torch

    write_confusion(tmp_path / "c.csv", torch.tensor([[1, 0], [0, 1]]), [FORMULA, "-1"])
    rows = list(csv.reader(io.StringIO((tmp_path / "c.csv").read_text())))
    assert rows[0] == ["true\\pred", "'" + FORMULA, "-1"] and rows[1][0] == "'" + FORMULA
    text = format_rows([{"level": "@SUM(A1)", "x": -2.5, "note": "+cmd"}], "csv")
    assert list(csv.reader(io.StringIO(text)))[1] == ["'@SUM(A1)", "-2.5", "'+cmd"]
