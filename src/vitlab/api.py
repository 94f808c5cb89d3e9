"""`vitlab.Study`: a study directory as one object, in the spirit of Optuna's study.

    study = vitlab.Study.create("studies/vit_attention_norm.yaml", "out/attn", profile="quick", workers=2)
    study.run()                      # train every run once (a rerun resumes and skips what is done)
    df = study.results()             # one row per run: a pandas DataFrame (a list of dicts without pandas)
    study.analyze(sections="calibration")
    print(study.report())            # tables, figures and report.html
    print(vitlab.Study("out/attn").status())   # reopen it later, from the directory alone

A study is its directory: `spec.yaml` (what it is), `runs/` (the source of truth) and `index.sqlite`.
`Study` only holds the path, the spec and the `RunOptions` (how it runs); every method calls the
function the CLI calls (`run_study`, `run_search`, `load_results`, `analyze_run`, `write_report`,
`study_status`), so the object, the CLI and those functions behave the same. Bad input is a one-line
`UserError` before anything is written.

This module sits above `report` and `study` in the layers (see .importlinter): it may use all of them.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib.util
from pathlib import Path
from typing import Any, Callable

from .analysis import analyze_run, read_analysis
from .analysis.metrics import scalar_metrics
from .errors import UserError
from .notebook import load_results
from .report import write_report
from .study import StudySpec, format_rows, load_spec, open_index, resolve, results_rows
from .study.index import INDEX_FILE, SPEC_FILE, run_dir
from .study.runner import RunOptions, StudyResult, prepare_study_dir, run_study, study_directory
from .study.runsync import fetch_checkpoint, publish_analysis
from .study.search import SearchResult, check_space, run_search
from .study.plan import expand
from .study.spec import spec_to_dict
from .study.status import study_status

#: RunOptions fields a search has no use for: it trains on local workers into its own directory.
NOT_FOR_SEARCH = ("backend", "storage", "retrain_damaged", "ray_address", "gpus_per_run", "cpus_per_run",
                  "ray_pip", "slurm", "detach")


class Study:
    """A vitlab study: a spec (`vary`/`grid` runs or an Optuna `space`) and the directory it runs in.

    `Study(path)` opens an existing study directory (its `spec.yaml` or `index.sqlite`); `Study(path, spec=SPEC)` (or
    `Study.create`) names the spec for a new one. `spec` is a YAML path, a dict or a `StudySpec`;
    `options` (or keyword arguments of `RunOptions`) say how `run` and `search` run it.
    """

    def __init__(self, path: str | Path, spec: str | Path | dict | StudySpec | None = None,
                 options: RunOptions | None = None, **option_values: Any) -> None:
        self.path = Path(path)
        #: How `run` and `search` run the study unless told otherwise.
        self.options = dataclasses.replace(options or RunOptions(), **option_values)
        #: What the study was given: a spec file, dict or StudySpec (for a reopened study, its spec.yaml).
        self.source = self.path / SPEC_FILE if spec is None else spec
        if spec is not None:
            self.spec = resolve(load_spec(spec), self.options.profile)  # a new study's spec: checked now
        elif not (self.path / SPEC_FILE).is_file() and not (self.path / INDEX_FILE).is_file():
            raise UserError(f"{self.path}: not a vitlab study directory (no {SPEC_FILE}); make one with "
                            f"`vitlab study SPEC --out {self.path}` or vitlab.Study.create(spec, path)")

    @functools.cached_property
    def spec(self) -> StudySpec:
        """The checked spec with the options' profile applied. A reopened study reads its spec.yaml on
        first use: results, reports and status need only the index and the run directories."""
        return resolve(load_spec(self.source), self.options.profile)

    @classmethod
    def create(cls, spec: str | Path | dict | StudySpec, out_dir: str | Path, **options: Any) -> Study:
        """Check `spec` (every run's config and model, or every end of a search's space) and write it to
        OUT_DIR/spec.yaml, as the first `run`/`search` would; nothing is trained. `options` are
        `RunOptions` fields kept for later calls. Refuses (one line) a directory that holds another
        study or other files; creating the same study again is a no-op."""
        study = cls(out_dir, spec=spec, **options)
        if study.kind == "search":
            check_space(study.spec)
        else:
            expand(study.spec, max_runs=study.options.max_runs)
        with study_directory(study.path) as out:
            prepare_study_dir(out, spec_to_dict(study.spec))
        return study

    @property
    def name(self) -> str:
        """The study's name (the spec's `name:`)."""
        return self.spec.name

    @property
    def kind(self) -> str:
        """"study" (runs from `vary`/`grid`, trained by `run`) or "search" (an Optuna `space`, `search`)."""
        return self.spec.kind

    def run(self, **options: Any) -> StudyResult:
        """Train every run of the study once (`vitlab study`): a rerun skips completed runs and resumes
        interrupted ones. `options` override this study's `RunOptions` for this call. Returns what the
        session left (counts per status, errors of failed runs)."""
        if self.kind != "study":
            raise UserError(f"{self.path}: {self.name} is a search (space:); run it with .search(trials=N) "
                            "or `vitlab search`")
        opts = dataclasses.replace(self.options, **options)
        return run_study(self.source, self.path, **opts.kwargs())

    def search(self, trials: int, **options: Any) -> SearchResult:
        """Run (or continue) the Optuna search until `trials` trials have finished (`vitlab search`).
        `options`: `workers`, `profile`, `max_retries`, `progress` (a search trains on local workers)."""
        if self.kind != "search":
            raise UserError(f"{self.path}: {self.name} has no space: section; run it with .run() or `vitlab study`")
        opts = dataclasses.replace(self.options, **options)
        default = RunOptions()
        for name in NOT_FOR_SEARCH:
            if getattr(opts, name) != getattr(default, name):
                raise UserError(f"{name}: not used by a search (it trains on local workers in {self.path})")
        return run_search(self.source, self.path, trials=trials, workers=opts.workers, profile=opts.profile,
                          max_retries=opts.max_retries, progress=opts.progress, trainer=opts.trainer)

    def results(self):
        """One row per run (per run and factor when a run serves several factors), as
        `vitlab results`: with pandas installed, `vitlab.load_results`'s DataFrame (every summary
        field and config key as columns); without it, `results_rows`' list of dicts."""
        if importlib.util.find_spec("pandas") is None:
            return results_rows(self.path)
        return load_results(self.path)

    def table(self, where: str | None = None, format: str = "table") -> str:
        """The rows of `results` as text (`vitlab results`): `format` table, csv, json or md; `where`
        filters on any column, summary field or dotted config key (`"model.num_heads == 4"`)."""
        return format_rows(results_rows(self.path, where=where), format)

    def analyze(self, sections: str | list[str] | None = None, force: bool = False,
                progress: Callable[[str], None] | None = None, **options: Any) -> dict[str, dict]:
        """Analyze every completed run (`vitlab analyze RUN` for each): {run_id: analysis}.

        `sections`, `force` and `options` (samples, device, corruption_images, seed, compile, ...) are
        `vitlab.analyze_run`'s. A run kept in another storage has its checkpoint fetched first and its
        analysis published back there, so a rerun's mirror keeps it."""
        with open_index(self.path) as index:
            run_ids = list(dict.fromkeys(r.run_id for r in index.runs(status="completed")))
        return {rid: analyze_run_dir(run_dir(self.path, rid), sections=sections, force=force, progress=progress,
                                     **options) for rid in run_ids}

    def report(self, output: str | Path | None = None, ci: str | None = None,
               target_delta: float | None = None) -> Path:
        """Write the study's tables, figures and HTML report (`vitlab report`); returns the HTML path
        (default DIR/report/report.html). `ci` and `target_delta` override the spec's `report:`."""
        return write_report(self.path, output, ci=ci, target_delta=target_delta)

    def status(self) -> str:
        """Progress read from the run directories, starting nothing (`vitlab status`): counts per
        status and one line per unfinished run."""
        return study_status(self.path)

    def __repr__(self) -> str:
        return f"Study({str(self.path)!r}, name={self.name!r}, kind={self.kind!r})"


def analyze_run_dir(path: str | Path, sections: str | list[str] | None = None, force: bool = False,
                    progress: Callable[[str], None] | None = None, **options: Any) -> dict:
    """`vitlab analyze RUN_DIR`: `vitlab.analyze_run` on one run directory, which may belong to a study
    kept in another storage (`--storage`): its best checkpoint is fetched first and the new analysis
    published back there, so a rerun's mirror keeps it. Returns the analysis dict."""
    fetch_checkpoint(path)
    analysis = analyze_run(path, sections=sections, force=force, progress=progress, **options)
    publish_run_analysis(path)
    return analysis


def publish_run_analysis(path: str | Path) -> None:
    """A run of a study kept in another storage: its new analysis (RUN/analysis and the analysis
    scalars of summary.json) goes to storage, which every rerun mirrors. Other runs: nothing."""
    scalars = {k: v for k, v in scalar_metrics(read_analysis(path) or {}).items() if v is not None}
    publish_analysis(path, scalars)


__all__ = ["NOT_FOR_SEARCH", "RunOptions", "Study", "analyze_run_dir", "publish_run_analysis"]
