"""Fixtures shared by the test files: a tiny training run, spec writers and the CLI's one-line error check."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
import torch
import yaml

from vitlab.cli import EXIT_BAD_INPUT, main

# One thread per test process: the suite runs on 2-core machines where oversubscribed intra-op threads
# make small-tensor work many times slower; results do not depend on the thread count.
torch.set_num_threads(1)

#: A run that trains in a second or two on one CPU thread: 100 synthetic images, a one-block vit_nano of
#: width 16, one epoch. A test changes only what it is about (`tiny_run("train.epochs=3")`).
TINY_RUN = {
    "data.name": "synthetic", "data.synthetic_train": 100, "data.synthetic_test": 20, "data.val_fraction": 0.2,
    "model.name": "vit_nano", "model.dim": 16, "model.depth": 1, "model.num_heads": 2,
    "train.epochs": 1, "train.batch_size": 40, "train.threads": 1, "train.progress": "false", "device": "cpu",
}

#: Longest error line a test accepts: one line that names the field or file, not a dump of the input.
MAX_ERROR_CHARS = 600


@pytest.fixture(scope="session")
def tiny_run() -> Callable[..., list[str]]:
    """`tiny_run(*changes)`: the tiny run as `key=value` overrides (for `load_config(None, ...)` or the CLI);
    each change (`"train.epochs=3"`) replaces the tiny value of its key or adds the key."""

    def make(*changes: str) -> list[str]:
        values = {k: str(v) for k, v in TINY_RUN.items()}
        for change in changes:
            key, value = change.split("=", 1)
            values[key] = value
        return [f"{k}={v}" for k, v in values.items()]

    return make


@pytest.fixture(scope="session")
def write_spec() -> Callable[..., Path]:
    """`write_spec(directory, spec, name=None)`: a study spec (a dict, dumped as YAML, or YAML text) written
    to DIRECTORY/NAME (created); NAME defaults to the spec's `name` + .yaml, else spec.yaml."""

    def write(directory: Path, spec: dict | str, name: str | None = None) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        if name is None:
            name = f"{spec['name']}.yaml" if isinstance(spec, dict) and "name" in spec else "spec.yaml"
        path = directory / name
        path.write_text(spec if isinstance(spec, str) else yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
        return path

    return write


@pytest.fixture
def cli_error(capsys) -> Callable[..., str]:
    """`cli_error(argv, code=2)`: run the CLI in this process and return its error line, asserting the
    exit code and that stderr is one short `error: ...` line with no traceback."""

    def run(argv: list, code: int = EXIT_BAD_INPUT) -> str:
        assert main([str(a) for a in argv]) == code, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
        assert len(err) < MAX_ERROR_CHARS, err
        return err

    return run
