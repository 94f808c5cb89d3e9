"""`vitlab` command line. Exit codes: 0 ok, 1 internal error, 2 bad input (one line, no traceback)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import threading

from rich import box
from rich.console import Console
from rich.table import Table

from .analysis.analyze import describe
from .analysis.export import ExportError, export_run
from .api import RunOptions, Study, analyze_run_dir, publish_run_analysis
from .config import ModelConfig, RunConfig, dump_yaml, load_config
from .datasets import DATASETS
from .data import dataset_info, download_dataset, verify_dataset
from .demo import run_demo
from .errors import RunError, UserError, one_line
from .metrics import HEADLINE_METRICS
from .models import describe_model, model_table
from .notebook import export_dir
from .report.analysis_sections import write_run_report
from .rundir import RunStatus, is_run_dir
from .schema import apply_overrides, build, describe_keys, suggest
from .stats import CI_METHODS
from .study import summary_table
from .study.runsync import fetch_checkpoint
from .study.spec import describe_spec_keys
from .training import run_training
from .training.resume import resume_config

EXIT_OK, EXIT_INTERNAL, EXIT_BAD_INPUT = 0, 1, 2
#: Exit status after Ctrl-C (SIGINT) and after SIGTERM: 128 + the signal number, as shells report it.
EXIT_INTERRUPTED, EXIT_TERMINATED = 128 + signal.SIGINT, 128 + signal.SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the main thread is, so that it unwinds exactly as Ctrl-C does: a study
    stops its workers, removes their scratch copies, marks unfinished runs pending and releases locks."""


def _raise_terminated(_signum, _frame) -> None:
    raise Terminated()


def _on_sigterm():
    """Install the SIGTERM handler for this command; returns the previous one (None off the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_terminated)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2."""

    def error(self, message):
        raise UserError(f"{self.prog}: {message}")


class _CommandParser(_Parser):
    """A subcommand's parser: options and positionals (CONFIG.yaml, key=value) in any order, so
    `vitlab train CONFIG --out DIR key=value` works as well as `--out` last (argparse's intermixed parsing;
    the top-level parser cannot use it because it has subparsers)."""

    _intermixing = False

    def parse_known_args(self, args=None, namespace=None):
        if self._intermixing:  # the inner passes of parse_known_intermixed_args
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def _split_config_args(items: list[str]) -> tuple[str | None, list[str]]:
    """`[CONFIG.yaml] [key=value ...]` -> (config path or None, overrides)."""
    config, overrides = None, []
    for i, item in enumerate(items):
        if "=" in item:
            overrides.append(item)
        elif i == 0 and config is None:
            config = item
        else:
            raise UserError(f"argument {item!r}: expected key=value (only the first argument may be a config file)")
    return config, overrides


def _dataset_name(name: str) -> str:
    """A dataset name of the registry, or a usage error with a did-you-mean (FashionMNIST -> fashion_mnist)."""
    if name not in DATASETS:
        raise argparse.ArgumentTypeError(f"unknown dataset {name!r}; one of {', '.join(DATASETS)}"
                                         + suggest(name, DATASETS))
    return name


# ---------------------------------------------------------------------------------------------- commands


def cmd_train(a) -> int:
    path, overrides = _split_config_args(a.config)
    if a.resume:
        cfg = resume_config(a.out, path, overrides)
    else:
        cfg = load_config(path, overrides)
    if a.quiet:
        cfg.train.progress = False
    summary = run_training(cfg, a.out, resume=a.resume)
    _print_summary(summary, a.out)
    return EXIT_OK if summary["status"] in (RunStatus.COMPLETED, RunStatus.PRUNED) else EXIT_INTERNAL


def _print_summary(s: dict, out) -> None:
    t = Table(title=f"{out}  [{s['status']}]" + ("  (synthetic data)" if s.get("synthetic") else ""))
    t.add_column("metric")
    t.add_column("value", justify="right")
    for key in HEADLINE_METRICS:
        if key in s and s[key] is not None:
            v = s[key]
            t.add_row(key, f"{v:,.4f}" if isinstance(v, float) else f"{v:,}")
    if s.get("error"):
        t.add_row("error", s["error"])
    Console().print(t)


