"""Fashion-MNIST: the real files when present, and tiny generated idx files."""
import gzip
import struct
import urllib.error

import numpy as np
import pytest
import torch

from vitlab.config import DataConfig
from vitlab.data import dataset_info, fashion_mnist, load_dataset, verify_dataset
from vitlab.data.files import md5_bytes
from realdata import real_data_root
from vitlab.errors import DataError



def idx_bytes(array: np.ndarray) -> bytes:
    """The idx format: 0, 0, type 0x08 (ubyte), ndim, big-endian sizes, then the bytes."""
    return struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A root with small generated idx files (gzipped) and a checksum table that matches them."""
    rng = np.random.default_rng(0)
    table = {}
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (50, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(50) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(20) % 10).astype(np.uint8),
    }
    (tmp_path / "fashion-mnist").mkdir()
    for name, a in arrays.items():
        raw = idx_bytes(a)
        table[name] = md5_bytes(raw)
        (tmp_path / "fashion-mnist" / f"{name}.gz").write_bytes(gzip.compress(raw))
    monkeypatch.setattr(fashion_mnist, "MD5", table)
    return tmp_path, arrays, table


def test_tiny_idx_files_round_trip(tiny):
    root, arrays, _ = tiny
    raw = fashion_mnist.load(root)
    assert raw.train_x.shape == (50, 1, 28, 28) and raw.train_x.dtype == torch.uint8
    assert np.array_equal(raw.train_x[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    assert np.array_equal(raw.test_y.numpy(), arrays["t10k-labels-idx1-ubyte"]) and raw.test_y.dtype == torch.int64
    assert raw.classes[0] == "T-shirt/top" and raw.classes[-1] == "Ankle boot" and len(raw.classes) == 10


def test_plain_uncompressed_files_work_too(tiny):
    root, arrays, _ = tiny
    path = root / "fashion-mnist" / "t10k-images-idx3-ubyte.gz"
    path.with_suffix("").write_bytes(gzip.decompress(path.read_bytes()))
    path.unlink()
    assert np.array_equal(fashion_mnist.load(root).test_x[:, 0].numpy(), arrays["t10k-images-idx3-ubyte"])


def test_wrong_content_names_the_file(tiny):
    root, arrays, _ = tiny
    path = root / "fashion-mnist" / "train-labels-idx1-ubyte.gz"
    other = arrays["train-labels-idx1-ubyte"].copy()
    other[0] = 9
    path.write_bytes(gzip.compress(idx_bytes(other)))
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte\.gz: md5 mismatch"):
        verify_dataset("fashion_mnist", root)


def test_truncated_gzip_is_one_line(tiny):
    root, _, _ = tiny
    path = root / "fashion-mnist" / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: cannot decompress") as e:
        fashion_mnist.load(root)
    assert "\n" not in str(e.value)


def test_bad_idx_header_is_a_data_error(tiny):
    root, _, table = tiny
    raw = idx_bytes(np.zeros((5, 28, 28), dtype=np.uint8))[:-10]  # header promises more than it holds
    table["t10k-images-idx3-ubyte"] = md5_bytes(raw)
    (root / "fashion-mnist" / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw))
    with pytest.raises(DataError, match="idx header says"):
        fashion_mnist.load(root)
    with pytest.raises(DataError, match="not an idx file"):
        fashion_mnist.parse_idx(b"\x00\x00\x0d\x01\x00\x00\x00\x01\x00\x00\x00\x00", "x")


def test_missing_offline_is_one_line_naming_the_place(tmp_path, monkeypatch):
    def offline(*a, **k):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    with pytest.raises(DataError) as e:
        load_dataset(DataConfig(name="fashion_mnist", root=str(tmp_path)), 0)
    msg = str(e.value)
    assert "\n" not in msg and f"into {tmp_path / 'fashion-mnist'}" in msg and "t10k-labels-idx1-ubyte.gz" in msg
    assert not (tmp_path / "fashion-mnist").exists()  # nothing created without a connection
    with pytest.raises(DataError, match="not found"):
        load_dataset(DataConfig(name="fashion_mnist", root=str(tmp_path), download=False), 0)


def test_download_from_a_mirror_url(tiny, tmp_path, monkeypatch):
    mirror, _, _ = tiny
    monkeypatch.setattr(fashion_mnist, "URL_BASE", (mirror / "fashion-mnist").as_uri() + "/")
    root = tmp_path / "fresh"
    assert load_dataset(DataConfig(name="fashion_mnist", root=str(root), val_fraction=0.2), 0).in_chans == 1
    assert sorted(p.name for p in (root / "fashion-mnist").iterdir()) == sorted(f"{n}.gz" for n in fashion_mnist.MD5)


def test_real_files_verify_and_load():
    REAL_ROOT = real_data_root(fashion_mnist.FOLDER)
    assert len(verify_dataset("fashion_mnist", REAL_ROOT)) == 4
    b = load_dataset(DataConfig(name="fashion_mnist", root=str(REAL_ROOT), download=False, test_subset=1000), seed=0)
    assert (len(b.train_y), len(b.val_y), len(b.test_y)) == (54000, 6000, 1000)
    assert (b.in_chans, b.image_size, b.num_classes) == (1, 28, 10)
    # the dataset's well-known statistics
    assert b.mean[0] == pytest.approx(0.2860, abs=1e-3) and b.std[0] == pytest.approx(0.3530, abs=1e-3)
    assert torch.bincount(b.val_y).tolist() == [600] * 10  # stratified hold-out
    info = dataset_info("fashion_mnist", REAL_ROOT)
    assert info["ready"] and all(f["present"] for f in info["files"]) and info["classes"][1] == "Trouser"
