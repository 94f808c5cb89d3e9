"""A run or study directory in the tools researchers already use: pandas and the trackers.

    df = vitlab.load_results("out/attn")        # one row per run (per run and factor in a study)
    h = vitlab.load_history("out/attn")         # one row per run and epoch
    vitlab.export_dir("out/attn", "mlflow", "mlruns")   # = vitlab track out/attn --to mlflow --uri mlruns

A study directory is read through its index (factor, level and status of each run, the same rows as
`vitlab results`); a single run directory (`vitlab train --out RUN`) through its files.
"""
from __future__ import annotations

from pathlib import Path

from .errors import UserError
from .safepath import inside
from .study import open_index, results_rows
from .study.index import INDEX_FILE, RUNS_DIR, SPEC_FILE
from .track.backfill import Export, export_runs
from .track.frames import epoch_rows, to_frame, with_details
from .rundir import RunStatus, is_run_dir, warn_damaged
from .track.rundata import RunData, read_run

#: Where `vitlab track DIR --to mlflow` writes without --uri: a local MLflow store inside DIR.
DEFAULT_MLFLOW_DIR = "mlruns"


def _is_study(d: Path) -> bool:
    return (d / INDEX_FILE).is_file() or (d / SPEC_FILE).is_file()


def _kind(directory: str | Path) -> tuple[Path, str]:
    d = Path(directory)
    if not d.is_dir():
        raise UserError(f"{d}: no such directory")
    if _is_study(d):
        return d, "study"
    if is_run_dir(d):
        return d, "run"
    raise UserError(f"{d}: neither a study directory (spec.yaml, index.sqlite) nor a run directory (config.yaml)")


def _study(d: Path, warn_damaged: bool = True):
    """(meta, index records) of a study directory (a warning line per damaged run, unless told not to)."""
    with open_index(d, warn_damaged=warn_damaged) as index:
        return index.meta(), index.runs()


def run_data(directory: str | Path) -> tuple[list[RunData], str | None]:
    """(the runs of a study or run directory, the study's name or None). A run shared by several
    factors of a study is one RunData, with the factors and levels joined by ', '."""
    d, kind = _kind(directory)
    if kind == "run":
        return [read_run(d)], None
    meta, records = _study(d)
    name = str(meta.get("name") or d.name)
    by_run: dict[str, list] = {}
    for rec in records:
        by_run.setdefault(rec.run_id, []).append(rec)
    runs = []
    for run_id, recs in by_run.items():
        path = d / RUNS_DIR / run_id
        if not is_run_dir(path):
            continue  # not started yet
        if recs[0].status == RunStatus.DAMAGED:
            continue  # warned about when the index marked it
        context = {"study": name, "factor": ", ".join(r.factor for r in recs),
                   "level": ", ".join(r.level_label for r in recs), "seed": recs[0].seed}
        try:
            runs.append(read_run(path, run_id=run_id, context=context))
        except UserError as e:  # a file damaged since the index read it: this run only
            warn_damaged(e)
    return runs, name


def load_results(directory: str | Path):
    """A pandas DataFrame with one row per run (in a study: per run and factor, as `vitlab results`):
    run_id, factor, level, seed, status, epochs and the study's metrics first — the columns of
    `vitlab results --format csv` — then every other summary field and the config as dotted columns
    (`model.num_heads`, `optim.lr`, ...). Needs `pip install 'vitlab[pandas]'`."""
    d, kind = _kind(directory)
    if kind == "run":
        run = read_run(d)
        s = run.summary
        row = {"run_id": run.run_id, "factor": None, "level": None, "seed": run.config.get("seed"),
               "status": s.get("status"), "epochs": s.get("epochs_run")}
        return to_frame([with_details(row, s, run.config)], "load_results")
    _, records = _study(d, warn_damaged=False)  # results_rows warns
    detail = {(r.run_id, r.factor): r for r in records}
    rows = []
    for row in results_rows(d):
        rec = detail.get((row["run_id"], row["factor"]))
        rows.append(with_details(row, rec.summary or {}, rec.config or {}) if rec else row)
    return to_frame(rows, "load_results")


def load_history(directory: str | Path):
    """A pandas DataFrame with one row per run and epoch (in a study: per run, factor and epoch, so
    that grouping by factor and level gives each level's curves): run_id, factor, level, seed, epoch,
    then every metrics.jsonl field. Needs `pip install 'vitlab[pandas]'`."""
    d, kind = _kind(directory)
    if kind == "run":
        run = read_run(d)
        keys = {"run_id": run.run_id, "factor": None, "level": None, "seed": run.config.get("seed")}
        return to_frame(epoch_rows(keys, run.history), "load_history")
    _, records = _study(d)
    rows = []
    for r in records:
        keys = {"run_id": r.run_id, "factor": r.factor, "level": r.level_label, "seed": r.seed}
        rows += epoch_rows(keys, r.epochs)
    return to_frame(rows, "load_history")


def export_dir(directory: str | Path, to: str, uri: str | None = None) -> Export:
    """Export a study or run directory to TensorBoard or MLflow (`vitlab track`); idempotent.

    tensorboard: without `uri` each run writes RUN/tensorboard/ (view with `tensorboard --logdir
    DIR`), with it `uri`/<run_id>/. mlflow: `uri` is a tracking URI or a local path (default DIR/mlruns,
    a file store); the experiment is the study's name."""
    d, _ = _kind(directory)
    runs, _ = run_data(d)
    if to == "mlflow" and not uri:
        uri = str(inside(d, DEFAULT_MLFLOW_DIR, "directory"))  # DIR/mlruns planted as a link: refused
    return export_runs(runs, to, uri, logdir_hint=d)


__all__ = ["export_dir", "load_history", "load_results", "run_data"]
