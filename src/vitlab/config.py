"""Typed run configuration: YAML + dotted `key=value` overrides, validated field by field.

Every knob of a run is a field below, with a docstring (`doc`) and, where it has a closed set of
values, its `choices`. Unknown keys are rejected with a did-you-mean suggestion; every problem is a
`ConfigError` whose message starts with the dotted field name.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

from .errors import ConfigError, UserError, one_line, short_repr


def knob(default: Any, doc: str, *, choices: tuple | None = None, finite: bool = True) -> Any:
    """A documented config field. Mutable defaults (lists) are copied per instance.

    finite: a float field (or list of floats) refuses NaN and ±inf unless this is False."""
    meta = {"doc": doc, "choices": choices, "finite": finite}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


#: Seeds must fit every RNG they seed (numpy's legacy seed takes 32 bits): 0 <= seed <= MAX_SEED.
MAX_SEED = 2**32 - 1

#: Largest integer any field takes (int64, what torch and numpy index with); larger is an error, not an overflow.
MAX_INT = 2**63 - 1
#: Sanity bounds on sizes that allocate memory or threads in proportion (far above any real use).
MAX_IMAGE_SIZE = 4096
MAX_SYNTHETIC_IMAGES = 1_000_000
MAX_THREADS = 1024

DATASETS = ("synthetic", "cifar10", "cifar100", "fashion_mnist", "folder")
ATTN_NORMS = (
    "softmax", "zscore", "cosine", "linear", "linear_scale",
    "qk_layernorm", "scaled_cosine", "sigmoid", "lsa", "zscore_qkv",
)


@dataclass
class DataConfig:
    name: str = knob("synthetic", "dataset to train on", choices=DATASETS)
    root: Optional[str] = knob(None, "data root; default $VITLAB_DATA_ROOT, else ~/.cache/vitlab/data")
    val_fraction: float = knob(0.1, "share of the training set held out (stratified, seeded) for validation")
    train_subset: Optional[int] = knob(None, "use only this many training images (stratified, drawn after the validation split; all when larger), e.g. for a quick CPU profile")
    test_subset: Optional[int] = knob(None, "evaluate on only this many test images (stratified, the same for every seed; all when larger)")
    coarse_labels: bool = knob(False, "cifar100: use the 20 coarse superclass labels instead of the 100 fine ones")
    synthetic_train: int = knob(6000, "synthetic: images in the training set (before the validation split)")
    synthetic_test: int = knob(2000, "synthetic: images in the test set")
    synthetic_classes: int = knob(10, "synthetic: number of classes (10..16)")
    synthetic_seed: int = knob(1234, "synthetic: seed of the generated images (fixed, so every run of a study sees the same data)")
    folder_path: Optional[str] = knob(None, "folder: directory with one sub-folder per class (or train/ and test/ of those)")
    folder_image_size: int = knob(32, "folder: images are resized to this square size when loaded")
    folder_test_fraction: float = knob(0.2, "folder: share held out as test set when there is no test/ sub-folder")
    download: bool = knob(True, "download a missing dataset from its official URL when the network allows")

    def __post_init__(self):
        _check_range("data.val_fraction", self.val_fraction, 0.0, 0.9, lo_open=True)
        _check_positive("data.train_subset", self.train_subset, allow_none=True)
        _check_positive("data.test_subset", self.test_subset, allow_none=True)
        _check_range("data.synthetic_train", self.synthetic_train, 1, MAX_SYNTHETIC_IMAGES)
        _check_range("data.synthetic_test", self.synthetic_test, 1, MAX_SYNTHETIC_IMAGES)
        check_seed("data.synthetic_seed", self.synthetic_seed)
        if not 10 <= self.synthetic_classes <= 16:
            raise ConfigError("data.synthetic_classes", f"must be between 10 and 16, got {self.synthetic_classes}")
        _check_range("data.folder_image_size", self.folder_image_size, 1, MAX_IMAGE_SIZE)
        _check_range("data.folder_test_fraction", self.folder_test_fraction, 0.0, 0.9, lo_open=True)
        if self.name == "folder" and not self.folder_path:
            raise ConfigError("data.folder_path", "is required when data.name is 'folder'")


@dataclass
class AugmentConfig:
    crop_padding: int = knob(4, "random crop after zero-padding each side by this many pixels (0 disables)")
    hflip: bool = knob(True, "random horizontal flip with probability 0.5")
    rotation_deg: float = knob(0.0, "random rotation, uniform in ±this many degrees (0 disables)")
    color_jitter: float = knob(0.0, "brightness/contrast/saturation jitter strength, factor uniform in [1-s, 1+s] (0 disables)")
    policy: str = knob("none", "automatic augmentation policy", choices=("none", "randaugment", "trivialaugment"))
    randaug_ops: int = knob(2, "randaugment: operations applied per image")
    randaug_magnitude: int = knob(9, "randaugment: magnitude on the 0..30 scale")
    mixup_alpha: float = knob(0.0, "mixup Beta(α, α) parameter (0 disables)")
    cutmix_alpha: float = knob(0.0, "cutmix Beta(α, α) parameter (0 disables)")
    mix_prob: float = knob(1.0, "probability that a batch gets mixup/cutmix (when enabled; half each when both are)")
    erase_prob: float = knob(0.0, "random-erasing probability per image (0 disables)")

    def __post_init__(self):
        _check_nonneg("aug.crop_padding", self.crop_padding)
        _check_range("aug.rotation_deg", self.rotation_deg, 0.0, 180.0)
        _check_range("aug.color_jitter", self.color_jitter, 0.0, 1.0)
        _check_positive("aug.randaug_ops", self.randaug_ops)
        _check_range("aug.randaug_magnitude", self.randaug_magnitude, 0, 30)
        _check_nonneg("aug.mixup_alpha", self.mixup_alpha)
        _check_nonneg("aug.cutmix_alpha", self.cutmix_alpha)
        _check_range("aug.mix_prob", self.mix_prob, 0.0, 1.0)
        _check_range("aug.erase_prob", self.erase_prob, 0.0, 1.0)


@dataclass
class ModelConfig:
    """Model knobs. `None` means "the preset's value" (see `vitlab models NAME --describe`).

    A knob that a model does not have (e.g. `expansion` on a ViT) is a config error.
    """

    name: str = knob("vit_study_b", "model preset from the registry (`vitlab models` lists them)")
    image_size: Optional[int] = knob(None, "network input size; batches are resized on the device when it differs from the data")
    attn_norm: str = knob("softmax", "normalization of the attention scores", choices=ATTN_NORMS)
    zscore_v: bool = knob(False, "zscore attention: also standardize V")
    num_heads: Optional[int] = knob(None, "attention heads; the head width is the transformer width / num_heads")
    head_dim: Optional[int] = knob(None, "width per head (MobileViT; exclusive with num_heads)")
    patch_size: Optional[int] = knob(None, "ViT: patch embedding size; MobileViT: unfold patch size")
    dim: Optional[int] = knob(None, "ViT: embedding width")
    depth: Optional[int] = knob(None, "ViT: number of transformer blocks")
    mlp_ratio: Optional[float] = knob(None, "transformer MLP (FFN) hidden width / embedding width")
    expansion: Optional[float] = knob(None, "MobileViT: MV2 inverted-residual expansion rate, all stages")
    stage_expansion: Optional[list[float]] = knob(None, "MobileViT: MV2 expansion per stage (5 values), overrides expansion")
    level: Optional[str] = knob(None, "MobileViT: complexity level, a width multiplier: C1 ×0.5, C2 ×0.75, C3 ×1 (the preset), C4 ×1.5, C5 ×2",
                             choices=(None, "C1", "C2", "C3", "C4", "C5"))
    width_mult: Optional[float] = knob(None, "MobileViT: channel and transformer width multiplier")
    strides: Optional[str] = knob(None, "MobileViT stride preset: imagenet = official total stride 32, cifar = 8 "
                               "(≥ 4 tokens per attention at 32 px); default cifar up to 64 px input, else imagenet",
                               choices=(None, "cifar", "imagenet"))
    pos_embed: Optional[str] = knob(None, "ViT position embedding", choices=(None, "learned", "sincos"))
    pool: Optional[str] = knob(None, "ViT pooling: class token, mean of the patch tokens, or the flattened token grid (Keras example)",
                            choices=(None, "cls", "mean", "flatten"))
    head_hidden: Optional[list[int]] = knob(None, "hidden widths of the MLP classification head (empty: linear head)")
    dropout: Optional[float] = knob(None, "dropout in MLPs/projections and before the head")
    attn_dropout: Optional[float] = knob(None, "dropout on attention weights")
    drop_path: Optional[float] = knob(None, "stochastic-depth rate (linearly increasing over blocks)")

    def __post_init__(self):
        for name in ("image_size", "num_heads", "head_dim", "patch_size", "dim", "depth"):
            _check_positive(f"model.{name}", getattr(self, name), allow_none=True)
        if self.image_size is not None:
            _check_range("model.image_size", self.image_size, 1, MAX_IMAGE_SIZE)
        for name in ("mlp_ratio", "expansion", "width_mult"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise ConfigError(f"model.{name}", f"must be > 0, got {v}")
        for name in ("dropout", "attn_dropout", "drop_path"):
            v = getattr(self, name)
            if v is not None:
                _check_range(f"model.{name}", v, 0.0, 1.0, hi_open=True)
        if self.num_heads is not None and self.head_dim is not None:
            raise ConfigError("model.num_heads", "set either model.num_heads or model.head_dim, not both")
        if self.level is not None and self.width_mult is not None:
            raise ConfigError("model.level", "set either model.level or model.width_mult, not both")
        if self.stage_expansion is not None:
            if len(self.stage_expansion) != 5 or any(not e > 0 for e in self.stage_expansion):
                raise ConfigError("model.stage_expansion", f"needs 5 positive values, got {short_repr(self.stage_expansion)}")

    def overrides(self) -> dict:
        """The knobs that differ from the preset (not None), as keyword arguments for create_model."""
        out = {}
        for fl in dataclasses.fields(self):
            if fl.name == "name":
                continue
            v = getattr(self, fl.name)
            if v is not None and not (fl.name == "attn_norm" and v == "softmax") and not (fl.name == "zscore_v" and not v):
                out[fl.name] = v
        return out


@dataclass
class OptimConfig:
    name: str = knob("adamw", "optimizer", choices=("adamw", "adam", "sgd"))
    lr: float = knob(1e-3, "peak learning rate")
    weight_decay: float = knob(0.05, "weight decay (decoupled for adamw, L2 for adam/sgd)")
    betas: list[float] = knob([0.9, 0.999], "adam/adamw β1, β2")
    momentum: float = knob(0.9, "sgd momentum")
    nesterov: bool = knob(True, "sgd: Nesterov momentum")
    decay_norm_bias: bool = knob(False, "also apply weight decay to norms, biases, position embeddings and tokens")

    def __post_init__(self):
        if not self.lr > 0:
            raise ConfigError("optim.lr", f"must be > 0, got {self.lr}")
        _check_nonneg("optim.weight_decay", self.weight_decay)
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError("optim.betas", f"needs two values in [0, 1), got {short_repr(self.betas)}")
        _check_range("optim.momentum", self.momentum, 0.0, 1.0, hi_open=True)


@dataclass
class ScheduleConfig:
    name: str = knob("cosine", "learning-rate schedule (per step)", choices=("cosine", "step", "constant"))
    warmup_epochs: float = knob(5.0, "linear warmup from 0 over this many epochs (any schedule), at most the whole run")
    warmup_fraction: Optional[float] = knob(None, "linear warmup over this fraction of the run's optimizer steps, "
                                            "in [0, 1); replaces sched.warmup_epochs (the form that follows "
                                            "train.steps and train.budget_minutes)")
    min_lr: float = knob(0.0, "cosine: final learning rate")
    milestones: list[int] = knob([], "step: epochs at which the learning rate is multiplied by gamma")
    milestone_fractions: list[float] = knob([], "step: fractions of the run's optimizer steps (in (0, 1)) at which the "
                                            "learning rate is multiplied by gamma; the form that follows train.steps "
                                            "and train.budget_minutes")
    gamma: float = knob(0.1, "step: decay factor at each milestone")

    def __post_init__(self):
        _check_nonneg("sched.warmup_epochs", self.warmup_epochs)
        _check_nonneg("sched.min_lr", self.min_lr)
        if self.warmup_fraction is not None:
            _check_range("sched.warmup_fraction", self.warmup_fraction, 0.0, 1.0, hi_open=True)
        if any(m <= 0 for m in self.milestones) or list(self.milestones) != sorted(set(self.milestones)):
            raise ConfigError("sched.milestones", f"must be increasing positive epochs, got {short_repr(self.milestones)}")
        fr = list(self.milestone_fractions)
        if any(not 0 < f < 1 for f in fr) or fr != sorted(set(fr)):
            raise ConfigError("sched.milestone_fractions", f"must be increasing fractions in (0, 1), got {short_repr(fr)}")
        if fr and self.milestones:
            raise ConfigError("sched.milestone_fractions", "set either sched.milestones (epochs) or "
                              "sched.milestone_fractions, not both")
        _check_range("sched.gamma", self.gamma, 0.0, 1.0, lo_open=True)


@dataclass
class TrainConfig:
    epochs: int = knob(30, "training epochs (upper bound when early stopping); ignored when train.steps, "
                       "train.budget_minutes or train.budget_flops is set")
    steps: Optional[int] = knob(None, "total optimizer steps; epochs become ceil(steps / steps per epoch), the last "
                                "one possibly partial (reproduces a budgeted run: its summary.json records `steps`)")
    budget_minutes: Optional[float] = knob(None, "wall-clock budget of the whole run in minutes: the run times a "
                                           "few throwaway steps and evaluations, then fixes the number of optimizer "
                                           "steps so that training, evaluations and checkpoints end within it "
                                           "(exclusive with train.steps; recorded in summary.json)")
    budget_flops: Optional[float] = knob(None, "training FLOPs of the whole run (e.g. 3.0e15): the number of "
                                         "optimizer steps is this divided by the FLOPs of one training step "
                                         "(forward + backward of one batch, counted once by torch's FlopCounterMode), "
                                         "the same on every machine (exclusive with train.steps and "
                                         "train.budget_minutes; recorded in summary.json)")
    budget_clock: str = knob("wall", "what train.budget_minutes counts: wall-clock time, or the CPU time of the run's "
                             "process, all threads (CPU devices; equal compute for every run however busy a "
                             "shared machine is)", choices=("wall", "cpu"))
    batch_size: int = knob(128, "training batch size")
    eval_batch_size: int = knob(500, "batch size for evaluation")
    label_smoothing: float = knob(0.1, "label smoothing of the cross-entropy loss")
    grad_clip: float = knob(1.0, "clip the gradient norm to this value (0 disables)")
    amp: str = knob("auto", "mixed precision; auto = bf16 on CUDA and on CPUs with bf16 units (AMX, AVX512-BF16), none elsewhere; the resolved value is recorded (summary.json, checkpoints) and kept on resume", choices=("auto", "none", "bf16", "fp16"))
    compile: bool = knob(False, "torch.compile the model")
    channels_last: bool = knob(True, "channels-last memory format for the model and its inputs (faster convolutions on "
                                     "CPU and CUDA; MobileViT runs channels-last inside either way)")
    ema: bool = knob(False, "keep an exponential moving average of the weights and evaluate it")
    ema_decay: float = knob(0.999, "EMA decay per step")
    patience: int = knob(0, "early stopping: epochs without improvement of `monitor` (0 disables)")
    monitor: str = knob("val_top1", "validation metric for best checkpoint and early stopping",
                     choices=("val_top1", "val_top5", "val_loss", "val_f1_macro", "val_ece"))
    test_every_epoch: bool = knob(False, "also evaluate the test set every epoch (test_ curves; selection still uses val)")
    threads: Optional[int] = knob(None, "CPU threads for torch (default: torch's choice)")
    progress: bool = knob(True, "show a progress bar (plain lines when not a TTY)")

    def __post_init__(self):
        _check_positive("train.epochs", self.epochs)
        _check_positive("train.steps", self.steps, allow_none=True)
        if self.budget_minutes is not None and not (math.isfinite(self.budget_minutes) and self.budget_minutes > 0):
            raise ConfigError("train.budget_minutes", f"must be a finite number > 0, got {self.budget_minutes}")
        if self.budget_flops is not None and not (math.isfinite(self.budget_flops) and self.budget_flops > 0):
            raise ConfigError("train.budget_flops", f"must be a finite number > 0, got {self.budget_flops}")
        if self.steps is not None and self.budget_minutes is not None:
            raise ConfigError("train.steps", "set either train.steps or train.budget_minutes, not both (a budgeted "
                              "run records its step count: reproduce it with train.budget_minutes=null train.steps=N)")
        if self.budget_flops is not None and (self.steps is not None or self.budget_minutes is not None):
            other = "train.steps" if self.steps is not None else "train.budget_minutes"
            raise ConfigError("train.budget_flops", f"set one of train.budget_flops, train.steps and "
                              f"train.budget_minutes, not both train.budget_flops and {other}")
        _check_positive("train.batch_size", self.batch_size)
        _check_positive("train.eval_batch_size", self.eval_batch_size)
        _check_range("train.label_smoothing", self.label_smoothing, 0.0, 1.0, hi_open=True)
        _check_nonneg("train.grad_clip", self.grad_clip)
        _check_range("train.ema_decay", self.ema_decay, 0.0, 1.0, hi_open=True)
        _check_nonneg("train.patience", self.patience)
        if self.threads is not None:
            _check_range("train.threads", self.threads, 1, MAX_THREADS)


SEED_SOURCES = ("seed_init", "seed_split", "seed_order")
"""Per-source seed overrides (Bouthillier et al. 2021): None means the source uses `seed`."""


#: `track.wandb`: a W&B project, optionally after its entity (characters W&B refuses in names left out).
WANDB_PROJECT = re.compile(r"^(?:[^/\\#?%:\s]+/)?[^/\\#?%:\s]+$")


@dataclass
class TrackConfig:
    """Experiment tracking. Execution-only: turning it on or off never changes a run's ID."""

    tensorboard: bool = knob(False, "write TensorBoard event files to RUN/tensorboard/ (per-epoch scalars, hparams, "
                                    "confusion matrix); needs `pip install 'vitlab[tensorboard]'`")
    mlflow: Optional[str] = knob(None, "log each run to MLflow at this tracking URI: a directory (a local file store, "
                                       "relative to the current directory), a .db file (SQLite), or any MLflow URI "
                                       "(http://..., sqlite:///...); needs `pip install 'vitlab[mlflow]'`")
    wandb: Optional[str] = knob(None, "log each run to Weights & Biases project PROJECT or ENTITY/PROJECT (offline "
                                      "into RUN/wandb/ unless an API key is set; `wandb sync` uploads later); needs "
                                      "`pip install 'vitlab[wandb]'`")

    def __post_init__(self):
        if self.mlflow is not None and not self.mlflow.strip():
            raise ConfigError("track.mlflow", "must be a tracking URI or a directory, or null to turn MLflow off")
        if self.wandb is not None and not WANDB_PROJECT.match(self.wandb):
            raise ConfigError("track.wandb", f"must be PROJECT or ENTITY/PROJECT (no spaces, no \\ # ? % :), "
                                             f"or null to turn W&B off; got {short_repr(self.wandb)}")


