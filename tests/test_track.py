"""TensorBoard and MLflow tracking, the backfill and the DataFrames, read back with the trackers' own
readers (TensorBoard's EventAccumulator, MLflow's client on a local file store)."""
from __future__ import annotations

import json
import math
import os
import sys
import warnings
from pathlib import Path

import pytest
import yaml

import vitlab
from vitlab.cli import main
from vitlab.config import load_config
from vitlab.identity import config_hash, identity_dict
from vitlab.errors import UserError
from vitlab.io import read_jsonl
from vitlab.rundir import CONFUSION_FILE, METRICS_FILE, MLFLOW_RUN_FILE, SUMMARY_FILE, TENSORBOARD_DIR
from vitlab.track import TrackerWarning
from vitlab.track.base import flatten
from vitlab.track.mlflow import EPOCHS_TAG, MlflowTracker, tracking_uri
from vitlab.track.tensorboard import CONFUSION_TAG, TensorBoardTracker, scalar_tag
from vitlab.training import run_training

TINY = [
    "data.name=synthetic", "data.synthetic_train=320", "data.synthetic_test=120", "data.val_fraction=0.25",
    "model.name=vit_nano", "model.dim=32", "model.depth=1", "model.num_heads=2",
    "train.batch_size=64", "train.eval_batch_size=120", "train.epochs=3", "train.progress=false",
    "train.threads=1", "sched.warmup_epochs=1",
]
CONTEXT = {"study": "tiny", "factor": "model.dim", "level": "32", "seed": 0}


def tiny(*extra):
    return load_config(None, TINY + list(extra))


def needs(module: str):
    return pytest.importorskip(module, reason=f"the {module} extra is not installed")


def tb_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} as TensorBoard's own reader sees the directory."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0})
    ea.Reload()
    return {tag: [(e.step, e.value) for e in ea.Scalars(tag)] for tag in ea.Tags()["scalars"]}


def tb_accumulator(log_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0})
    ea.Reload()
    return ea


def tb_hparams(ea) -> dict:
    """The hyperparameters of the run's hparams session-start summary."""
    from tensorboard.plugins.hparams import metadata, plugin_data_pb2

    content = ea.PluginTagToContent(metadata.PLUGIN_NAME)[metadata.SESSION_START_INFO_TAG]
    data = plugin_data_pb2.HParamsPluginData.FromString(content)
    out = {}
    for k, v in data.session_start_info.hparams.items():
        kind = v.WhichOneof("kind")
        out[k] = getattr(v, kind)
    return out


def ml_client(store: Path):
    needs("mlflow")
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri(str(store)))


def ml_runs(client, experiment: str) -> list:
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id]) if exp else []


def history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-7)


# ---------------------------------------------------------------------------------------------- config


def test_tracking_fields_never_change_the_run_id():
    plain = tiny()
    tracked = tiny("track.tensorboard=true", "track.mlflow=mlruns")
    assert config_hash(plain) == config_hash(tracked)
    assert "track" not in identity_dict(tracked)
    with pytest.raises(UserError, match="track.mlflow"):
        tiny("track.mlflow=' '")
    with pytest.raises(UserError, match="did you mean 'tensorboard'"):
        tiny("track.tensorbord=true")


def test_scalar_tags_and_tracking_uris(tmp_path, monkeypatch):
    assert scalar_tag("val_top1") == "val/top1"
    assert scalar_tag("train_loss") == "train/loss"
    assert scalar_tag("test_f1_macro") == "test/f1_macro"
    assert scalar_tag("lr") == "epoch/lr"
    assert scalar_tag("throughput_img_s") == "epoch/throughput_img_s"
    monkeypatch.chdir(tmp_path)
    assert tracking_uri("mlruns") == (tmp_path / "mlruns").resolve().as_uri()
    assert tracking_uri("exp/track.db") == f"sqlite:///{(tmp_path / 'exp' / 'track.db').resolve()}"
    for uri in ("http://127.0.0.1:5000", "file:///x/y", "sqlite:///a.db", "databricks"):
        assert tracking_uri(uri) == uri