def cmd_data(a) -> int:
    if a.action == "info":
        print(json.dumps(dataset_info(a.name, a.root), indent=2, default=str))
    elif a.action == "verify":
        for line in verify_dataset(a.name, a.root):
            print(line)
    else:
        print(download_dataset(a.name, a.root))
    return EXIT_OK


def cmd_models(a) -> int:
    console = Console()
    if a.name is None:
        if a.overrides or a.describe:
            raise UserError("models: --describe and key=value need a model NAME")
        rows = model_table()
    else:
        knobs = build(ModelConfig, {"name": a.name, **apply_overrides({}, a.overrides)}, "model.").overrides()
        rows = describe_model(a.name, **knobs) if a.describe else model_table([a.name], **knobs)
    if not rows:
        return EXIT_OK
    # narrow terminals get the descriptions below the table, so no column is squeezed into a sliver
    below = console.width < MODELS_TABLE_WIDTH and "description" in rows[0]
    cols = [c for c in rows[0] if not (below and c == "description")]
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for col in cols:
        t.add_column(MODEL_HEADERS.get(col, str(col)), no_wrap=not a.describe and col not in WRAPPED_MODEL_COLUMNS,
                     overflow="fold",
                     justify="left" if col in LEFT_MODEL_COLUMNS else "right")
    for r in rows:
        t.add_row(*(_model_cell(k, r[k]) for k in cols))
    console.print(t)
    if below:
        for r in rows:
            console.print(f"[bold]{r['name']}[/bold]: {r['description']}", highlight=False)
    return EXIT_OK


#: Shorter headers of `vitlab models` columns (the column keys stay the registry's).
MODEL_HEADERS = {"input_size": "input", "description": "description", "tokens": "tokens/attn"}
#: The only columns of the `vitlab models` list that wrap: free text (every other cell is a short number
#: or name). The per-stage table of --describe has too many columns for that and folds every one.
WRAPPED_MODEL_COLUMNS = frozenset({"description"})
#: Text columns of `vitlab models` tables (left-aligned; numbers are right-aligned).
LEFT_MODEL_COLUMNS = frozenset({"name", "family", "block", "description"})
#: Below this terminal width `vitlab models` prints each model's description under the table.
MODELS_TABLE_WIDTH = 120


def _model_cell(key: str, v) -> str:
    if key in ("params", "flops") and isinstance(v, (int, float)):
        return f"{v / 1e6:.2f}M" if v >= 1e4 else f"{v:,}"
    if isinstance(v, (list, tuple)):
        return _runs_text(list(v))
    return "" if v is None else str(v)


def _runs_text(values: list) -> str:
    """[144, 144, 144, 64] -> '144×3,64': repeated values (the tokens of a ViT's identical layers) once."""
    parts, i = [], 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[i]:
            j += 1
        parts.append(f"{values[i]}×{j - i + 1}" if j > i + 1 else ",".join(str(x) for x in values[i:j + 1]))
        i = j + 1
    return ",".join(parts)


def cmd_config(a) -> int:
    if a.spec and (a.action != "keys" or a.config):
        raise UserError("--spec: only used with `vitlab config keys` (and no config)")
    if a.action == "keys":
        for key, default, doc in describe_spec_keys() if a.spec else describe_keys(RunConfig):
            print(f"{key:28s} {default:18s} {doc}")
    else:
        path, overrides = _split_config_args(a.config)
        print(dump_yaml(load_config(path, overrides)), end="")
    return EXIT_OK


def _run_options(a) -> RunOptions:
    """The command's flags that are RunOptions fields (each flag's dest is the field's name), checked
    there: a bad value is one line naming the flag."""
    given = {f.name: getattr(a, f.name) for f in dataclasses.fields(RunOptions) if hasattr(a, f.name)}
    if given.get("max_runs") == 0:  # --max-runs 0: no limit
        given["max_runs"] = None
    return RunOptions(**given)