@dataclass
class RunConfig:
    seed: int = knob(0, "one seed drives initialization, split, shuffling and augmentation (unless seed_init, "
                        "seed_split or seed_order override one source)")
    seed_init: Optional[int] = knob(None, "seed of model initialization (and of dropout / drop-path, which draw "
                                          "from the same stream); null: seed")
    seed_split: Optional[int] = knob(None, "seed of the validation split held out of the training set; null: seed")
    seed_order: Optional[int] = knob(None, "seed of the data order (shuffling) and of augmentation; null: seed")
    device: str = knob("auto", "auto (cuda if available, else cpu), cpu, cuda, cuda:N or mps")
    data: DataConfig = field(default_factory=DataConfig, metadata={"doc": "dataset"})
    aug: AugmentConfig = field(default_factory=AugmentConfig, metadata={"doc": "augmentation"})
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"doc": "model"})
    optim: OptimConfig = field(default_factory=OptimConfig, metadata={"doc": "optimizer"})
    sched: ScheduleConfig = field(default_factory=ScheduleConfig, metadata={"doc": "learning-rate schedule"})
    train: TrainConfig = field(default_factory=TrainConfig, metadata={"doc": "training loop"})
    track: TrackConfig = field(default_factory=TrackConfig, metadata={"doc": "experiment tracking (not part of the run ID)"})

    def __post_init__(self):
        check_seed("seed", self.seed)
        for name in SEED_SOURCES:
            if getattr(self, name) is not None:
                check_seed(name, getattr(self, name))
        dev = self.device
        if not (dev in ("auto", "cpu", "cuda", "mps") or (dev.startswith("cuda:") and dev[5:].isdigit())):
            raise ConfigError("device", f"must be auto, cpu, cuda, cuda:N or mps, got {short_repr(dev)}")
        t = self.train
        budgeted = t.budget_minutes is not None or t.budget_flops is not None
        if self.sched.milestones and (t.steps is not None or budgeted):
            raise ConfigError("sched.milestones", "epoch milestones do not follow train.steps or a budget "
                              "(train.budget_minutes, train.budget_flops); use sched.milestone_fractions")

    def source_seed(self, source: str) -> int:
        """The seed of one source of randomness ('seed_init', 'seed_split', 'seed_order'): its
        override, else `seed`."""
        v = getattr(self, source)
        return self.seed if v is None else v