# ---------------------------------------------------------------------------------------------- live tracking


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    """One tiny run trained with both trackers on, in a study context."""
    needs("tensorboard")
    needs("mlflow")
    base = tmp_path_factory.mktemp("tracked")
    store = base / "mlruns"
    cfg = tiny("track.tensorboard=true", f"track.mlflow={store}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = run_training(cfg, base / "run", context=CONTEXT)
    assert not [w for w in caught if issubclass(w.category, TrackerWarning)], [str(w.message) for w in caught]
    return base / "run", store, cfg, summary


def test_tensorboard_holds_every_epoch_the_hparams_and_the_confusion_matrix(tracked_run):
    run, _, cfg, summary = tracked_run
    rows = read_jsonl(run / METRICS_FILE)
    ea = tb_accumulator(run / TENSORBOARD_DIR)
    scalars = {tag: [(e.step, e.value) for e in ea.Scalars(tag)] for tag in ea.Tags()["scalars"]}
    for key in ("train_loss", "train_top1", "val_loss", "val_top1", "val_f1_macro", "lr", "throughput_img_s"):
        got = scalars[scalar_tag(key)]
        assert [s for s, _ in got] == [1, 2, 3], key
        assert all(close(v, r[key]) for (_, v), r in zip(got, rows)), key
    assert close(scalars["final/test_top1"][-1][1], summary["test_top1"])
    assert scalars["final/test_top1"][-1][0] == summary["epochs_run"]
    hp = tb_hparams(ea)
    assert hp["model.dim"] == 32 and hp["model.name"] == "vit_nano" and hp["seed"] == 0
    assert hp["factor"] == "model.dim" and hp["level"] == "32" and hp["study"] == "tiny"
    assert "track.mlflow" not in hp  # execution-only fields are no hyperparameters
    (image,) = ea.Images(CONFUSION_TAG)
    assert image.encoded_image_string.startswith(b"\x89PNG") and image.width > 100


def test_mlflow_run_has_params_tags_metrics_and_artifacts(tracked_run):
    run, store, cfg, summary = tracked_run
    client = ml_client(store)
    (mrun,) = ml_runs(client, "tiny")
    assert json.loads((run / MLFLOW_RUN_FILE).read_text())[tracking_uri(str(store))]["run_id"] == mrun.info.run_id
    assert mrun.info.status == "FINISHED"
    tags = mrun.data.tags
    assert {k: tags[k] for k in ("study", "factor", "level", "seed")} == {
        "study": "tiny", "factor": "model.dim", "level": "32", "seed": "0"}
    assert tags["vitlab.run_id"] == config_hash(cfg) and tags["vitlab.status"] == "completed"
    params = mrun.data.params
    expected = {k: (v if isinstance(v, str) else json.dumps(v)) for k, v in flatten(identity_dict(cfg)).items()}
    assert params == expected
    rows = read_jsonl(run / METRICS_FILE)
    for key in ("train_loss", "val_top1", "lr", "throughput_img_s"):
        got = history(client, mrun.info.run_id, key)
        assert [s for s, _ in got] == [1, 2, 3]
        assert all(close(v, r[key]) for (_, v), r in zip(got, rows)), key
    assert close(mrun.data.metrics["final/test_top1"], summary["test_top1"])
    names = {a.path for a in client.list_artifacts(mrun.info.run_id)}
    assert {SUMMARY_FILE, CONFUSION_FILE, "config.yaml", "confusion_test.png"} <= names
    local = client.download_artifacts(mrun.info.run_id, SUMMARY_FILE, str(run.parent / "dl"))
    assert json.loads(Path(local).read_text())["test_top1"] == summary["test_top1"]


def test_resumed_run_continues_its_tracker_runs(tmp_path):
    needs("tensorboard")
    needs("mlflow")
    store = tmp_path / "mlruns"
    cfg = tiny("track.tensorboard=true", f"track.mlflow={store}")

    def stop_after_two(epoch, row):
        if epoch == 2:
            raise KeyboardInterrupt  # killed right after epoch 2's checkpoint
        return False

    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, tmp_path / "run", on_epoch=stop_after_two, context=CONTEXT)
    client = ml_client(store)
    (first,) = ml_runs(client, "tiny")
    assert first.info.status == "KILLED" and first.data.tags[EPOCHS_TAG] == "2"
    run_training(cfg, tmp_path / "run", resume=True, context=CONTEXT)
    (again,) = ml_runs(client, "tiny")  # the same MLflow run, not a second one
    assert again.info.run_id == first.info.run_id and again.info.status == "FINISHED"
    assert [s for s, _ in history(client, again.info.run_id, "val_top1")] == [1, 2, 3]
    scalars = tb_scalars(tmp_path / "run" / TENSORBOARD_DIR)
    rows = read_jsonl(tmp_path / "run" / METRICS_FILE)
    got = scalars["val/top1"]
    assert [s for s, _ in got] == [1, 2, 3]  # purge_step: the second session replaces, never repeats
    assert all(close(v, r["val_top1"]) for (_, v), r in zip(got, rows))


