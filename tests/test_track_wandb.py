"""Weights & Biases tracking, offline, read back from the run's .wandb transaction log with W&B's own
record schema (wandb.proto) and compared with what TensorBoard wrote for the same run."""
from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pytest

from vitlab.cli import main
from vitlab.config import load_config
from vitlab.identity import config_hash
from vitlab.io import read_jsonl
from vitlab.rundir import METRICS_FILE, SUMMARY_FILE, TENSORBOARD_DIR, WANDB_RUN_FILE
from vitlab.track import TrackerWarning
from vitlab.track.wandb import offline_runs
from vitlab.training import run_training

from test_track import CONTEXT, TINY, close, tb_scalars

pytest.importorskip("wandb", reason="the wandb extra is not installed")
pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")

#: The .wandb file: a 7-byte header, then LevelDB-log records in 32 KiB blocks (7-byte record headers).
HEADER_BYTES, BLOCK_BYTES, RECORD_HEADER = 7, 32768, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def wandb_records(path: Path) -> list:
    """Every record of a .wandb file as W&B's own protobuf `Record`."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    if len(data) < HEADER_BYTES:  # not written yet
        return []
    assert data[:4] == b":W&B"
    records, pos, pending = [], HEADER_BYTES, b""
    while pos + RECORD_HEADER <= len(data):
        room = BLOCK_BYTES - pos % BLOCK_BYTES
        if room < RECORD_HEADER:  # the block's tail is padding
            pos += room
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + RECORD_HEADER])
        if length == 0 and kind == 0:
            pos += room
            continue
        chunk = data[pos + RECORD_HEADER:pos + RECORD_HEADER + length]
        if len(chunk) < length:  # a record still being written: the log so far
            break
        pos += RECORD_HEADER + length
        pending = chunk if kind in (FULL, FIRST) else pending + chunk
        if kind in (FULL, LAST):
            rec = pb.Record()
            rec.ParseFromString(pending)
            records.append(rec)
    return records


#: How long a test waits for W&B's service process to write a finished run's log to disk.
FLUSH_TIMEOUT_S = 120.0


def finished_records(log: Path) -> list:
    """The records of a finished run's log, once W&B's service (a separate process that buffers its
    writes) has written them through the `exit` record: `run.finish()` can return before that."""
    deadline = time.monotonic() + FLUSH_TIMEOUT_S
    while True:
        records = wandb_records(log)
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            return records
        assert time.monotonic() < deadline, f"{log}: no exit record after {FLUSH_TIMEOUT_S:.0f} s"
        time.sleep(0.2)


def wandb_run(run_dir: Path) -> dict:
    """What the offline W&B runs of a run directory hold: run record, config, history by step, summary."""
    out = {"runs": [], "config": {}, "history": {}, "summary": {}, "artifacts": []}
    for d in offline_runs(run_dir):
        (log,) = d.glob("run-*.wandb")
        for rec in finished_records(log):
            kind = rec.WhichOneof("record_type")
            if kind == "run":
                out["runs"].append(rec.run)
                out["config"].update({i.key: json.loads(i.value_json) for i in rec.run.config.update})
            elif kind == "config":
                out["config"].update({i.key: json.loads(i.value_json) for i in rec.config.update})
            elif kind == "history":
                items = {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in rec.history.item}
                out["history"][int(items["_step"])] = items
            elif kind == "summary":
                out["summary"].update({(i.key or "/".join(i.nested_key)): json.loads(i.value_json)
                                       for i in rec.summary.update})
            elif kind == "artifact":
                out["artifacts"].append(rec.artifact)
    return out


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No API key anywhere: W&B must go offline by itself."""
    for var in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.netrc from `wandb login`
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "home" / ".config"))


def test_wandb_holds_what_tensorboard_holds(tmp_path, offline):
    cfg = load_config(None, TINY + ["track.tensorboard=true", "track.wandb=team/vit"])
    assert config_hash(cfg) == config_hash(load_config(None, TINY))  # execution-only
    run = tmp_path / "run"
    summary = run_training(cfg, run, context=CONTEXT)
    got = wandb_run(run)
    (r,) = got["runs"]
    assert (r.project, r.entity, r.run_group) == ("vit", "team", "tiny")
    assert set(r.tags) == {"factor:model.dim", "level:32", "seed:0"}
    assert got["config"]["model.dim"] == 32 and got["config"]["vitlab.run_id"] == config_hash(cfg)
    scalars = tb_scalars(run / TENSORBOARD_DIR)
    epochs = [s for s in sorted(got["history"]) if "val/top1" in got["history"][s]]
    assert epochs == [1, 2, 3]
    for tag, points in scalars.items():
        if tag.startswith("final/"):
            assert close(got["summary"][tag], points[-1][1]), tag
            continue
        assert [got["history"][s][tag] for s, _ in points] == pytest.approx([v for _, v in points], rel=1e-6), tag
    assert got["summary"]["final/test_top1"] == pytest.approx(summary["test_top1"])
    assert any(a.name == f"run-{config_hash(cfg)}" for a in got["artifacts"])
    assert json.loads((run / WANDB_RUN_FILE).read_text())["team/vit"]["id"] == r.run_id


def test_resumed_run_continues_its_wandb_run(tmp_path, offline):
    cfg = load_config(None, TINY + ["track.wandb=vit"])

    def stop_after_two(epoch, row):
        if epoch == 2:
            raise KeyboardInterrupt
        return False

    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, tmp_path / "run", on_epoch=stop_after_two, context=CONTEXT)
    first = json.loads((tmp_path / "run" / WANDB_RUN_FILE).read_text())["vit"]
    assert first["epochs_logged"] == 2
    run_training(cfg, tmp_path / "run", resume=True, context=CONTEXT)
    got = wandb_run(tmp_path / "run")
    assert {r.run_id for r in got["runs"]} == {first["id"]} and len(got["runs"]) == 2  # one W&B run, resumed
    rows = read_jsonl(tmp_path / "run" / METRICS_FILE)
    steps = sorted(s for s in got["history"] if "val/top1" in got["history"][s])
    assert steps == [1, 2, 3]  # each epoch once
    assert [got["history"][s]["val/top1"] for s in steps] == pytest.approx([r["val_top1"] for r in rows])


def test_backfill_to_wandb_and_a_failing_wandb_never_fails_training(tmp_path, offline, monkeypatch, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(run), "--quiet"]) == 0
    assert main(["track", str(run), "--to", "wandb", "--uri", "vit"]) == 0
    assert "exported 1 run(s) to W&B" in capsys.readouterr().out
    got = wandb_run(run)
    summary = json.loads((run / SUMMARY_FILE).read_text())
    assert sorted(s for s in got["history"] if "val/top1" in got["history"][s]) == [1, 2, 3]
    assert got["summary"]["final/test_top1"] == pytest.approx(summary["test_top1"])

    import wandb

    def broken(*a, **k):
        raise ConnectionError("W&B is down")

    monkeypatch.setattr(wandb, "init", broken)
    with pytest.warns(TrackerWarning, match="wandb: start failed"):
        out = run_training(load_config(None, TINY + ["track.wandb=vit"]), tmp_path / "run2")
    assert out["status"] == "completed"


def test_bad_wandb_project_is_a_one_line_error(tmp_path, capsys):
    assert main(["train", *TINY, "track.wandb=a b", "--out", str(tmp_path / "r")]) == 2
    assert "track.wandb: must be PROJECT or ENTITY/PROJECT" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
