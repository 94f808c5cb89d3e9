"""The run configuration: every knob of a run, its doc, its constraints, and how a config is loaded.

Each section is a `Section` dataclass of `knob(...)` fields (engine: `vitlab.schema`); constraints
live with the field, `check_links()` holds the rules that link fields. The `model` section is a
tagged union: `model.name` picks the knob dataclass of the preset's family (registered by the family
itself, see `vitlab.families`). YAML is read through `vitlab.yamlsafe`; a run's identity (its run
ID) is `vitlab.identity`.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from .datasets import DATASET_NAMES, DATASETS
from .errors import ConfigError, UserError, short_repr
from .families import FAMILIES, family_of
from .metrics import MONITOR_METRICS
from .schema import Section, apply_overrides, build, knob, require, to_dict
from .yamlsafe import read_yaml

#: Seeds must fit every RNG they seed (numpy's legacy seed takes 32 bits): 0 <= seed <= MAX_SEED.
MAX_SEED = 2**32 - 1

#: Sanity bounds on sizes that allocate memory or threads in proportion (far above any real use).
MAX_IMAGE_SIZE = 4096
MAX_SYNTHETIC_IMAGES = 1_000_000
MAX_THREADS = 1024
#: data.synthetic_classes: the generator draws this many of its classes.
MIN_SYNTHETIC_CLASSES, MAX_SYNTHETIC_CLASSES = 10, 16

ATTN_NORMS = (
    "softmax", "zscore", "cosine", "linear", "linear_scale",
    "qk_layernorm", "scaled_cosine", "sigmoid", "lsa", "zscore_qkv",
)


def check_seed(name: str, v: Any) -> None:
    """A seed is an integer in [0, MAX_SEED] (what numpy, torch and Python's random all accept)."""
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_SEED:
        raise ConfigError(name, f"must be an integer in [0, 2**32 - 1 = {MAX_SEED}], got {short_repr(v)}")


def _seed(value: Any, path: str) -> None:
    check_seed(path, value)


def _finite_positive(value: float, path: str) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(path, f"must be a finite number > 0, got {value}")


@dataclass
class DataConfig(Section):
    SECTION = "data"

    name: str = knob("synthetic", "dataset to train on", choices=DATASET_NAMES)
    root: Optional[str] = knob(None, "data root; default $VITLAB_DATA_ROOT, else ~/.cache/vitlab/data")
    val_fraction: float = knob(0.1, "share of the training set held out (stratified, seeded) for validation", gt=0.0, le=0.9)
    train_subset: Optional[int] = knob(None, "use only this many training images (stratified, drawn after the validation split; all when larger), e.g. for a quick CPU profile", gt=0)
    test_subset: Optional[int] = knob(None, "evaluate on only this many test images (stratified, the same for every seed; all when larger)", gt=0)
    coarse_labels: bool = knob(False, "cifar100: use the 20 coarse superclass labels instead of the 100 fine ones")
    synthetic_train: int = knob(6000, "synthetic: images in the training set (before the validation split)", ge=1, le=MAX_SYNTHETIC_IMAGES)
    synthetic_test: int = knob(2000, "synthetic: images in the test set", ge=1, le=MAX_SYNTHETIC_IMAGES)
    synthetic_classes: int = knob(10, "synthetic: number of classes", ge=MIN_SYNTHETIC_CLASSES, le=MAX_SYNTHETIC_CLASSES)
    synthetic_seed: int = knob(1234, "synthetic: seed of the generated images (fixed, so every run of a study sees the same data)", check=_seed)
    folder_path: Optional[str] = knob(None, "folder: directory with one sub-folder per class (or train/ and test/ of those)")
    folder_image_size: int = knob(32, "folder: images are resized to this square size when loaded", ge=1, le=MAX_IMAGE_SIZE)
    folder_test_fraction: float = knob(0.2, "folder: share held out as test set when there is no test/ sub-folder", gt=0.0, le=0.9)
    download: bool = knob(True, "download a missing dataset from its official URL when the network allows")

    def check_links(self):
        if self.name == "folder" and not self.folder_path:
            raise ConfigError("data.folder_path", "is required when data.name is 'folder'")

    def input_shape(self) -> tuple[int, int]:
        """(channels, image size) of the dataset, known without reading it."""
        d = DATASETS[self.name]
        return d.channels, d.image_size or self.folder_image_size


@dataclass
class AugmentConfig(Section):
    SECTION = "aug"

    crop_padding: int = knob(4, "random crop after zero-padding each side by this many pixels (0 disables)", ge=0)
    hflip: bool = knob(True, "random horizontal flip with probability 0.5")
    rotation_deg: float = knob(0.0, "random rotation, uniform in ±this many degrees (0 disables)", ge=0.0, le=180.0)
    color_jitter: float = knob(0.0, "brightness/contrast/saturation jitter strength, factor uniform in [1-s, 1+s] (0 disables)", ge=0.0, le=1.0)
    policy: str = knob("none", "automatic augmentation policy", choices=("none", "randaugment", "trivialaugment"))
    randaug_ops: int = knob(2, "randaugment: operations applied per image", gt=0)
    randaug_magnitude: int = knob(9, "randaugment: magnitude on the 0..30 scale", ge=0, le=30)
    mixup_alpha: float = knob(0.0, "mixup Beta(α, α) parameter (0 disables)", ge=0)
    cutmix_alpha: float = knob(0.0, "cutmix Beta(α, α) parameter (0 disables)", ge=0)
    mix_prob: float = knob(1.0, "probability that a batch gets mixup/cutmix (when enabled; half each when both are)", ge=0.0, le=1.0)
    erase_prob: float = knob(0.0, "random-erasing probability per image (0 disables)", ge=0.0, le=1.0)


#: The model of a config that names none.
DEFAULT_MODEL = "vit_study_b"


@dataclass
class ModelConfig(Section):
    """The knobs every model family has. `None` means "the preset's value" (see `vitlab models NAME
    --describe`). Each family subclasses this with its own knobs (`vitlab.families`); `model.name`
    picks the subclass, and a knob the family does not have is a config error."""

    SECTION = "model"
    FAMILY = ""  # set by register_family on each family's subclass

    name: str = knob(DEFAULT_MODEL, "model preset from the registry (`vitlab models` lists them)")
    image_size: Optional[int] = knob(None, "network input size; batches are resized on the device when it differs from the data", ge=1, le=MAX_IMAGE_SIZE)
    attn_norm: str = knob("softmax", "normalization of the attention scores", choices=ATTN_NORMS)
    zscore_v: bool = knob(False, "zscore attention: also standardize V")
    num_heads: Optional[int] = knob(None, "attention heads; the head width is the transformer width / num_heads", gt=0, excludes=("head_dim",))
    patch_size: Optional[int] = knob(None, "ViT: patch embedding size; MobileViT: unfold patch size", gt=0)
    mlp_ratio: Optional[float] = knob(None, "transformer MLP (FFN) hidden width / embedding width", gt=0)
    dropout: Optional[float] = knob(None, "dropout in MLPs/projections and before the head", ge=0.0, lt=1.0)
    attn_dropout: Optional[float] = knob(None, "dropout on attention weights", ge=0.0, lt=1.0)
    drop_path: Optional[float] = knob(None, "stochastic-depth rate (linearly increasing over blocks)", ge=0.0, lt=1.0)

    def check_links(self):
        if type(self) is ModelConfig:
            raise ConfigError("model", "build a model config with build(ModelConfig, {...}): its name picks the family")
        family = family_of(self.name).name
        if family != self.FAMILY:
            raise ConfigError("model.name", f"{self.name} is a {family} model, not {self.FAMILY}")

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

    @classmethod
    def schema_variants(cls) -> list[type]:
        """Every family's knob dataclass."""
        return [f.knobs for f in FAMILIES.values()]

    @classmethod
    def schema_variant(cls, data: dict, prefix: str) -> tuple[type, dict]:
        """The knob dataclass of the family of data's `name`, and `data` without the knobs of other
        families left null (a config written when one ModelConfig held every knob lists them all)."""
        name = data.get("name", DEFAULT_MODEL)
        if not isinstance(name, str):
            raise ConfigError(f"{prefix}name", f"must be a string, got {short_repr(name)}")
        knobs = family_of(name).knobs
        own = {fl.name for fl in dataclasses.fields(knobs)}
        others = {fl.name for v in cls.schema_variants() for fl in dataclasses.fields(v)} - own
        kept = {}
        for key, value in data.items():
            if key in others:
                if value is None:
                    continue
                mine = [fl.name for fl in dataclasses.fields(knobs) if fl.name != "name"]
                raise ConfigError(f"{prefix}{key}", f"not a knob of {name}; its knobs: {', '.join(mine)}")
            kept[key] = value
        return knobs, kept


def model_config(name: str = DEFAULT_MODEL, **knobs) -> ModelConfig:
    """The validated knob dataclass of model `name` (its family's), with `knobs` set."""
    return build(ModelConfig, dict(knobs, name=name), "model.")


@dataclass
class OptimConfig(Section):
    SECTION = "optim"

    name: str = knob("adamw", "optimizer", choices=("adamw", "adam", "sgd"))
    lr: float = knob(1e-3, "peak learning rate", gt=0)
    weight_decay: float = knob(0.05, "weight decay (decoupled for adamw, L2 for adam/sgd)", ge=0)
    betas: list[float] = knob([0.9, 0.999], "adam/adamw β1, β2", check=require(
        lambda b: len(b) == 2 and all(0 <= x < 1 for x in b), "needs two values in [0, 1)"))
    momentum: float = knob(0.9, "sgd momentum", ge=0.0, lt=1.0)
    nesterov: bool = knob(True, "sgd: Nesterov momentum")
    decay_norm_bias: bool = knob(False, "also apply weight decay to norms, biases, position embeddings and tokens")


def _increasing(values: list) -> bool:
    return list(values) == sorted(set(values))


@dataclass
class ScheduleConfig(Section):
    SECTION = "sched"

    name: str = knob("cosine", "learning-rate schedule (per step)", choices=("cosine", "step", "constant"))
    warmup_epochs: float = knob(5.0, "linear warmup from 0 over this many epochs (any schedule), at most the whole run", ge=0)
    warmup_fraction: Optional[float] = knob(None, "linear warmup over this fraction of the run's optimizer steps, "
                                            "in [0, 1); replaces sched.warmup_epochs (the form that follows "
                                            "train.steps and train.budget_minutes)", ge=0.0, lt=1.0, identity="omit_unset")
    min_lr: float = knob(0.0, "cosine: final learning rate", ge=0)
    milestones: list[int] = knob([], "step: epochs at which the learning rate is multiplied by gamma", check=require(
        lambda ms: all(m > 0 for m in ms) and _increasing(ms), "must be increasing positive epochs"))
    milestone_fractions: list[float] = knob([], "step: fractions of the run's optimizer steps (in (0, 1)) at which the "
                                            "learning rate is multiplied by gamma; the form that follows train.steps "
                                            "and train.budget_minutes", identity="omit_unset", check=require(
        lambda fr: all(0 < f < 1 for f in fr) and _increasing(fr), "must be increasing fractions in (0, 1)"))
    gamma: float = knob(0.1, "step: decay factor at each milestone", gt=0.0, le=1.0)

    def check_links(self):
        if self.milestone_fractions and self.milestones:
            raise ConfigError("sched.milestone_fractions", "set either sched.milestones (epochs) or "
                              "sched.milestone_fractions, not both")


@dataclass
class TrainConfig(Section):
    SECTION = "train"

    epochs: int = knob(30, "training epochs (upper bound when early stopping); ignored when train.steps, "
                       "train.budget_minutes or train.budget_flops is set", gt=0)
    steps: Optional[int] = knob(None, "total optimizer steps; epochs become ceil(steps / steps per epoch), the last "
                                "one possibly partial (reproduces a budgeted run: its summary.json records `steps`)", gt=0, identity="omit_unset")
    budget_minutes: Optional[float] = knob(None, "wall-clock budget of the whole run in minutes: the run times a "
                                           "few throwaway steps and evaluations, then fixes the number of optimizer "
                                           "steps so that training, evaluations and checkpoints end within it "
                                           "(exclusive with train.steps; recorded in summary.json)", check=_finite_positive, identity="omit_unset")
    budget_flops: Optional[float] = knob(None, "training FLOPs of the whole run (e.g. 3.0e15): the number of "
                                         "optimizer steps is this divided by the FLOPs of one training step "
                                         "(forward + backward of one batch, counted once by torch's FlopCounterMode), "
                                         "the same on every machine (exclusive with train.steps and "
                                         "train.budget_minutes; recorded in summary.json)", check=_finite_positive, identity="omit_unset")
    budget_clock: str = knob("wall", "what train.budget_minutes counts: wall-clock time, or the CPU time of the run's "
                             "process, all threads (CPU devices; equal compute for every run however busy a "
                             "shared machine is)", choices=("wall", "cpu"))
    batch_size: int = knob(128, "training batch size", gt=0)
    eval_batch_size: int = knob(500, "batch size for evaluation", gt=0)
    label_smoothing: float = knob(0.1, "label smoothing of the cross-entropy loss", ge=0.0, lt=1.0)
    grad_clip: float = knob(1.0, "clip the gradient norm to this value (0 disables)", ge=0)
    amp: str = knob("auto", "mixed precision; auto = bf16 on CUDA and on CPUs with bf16 units (AMX, AVX512-BF16), none elsewhere; the resolved value is recorded (summary.json, checkpoints) and kept on resume", choices=("auto", "none", "bf16", "fp16"))
    compile: bool = knob(False, "torch.compile the model")
    channels_last: bool = knob(True, "channels-last memory format for the model and its inputs (faster convolutions on "
                                     "CPU and CUDA; MobileViT runs channels-last inside either way)")
    ema: bool = knob(False, "keep an exponential moving average of the weights and evaluate it (normalization "
                            "statistics are the live model's)")
    ema_decay: float = knob(0.999, "EMA decay per step (the n-th update uses at most (1 + n) / (10 + n): a warm-up "
                                   "that forgets the random initialization)", ge=0.0, lt=1.0)
    eval_hflip: bool = knob(False, "evaluate an image by the mean of its and its mirror image's class "
                                   "probabilities (test-time augmentation: validation, test and analysis alike; "
                                   "twice the inference cost; meant for models trained with aug.hflip)",
                            identity="omit_unset")
    patience: int = knob(0, "early stopping: epochs without improvement of `monitor` (0 disables)", ge=0)
    monitor: str = knob("val_top1", "validation metric for best checkpoint and early stopping",
                     choices=MONITOR_METRICS)
    test_every_epoch: bool = knob(False, "also evaluate the test set every epoch (test_ curves; selection still uses val)")
    threads: Optional[int] = knob(None, "CPU threads for torch (default: torch's choice)", ge=1, le=MAX_THREADS, identity="never")
    progress: bool = knob(True, "show a progress bar (plain lines when not a TTY)", identity="never")

    def check_links(self):
        if self.steps is not None and self.budget_minutes is not None:
            raise ConfigError("train.steps", "set either train.steps or train.budget_minutes, not both (a budgeted "
                              "run records its step count: reproduce it with train.budget_minutes=null train.steps=N)")
        if self.budget_flops is not None and (self.steps is not None or self.budget_minutes is not None):
            other = "train.steps" if self.steps is not None else "train.budget_minutes"
            raise ConfigError("train.budget_flops", f"set one of train.budget_flops, train.steps and "
                              f"train.budget_minutes, not both train.budget_flops and {other}")


SEED_SOURCES = ("seed_init", "seed_split", "seed_order")
"""Per-source seed overrides (Bouthillier et al. 2021): None means the source uses `seed`."""


#: `track.wandb`: a W&B project, optionally after its entity (characters W&B refuses in names left out).
WANDB_PROJECT = re.compile(r"^(?:[^/\\#?%:\s]+/)?[^/\\#?%:\s]+$")


def _mlflow_uri(value: str, path: str) -> None:
    if not value.strip():
        raise ConfigError(path, "must be a tracking URI or a directory, or null to turn MLflow off")


def _wandb_project(value: str, path: str) -> None:
    if not WANDB_PROJECT.match(value):
        raise ConfigError(path, f"must be PROJECT or ENTITY/PROJECT (no spaces, no \\ # ? % :), "
                                f"or null to turn W&B off; got {short_repr(value)}")


@dataclass
class TrackConfig(Section):
    """Experiment tracking. Execution-only: turning it on or off never changes a run's ID."""

    SECTION = "track"

    tensorboard: bool = knob(False, "write TensorBoard event files to RUN/tensorboard/ (per-epoch scalars, hparams, "
                                    "confusion matrix); needs `pip install 'vitlab[tensorboard]'`", identity="never")
    mlflow: Optional[str] = knob(None, "log each run to MLflow at this tracking URI: a directory (a local file store, "
                                       "relative to the current directory), a .db file (SQLite), or any MLflow URI "
                                       "(http://..., sqlite:///...); needs `pip install 'vitlab[mlflow]'`",
                                 check=_mlflow_uri, identity="never")
    wandb: Optional[str] = knob(None, "log each run to Weights & Biases project PROJECT or ENTITY/PROJECT (offline "
                                      "into RUN/wandb/ unless an API key is set; `wandb sync` uploads later); needs "
                                      "`pip install 'vitlab[wandb]'`", check=_wandb_project, identity="never")


#: Devices `device` names besides cuda:N.
DEVICES = ("auto", "cpu", "cuda", "mps")


def _device(dev: str, path: str) -> None:
    if not (dev in DEVICES or (dev.startswith("cuda:") and dev[5:].isdigit())):
        raise ConfigError(path, f"must be auto, cpu, cuda, cuda:N or mps, got {short_repr(dev)}")


@dataclass
class RunConfig(Section):
    seed: int = knob(0, "one seed drives initialization, split, shuffling and augmentation (unless seed_init, "
                        "seed_split or seed_order override one source)", check=_seed)
    seed_init: Optional[int] = knob(None, "seed of model initialization (and of dropout / drop-path, which draw "
                                          "from the same stream); null: seed", check=_seed, identity="omit_unset")
    seed_split: Optional[int] = knob(None, "seed of the validation split held out of the training set; null: seed",
                                     check=_seed, identity="omit_unset")
    seed_order: Optional[int] = knob(None, "seed of the data order (shuffling) and of augmentation; null: seed",
                                     check=_seed, identity="omit_unset")
    device: str = knob("auto", "auto (cuda if available, else cpu), cpu, cuda, cuda:N or mps", check=_device)
    data: DataConfig = field(default_factory=DataConfig, metadata={"doc": "dataset"})
    aug: AugmentConfig = field(default_factory=AugmentConfig, metadata={"doc": "augmentation"})
    model: ModelConfig = field(default_factory=model_config, metadata={"doc": "model"})
    optim: OptimConfig = field(default_factory=OptimConfig, metadata={"doc": "optimizer"})
    sched: ScheduleConfig = field(default_factory=ScheduleConfig, metadata={"doc": "learning-rate schedule"})
    train: TrainConfig = field(default_factory=TrainConfig, metadata={"doc": "training loop"})
    track: TrackConfig = field(default_factory=TrackConfig, metadata={"doc": "experiment tracking (not part of the run ID)"})

    def check_links(self):
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