def test_a_failing_tracker_is_a_warning_and_training_goes_on(tmp_path, monkeypatch):
    needs("tensorboard")
    needs("mlflow")

    def boom(self, *args):
        raise RuntimeError("tracking server unreachable")

    monkeypatch.setattr(TensorBoardTracker, "start", boom)
    monkeypatch.setattr(MlflowTracker, "log_epoch", boom)
    store = tmp_path / "mlruns"
    cfg = tiny("track.tensorboard=true", f"track.mlflow={store}")
    with pytest.warns(TrackerWarning, match="tracker tensorboard: start failed .*unreachable.*training goes on"):
        summary = run_training(cfg, tmp_path / "run", context=CONTEXT)
    assert summary["status"] == "completed" and len(read_jsonl(tmp_path / "run" / METRICS_FILE)) == 3
    client = ml_client(store)
    (mrun,) = ml_runs(client, "tiny")  # MLflow lost the epochs (they failed) but still got the end
    assert mrun.info.status == "FINISHED" and "final/test_top1" in mrun.data.metrics
    assert history(client, mrun.info.run_id, "val_top1") == []


class RecordingTracker:
    """A tracker that records its calls and raises in the ones named in `fail`."""

    name = "recorder"

    def __init__(self, fail=()):
        self.calls, self.fail = [], set(fail)

    def _record(self, method, arg):
        self.calls.append((method, arg))
        if method in self.fail:
            raise OSError(f"{method} broke")

    def start(self, history, resumed):
        self._record("start", (len(history), resumed))

    def log_epoch(self, row):
        self._record("log_epoch", row["epoch"])

    def finish(self, summary):
        self._record("finish", summary["status"])

    def close(self):
        self._record("close", None)


def test_trackers_see_every_call_in_order_and_their_failures_are_warnings(tmp_path, monkeypatch):
    from vitlab.track import Trackers
    from vitlab.training import loop

    good, bad = RecordingTracker(), RecordingTracker(fail={"log_epoch", "finish"})
    monkeypatch.setattr(loop, "open_trackers", lambda cfg, out, context: Trackers([good, bad]))
    with pytest.warns(TrackerWarning, match="tracker recorder: log_epoch failed .*OSError: log_epoch broke"):
        summary = run_training(tiny(), tmp_path / "run")
    assert summary["status"] == "completed"
    expected = [("start", (0, False)), ("log_epoch", 1), ("log_epoch", 2), ("log_epoch", 3),
                ("finish", "completed"), ("close", None)]
    assert good.calls == bad.calls == expected  # a failed call does not stop the next ones
    failing_start = RecordingTracker(fail={"start"})
    monkeypatch.setattr(loop, "open_trackers", lambda cfg, out, context: Trackers([failing_start]))
    with pytest.warns(TrackerWarning, match="start failed"):
        assert run_training(tiny("seed=1"), tmp_path / "run2")["status"] == "completed"
    assert failing_start.calls == [("start", (0, False)), ("close", None)]  # nothing to log to after a failed start


