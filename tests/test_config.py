import pytest

from vitlab.config import RunConfig, dump_yaml, load_config
from vitlab.identity import LEGACY_MODEL_KEYS, config_hash, identity_dict
from vitlab.schema import apply_overrides, build, describe_keys
from vitlab.yamlsafe import read_yaml
from vitlab.errors import ConfigError, UserError


def test_defaults_validate_and_roundtrip(tmp_path):
    cfg = RunConfig()
    p = tmp_path / "c.yaml"
    p.write_text(dump_yaml(cfg))
    assert load_config(p) == cfg


def test_yaml_plus_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("seed: 3\noptim:\n  lr: 1e-3\nmodel:\n  name: mobilevit_xxs\n")
    cfg = load_config(p, ["optim.lr=5e-4", "sched.milestones=[20,40]", "model.num_heads=2", "train.amp=bf16"])
    assert cfg.seed == 3 and cfg.optim.lr == 5e-4 and cfg.sched.milestones == [20, 40]
    assert cfg.model.name == "mobilevit_xxs" and cfg.model.num_heads == 2 and cfg.train.amp == "bf16"


def test_yaml_reads_1e_minus_3_as_float(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("optim:\n  lr: 1e-3\n")  # YAML 1.1 parses this as a string
    assert load_config(p).optim.lr == pytest.approx(1e-3)


@pytest.mark.parametrize("override, field, fragment", [
    ("optim.lrr=1", "optim.lrr", "did you mean 'lr'"),
    ("trian.epochs=3", "trian", "did you mean 'train'"),
    ("model.num_heads=2.5", "model.num_heads", "integer"),
    ("model.num_heads=0", "model.num_heads", "> 0"),
    ("data.name=cifar", "data.name", "did you mean 'cifar10'"),
    ("data.val_fraction=0", "data.val_fraction", "(0.0, 0.9]"),
    ("train.epochs=-1", "train.epochs", "> 0"),
    ("train.hflip=true", "train.hflip", "unknown key"),
    ("optim.betas=[0.9]", "optim.betas", "two values"),
    ("sched.milestones=[40,20]", "sched.milestones", "increasing"),
    ("device=gpu", "device", "cuda"),
    ("model.num_heads=2", None, None),
])
def test_bad_values_name_the_field(override, field, fragment):
    if field is None:
        load_config(None, [override])
        return
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert e.value.field == field
    assert fragment in str(e.value)
    assert "\n" not in str(e.value)


def test_exclusive_knobs():
    with pytest.raises(ConfigError, match="model.num_heads"):
        load_config(None, ["model.name=mobilevit_xxs", "model.num_heads=2", "model.head_dim=16"])
    with pytest.raises(ConfigError, match="model.level"):
        load_config(None, ["model.name=mobilevit_xxs", "model.level=C2", "model.width_mult=1.5"])


def test_a_knob_of_another_family_is_refused_when_set_and_ignored_when_null():
    """The model section is the knob dataclass of the preset's family: a MobileViT knob on a ViT is an
    error at load time; left null (as configs written before families listed every knob) it is dropped."""
    with pytest.raises(ConfigError, match=r"^model.head_dim: not a knob of vit_study_b; its knobs: image_size"):
        load_config(None, ["model.head_dim=16"])
    cfg = build(RunConfig, {"model": {"name": "vit_nano", "expansion": None, "strides": None, "dim": 32}})
    assert cfg.model.dim == 32 and not hasattr(cfg.model, "expansion")
    with pytest.raises(ConfigError, match=r"^model.name: unknown model 'vit_nan'.*did you mean 'vit_nano'"):
        load_config(None, ["model.name=vit_nan"])


def test_unknown_nested_key_in_yaml(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  epcohs: 3\n")
    with pytest.raises(ConfigError, match=r"train.epcohs: unknown key \(did you mean 'epochs'\?\)"):
        load_config(p)


def test_unreadable_yaml_is_user_error(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train: [1, 2\n")
    with pytest.raises(UserError, match="invalid YAML"):
        read_yaml(p)
    with pytest.raises(UserError, match="no such file"):
        read_yaml(tmp_path / "missing.yaml")


def test_override_syntax_errors():
    with pytest.raises(UserError, match="expected key=value"):
        apply_overrides({}, ["optim.lr"])
    with pytest.raises(ConfigError, match="is not a section"):
        apply_overrides({}, ["seed.x=1"], RunConfig)


def test_hash_ignores_execution_only_fields_but_not_seed():
    a = RunConfig()
    b = build(RunConfig, {"train": {"threads": 1, "progress": False}})
    c = build(RunConfig, {"seed": 1})
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash(c)


def test_every_key_is_documented():
    rows = describe_keys(RunConfig)
    assert len(rows) > 50
    assert all(doc for _, _, doc in rows), [k for k, _, d in rows if not d]


@pytest.mark.parametrize("overrides, run_id", [
    ("model.name=mobilevit_xxs model.expansion=2 model.level=C2", "ed98a8bfc592"),
    ("model.name=mobilevit_s model.stage_expansion=[1,2,3,4,5] model.head_dim=8 model.strides=cifar", "603fcd9d30fb"),
    ("train.steps=100 sched.milestone_fractions=[0.5] sched.name=step", "901a3dd5685b"),
    ("train.budget_minutes=3 train.budget_clock=cpu", "d2daabccbd9f"),
])
def test_run_ids_are_those_issued_before_the_model_families(overrides, run_id):
    """Pinned with the single ModelConfig that held every family's knobs: the identity still lists each
    of them (None where the family lacks it), and the omit-when-unset fields stay out."""
    cfg = load_config(None, overrides.split())
    assert config_hash(cfg) == run_id
    assert set(identity_dict(cfg)["model"]) == set(LEGACY_MODEL_KEYS)