def cmd_study(a) -> int:
    result = Study(a.out, spec=a.spec, options=_run_options(a)).run()
    if result.detached is not None:
        print(f"{a.out}: SLURM has the study's unfinished runs ({result.detached}); "
              f"see progress with `vitlab status {a.out}`, collect the results by running this command again")
    else:
        print(summary_table(a.out, warn_damaged=False))  # the run warned about damaged runs already
    return EXIT_OK if result.ok else EXIT_INTERNAL


def cmd_status(a) -> int:
    print(Study(a.dir).status())
    return EXIT_OK


def cmd_search(a) -> int:
    result = Study(a.out, spec=a.spec, options=_run_options(a)).search(trials=a.trials)
    print(result.describe())
    return EXIT_OK if result.ok else EXIT_INTERNAL


def cmd_results(a) -> int:
    print(Study(a.dir).table(where=a.where, format=a.format))
    return EXIT_OK


def cmd_report(a) -> int:
    if is_run_dir(a.dir):  # one run's report (analysis sections), not a study's
        print(write_run_report(a.dir, a.output))
    else:
        print(Study(a.dir).report(a.output, ci=a.ci, target_delta=a.target_delta))
    return EXIT_OK


def cmd_track(a) -> int:
    print(export_dir(a.dir, a.to, a.uri).describe())
    return EXIT_OK


def cmd_analyze(a) -> int:
    analysis = analyze_run_dir(a.run_dir, sections=a.sections, force=a.force, samples=a.samples, device=a.device,
                               corruption_images=a.corruption_images, seed=a.seed,
                               compile=False if a.no_compile else None, timing_threads=a.timing_threads,
                               progress=lambda m: print(m, file=sys.stderr))
    print(describe(analysis))
    return EXIT_OK


def cmd_export(a) -> int:
    fetch_checkpoint(a.run_dir)  # a run of a study kept in another storage (--storage): its best.pt

    try:
        export_run(a.run_dir, a.format, a.output, progress=print)
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INTERNAL
    publish_run_analysis(a.run_dir)  # a run of a study kept in another storage: its model.onnx goes there
    return EXIT_OK


def cmd_demo(a) -> int:
    return EXIT_OK if run_demo(a.out, workers=a.workers) else EXIT_INTERNAL