def test_missing_extra_is_a_one_line_error_before_anything_is_written(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow -> ImportError
    with pytest.raises(UserError, match=r"track.mlflow needs the 'mlflow' extra: pip install 'vitlab\[mlflow\]'"):
        run_training(tiny("track.mlflow=mlruns"), tmp_path / "run")
    assert not (tmp_path / "run" / "config.yaml").exists()
    assert main(["train", "--out", str(tmp_path / "cli"), *TINY, "track.mlflow=mlruns"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install 'vitlab[mlflow]'" in err
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    assert main(["train", "--out", str(tmp_path / "cli"), *TINY, "track.tensorboard=true"]) == 2
    assert "pip install 'vitlab[tensorboard]'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- backfill


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """A 2-run study (2 attention normalizations, 1 seed, 2 epochs), trained without tracking."""
    from vitlab.study import run_study

    base = tmp_path_factory.mktemp("study")
    spec = {
        "name": "tiny_norms",
        "base": {"device": "cpu", "data": {"name": "synthetic", "synthetic_train": 320, "synthetic_test": 100,
                                           "val_fraction": 0.25},
                 "model": {"name": "vit_nano", "dim": 32, "depth": 1, "num_heads": 2},
                 "sched": {"warmup_epochs": 1},
                 "train": {"epochs": 2, "batch_size": 64, "eval_batch_size": 100, "threads": 1}},
        "vary": {"model.attn_norm": ["softmax", "cosine"]},
        "seeds": 1,
    }
    (base / "spec.yaml").write_text(yaml.safe_dump(spec))
    result = run_study(base / "spec.yaml", base / "out", workers=1, progress=False)
    assert result.ok
    return base / "out"


def test_backfill_to_mlflow_twice_gives_the_same_runs(study, tmp_path, capsys):
    needs("mlflow")
    store = tmp_path / "mlruns"
    assert main(["track", str(study), "--to", "mlflow", "--uri", str(store)]) == 0
    assert "2 new, 0 already there" in capsys.readouterr().out
    client = ml_client(store)
    first = {r.data.tags["vitlab.run_id"]: r for r in ml_runs(client, "tiny_norms")}
    assert set(first) == {p.name for p in (study / "runs").iterdir()}
    assert main(["track", str(study), "--to", "mlflow", "--uri", str(store)]) == 0
    assert "0 new, 2 already there" in capsys.readouterr().out
    second = {r.data.tags["vitlab.run_id"]: r for r in ml_runs(client, "tiny_norms")}
    assert {k: r.info.run_id for k, r in second.items()} == {k: r.info.run_id for k, r in first.items()}
    for run_id, mrun in second.items():
        rows = read_jsonl(study / "runs" / run_id / METRICS_FILE)
        got = history(client, mrun.info.run_id, "val_top1")
        assert got == sorted((r["epoch"], pytest.approx(r["val_top1"])) for r in rows)
        assert len(client.get_metric_history(mrun.info.run_id, "final/test_top1")) == 1
        assert mrun.data.tags["factor"] == "model.attn_norm"
        assert mrun.data.tags["level"] == mrun.data.params["model.attn_norm"]


def test_backfill_to_tensorboard_twice_rewrites_the_same_runs(study, tmp_path):
    needs("tensorboard")
    logdir = tmp_path / "tb"
    for _ in range(2):
        assert main(["track", str(study), "--to", "tensorboard", "--uri", str(logdir)]) == 0
    for run in (study / "runs").iterdir():
        assert len(list((logdir / run.name).glob("events.out.tfevents.*"))) == 1
        scalars = tb_scalars(logdir / run.name)
        rows = read_jsonl(run / METRICS_FILE)
        assert [s for s, _ in scalars["val/top1"]] == [r["epoch"] for r in rows]
    hp = tb_hparams(tb_accumulator(logdir / run.name))
    assert hp["study"] == "tiny_norms" and hp["factor"] == "model.attn_norm"


def test_backfill_after_live_tracking_adds_nothing(tracked_run, capsys):
    run, store, _, _ = tracked_run
    client = ml_client(store)
    (before,) = ml_runs(client, "tiny")
    assert main(["track", str(run), "--to", "mlflow", "--uri", str(store)]) == 0
    assert "0 new, 1 already there" in capsys.readouterr().out
    (after,) = ml_runs(client, "tiny")  # found through RUN/mlflow_run.json
    assert after.info.run_id == before.info.run_id
    assert len(client.get_metric_history(after.info.run_id, "val_top1")) == 3


def test_backfill_errors(tmp_path, monkeypatch, capsys):
    assert main(["track", str(tmp_path), "--to", "mlflow"]) == 2
    assert "neither a study directory" in capsys.readouterr().err
    assert main(["track", str(tmp_path / "nope"), "--to", "tensorboard"]) == 2
    assert "no such directory" in capsys.readouterr().err
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("seed: 0\n")
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    assert main(["track", str(run_dir), "--to", "tensorboard"]) == 2
    assert "pip install 'vitlab[tensorboard]'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- DataFrames


def test_load_results_holds_the_results_csv_plus_summary_and_config(study):
    needs("pandas")
    from vitlab.study import results_rows

    df = vitlab.load_results(study)
    rows = results_rows(study)
    assert len(df) == len(rows) == 2
    assert list(df.columns[:len(rows[0])]) == list(rows[0])  # the CSV's columns first, in its order
    for i, row in enumerate(rows):
        for key, value in row.items():
            got = df.iloc[i][key]
            assert got == value or (value is None and got is None), key
        cfg = yaml.safe_load((study / "runs" / row["run_id"] / "config.yaml").read_text())
        assert df.iloc[i]["model.attn_norm"] == row["level"] == cfg["model"]["attn_norm"]
        assert df.iloc[i]["optim.lr"] == cfg["optim"]["lr"]
        summary = json.loads((study / "runs" / row["run_id"] / SUMMARY_FILE).read_text())
        assert df.iloc[i]["test_top1"] == summary["test_top1"] and df.iloc[i]["params"] == summary["params"]


def test_load_history_matches_metrics_jsonl(study, tracked_run):
    needs("pandas")
    h = vitlab.load_history(study)
    assert list(h.columns[:5]) == ["run_id", "factor", "level", "seed", "epoch"]
    for run_id, part in h.groupby("run_id"):
        rows = read_jsonl(study / "runs" / run_id / METRICS_FILE)
        assert part["epoch"].tolist() == [r["epoch"] for r in rows]
        assert part["val_top1"].tolist() == pytest.approx([r["val_top1"] for r in rows])
    run, _, cfg, summary = tracked_run
    one = vitlab.load_results(run)
    assert len(one) == 1 and one.iloc[0]["run_id"] == config_hash(cfg)
    assert one.iloc[0]["status"] == "completed" and one.iloc[0]["test_top1"] == summary["test_top1"]
    assert one.iloc[0]["model.dim"] == 32
    hist = vitlab.load_history(run)
    assert hist["train_loss"].tolist() == pytest.approx([r["train_loss"] for r in read_jsonl(run / METRICS_FILE)])


def test_dataframes_need_pandas(study, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(UserError, match=r"pip install 'vitlab\[pandas\]'"):
        vitlab.load_results(study)


def test_a_study_report_renders_in_a_notebook(study):
    rep = vitlab.open_report(study)
    html = rep._repr_html_()
    assert html.count("<table>") >= 2  # the factor table and the paired comparison
    assert "tiny_norms" in html and "softmax" in html and "cosine" in html
    assert "data:image/png;base64," in html and "<html" not in html
    assert (study / "report" / "tables").is_dir()


def test_a_study_tags_its_mlflow_runs_with_study_factor_level_and_seed(tmp_path):
    needs("mlflow")
    from vitlab.study import run_study

    store = tmp_path / "mlruns"
    spec = {"name": "tagged", "base": {"device": "cpu",
                                       "data": {"name": "synthetic", "synthetic_train": 200, "synthetic_test": 100,
                                                "val_fraction": 0.2},
                                       "model": {"name": "vit_nano", "dim": 32, "depth": 1, "num_heads": 2},
                                       "train": {"epochs": 1, "batch_size": 64, "threads": 1},
                                       "track": {"mlflow": str(store)}},
            "vary": {"model.attn_norm": ["softmax", "cosine"]}, "seeds": 1}
    result = run_study(spec, tmp_path / "study", workers=1, progress=False)
    assert result.ok, result.errors
    client = ml_client(store)
    exp = client.get_experiment_by_name("tagged")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id])
    tags = sorted((r.data.tags["study"], r.data.tags["factor"], r.data.tags["level"], r.data.tags["seed"])
                  for r in runs)
    assert tags == [("tagged", "model.attn_norm", "cosine", "0"), ("tagged", "model.attn_norm", "softmax", "0")]