# ----------------------------------------------------------------------------------------------
# checks


# Written as `not (v ok)` so that NaN, which fails every comparison, is refused too.


def _check_positive(name, v, allow_none=False):
    if v is None and allow_none:
        return
    if v is None or not v > 0:
        raise ConfigError(name, f"must be > 0, got {v}")


def _check_nonneg(name, v):
    if not v >= 0:
        raise ConfigError(name, f"must be >= 0, got {v}")


def _check_range(name, v, lo, hi, lo_open=False, hi_open=False):
    bad = not (lo <= v <= hi) or (lo_open and v == lo) or (hi_open and v == hi)
    if bad:
        lb, rb = ("(" if lo_open else "["), (")" if hi_open else "]")
        raise ConfigError(name, f"must be in {lb}{lo}, {hi}{rb}, got {v}")


def check_seed(name: str, v: Any) -> None:
    """A seed is an integer in [0, MAX_SEED] (what numpy, torch and Python's random all accept)."""
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_SEED:
        raise ConfigError(name, f"must be an integer in [0, 2**32 - 1 = {MAX_SEED}], got {short_repr(v)}")


def check_finite(name: str, v: Any) -> None:
    """Refuse NaN and ±inf in a float or a list of floats (a field opts out with knob(finite=False))."""
    values = v if isinstance(v, list) else [v]
    for x in values:
        if isinstance(x, float) and not math.isfinite(x):
            raise ConfigError(name, f"must be a finite number, got {x}")