# ---------------------------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="vitlab", description="Controlled studies of compact vision transformers.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_CommandParser)

    t = sub.add_parser("train", help="train one configuration",
                       description="Train one run. CONFIG.yaml is optional; key=value overrides any field "
                                   "(`vitlab config keys` lists them).")
    t.add_argument("config", nargs="*", metavar="[CONFIG.yaml] [key=value ...]")
    t.add_argument("--out", required=True, help="run directory (created)")
    t.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint and saved config (key=value: only "
                        "execution settings such as train.threads, train.progress)")
    t.add_argument("--quiet", action="store_true", help="no progress output")
    t.set_defaults(fn=cmd_train)

    d = sub.add_parser("data", help="dataset info, verification, download")
    d.add_argument("action", choices=("info", "verify", "download"))
    d.add_argument("name", type=_dataset_name, metavar="NAME", help="one of " + ", ".join(DATASETS))
    d.add_argument("--root", help="data root (default $VITLAB_DATA_ROOT, else ~/.cache/vitlab/data); for folder: the image folder")
    d.set_defaults(fn=cmd_data)

    m = sub.add_parser("models", help="list models, or describe one",
                       description="Without NAME: every model with params, FLOPs and tokens per attention. "
                                   "With NAME and key=value model knobs (e.g. num_heads=2): that variant.")
    m.add_argument("name", nargs="?")
    m.add_argument("overrides", nargs="*", metavar="knob=value")
    m.add_argument("--describe", action="store_true", help="print the resolved per-stage table")
    m.set_defaults(fn=cmd_models)

    c = sub.add_parser("config", help="list config keys (or study spec keys), or print a resolved config")
    c.add_argument("--spec", action="store_true", help="keys: list the keys of a study or search spec instead "
                                                       "(NAME: a profile's or a search dimension's name)")
    c.add_argument("action", choices=("keys", "show"))
    c.add_argument("config", nargs="*", metavar="[CONFIG.yaml] [key=value ...]")
    c.set_defaults(fn=cmd_config)

    s = sub.add_parser("study", help="run a study spec (factors x seeds); rerun to resume")
    s.add_argument("spec", help="study spec YAML (see studies/)")
    s.add_argument("--out", required=True, help="study directory")
    s.add_argument("--workers", type=int, default=1, help="concurrent runs")
    s.add_argument("--backend", choices=("local", "ray", "slurm"), default="local")
    s.add_argument("--ray-address", help="existing Ray cluster (default: start a local instance)")
    s.add_argument("--gpus-per-run", type=float, default=None, help="Ray: GPUs per run (fractions allowed)")
    s.add_argument("--cpus-per-run", type=float, default=None, help="Ray: CPUs per run (default: cores / workers)")
    s.add_argument("--profile", help="a profile of the spec, e.g. quick")
    s.add_argument("--max-retries", type=int, default=2, help="retries of a failed run")
    s.add_argument("--storage", help="where run directories live: a path or a URL (s3://, gs://, az://, file://); "
                                     "default the study directory; remembered by the study")
    s.add_argument("--ray-pip", action="store_true",
                   help="Ray: install vitlab's dependencies on the cluster's workers with pip (runtime_env)")
    s.add_argument("--slurm", action="append", metavar="KEY=VALUE",
                   help="SLURM: a resource over the spec's slurm: section, e.g. partition=gpu, time=120, "
                        "gpus_per_task=1 (repeatable; `vitlab config keys` style values)")
    s.add_argument("--detach", action="store_true",
                   help="SLURM: submit the runs and exit; rerun the command to attach and collect the results")
    s.add_argument("--max-runs", type=int, default=RunOptions.max_runs,
                   help="refuse a study with more runs than this (counted before expanding; 0: no limit)")
    s.add_argument("--retrain-damaged", action="store_true",
                   help="train runs whose files are malformed again, resuming from their checkpoint (by default "
                        "they are reported as damaged and skipped)")
    s.set_defaults(fn=cmd_study)

    se = sub.add_parser("search", help="Optuna search over a spec's space: section; rerun to resume")
    se.add_argument("spec")
    se.add_argument("--out", required=True)
    se.add_argument("--trials", type=int, required=True)
    se.add_argument("--workers", type=int, default=1)
    se.add_argument("--profile")
    se.set_defaults(fn=cmd_search)

    st = sub.add_parser("status", help="progress of a study: each unfinished run, its SLURM job and log",
                        description="Reads the study directory (and its storage) only; starts nothing.")
    st.add_argument("dir")
    st.set_defaults(fn=cmd_status)

    r = sub.add_parser("results", help="query a study's results")
    r.add_argument("dir")
    r.add_argument("--where", help="filter, e.g. \"model.num_heads == 4 and status == 'completed'\"")
    r.add_argument("--format", choices=("table", "csv", "json", "md"), default="table")
    r.set_defaults(fn=cmd_results)

    rp = sub.add_parser("report", help="tables, figures and one self-contained HTML report")
    rp.add_argument("dir", help="a study directory, or one run directory")
    rp.add_argument("-o", "--output", help="HTML file (default DIR/report/report.html)")
    rp.add_argument("--ci", choices=CI_METHODS, default=None,
                    help="interval of a mean over seeds: Student t (default), percentile bootstrap or BCa "
                         "(default: the spec's report.ci, else t)")
    rp.add_argument("--target-delta", type=float, default=None, metavar="PP",
                    help="difference in percentage points that 'seeds needed' is computed for "
                         "(default: the spec's report.target_delta, else 1)")
    rp.set_defaults(fn=cmd_report)

    an = sub.add_parser("analyze", help="attention, robustness, calibration and efficiency of a trained run",
                        description="Evaluate RUN_DIR's best checkpoint; writes RUN_DIR/analysis/analysis.json and "
                                    "figures and adds the scalar results to summary.json. Sections already computed "
                                    "are skipped (--force recomputes); an interrupted corruption sweep continues.")
    an.add_argument("run_dir")
    an.add_argument("--sections", help="comma-separated subset of attention,robustness,calibration,efficiency (default: all)")
    an.add_argument("--force", action="store_true", help="recompute sections already in analysis.json")
    an.add_argument("--samples", type=int, default=256, help="test images for the attention statistics (default 256)")
    an.add_argument("--corruption-images", type=int, help="corrupt a stratified subset of this many test images "
                                                          "(default: the whole test set, at most 10,000)")
    an.add_argument("--seed", type=int, help="seed of the image samples and corruptions (default 0)")
    an.add_argument("--no-compile", action="store_true", help="do not time the torch.compile'd model")
    an.add_argument("--timing-threads", type=int, metavar="N",
                    help="CPU threads of the latency and throughput timings (default 1, as inside a study)")
    an.add_argument("--device", help="override the run's device (cpu, cuda, ...)")
    an.set_defaults(fn=cmd_analyze)

    ex = sub.add_parser("export", help="export a run's best checkpoint (ONNX), checked against PyTorch")
    ex.add_argument("run_dir")
    ex.add_argument("--format", default="onnx", help="onnx (default)")
    ex.add_argument("-o", "--output", help="output file (default RUN_DIR/analysis/model.onnx)")
    ex.set_defaults(fn=cmd_export)

    tk = sub.add_parser("track", help="export a run or study directory to TensorBoard, MLflow or W&B",
                        description="Export the runs of DIR (a study or a run directory) after the fact; "
                                    "rerunning it adds nothing twice.")
    tk.add_argument("dir")
    tk.add_argument("--to", required=True, choices=("tensorboard", "mlflow", "wandb"))
    tk.add_argument("--uri", help="mlflow: tracking URI or local directory (default DIR/mlruns); "
                                  "wandb: PROJECT or ENTITY/PROJECT (default: the study's name); "
                                  "tensorboard: log directory (default: each run's RUN/tensorboard/)")
    tk.set_defaults(fn=cmd_track)

    dm = sub.add_parser("demo", help="a small attention-normalization study on synthetic data (CPU, minutes)")
    dm.add_argument("--out", default="demo-out", help="study directory (rerun to resume)")
    dm.add_argument("--workers", type=int, default=None, help="concurrent runs (default: 2 on CPU)")
    dm.set_defaults(fn=cmd_demo)
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line as `main` reads it (the README test parses every documented command with it)."""
    return build_parser().parse_args(argv)


#: Commands whose rerun continues where an interrupted one stopped (training, a study, an analysis).
RESUMABLE_COMMANDS = frozenset({"train", "study", "search", "demo", "analyze"})


def interrupted_message(args: argparse.Namespace | None) -> str:
    """What Ctrl-C prints: how to continue (a run of `vitlab train` needs --resume to be continued)."""
    command = getattr(args, "command", None)
    if command == "train" and not args.resume:
        return "interrupted — rerun the same command with --resume to continue"
    return "interrupted — rerun the same command to resume" if command in RESUMABLE_COMMANDS else "interrupted"


def main(argv: list[str] | None = None) -> int:
    previous = _on_sigterm()
    try:
        return _main(argv)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main(argv: list[str] | None) -> int:
    args = None
    try:
        args = parse_args(argv)
        return args.fn(args)
    except UserError as e:
        print(f"error: {one_line(e, 2000)}", file=sys.stderr)  # one line, however the message was built
        return EXIT_BAD_INPUT
    except RunError as e:
        print(f"error: {one_line(e, 2000)}", file=sys.stderr)
        return EXIT_INTERNAL
    except Terminated:
        print("terminated (SIGTERM); rerun the same command to resume", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print(interrupted_message(args), file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `vitlab ... | head`: the reader left, not an error of ours
        sys.stderr.close()
        return EXIT_OK
    except SystemExit as e:  # argparse --help
        return int(e.code or 0)


if __name__ == "__main__":
    sys.exit(main())
