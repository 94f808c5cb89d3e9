"""Every `vitlab ...` command line the documentation shows works as written.

The commands are extracted, not copied: the code blocks and concrete inline commands of every tracked
Markdown file (README.md, docs/, findings/, benchmarks/) and the backticked commands in the header
comments of studies/**/*.yaml. Each parses with the real CLI parser and resolves to a valid config or
study; the cheap ones run verbatim; the `vitlab train` ones train on tiny synthetic settings (their
arguments verbatim, tiny overrides appended) and their `--resume` lines then run verbatim.
"""
from __future__ import annotations

import dataclasses
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from vitlab.cli import main, parse_args
from vitlab.config import ModelConfig, load_config
from vitlab.families import family_of
from vitlab.study import plan as planmod
from vitlab.study import spec as specmod

ROOT = Path(__file__).resolve().parents[1]

#: Words in an inline span that mark a synopsis (`vitlab results DIR [--where EXPR]`), not a command.
SYNOPSIS = re.compile(r"[\[\]|…<>]|(?<![\w.])[A-Z][A-Z_]{1,}(?![\w=])")

#: Subcommands cheap and self-contained enough to run verbatim (no data, no training).
RUN_VERBATIM = {"config", "models"}

#: Appended to a documented `vitlab train` command so that it trains in seconds on embedded data
#: (later overrides win; budgets and step counts are dropped because they fix the run's length).
TINY = ["data.name=synthetic", "data.synthetic_train=96", "data.synthetic_test=48", "data.val_fraction=0.25",
        "model.name=vit_nano", "model.dim=16", "model.depth=1", "model.num_heads=2", "model.image_size=32",
        "model.patch_size=8", "train.batch_size=32", "train.eval_batch_size=48", "train.epochs=1", "train.steps=null",
        "train.budget_minutes=null", "train.budget_flops=null", "train.progress=false", "train.threads=1", "sched.warmup_epochs=0"]
# ...and the knobs a documented config sets for another family (a MobileViT recipe's `level`, `strides`)
# are cleared, since vit_nano rejects them.
TINY += [f"model.{k}=null" for k in sorted({fl.name for v in ModelConfig.schema_variants() for fl in dataclasses.fields(v)}
                                           - {fl.name for fl in dataclasses.fields(family_of("vit_nano").knobs)})]


def _doc_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    return [ROOT / p for p in listed] or sorted(ROOT.glob("**/*.md"))


def _code_block_commands(text: str) -> list[str]:
    """`vitlab ...` lines inside ``` fences, continuation lines joined, a `$ ` prompt dropped."""
    out, in_block, pending = [], False, ""
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_block, pending = not in_block, ""
            continue
        if not in_block:
            continue
        line = pending + line.strip()
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        line = line.removeprefix("$ ")
        if re.match(r"^([A-Z_]+=\S+\s+)*vitlab(\s|$)", line):
            out.append(line)
    return out


def _inline_commands(text: str) -> list[str]:
    spans = re.findall(r"`(vitlab [^`]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    return [s for s in spans if not SYNOPSIS.search(s) and len(s.split()) > 3]  # `vitlab train`: a name


def _yaml_header_commands(path: Path) -> list[str]:
    header = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        header.append(line.lstrip("#").strip())
    return re.findall(r"`(vitlab [^`]+)`", " ".join(header))


def documented_commands() -> list[tuple[str, str]]:
    found = []
    for md in _doc_files():
        text = md.read_text(encoding="utf-8")
        rel = md.relative_to(ROOT).as_posix()
        found += [(rel, c) for c in _code_block_commands(text) + _inline_commands(text)]
    for spec in sorted((ROOT / "studies").glob("**/*.yaml")):
        found += [(spec.relative_to(ROOT).as_posix(), c) for c in _yaml_header_commands(spec)]
    return found


def _argv(command: str) -> list[str]:
    words = shlex.split(command, comments=True)
    while words and re.match(r"^[A-Z_]+=", words[0]):  # VITLAB_DATA_ROOT=... vitlab ...
        words.pop(0)
    assert words[0] == "vitlab", command
    return words[1:]


COMMANDS = documented_commands()


def test_the_extraction_finds_the_documented_commands():
    """A parser that silently found nothing would pass every test below."""
    sources = {src for src, _ in COMMANDS}
    assert {"README.md", "docs/train.md", "docs/study.md", "studies/base/fashion_mnist.yaml",
            "findings/README.md"} <= sources
    assert len(COMMANDS) >= 40
    assert any("--resume" in c for _, c in COMMANDS)


def test_readme_example_spec_is_the_shipped_file():
    """The README's 30-second example shows studies/tiny.yaml as it is (its comment lines aside)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    shown = re.search(r"```yaml\n(.*?)```", readme, re.S).group(1)
    shipped = "".join(line for line in (ROOT / "studies" / "tiny.yaml").read_text(encoding="utf-8")
                      .splitlines(keepends=True) if not line.startswith("#"))
    assert shown == shipped
    assert "vitlab study studies/tiny.yaml" in readme


@pytest.mark.parametrize(("source", "command"), COMMANDS, ids=[f"{s}:{c[:60]}" for s, c in COMMANDS])
def test_documented_command_parses_and_resolves(source, command, monkeypatch):
    monkeypatch.chdir(ROOT)  # documented paths are relative to the repository root
    argv = _argv(command)
    if argv in (["--help"], ["-h"]):
        return
    args = parse_args(argv)
    if args.command == "train" and not args.resume or args.command == "config" and args.action == "show":
        path, overrides = (args.config[0], args.config[1:]) if args.config and "=" not in args.config[0] \
            else (None, args.config)
        load_config(path, overrides)
    elif args.command == "study":
        planmod.expand(args.spec, args.profile)
    elif args.command == "search":
        specmod.resolve(specmod.load_spec(args.spec), args.profile)


@pytest.mark.parametrize(("source", "command"), [(s, c) for s, c in COMMANDS
                                                 if (_argv(c) or ["?"])[0] in RUN_VERBATIM | {"--help"}])
def test_cheap_documented_command_runs_verbatim(source, command, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "studies").symlink_to(ROOT / "studies")
    assert main(_argv(command)) == 0, capsys.readouterr().err


def test_documented_train_commands_train_and_resume(tmp_path, monkeypatch, capsys):
    """Each `vitlab train` line as written (tiny settings appended); then each `--resume` line verbatim
    continues the run an earlier line made, from the config saved in the run directory. An absolute
    `--out` (`/tmp/fm10`) is moved under the test's directory: a test writes nothing outside it, and a
    directory left by an earlier session must not let a line skip."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "studies").symlink_to(ROOT / "studies")
    trains = [_argv(c) for _, c in COMMANDS if _argv(c)[:1] == ["train"]]
    fresh = [a for a in trains if "--resume" not in a]
    resumes = [a for a in trains if "--resume" in a]
    assert fresh and resumes
    for argv in fresh:
        out, argv = _out_inside(argv, tmp_path)
        if out.exists():  # two documented lines writing one directory: the first wins
            continue
        assert main([*argv, *TINY]) == 0, capsys.readouterr().err
    for argv in resumes:
        assert main(_out_inside(argv, tmp_path)[1]) == 0, capsys.readouterr().err


def _out_inside(argv: list[str], root: Path) -> tuple[Path, list[str]]:
    """argv's `--out` directory kept under `root` (`/tmp/fm10` -> root/tmp/fm10), and argv with it."""
    i = argv.index("--out") + 1
    path = Path(argv[i])
    out = root / (path.relative_to("/") if path.is_absolute() else path)
    return out, [*argv[:i], str(out), *argv[i + 1:]]