# ----------------------------------------------------------------------------------------------
# dict <-> dataclass


def _strip_optional(tp):
    """(type without None, whether None is allowed); a union of several types stays a Union."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return (args[0] if len(args) == 1 else typing.Union[tuple(args)]), len(args) < len(typing.get_args(tp))
    return tp, False


def require(ok: Callable[[Any], bool], problem: str) -> Callable[[Any, str], Any]:
    """A check for `Annotated[T, ...]` fields: `require(lambda v: v >= 0, "must be >= 0")`."""
    def check(value: Any, path: str) -> Any:
        if not ok(value):
            raise ConfigError(path, f"{problem}, got {short_repr(value)}")
        return value
    return check


def _kind(tp: Any) -> str:
    """What a value of type `tp` looks like, in words, for "must be X or Y" messages."""
    if typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    if dataclasses.is_dataclass(tp) or typing.get_origin(tp) is dict:
        return "a mapping"
    return {list: "a list", bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        typing.get_origin(tp) or tp, str(tp))


def _fits(value: Any, tp: Any) -> bool:
    """Whether `value` has the shape of `tp` (picks the member of a union that coerces it)."""
    kind = _kind(tp)
    if kind == "a mapping":
        return isinstance(value, dict)
    if kind == "a list":
        return isinstance(value, (list, tuple))
    if isinstance(value, bool) or kind == "true or false":
        return isinstance(value, bool) and kind == "true or false"
    if kind == "an integer":
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if kind == "a number":
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                float(value)
            except ValueError:
                return False
            return True
        return isinstance(value, (int, float))
    return kind == "a string" and isinstance(value, str)


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """`value` as type `tp`, strictly. Beyond scalars and lists: `dict[str, T]`, nested dataclasses,
    `Any` (taken as is), a union of a few types (the member whose shape the value has), and
    `Annotated[T, check, ...]`, where each `check(value, path)` returns the value or raises ConfigError."""
    tp, optional = _strip_optional(tp)
    if value is None:
        if optional or tp is Any:
            return None
        if dataclasses.is_dataclass(tp):
            return build(tp, None, f"{path}.")  # an empty section: its defaults
        raise ConfigError(path, "must not be null")
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        inner, *checks = typing.get_args(tp)
        value = _coerce(value, inner, path)
        for check in checks:
            value = check(value, path)
        return value
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return build(tp, value, f"{path}.")
    if origin in (typing.Union, types.UnionType):
        members = typing.get_args(tp)
        for member in members:
            if _fits(value, member):
                return _coerce(value, member, path)
        kinds = [_kind(m) for m in members]
        raise ConfigError(path, f"must be {', '.join(kinds[:-1])} or {kinds[-1]}, got {short_repr(value)}")
    if origin is dict:
        _, item_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(path, f"must be a mapping, got {short_repr(value)}")
        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            raise ConfigError(path, f"keys must be strings, got {short_repr(bad[0])}")
        return {k: _coerce(v, item_tp, f"{path}.{k}") for k, v in value.items()}
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]  # `milestones=20` means [20]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(path, f"must be a list, got {short_repr(value)}")
        return [_coerce(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(path, f"must be true or false, got {short_repr(value)}")
    if tp is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            if abs(value) > MAX_INT:
                raise ConfigError(path, f"must be an integer within ±2**63, got {short_repr(value)}")
            return value
        raise ConfigError(path, f"must be an integer, got {short_repr(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML 1.1 reads "1e-3" as a string
            except ValueError:
                pass
        raise ConfigError(path, f"must be a number, got {short_repr(value)}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(path, f"must be a string, got {short_repr(value)}")
    raise ConfigError(path, f"unsupported type {tp}")  # pragma: no cover


def _check_choices(value: Any, choices: tuple, path: str) -> None:
    """A value (or each item of a list value) must be one of `choices`."""
    if isinstance(value, list):
        for i, v in enumerate(value):
            _check_choices(v, choices, f"{path}[{i}]")
        return
    if value not in choices:
        shown = ", ".join(str(c) for c in choices if c is not None)
        raise ConfigError(path, f"must be one of {shown}; got {short_repr(value)}" + suggest(str(value), [c for c in choices if c]))


def suggest(word: str, options) -> str:
    """' (did you mean X?)' for the closest option, or ''."""
    if len(word) > 100:  # no option is that long; and difflib on a huge string is slow
        return ""
    options = [str(o) for o in options]
    by_shape = {_shape(o): o for o in options}  # FashionMNIST, fashion-mnist -> fashion_mnist
    if _shape(word) in by_shape:
        return f" (did you mean {by_shape[_shape(word)]!r}?)"
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if not close:
        close = [by_shape[c] for c in difflib.get_close_matches(_shape(word), list(by_shape), n=1, cutoff=0.6)]
    return f" (did you mean {close[0]!r}?)" if close else ""


def _shape(word: str) -> str:
    """A name without case, underscores, dashes and spaces: how `suggest` matches spellings of one name."""
    return "".join(ch for ch in word.lower() if ch.isalnum())


def build(cls, data: Any, prefix: str = ""):
    """Build dataclass `cls` from a nested dict, strictly: unknown keys, bad types and values are errors.

    Errors of `cls.__post_init__` that name a field relative to `cls` get `prefix` in front, so a
    dataclass used at several places (a dict of them, say) reports the full dotted path."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(prefix.rstrip(".") or "config", f"must be a mapping, got {type(data).__name__}")
    fields = {fl.name: fl for fl in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls, include_extras=True)
    kwargs = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if key not in fields:
            raise ConfigError(path, "unknown key" + suggest(str(key), fields))
        v = _coerce(value, hints[key], path)
        if fields[key].metadata.get("finite", True):
            check_finite(path, v)
        choices = fields[key].metadata.get("choices")
        if choices is not None and v is not None:
            _check_choices(v, choices, path)
        kwargs[key] = v
    try:
        return cls(**kwargs)
    except ConfigError as e:
        if not prefix or e.field.startswith(prefix):
            raise  # already the full dotted name (RunConfig's sections spell theirs out)
        raise ConfigError((prefix + e.field).rstrip("."), e.problem) from None


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"model": {"dim": 64}} -> {"model.dim": 64}: a nested config dict with dotted keys."""
    out: dict = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def parse_value(text: str) -> Any:
    """Parse the right side of `key=value` as YAML, so `3`, `1e-3`, `[1,2]`, `true`, `null` work."""
    try:
        return yaml_load(text) if text != "" else ""
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict, overrides: list[str], cls=None) -> dict:
    """Apply dotted `a.b=value` overrides to a nested dict (copied). Checks the keys against `cls`."""
    import copy

    out = copy.deepcopy(data) if data else {}
    for item in overrides:
        if "=" not in item:
            raise UserError(f"override {short_repr(item)}: expected key=value")
        key, text = item.split("=", 1)
        key = key.strip()
        if not key:
            raise UserError(f"override {short_repr(item)}: empty key")
        parts = key.split(".")
        if cls is not None:
            check_key_path(cls, parts)
        node = out
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[parts[-1]] = parse_value(text)
    return out


def check_key_path(cls, parts: list[str]) -> None:
    """Raise ConfigError unless the dotted key `parts` names a field of dataclass `cls`."""
    tp = cls
    for i, p in enumerate(parts):
        if not dataclasses.is_dataclass(tp):
            raise ConfigError(".".join(parts[:i]), f"is not a section; cannot set {'.'.join(parts)}")
        names = {fl.name for fl in dataclasses.fields(tp)}
        if p not in names:
            raise ConfigError(".".join(parts[: i + 1]), "unknown key" + suggest(p, names))
        tp = typing.get_type_hints(tp)[p]


#: The most a YAML document may hold once its aliases are expanded: nodes plus characters of scalars.
#: A config or spec is a few kB; a "billion laughs" alias bomb is refused before anything walks it.
MAX_YAML_SIZE = 1_000_000
#: The largest YAML file read (configs and specs are a few kB).
MAX_YAML_BYTES = 10_000_000
#: The deepest nesting of mappings and lists a YAML document may have (configs nest 2-4 levels).
MAX_YAML_DEPTH = 64


class BoundedSafeLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses documents whose aliases expand past MAX_YAML_SIZE, that nest
    deeper than MAX_YAML_DEPTH, or whose aliases refer to themselves. Every YAML read goes through it."""

    def compose_document(self):
        node = super().compose_document()
        check_yaml_size(node)
        return node


