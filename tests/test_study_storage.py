"""Study storage: the Storage interface (memory://, file://, a path), retries, run leases, publishing,
and studies whose run directories live in a storage distinct from the study directory."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import fsspec
import pytest
import yaml
from fsspec.implementations.memory import MemoryFileSystem

from vitlab.cli import main as cli_main
from vitlab.errors import UserError
from vitlab.io import read_jsonl
from vitlab.study import lease as leasemod
from vitlab.study import open_index, results_rows, run_study
from vitlab.study import storage as storagemod
from vitlab.study.lease import Lease, LeaseLost
from vitlab.study.runsync import Publisher, StudyStore, fetch_checkpoint, publish_rank
from vitlab.study.spec import merge
from vitlab.study.storage import LocalStorage, StorageError, open_storage
from vitlab.study.worker import Task, execute

TINY = {
    "name": "tiny_storage",
    "base": {"device": "cpu",
             "data": {"name": "synthetic", "synthetic_train": 300, "synthetic_test": 100, "val_fraction": 0.2},
             "model": {"name": "vit_nano", "dim": 32, "depth": 1, "num_heads": 2},
             "train": {"epochs": 2, "batch_size": 64, "threads": 1}},
    "vary": {"model.attn_norm": ["softmax", "cosine"]},
    "seeds": 1,
}
TIMING_KEYS = {"epoch_time_s", "throughput_img_s", "train_time_s", "train_cpu_s", "minutes", "data_time_frac"}
SRC = Path(__file__).resolve().parents[1] / "src"


def untimed(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in TIMING_KEYS}


def run_files(run: Path) -> tuple[list[dict], dict]:
    return ([untimed(r) for r in read_jsonl(run / "metrics.jsonl")],
            untimed(json.loads((run / "summary.json").read_text())))


@pytest.fixture
def fast_storage(monkeypatch):
    """Retries and lease settling in milliseconds."""
    monkeypatch.setattr(storagemod, "RETRY_DELAYS_S", (0.01, 0.01, 0.01))
    monkeypatch.setattr(leasemod, "SETTLE_S", 0.01)
    monkeypatch.setattr(leasemod, "POLL_S", 0.02)


def mem_url(tmp_path: Path) -> str:
    return f"memory://vitlab-tests/{tmp_path.name}"


# ---------------------------------------------------------------------------------------------- Storage


@pytest.mark.parametrize("kind", ["memory", "file", "path"])
def test_storage_put_get_list_delete(kind, tmp_path):
    location = {"memory": mem_url(tmp_path), "file": f"file://{tmp_path}/s", "path": str(tmp_path / "s")}[kind]
    st = open_storage(location)
    assert isinstance(st, LocalStorage) == (kind == "path")
    assert st.get("runs/a/summary.json") is None and st.list("runs") == [] and not st.exists("runs/a/x")
    st.put("runs/a/summary.json", b"{}")
    st.put("runs/a/checkpoints/last.pt", b"\x00" * 10)
    st.put("runs/ab/metrics.jsonl", b"1\n")
    st.put("spec.yaml", b"name: x\n")
    st.put("runs/a/summary.json", b'{"status": "completed"}')  # replaced whole
    assert st.get("runs/a/summary.json") == b'{"status": "completed"}'
    assert st.list("runs/a") == ["runs/a/checkpoints/last.pt", "runs/a/summary.json"]  # not runs/ab
    assert st.list() == ["runs/a/checkpoints/last.pt", "runs/a/summary.json", "runs/ab/metrics.jsonl", "spec.yaml"]
    assert st.exists("spec.yaml") and not st.exists("runs")
    st.delete("runs/a/summary.json")
    st.delete("runs/a/summary.json")  # already gone: fine
    assert st.get("runs/a/summary.json") is None
    assert st.download("runs/ab/metrics.jsonl", tmp_path / "local" / "m.jsonl")
    assert (tmp_path / "local" / "m.jsonl").read_bytes() == b"1\n"
    for bad in ("", "/abs", "a/../b", "a//b"):
        with pytest.raises(StorageError, match="bad storage key"):  # a one-line UserError, not a traceback
            st.put(bad, b"x")


def test_file_storage_writes_through_a_temporary_key(tmp_path, monkeypatch):
    st = open_storage(f"file://{tmp_path}")
    seen = []
    real_mv = st.fs.mv
    monkeypatch.setattr(st.fs, "mv", lambda a, b, **kw: (seen.append((a, b)), real_mv(a, b, **kw)))
    st.put("runs/a/summary.json", b"{}")
    (src, dst), = seen
    assert dst.endswith("runs/a/summary.json") and storagemod.TMP_MARK in src
    # an unfinished write (a crash between the two steps) is not listed
    (tmp_path / "runs" / "a" / f"summary.json{storagemod.TMP_MARK}dead").write_bytes(b"{")
    assert st.list("runs") == ["runs/a/summary.json"]


def test_open_storage_errors_are_one_line(tmp_path):
    with pytest.raises(UserError, match="unknown scheme 'nosuch'"):
        open_storage("nosuch://x/y")
    with pytest.raises(UserError, match="needs an absolute path"):
        open_storage("file://relative/dir")
    with pytest.raises(UserError, match="empty location"):
        open_storage(" ")
    missing = next((p for p, pkg in (("gs", "gcsfs"), ("az", "adlfs"), ("s3", "s3fs"))
                    if not _installed(pkg)), None)
    if missing is None:
        pytest.skip("gcsfs, adlfs and s3fs are all installed")
    with pytest.raises(UserError, match=rf"pip install {storagemod.PROTOCOL_PACKAGES[missing]}"):
        open_storage(f"{missing}://bucket/study")


def _installed(pkg: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(pkg) is not None


class FlakyFS(MemoryFileSystem):
    """A memory filesystem that is unreachable for the next `failures` operations."""

    protocol = "flaky"
    failures = 0
    calls = 0

    def _flake(self):
        FlakyFS.calls += 1
        if FlakyFS.failures > 0:
            FlakyFS.failures -= 1
            raise ConnectionError("endpoint unreachable")

    def cat_file(self, path, *a, **kw):
        self._flake()
        return super().cat_file(path, *a, **kw)

    def pipe_file(self, path, *a, **kw):
        self._flake()
        return super().pipe_file(path, *a, **kw)

    def find(self, path, *a, **kw):
        self._flake()
        return super().find(path, *a, **kw)


@pytest.fixture
def flaky(fast_storage, tmp_path):
    fsspec.register_implementation("flaky", FlakyFS, clobber=True)
    FlakyFS.failures = FlakyFS.calls = 0
    yield open_storage(f"flaky://vitlab-tests/{tmp_path.name}")
    FlakyFS.failures = 0


def test_transient_storage_failures_are_retried(flaky):
    FlakyFS.failures = 2
    flaky.put("runs/a/summary.json", b"{}")  # fails twice, then lands
    assert FlakyFS.calls == 3 and FlakyFS.failures == 0
    FlakyFS.failures = 3
    assert flaky.get("runs/a/summary.json") == b"{}"  # the last allowed try
    assert flaky.list("runs") == ["runs/a/summary.json"]


def test_storage_down_for_good_is_a_clear_one_line_error(flaky):
    FlakyFS.failures = 100
    with pytest.raises(StorageError) as e:
        flaky.put("runs/a/summary.json", b"{}")
    msg = str(e.value)
    assert "\n" not in msg and "put runs/a/summary.json still failing after 4 tries" in msg
    assert "ConnectionError: endpoint unreachable" in msg and msg.startswith(f"storage {flaky.url}")
    assert isinstance(e.value, UserError)  # the CLI prints it as one line and exits 2


# ---------------------------------------------------------------------------------------------- leases


def test_a_lease_is_held_by_one_worker_at_a_time(fast_storage, tmp_path):
    st = open_storage(mem_url(tmp_path))
    a, b = Lease(st, "runs/x/.lease"), Lease(st, "runs/x/.lease")
    assert a.acquire(wait_s=0)
    assert not b.acquire(wait_s=0.1)  # a renews it: b waits
    a.check()
    a.release()
    assert st.get("runs/x/.lease") is None
    assert b.acquire(wait_s=0)
    with pytest.raises(LeaseLost):
        a.check()
    b.release()


def test_a_lease_of_a_dead_holder_is_taken_over(fast_storage, tmp_path, monkeypatch):
    st = open_storage(mem_url(tmp_path))
    # on this machine, its process gone: no wait
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    st.put("runs/x/.lease", json.dumps({"token": "t", "machine": leasemod.machine_id(),
                                        "pid": int(dead.stdout), "beat": 7}).encode())
    t0 = time.monotonic()
    mine = Lease(st, "runs/x/.lease", ttl_s=30)
    assert mine.acquire(wait_s=1) and time.monotonic() - t0 < 1
    mine.release()
    # on another machine that stopped renewing (a lost node): taken once unchanged for ttl_s
    lost = Lease(st, "runs/x/.lease", ttl_s=0.3)
    monkeypatch.setattr(leasemod, "machine_id", lambda: "elsewhere|boot|ns")
    assert lost.acquire(wait_s=0)
    lost._stop.set()  # its heartbeat dies with the node
    lost._thread.join()
    monkeypatch.undo()
    monkeypatch.setattr(leasemod, "SETTLE_S", 0.01)
    monkeypatch.setattr(leasemod, "POLL_S", 0.02)
    taker = Lease(st, "runs/x/.lease", ttl_s=0.3)
    assert not taker.acquire(wait_s=0.1)  # not yet: unchanged for less than 0.3 s
    assert taker.acquire(wait_s=2)
    with pytest.raises(LeaseLost, match="taken over by pid"):
        lost.check()  # the node comes back: it must not write the run any more
    taker.release()


# ---------------------------------------------------------------------------------------------- publishing


def test_publish_order_and_only_what_changed(tmp_path):
    st = open_storage(mem_url(tmp_path))
    puts = []
    real = st._raw_put
    st._raw_put = lambda key, data: (puts.append(key), real(key, data))
    local = tmp_path / "scratch"
    pub = Publisher(st, "r1", local)
    pub.pull()  # nothing in storage yet: an empty scratch directory
    for rel in ("summary.json", "metrics.jsonl", "config.yaml", "checkpoints/last.pt", "checkpoints/best.pt",
                ".lock", ".summary.json.tmp-12"):
        (local / rel).parent.mkdir(parents=True, exist_ok=True)
        (local / rel).write_text(rel)
    assert pub.publish() == ["checkpoints/best.pt", "checkpoints/last.pt", "config.yaml", "metrics.jsonl",
                             "summary.json"]  # hidden files (locks, tmp files) never leave the machine
    assert len(puts) == 5 and [publish_rank(k.split("/", 2)[2]) for k in puts] == sorted(publish_rank(k.split("/", 2)[2]) for k in puts)
    puts.clear()
    assert pub.publish() == []
    time.sleep(0.01)
    (local / "metrics.jsonl").write_text("two lines")
    assert pub.publish() == ["metrics.jsonl"] and puts == ["runs/r1/metrics.jsonl"]
    # a pull replaces the scratch directory with what storage holds
    (local / "stale.txt").write_text("x")
    again = Publisher(st, "r1", local)
    assert sorted(again.pull()) == ["checkpoints/best.pt", "checkpoints/last.pt", "config.yaml", "metrics.jsonl",
                                    "summary.json"]
    assert not (local / "stale.txt").exists() and again.publish() == []


# ---------------------------------------------------------------------------------------------- one worker, memory://


def tiny_task(run_id: str, location: str | None, run_dir: Path) -> Task:
    from vitlab.study import plan as planmod
    from vitlab.study import spec as specmod

    runs = planmod.expand(specmod.resolve(specmod.load_spec(TINY)))
    return Task(run_id=run_id, config=runs[0].config_dict(), run_dir=str(run_dir), storage=location)


def test_worker_trains_in_scratch_publishes_and_resumes_from_storage(fast_storage, tmp_path, monkeypatch):
    monkeypatch.setenv("VITLAB_SCRATCH", str(tmp_path / "scratch"))
    ref = execute(tiny_task("r", None, tmp_path / "inplace" / "r"))  # trained in its run directory
    assert ref.error is None and ref.summary["status"] == "completed"

    url = mem_url(tmp_path)
    task = tiny_task("r", url, tmp_path / "study" / "runs" / "r")
    stop = RuntimeError("node lost after epoch 1")

    def die_after_first_epoch(epoch, row):
        if epoch == 1:
            raise stop

    first = execute(task, on_epoch=die_after_first_epoch)
    assert first.error and "node lost after epoch 1" in first.error and not first.user_error
    st = open_storage(url)
    assert len(st.get("runs/r/metrics.jsonl").splitlines()) == 1 and st.exists("runs/r/checkpoints/last.pt")
    assert not st.exists("runs/r/.lease") and not Path(task.run_dir).exists()  # the worker wrote storage only
    assert not (tmp_path / "scratch").exists() or not any((tmp_path / "scratch").rglob("*.pt"))

    second = execute(task)  # another node: pulls the epoch-1 checkpoint from storage and finishes
    assert second.error is None and second.summary["status"] == "completed"
    assert second.summary["epochs_run"] == 2
    store = StudyStore(tmp_path / "study", url)
    assert store.fetch_all() == ["r"]
    assert run_files(Path(task.run_dir)) == run_files(tmp_path / "inplace" / "r")  # = uninterrupted
    assert not (Path(task.run_dir) / "checkpoints").exists()  # checkpoints stay in storage...
    best = store.fetch_file("r", "checkpoints/best.pt")  # ...until asked for
    assert best is not None and best.read_bytes() == st.get("runs/r/checkpoints/best.pt")

    puts = []
    real = st._raw_put
    monkeypatch.setattr(storagemod.FsspecStorage, "_raw_put", lambda self, k, d: (puts.append(k), real(k, d)))
    third = execute(task)  # a finished run: nothing trains, nothing but the lease is written
    assert third.error is None and third.summary == second.summary
    assert all(k.endswith("/.lease") for k in puts)


def test_a_runs_analysis_is_computed_in_scratch_and_published(fast_storage, tmp_path, monkeypatch):
    from vitlab.analysis import missing_sections, read_analysis

    monkeypatch.setenv("VITLAB_SCRATCH", str(tmp_path / "scratch"))
    url = mem_url(tmp_path)
    task = tiny_task("r", url, tmp_path / "study" / "runs" / "r")
    task.analysis, task.analysis_options = ["calibration"], {"compile": False}
    out = execute(task)
    assert out.error is None and out.summary["status"] == "completed"
    st = open_storage(url)
    assert st.exists("runs/r/analysis/analysis.json")
    local = StudyStore(tmp_path / "study", url).fetch("r")  # the coordinator's mirror has it too
    assert missing_sections(local, ["calibration"]) == [] and "calibration" in read_analysis(local)


def test_worker_reports_storage_down_as_a_retryable_failure(flaky, tmp_path, monkeypatch):
    monkeypatch.setenv("VITLAB_SCRATCH", str(tmp_path / "scratch"))
    FlakyFS.failures = 1000
    out = execute(tiny_task("r", flaky.url, tmp_path / "study" / "runs" / "r"))
    assert out.error and "still failing" in out.error and not out.user_error  # the coordinator retries it
    FlakyFS.failures = 0


# ---------------------------------------------------------------------------------------------- studies, file://


@pytest.fixture(scope="module")
def stored_study(tmp_path_factory):
    """The tiny study trained with its runs in a file:// storage distinct from the study directory,
    and once more in place, as the reference."""
    base = tmp_path_factory.mktemp("stored")
    spec = base / "tiny.yaml"
    spec.write_text(yaml.safe_dump(TINY))
    url = f"file://{base}/bucket/tiny"
    result = run_study(spec, base / "study", workers=2, storage=url, progress=False)
    assert result.ok and result.counts == {"completed": 2}, result.errors
    ref = run_study(spec, base / "ref", workers=1, progress=False)
    assert ref.ok
    return base, spec, url


def test_every_run_directory_arrives_in_storage(stored_study):
    base, spec, url = stored_study
    st = open_storage(url)
    ids = [r.run_id for r in open_index(base / "study").runs()]
    assert len(ids) == 2
    assert yaml.safe_load(st.get("spec.yaml"))["name"] == "tiny_storage"
    for rid in ids:
        keys = {k.split("/", 2)[2] for k in st.list(f"runs/{rid}")}
        assert keys == {"config.yaml", "metrics.jsonl", "summary.json", "confusion_test.csv",
                        "checkpoints/last.pt", "checkpoints/best.pt"}
        # the study directory mirrors the small files, not the checkpoints
        local = base / "study" / "runs" / rid
        assert sorted(p.name for p in local.iterdir()) == ["config.yaml", "confusion_test.csv", "metrics.jsonl",
                                                            "summary.json"]
        assert run_files(local) == run_files(base / "ref" / "runs" / rid)  # same results as in place
    assert json.loads((base / "study" / "storage.json").read_text()) == {"location": url}
    # `vitlab analyze` / `export` of such a run get its checkpoint from storage on demand
    best = fetch_checkpoint(base / "study" / "runs" / ids[0])
    assert best.read_bytes() == st.get(f"runs/{ids[0]}/checkpoints/best.pt")
    assert fetch_checkpoint(base / "ref" / "runs" / ids[0]) is None  # kept in place: nothing to fetch


def test_rerun_uses_the_recorded_storage_and_finds_nothing_to_do(stored_study, capsys):
    base, spec, url = stored_study
    stamps = {p: p.stat().st_mtime_ns for p in (base / "bucket").rglob("*")}
    again = run_study(spec, base / "study", workers=2, progress=False)  # no --storage: the recorded one
    assert again.ok and again.trained == []
    assert cli_main(["study", str(spec), "--out", str(base / "study"), "--storage", url]) == 0
    assert "0 of 2 runs to do" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in (base / "bucket").rglob("*")} == stamps  # storage untouched


def test_lost_study_runs_are_restored_from_storage_without_retraining(stored_study, tmp_path, capsys):
    import shutil

    base, spec, url = stored_study
    copy = tmp_path / "study"
    shutil.copytree(base / "study", copy)
    shutil.rmtree(copy / "runs")
    (copy / "index.sqlite").unlink()
    # a reader rebuilds the index from storage
    rows = results_rows(copy)
    assert sorted(r["status"] for r in rows) == ["completed", "completed"]
    shutil.rmtree(copy / "runs")
    (copy / "index.sqlite").unlink()
    again = run_study(spec, copy, workers=2, progress=False)
    assert again.ok and again.trained == []
    for rid in (r.run_id for r in open_index(copy).runs()):
        assert run_files(copy / "runs" / rid) == run_files(base / "ref" / "runs" / rid)
    assert cli_main(["results", str(copy), "--format", "csv"]) == 0
    assert capsys.readouterr().out.count("completed") == 2
    assert cli_main(["report", str(copy)]) == 0 and (copy / "report" / "report.html").is_file()


def test_storage_mismatches_are_refused_and_leave_nothing(stored_study, tmp_path, capsys):
    base, spec, url = stored_study
    before = sorted(p.name for p in (base / "study").iterdir())
    # another storage for a study that recorded one
    assert cli_main(["study", str(spec), "--out", str(base / "study"), "--storage", str(tmp_path / "x")]) == 2
    assert f"keeps its runs in {url}" in capsys.readouterr().err
    assert sorted(p.name for p in (base / "study").iterdir()) == before
    # a storage that holds another study
    other = dict(TINY, name="other", vary={"model.attn_norm": ["linear"]})
    other_spec = tmp_path / "other.yaml"
    other_spec.write_text(yaml.safe_dump(other))
    assert cli_main(["study", str(other_spec), "--out", str(tmp_path / "new"), "--storage", url]) == 2
    err = capsys.readouterr().err.strip()
    assert "holds a different study ('tiny_storage')" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "new").exists()
    # memory:// cannot reach worker processes
    with pytest.raises(UserError, match="memory:// lives inside one process"):
        run_study(spec, tmp_path / "mem", storage="memory://x/y", progress=False)
    assert not (tmp_path / "mem").exists()
    # a study trained in place cannot move its runs by a flag
    with pytest.raises(UserError, match="already holds runs trained in the study directory"):
        run_study(spec, base / "ref", storage=f"file://{tmp_path}/elsewhere", progress=False)
    # --storage naming the study directory itself is the default
    assert run_study(spec, base / "ref", storage=str(base / "ref"), progress=False).trained == []
    assert not (base / "ref" / "storage.json").exists()


def start_study_until_an_epoch_is_in_storage(spec: Path, tmp_path: Path, stderr: int):
    """`vitlab study SPEC --storage file://TMP/bucket` in its own process group, returned (with its storage)
    once a run has published an epoch there, and before the study finishes."""
    url = f"file://{tmp_path}/bucket"
    env = {**os.environ, "PYTHONPATH": str(SRC), "VITLAB_SCRATCH": str(tmp_path / "scratch")}
    cmd = [sys.executable, "-m", "vitlab", "study", str(spec), "--out", str(tmp_path / "study"),
           "--storage", url, "--workers", "1"]
    # Ctrl-C as a terminal delivers it: a suite started in the background by a script inherits SIGINT
    # ignored, and Python (as every Unix program) keeps an inherited ignore, so the study would run on.
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    st = open_storage(url)
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if any(st.get(k) for k in st.list("runs") if k.endswith("/metrics.jsonl")):
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the study finished before it could be interrupted"
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    return proc, st


def test_killed_coordinator_resumes_from_storage_and_redoes_nothing(stored_study, tmp_path):
    """SIGKILL the coordinator once a run has published an epoch; the rerun completes the study with the
    results of an uninterrupted run, and no run completed before the kill is trained again."""
    base, spec, _ = stored_study
    proc, st = start_study_until_an_epoch_is_in_storage(spec, tmp_path, stderr=subprocess.DEVNULL)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = {k.split("/")[1] for k in st.list("runs") if k.endswith("/summary.json")
                   and json.loads(st.get(k))["status"] == "completed"}
    result = run_study(spec, tmp_path / "study", workers=1, progress=False)
    assert result.ok and result.counts == {"completed": 2}
    assert not set(result.trained) & done_before and len(result.trained) == 2 - len(done_before)
    assert not list((tmp_path / "bucket").rglob(".lease"))  # every lease released
    for rid in (r.run_id for r in open_index(tmp_path / "study").runs()):
        assert run_files(tmp_path / "study" / "runs" / rid) == run_files(base / "ref" / "runs" / rid)


def test_ctrl_c_marks_the_runs_in_storage_interrupted_and_a_rerun_completes_them(tmp_path):
    """Ctrl-C (SIGINT to the process group) once a run has published an epoch: the runs that were
    training say `interrupted` in storage (not `running`), no lease is left, and a rerun completes them.
    The runs train 20 epochs, not TINY's 2: on a quiet machine both 2-epoch runs were done 0.3-0.6 s after
    the first published epoch, and a signal that came later would find nothing left to interrupt."""
    spec = tmp_path / "long.yaml"
    spec.write_text(yaml.safe_dump(merge(TINY, {"base": {"train": {"epochs": 20}}})))
    proc, st = start_study_until_an_epoch_is_in_storage(spec, tmp_path, stderr=subprocess.PIPE)
    try:
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert "interrupted — rerun the same command to resume" in proc.stderr.read().decode()
    statuses = {k.split("/")[1]: json.loads(st.get(k))["status"] for k in st.list("runs") if k.endswith("/summary.json")}
    assert "interrupted" in statuses.values() and "running" not in statuses.values(), statuses
    assert not list((tmp_path / "bucket").rglob(".lease"))
    local = {rid: json.loads((tmp_path / "study" / "runs" / rid / "summary.json").read_text())["status"]
             for rid, status in statuses.items() if status == "interrupted"
             and (tmp_path / "study" / "runs" / rid / "summary.json").is_file()}
    assert "running" not in local.values(), local
    result = run_study(spec, tmp_path / "study", workers=1, progress=False)
    assert result.ok and result.counts == {"completed": 2}


# ---------------------------------------------------------------------------------------------- one lock, one claim


def logging_trainer(cfg, out_dir, resume=True, on_epoch=None, progress=None, context=None):
    """Trains nothing for 1.5 s and logs each training it does (a finished run is returned as it is,
    as run_training does); the log is VITLAB_TEST_TRAIN_LOG."""
    out = Path(out_dir)
    if (out / "summary.json").is_file():
        return json.loads((out / "summary.json").read_text())
    with open(os.environ["VITLAB_TEST_TRAIN_LOG"], "a") as f:
        f.write(f"{context['run_id']} start {time.time()}\n")
    time.sleep(1.5)
    (out / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "val_top1": 0.5}) + "\n")
    summary = {"status": "completed", "epochs_run": 1, "best_epoch": 1, "val_top1": 0.5, "test_top1": 0.5}
    (out / "summary.json").write_text(json.dumps(summary))
    with open(os.environ["VITLAB_TEST_TRAIN_LOG"], "a") as f:
        f.write(f"{context['run_id']} end {time.time()}\n")
    return summary


def test_in_place_flock_and_storage_lease_exclude_each_other(fast_storage, tmp_path, monkeypatch):
    from vitlab.study import runsync
    from vitlab.study.runsync import Workspace

    study = tmp_path / "study"
    run = study / "runs" / "r1"
    run.mkdir(parents=True)
    for location in (str(study), f"file://{study}"):
        with Workspace("r1", run, None):  # a worker of the coordinator running the study in place
            lease = Lease(open_storage(location), "runs/r1/.lease")
            assert not lease.acquire(wait_s=0.2)  # a coordinator using the study as --storage waits
            assert "in place" in lease.describe(lease.read())
        assert lease.acquire(wait_s=0.2)
        monkeypatch.setattr(runsync, "RUN_LOCK_WAIT_S", 0.2)
        with pytest.raises(RuntimeError, match="still locked"):  # and the other way round
            with Workspace("r1", run, None):
                pass
        lease.release()
        with Workspace("r1", run, None):
            pass


def test_a_study_in_place_and_a_coordinator_using_it_as_storage_train_each_run_once(tmp_path, monkeypatch):
    import threading

    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(TINY))
    log = tmp_path / "train.log"
    monkeypatch.setenv("VITLAB_TEST_TRAIN_LOG", str(log))
    monkeypatch.setenv("VITLAB_SCRATCH", str(tmp_path / "scratch"))
    results = {}

    def coordinator(name, **kw):
        results[name] = run_study(spec, tmp_path / name, workers=2, progress=False, trainer=logging_trainer, **kw)

    threads = [threading.Thread(target=coordinator, args=("inplace",)),
               threading.Thread(target=coordinator, args=("other",), kwargs={"storage": str(tmp_path / "inplace")})]
    for t in threads:
        t.start()
        time.sleep(0.3)
    for t in threads:
        t.join(timeout=300)
    assert results["inplace"].ok and results["other"].ok, (results["inplace"].errors, results["other"].errors)
    starts = [line.split()[0] for line in log.read_text().splitlines() if " start " in line]
    assert sorted(starts) == sorted(set(starts)) and len(starts) == 2  # each run trained once, by one of them
    for rid in starts:
        assert json.loads((tmp_path / "other" / "runs" / rid / "summary.json").read_text())["status"] == "completed"


def test_two_specs_racing_for_a_new_storage_one_wins_and_can_rerun(tmp_path, capsys):
    import threading

    specs = []
    for name in ("first", "second"):
        p = tmp_path / f"{name}.yaml"
        p.write_text(yaml.safe_dump(dict(TINY, name=name)))
        specs.append(p)
    storage = tmp_path / "bucket"
    barrier = threading.Barrier(2)
    outcome = {}

    def claim(name, spec):
        try:
            outcome[name] = run_study(spec, tmp_path / name, progress=False, storage=str(storage),
                                      trainer=logging_trainer)
        except UserError as e:
            outcome[name] = str(e)

    original_put_new = storagemod.Storage.put_new

    def racing_put_new(self, key, data):
        barrier.wait(timeout=10)  # both coordinators claim at the same instant
        return original_put_new(self, key, data)

    storagemod.Storage.put_new = racing_put_new
    os.environ["VITLAB_TEST_TRAIN_LOG"] = str(tmp_path / "log")
    try:
        threads = [threading.Thread(target=claim, args=(s.stem, s)) for s in specs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    finally:
        storagemod.Storage.put_new = original_put_new
    refused = [n for n, msg in outcome.items() if "holds a different study" in str(msg)]
    assert len(refused) == 1, outcome
    loser = refused[0]
    winner = "second" if loser == "first" else "first"
    assert len(outcome[loser].splitlines()) == 1
    assert yaml.safe_load((storage / "spec.yaml").read_text())["name"] == winner
    assert not (tmp_path / loser).exists()  # the refused command left nothing behind
    # the winner can rerun later (nothing to do); the loser is still refused in one line
    try:
        assert outcome[winner].ok
        again = run_study(tmp_path / f"{winner}.yaml", tmp_path / winner, workers=1, progress=False,
                          trainer=logging_trainer)
    finally:
        del os.environ["VITLAB_TEST_TRAIN_LOG"]
    assert again.ok and again.trained == []
    assert cli_main(["study", str(tmp_path / f"{loser}.yaml"), "--out", str(tmp_path / loser),
                     "--storage", str(storage)]) == 2
    assert "holds a different study" in capsys.readouterr().err
