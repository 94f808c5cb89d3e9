"""Numbers a config cannot hold: NaN and ±inf in every float field, seeds that do not fit the RNGs,
integers past int64 and sizes past the sanity caps. Each is a one-line ConfigError naming the field,
whether it comes from YAML, a `key=value` override, a dict, or a dataclass made in Python."""
from __future__ import annotations

import dataclasses
import math
import typing

import pytest

from vitlab.cli import main
from vitlab.config import DataConfig, MAX_SEED, OptimConfig, RunConfig, load_config
from vitlab.schema import build, knob, variants
from vitlab.errors import ConfigError, UserError
from vitlab.models import knobs_of, list_models
from vitlab.training import run_training


def float_fields(cls=RunConfig, prefix=""):
    """Dotted keys of every float or list-of-float field, found by introspection (none is missed; the
    model section's fields of every family)."""
    out = []
    for variant in variants(cls):
        for fl in dataclasses.fields(variant):
            tp = typing.get_type_hints(variant)[fl.name]
            if dataclasses.is_dataclass(tp):
                out += float_fields(tp, f"{prefix}{fl.name}.")
                continue
            text = str(tp)
            if (tp is float or "float" in text) and (prefix + fl.name, "list" in text) not in out:
                out.append((prefix + fl.name, "list" in text))
    return out


def family_model(key):
    """`model.name=P` for a preset P whose family has knob `key` (a knob of one family only)."""
    name = key.split(".")[-1]
    return [f"model.name={next(p for p in list_models() if name in knobs_of(p))}"] if key.startswith("model.") else []


FLOAT_FIELDS = float_fields()


def test_the_float_fields_are_found():
    keys = {k for k, _ in FLOAT_FIELDS}
    assert {"data.val_fraction", "sched.warmup_epochs", "model.dropout", "train.label_smoothing", "aug.mix_prob",
            "optim.lr", "optim.weight_decay", "optim.betas", "model.stage_expansion"} <= keys
    assert len(keys) >= 25


@pytest.mark.parametrize("key, is_list", FLOAT_FIELDS, ids=[k for k, _ in FLOAT_FIELDS])
@pytest.mark.parametrize("text", [".nan", ".inf", "-.inf", "nan", "inf"])
def test_every_float_field_refuses_non_finite(key, is_list, text):
    value = f"[{text}, {text}]" if is_list else text
    with pytest.raises(ConfigError) as e:
        load_config(None, family_model(key) + [f"{key}={value}"])
    assert e.value.field.startswith(key) and "finite" in str(e.value) and "\n" not in str(e.value)


def test_a_field_can_opt_out():
    @dataclasses.dataclass
    class Cfg:
        bound: float = knob(math.inf, "an upper bound; inf means none", finite=False)
        x: float = knob(0.0, "a plain number")

    assert build(Cfg, {"bound": float("inf")}).bound == math.inf
    with pytest.raises(ConfigError, match="x: must be a finite number"):
        build(Cfg, {"x": float("nan")})


@pytest.mark.parametrize("override", ["data.val_fraction=.nan", "sched.warmup_epochs=.nan", "model.dropout=.nan",
                                      "train.label_smoothing=.nan", "aug.mix_prob=.nan", "optim.lr=.inf",
                                      "optim.weight_decay=.nan"])
def test_the_reported_cases_exit_2_on_one_line(tmp_path, capsys, override):
    assert main(["train", "--out", str(tmp_path / "run"), override]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {override.split('=')[0]}: must be a finite number") and "\n" not in err
    assert not (tmp_path / "run").exists()


def test_dataclasses_made_in_python_are_checked_too(tmp_path):
    with pytest.raises(ConfigError, match="data.val_fraction"):
        DataConfig(val_fraction=float("nan"))
    cfg = RunConfig(optim=OptimConfig(lr=1e-3))
    cfg.optim.lr = float("inf")  # changed after construction: run_training validates again
    with pytest.raises(ConfigError, match="optim.lr: must be a finite number"):
        run_training(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("value", [MAX_SEED + 1, 2**64, -1, 10**30])
def test_seeds_must_fit_the_rngs(value, tmp_path, capsys):
    for key in ("seed", "data.synthetic_seed"):
        with pytest.raises(ConfigError, match=rf"^{key}: must be an integer (in \[0, 2\*\*32 - 1|within)"):
            load_config(None, [f"{key}={value}"])
    assert main(["train", "--out", str(tmp_path / "run"), f"seed={value}"]) == 2
    assert "seed:" in capsys.readouterr().err


def test_the_largest_seed_trains(tmp_path):
    cfg = load_config(None, [f"seed={MAX_SEED}", "data.synthetic_train=100", "data.synthetic_test=20",
                             "model.name=vit_nano", "model.dim=16", "model.depth=1", "model.num_heads=2",
                             "train.epochs=1", "train.batch_size=40", "train.progress=false", "train.threads=1"])
    assert run_training(cfg, tmp_path / "run")["status"] == "completed"


def test_study_seeds_must_fit_the_rngs(tmp_path):
    from vitlab.study import run_study

    spec = {"name": "s", "base": {"model": {"name": "vit_nano"}}, "vary": {"model.attn_norm": ["softmax"]},
            "seeds": [1, MAX_SEED + 1]}
    with pytest.raises(UserError, match="seed"):
        run_study(spec, tmp_path / "study", progress=False)
    assert not (tmp_path / "study").exists()  # refused before any run, not retried three times


@pytest.mark.parametrize("override, fragment", [
    ("train.threads=100000000000000000000", "within ±2**63"),     # was an OverflowError in torch
    ("data.synthetic_train=100000000000000000000", "within ±2**63"),
    ("train.threads=100000", "train.threads: must be in [1, 1024]"),  # libgomp ran out of memory
    ("model.image_size=100000000", "model.image_size: must be in [1, 4096]"),  # a 10^17-byte allocation
    ("data.folder_image_size=100000", "data.folder_image_size: must be in [1, 4096]"),
    ("data.synthetic_test=10000000", "data.synthetic_test: must be in [1, 1000000]"),
    ("train.epochs=1e30", "train.epochs: must be an integer"),
])
def test_integers_are_bounded(override, fragment):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert fragment in str(e.value)