def check_yaml_size(root: yaml.Node) -> int:
    """The size of the YAML node graph `root` expanded to a tree (aliases share nodes, so a few
    lines can stand for 10⁹ values). Iterative, memoized by node: linear in the file, not the tree.
    Raises yaml.composer.ComposerError when a limit is passed."""
    def refuse(node, problem):
        raise yaml.composer.ComposerError(None, None, problem, node.start_mark)

    def children(node):
        if isinstance(node, yaml.SequenceNode):
            return node.value
        if isinstance(node, yaml.MappingNode):
            return [n for pair in node.value for n in pair]
        return ()

    sizes: dict[int, int] = {}
    active: set[int] = set()  # nodes whose subtree is being walked: meeting one again is a cycle
    stack = [(root, 1, False)]
    while stack:
        node, depth, walked = stack.pop()
        key = id(node)
        if walked:
            active.discard(key)
            own = len(node.value) if isinstance(node, yaml.ScalarNode) else 0
            sizes[key] = 1 + own + sum(sizes[id(c)] for c in children(node))
            if sizes[key] > MAX_YAML_SIZE:
                refuse(node, f"aliases expand this document past {MAX_YAML_SIZE:,} values and characters")
            continue
        if key in sizes:
            continue
        if key in active:
            refuse(node, "an alias refers to the collection that contains it")
        if depth > MAX_YAML_DEPTH:
            refuse(node, f"nested deeper than {MAX_YAML_DEPTH} levels")
        active.add(key)
        stack.append((node, depth, True))
        stack.extend((c, depth + 1, False) for c in children(node) if id(c) not in sizes)
    return sizes[id(root)]


