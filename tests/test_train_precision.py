"""train.amp: what `auto` resolves to, the precision recorded in summary.json and checkpoints, kept on resume."""
import pytest
import torch

from vitlab.analysis.loading import load_run
from vitlab.config import load_config
from vitlab.identity import config_hash
from vitlab.errors import UserError
from vitlab.io import read_jsonl
from vitlab.training import precision, run_training

from test_train_run import TINY, strip_timing

CPU = torch.device("cpu")


@pytest.fixture
def bf16_units(monkeypatch):
    """Set whether the CPU 'has' bf16 units: returns a setter."""
    def set_units(present: bool) -> None:
        monkeypatch.setattr(precision, "cpu_has_bf16_units", lambda: present)
    return set_units


def tiny(*extra):
    return load_config(None, TINY + ["train.epochs=2", *extra])


def test_auto_resolves_by_the_cpu_probe(bf16_units):
    bf16_units(False)
    assert precision.resolve_amp("auto", CPU) == "none"
    assert precision.resolve_amp("bf16", CPU) == "bf16"  # forced
    assert precision.resolve_amp("auto", torch.device("cuda")) == "bf16"
    bf16_units(True)
    assert precision.resolve_amp("auto", CPU) == "bf16"
    assert precision.resolve_amp("none", CPU) == "none"  # forced
    assert precision.resolve_amp("auto", torch.device("mps")) == "none"


@pytest.mark.parametrize("flags,expected", [("fpu avx2 avx512f", False), ("fpu avx512f avx512_bf16", True),
                                            ("fpu amx_tile amx_bf16", True)])
def test_probe_falls_back_to_cpuinfo_flags(tmp_path, monkeypatch, flags, expected):
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    monkeypatch.setattr(precision, "CPUINFO", cpuinfo)
    assert precision.cpu_has_bf16_units() is expected
    monkeypatch.setattr(precision, "CPUINFO", tmp_path / "missing")
    assert precision.cpu_has_bf16_units() is False


def test_resolved_precision_recorded_and_kept_on_resume(tmp_path, bf16_units):
    bf16_units(True)
    cfg = tiny()
    assert cfg.train.amp == "auto" and config_hash(cfg) == config_hash(tiny("train.amp=auto"))
    full = run_training(cfg, tmp_path / "full")
    assert full["amp"] == "bf16"
    for name in ("last.pt", "best.pt"):
        assert torch.load(tmp_path / "full" / "checkpoints" / name, weights_only=True)["amp"] == "bf16"

    def stop(epoch, row):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, tmp_path / "cut", on_epoch=stop)
    bf16_units(False)  # the run moves to a machine where auto would mean float32
    resumed = run_training(cfg, tmp_path / "cut")
    assert resumed["amp"] == "bf16"
    assert strip_timing(read_jsonl(tmp_path / "cut" / "metrics.jsonl")) == strip_timing(
        read_jsonl(tmp_path / "full" / "metrics.jsonl"))
    assert resumed["test_top1"] == full["test_top1"]
    assert load_run(tmp_path / "cut").amp == "bf16"  # analyses evaluate in the run's precision
    assert run_training(tiny(), tmp_path / "fresh")["amp"] == "none"


def test_checkpoint_without_amp_resumes_in_float32(tmp_path, bf16_units):
    """A checkpoint written before `amp` was recorded: `auto` meant float32 on a CPU then."""
    bf16_units(True)
    cfg = tiny()

    def stop(epoch, row):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, tmp_path / "old", on_epoch=stop)
    for name in ("last.pt", "best.pt"):
        path = tmp_path / "old" / "checkpoints" / name
        ck = torch.load(path, weights_only=True)
        del ck["amp"]
        torch.save(ck, path)
    assert run_training(cfg, tmp_path / "old")["amp"] == "none"
    assert load_run(tmp_path / "old").amp == "none"


def test_checkpoint_precision_must_fit_the_config(tmp_path, bf16_units):
    bf16_units(True)
    cfg = tiny("train.amp=none")

    def stop(epoch, row):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, tmp_path / "r", on_epoch=stop)
    path = tmp_path / "r" / "checkpoints" / "last.pt"
    ck = torch.load(path, weights_only=True)
    for bad in ("bf16", "float8", ["bf16"]):
        torch.save({**ck, "amp": bad}, path)
        with pytest.raises(UserError, match="damaged checkpoint.*amp"):
            run_training(cfg, tmp_path / "r")
    best = tmp_path / "r" / "checkpoints" / "best.pt"
    torch.save({**torch.load(best, weights_only=True), "amp": "float8"}, best)
    with pytest.raises(UserError, match="best.pt: amp 'float8' is not one of"):
        load_run(tmp_path / "r")
