"""Stratified splits and subsets, normalization statistics, data root, the bundle contract."""
from pathlib import Path

import pytest
import torch

from realdata import real_data_root
from vitlab.config import DataConfig, load_config
from vitlab.data import DataBundle, dataset_info, download_dataset, load_dataset, resolve_root, verify_dataset
from vitlab.data.splits import channel_stats, stratified_counts, stratified_split
from vitlab.errors import ConfigError, DataError

SMALL = dict(synthetic_train=300, synthetic_test=100)


def test_stratified_counts_exact_total_and_proportional():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    assert stratified_counts(labels, 10).tolist() == [5, 3, 2]
    take = stratified_counts(labels, 7)  # shares 3.5, 2.1, 1.4: floors 3, 2, 1, the extra goes to class 0
    assert take.tolist() == [4, 2, 1]
    for count in range(0, 101, 7):
        take = stratified_counts(labels, count)
        assert int(take.sum()) == count
        assert all(abs(int(t) - count * n / 100) < 1 for t, n in zip(take, (50, 30, 20)))


def test_stratified_split_partitions_and_depends_on_seed():
    labels = torch.arange(1000) % 7
    a, rest = stratified_split(labels, 100, torch.Generator().manual_seed(1))
    assert len(a) == 100 and len(rest) == 900
    assert torch.equal(torch.sort(torch.cat([a, rest])).values, torch.arange(1000))
    assert torch.equal(a, a.sort().values)
    counts = torch.bincount(labels[a], minlength=7)
    assert counts.max() - counts.min() <= 1
    b, _ = stratified_split(labels, 100, torch.Generator().manual_seed(1))
    c, _ = stratified_split(labels, 100, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_channel_stats_match_float_reference():
    x = torch.randint(0, 256, (20, 3, 6, 6), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    mean, std = channel_stats(x)
    ref = x.double() / 255
    for c in range(3):
        assert mean[c] == pytest.approx(float(ref[:, c].mean()), abs=1e-12)
        assert std[c] == pytest.approx(float(ref[:, c].std(unbiased=False)), abs=1e-12)


def test_bundle_contract_and_val_split_seeded_by_run_seed():
    cfg = DataConfig(val_fraction=0.2, **SMALL)
    a = load_dataset(cfg, seed=0)
    assert isinstance(a, DataBundle) and a.synthetic and a.name == "synthetic"
    assert (len(a.train_y), len(a.val_y), len(a.test_y)) == (240, 60, 100)
    assert a.train_x.dtype == torch.uint8 and a.train_y.dtype == torch.int64
    assert (a.num_classes, a.in_chans, a.image_size) == (10, 3, 32)
    assert torch.bincount(a.val_y).tolist() == [6] * 10
    b, c = load_dataset(cfg, seed=0), load_dataset(cfg, seed=1)
    assert torch.equal(a.val_x, b.val_x) and not torch.equal(a.val_x, c.val_x)
    assert torch.equal(a.test_x, c.test_x)  # the test set never depends on the run seed
    assert a.mean == c.mean and a.std == c.std  # nor do the normalization statistics
    # train and val together are exactly the official training set
    full = torch.cat([a.train_x, a.val_x]).flatten(1)
    other = torch.cat([c.train_x, c.val_x]).flatten(1)
    assert sorted(map(bytes, full.numpy())) == sorted(map(bytes, other.numpy()))
    assert "synthetic" in a.describe()


def test_subsets_are_stratified_and_test_subset_is_seed_independent():
    cfg = DataConfig(train_subset=50, test_subset=30, **SMALL)
    a, b = load_dataset(cfg, seed=0), load_dataset(cfg, seed=3)
    assert len(a.train_y) == 50 and torch.bincount(a.train_y).tolist() == [5] * 10
    assert len(a.test_y) == 30 and torch.bincount(a.test_y).tolist() == [3] * 10
    assert torch.equal(a.test_x, b.test_x) and not torch.equal(a.train_x, b.train_x)
    assert len(load_dataset(DataConfig(train_subset=10_000, **SMALL), 0).train_y) == 270  # larger: all


def test_tensors_land_on_the_requested_device():
    # "meta" is never the default, so this fails if the device argument were ignored (CPU would not)
    b = load_dataset(DataConfig(**SMALL), 0, device=torch.device("meta"))
    assert all(t.device.type == "meta" for t in (b.train_x, b.train_y, b.val_x, b.val_y, b.test_x, b.test_y))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_device():  # pragma: no cover - CPU CI
    b = load_dataset(DataConfig(**SMALL), 0, device="cuda")
    assert b.train_x.is_cuda and b.test_y.is_cuda


def test_resolve_root_order(monkeypatch, tmp_path):
    monkeypatch.delenv("VITLAB_DATA_ROOT", raising=False)
    assert resolve_root(None) == Path("~/.cache/vitlab/data").expanduser()
    monkeypatch.setenv("VITLAB_DATA_ROOT", str(tmp_path))
    assert resolve_root(None) == tmp_path
    assert resolve_root("/some/where") == Path("/some/where")


def test_config_validation_and_unknown_names():
    with pytest.raises(ConfigError, match="data.val_fraction"):
        load_config(overrides=["data.val_fraction=0"])
    with pytest.raises(ConfigError, match="data.synthetic_classes"):
        DataConfig(synthetic_classes=17)
    with pytest.raises(ConfigError, match="did you mean 'cifar100'"):
        load_config(overrides=["data.name=cifar-100"])
    with pytest.raises(DataError, match="did you mean 'cifar10'"):
        dataset_info("cifar01")
    with pytest.raises(DataError, match="too few"):
        load_dataset(DataConfig(synthetic_train=3, val_fraction=0.1), 0)


def test_synthetic_and_folder_info_verify_download():
    info = dataset_info("synthetic")
    assert info["ready"] and info["classes"][0] == "disc" and info["files"] == []
    assert verify_dataset("synthetic")[0].startswith("ok")
    with pytest.raises(DataError, match="nothing to download"):
        download_dataset("synthetic")
    with pytest.raises(DataError, match="give the image folder"):
        dataset_info("folder")


def test_info_values_are_plain(tmp_path):
    """`vitlab data info` prints these: only plain JSON-able values."""
    import json

    for name in ("synthetic", "cifar10", "cifar100", "fashion_mnist"):
        info = dataset_info(name, tmp_path if name != "synthetic" else None)
        assert json.loads(json.dumps(info)) == info, name  # a tuple, Path or numpy value would differ


def test_coarse_labels_only_for_cifar100(tmp_path):
    from vitlab.data import cifar

    with pytest.raises(DataError, match="no coarse labels"):
        cifar.load(cifar.CIFAR10, tmp_path, coarse=True)


def test_loading_writes_nothing_into_the_root(tmp_path):
    """Loading a present dataset leaves the root as it was (shared roots may be read-only)."""
    real = real_data_root("fashion-mnist") / "fashion-mnist"
    root = tmp_path / "root"
    (root / "fashion-mnist").mkdir(parents=True)
    for f in real.iterdir():
        (root / "fashion-mnist" / f.name).symlink_to(f)
    before = sorted(str(p) for p in root.rglob("*"))
    load_dataset(DataConfig(name="fashion_mnist", root=str(root), train_subset=100, test_subset=100), 0)
    assert sorted(str(p) for p in root.rglob("*")) == before and len(before) == 5