def yaml_load(text: str, loader: type = BoundedSafeLoader) -> Any:
    """Parse YAML text with the bounded safe loader (raises yaml.YAMLError, also for a nesting so
    deep that PyYAML's recursive composer would overflow the stack)."""
    try:
        return yaml.load(text, Loader=loader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise yaml.YAMLError(f"nested deeper than {MAX_YAML_DEPTH} levels") from None


def yaml_problem(e: yaml.YAMLError, text: str = "") -> str:
    """One line saying where and why YAML `text` failed to parse."""
    if isinstance(e, yaml.reader.ReaderError):  # e.g. a NUL byte: PyYAML's own message is two lines
        code = e.character if isinstance(e.character, int) else ord(str(e.character)[:1] or "\0")
        line = text.count("\n", 0, e.position) + 1
        return f"line {line}: character U+{code:04X} is not allowed in YAML (a binary file?)"
    mark = getattr(e, "problem_mark", None)
    where = f"line {mark.line + 1}: " if mark is not None else ""
    return one_line(where + str(getattr(e, "problem", None) or e))


def read_yaml(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such file")
    text = ""
    try:
        if p.stat().st_size > MAX_YAML_BYTES:
            raise UserError(f"{p}: larger than {MAX_YAML_BYTES:,} bytes; not a config")
        text = p.read_text(encoding="utf-8")
        data = yaml_load(text)
    except yaml.YAMLError as e:
        raise UserError(f"{p}: invalid YAML ({yaml_problem(e, text)})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{p}: cannot read ({one_line(e)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{p}: top level must be a mapping of config keys")
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """The resolved RunConfig from an optional YAML file plus `key=value` overrides."""
    data = read_yaml(path) if path else {}
    data = apply_overrides(data, overrides or [], RunConfig)
    return build(RunConfig, data)


def config_from(obj: Any) -> RunConfig:
    """Accept a RunConfig, a nested dict, or a YAML path; always validated by `build` (a RunConfig
    made in Python, or changed after it was built, is checked again)."""
    if isinstance(obj, RunConfig):
        return build(RunConfig, to_dict(obj))
    if isinstance(obj, dict):
        return build(RunConfig, obj)
    if isinstance(obj, (str, Path)):
        return load_config(obj)
    raise UserError(f"cannot make a config from {type(obj).__name__}")


def dump_yaml(cfg) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def describe_keys(cls=RunConfig, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, doc) for every field, for `vitlab config keys`."""
    rows = []
    for fl in dataclasses.fields(cls):
        tp = typing.get_type_hints(cls)[fl.name]
        if dataclasses.is_dataclass(tp):
            rows += describe_keys(tp, f"{prefix}{fl.name}.")
            continue
        default = fl.default if fl.default is not dataclasses.MISSING else fl.default_factory()
        doc = fl.metadata.get("doc", "")
        choices = fl.metadata.get("choices")
        if choices:
            doc += " {" + "|".join(str(c) for c in choices if c is not None) + "}"
        rows.append((prefix + fl.name, repr(default), doc))
    return rows


#: Per-source seeds: each overrides `seed` for its source of randomness when set.

# Fields that change how a run executes but not what it computes: excluded from the run's identity.
EXECUTION_ONLY = {("train", "threads"), ("train", "progress"), ("track", "tensorboard"), ("track", "mlflow"),
                  ("track", "wandb")}


# Fields added after run IDs were first issued, omitted from the identity while unset (None or []),
# so configs written before they existed keep their run IDs.
OMITTED_UNSET = {("train", "steps"), ("train", "budget_minutes"), ("train", "budget_flops"),
                 ("sched", "warmup_fraction"), ("sched", "milestone_fractions")}


def identity_dict(cfg: RunConfig) -> dict:
    """The config as a dict without execution-only fields: what defines a run's result. Seed-source
    overrides left at None, the OMITTED_UNSET fields and sections left empty (`track`) are omitted, so
    configs written before they existed keep their run IDs."""
    d = to_dict(cfg)
    for section, key in EXECUTION_ONLY:
        d[section].pop(key, None)
    for key in SEED_SOURCES:
        if d.get(key) is None:
            d.pop(key, None)
    for section, key in OMITTED_UNSET:
        if d[section].get(key) in (None, []):
            d[section].pop(key, None)
    if "budget_minutes" not in d["train"]:
        d["train"].pop("budget_clock", None)  # it only means something with a budget
    return {k: v for k, v in d.items() if v != {}}


def config_hash(cfg: RunConfig, length: int = 12) -> str:
    """Deterministic run ID: hash of the canonical JSON of the identity dict (seed included)."""
    import hashlib

    return hashlib.sha256(canonical_json(identity_dict(cfg)).encode()).hexdigest()[:length]


def canonical_json(obj: Any) -> str:
    """The JSON text that run IDs hash: sorted keys, no whitespace, ASCII."""
    import json

    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
