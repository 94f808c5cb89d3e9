"""CIFAR-10/100 readers on archives generated in exactly the official format (no real CIFAR here)."""
import io
import pickle
import re
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from vitlab.config import DataConfig
from vitlab.data import cifar, dataset_info, download_dataset, load_dataset, verify_dataset
from vitlab.data.files import md5_bytes
from vitlab.errors import DataError

N_TRAIN, N_TEST = 60, 20  # per generated archive (the official ones have 50000 / 10000)


def _batch_pickle(d: dict) -> bytes:
    return pickle.dumps(d, protocol=2)  # the official files are Python-2 pickles of dicts with byte-string keys


def cifar100_files(rng: np.random.Generator) -> dict[str, bytes]:
    fine_names = [f"fine{i}".encode() for i in range(100)]
    coarse_names = [f"coarse{i}".encode() for i in range(20)]
    files = {}
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        fine = (np.arange(n) % 100).tolist()
        files[f"cifar-100-python/{split}"] = _batch_pickle({
            b"filenames": [f"img_{i}.png".encode() for i in range(n)],
            b"batch_label": f"{split}ing batch 1 of 1".encode(),
            b"fine_labels": fine,
            b"coarse_labels": [f // 5 for f in fine],
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        })
    files["cifar-100-python/meta"] = _batch_pickle({b"fine_label_names": fine_names,
                                                    b"coarse_label_names": coarse_names})
    return files


def cifar10_files(rng: np.random.Generator) -> dict[str, bytes]:
    files = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for k, name in enumerate(names):
        n = N_TRAIN // 5 if name != "test_batch" else N_TEST
        files[f"cifar-10-batches-py/{name}"] = _batch_pickle({
            b"batch_label": name.encode(),
            b"labels": ((np.arange(n) + k) % 10).tolist(),
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [f"{name}_{i}.png".encode() for i in range(n)],
        })
    files["cifar-10-batches-py/batches.meta"] = _batch_pickle({
        b"num_cases_per_batch": 10000,
        b"label_names": [c.encode() for c in ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                              "horse", "ship", "truck")],
        b"num_vis": 3072,
    })
    return files


def make_archive(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        folder = next(iter(files)).split("/")[0]
        info = tarfile.TarInfo(folder)
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


SPECS = {"cifar100": (cifar.CIFAR100, cifar100_files), "cifar10": (cifar.CIFAR10, cifar10_files)}


@pytest.fixture
def md5_table(monkeypatch):
    """A copy of the checksum table that the test fills with its generated files' checksums."""
    table = dict(cifar.MD5)
    monkeypatch.setattr(cifar, "MD5", table)
    return table


def install(root: Path, name: str, table: dict, layout: str = "archive", seed: int = 0) -> dict[str, bytes]:
    spec, maker = SPECS[name]
    files = maker(np.random.default_rng(seed))
    for rel, data in files.items():
        table[rel] = md5_bytes(data)
    if layout == "archive":
        blob = make_archive(files)
        (root / spec.archive).write_bytes(blob)
        table[spec.archive] = md5_bytes(blob)
    else:
        for rel, data in files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data)
    return files


def expected_images(files: dict[str, bytes], rels: list[str]) -> np.ndarray:
    arrays = [pickle.loads(files[r], encoding="bytes")[b"data"] for r in rels]
    return np.concatenate(arrays).reshape(-1, 3, 32, 32)


@pytest.mark.parametrize("name", ["cifar100", "cifar10"])
@pytest.mark.parametrize("layout", ["archive", "folder"])
def test_reads_official_format(tmp_path, md5_table, name, layout):
    files = install(tmp_path, name, md5_table, layout)
    spec = SPECS[name][0]
    raw = cifar.load(spec, tmp_path)
    train_rels = [f"{spec.folder}/{f}" for f in spec.train_files]
    assert raw.train_x.dtype == torch.uint8 and raw.train_x.shape == (N_TRAIN, 3, 32, 32)
    assert np.array_equal(raw.train_x.numpy(), expected_images(files, train_rels))
    assert np.array_equal(raw.test_x.numpy(), expected_images(files, [f"{spec.folder}/{spec.test_files[0]}"]))
    labels = np.concatenate([pickle.loads(files[r], encoding="bytes")[spec.label_key] for r in train_rels])
    assert np.array_equal(raw.train_y.numpy(), labels) and raw.train_y.dtype == torch.int64
    assert len(raw.classes) == (100 if name == "cifar100" else 10)
    assert raw.classes[0] == ("fine0" if name == "cifar100" else "airplane")
    assert verify_dataset(name, tmp_path)[0].startswith("ok")


def test_cifar100_coarse_labels_and_bundle(tmp_path, md5_table):
    install(tmp_path, "cifar100", md5_table)
    cfg = DataConfig(name="cifar100", root=str(tmp_path), coarse_labels=True, val_fraction=0.25, download=False)
    b = load_dataset(cfg, seed=0)
    assert b.num_classes == 20 and b.classes[3] == "coarse3" and not b.synthetic
    assert int(b.train_y.max()) < 20
    assert (b.in_chans, b.image_size) == (3, 32)
    assert len(b.train_y) + len(b.val_y) == N_TRAIN and len(b.val_y) == N_TRAIN // 4
    assert len(b.mean) == 3 and all(0.4 < m < 0.6 for m in b.mean)  # uniform random bytes


def test_archive_md5_mismatch_names_the_file(tmp_path, md5_table):
    install(tmp_path, "cifar100", md5_table)
    archive = tmp_path / "cifar-100-python.tar.gz"
    blob = bytearray(archive.read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # one flipped byte
    archive.write_bytes(bytes(blob))
    with pytest.raises(DataError, match=r"cifar-100-python\.tar\.gz: md5 mismatch") as e:
        load_dataset(DataConfig(name="cifar100", root=str(tmp_path), download=False), 0)
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="md5 mismatch"):
        verify_dataset("cifar100", tmp_path)


def test_extracted_file_md5_mismatch_names_the_file(tmp_path, md5_table):
    install(tmp_path, "cifar10", md5_table, layout="folder")
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not the official pickle")
    with pytest.raises(DataError, match=r"data_batch_3: md5 mismatch"):
        cifar.load(cifar.CIFAR10, tmp_path)


def test_truncated_archive_is_a_data_error(tmp_path, md5_table):
    install(tmp_path, "cifar100", md5_table)
    archive = tmp_path / "cifar-100-python.tar.gz"
    cut = archive.read_bytes()[: archive.stat().st_size // 2]
    archive.write_bytes(cut)
    # caught by the checksum ...
    with pytest.raises(DataError, match="md5 mismatch"):
        cifar.load(cifar.CIFAR100, tmp_path)
    # ... and, were the checksum right, by the reader: one line, no traceback from tarfile / gzip
    md5_table["cifar-100-python.tar.gz"] = md5_bytes(cut)
    with pytest.raises(DataError, match=r"cifar-100-python\.tar\.gz: cannot read the archive") as e:
        cifar.load(cifar.CIFAR100, tmp_path)
    assert "\n" not in str(e.value) and e.value.__cause__ is None and e.value.__suppress_context__


def test_malformed_pickle_content_is_a_data_error(tmp_path, md5_table):
    files = install(tmp_path, "cifar10", md5_table, layout="folder")
    bad = pickle.loads(files["cifar-10-batches-py/test_batch"], encoding="bytes")
    bad[b"data"] = bad[b"data"][:, :100]
    data = _batch_pickle(bad)
    (tmp_path / "cifar-10-batches-py/test_batch").write_bytes(data)
    md5_table["cifar-10-batches-py/test_batch"] = md5_bytes(data)
    with pytest.raises(DataError, match=r"test_batch: expected uint8 data of shape \(N, 3072\)"):
        cifar.load(cifar.CIFAR10, tmp_path)


def test_missing_offline_says_where_to_put_the_archive(tmp_path, monkeypatch):
    def offline(*a, **k):
        raise urllib.error.URLError("network unreachable")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    with pytest.raises(DataError) as e:
        load_dataset(DataConfig(name="cifar100", root=str(tmp_path)), 0)
    msg = str(e.value)
    assert "\n" not in msg and "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz" in msg
    assert str(tmp_path / "cifar-100-python.tar.gz") in msg
    assert not list(tmp_path.iterdir())  # no partial file left behind
    with pytest.raises(DataError, match="not found"):
        load_dataset(DataConfig(name="cifar10", root=str(tmp_path), download=False), 0)
    with pytest.raises(DataError, match="network unreachable"):
        download_dataset("cifar10", tmp_path)


def test_download_from_a_mirror_url(tmp_path, md5_table, monkeypatch):
    """The download path end to end, served from a file:// URL instead of the network."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    install(mirror, "cifar10", md5_table)
    monkeypatch.setattr(cifar, "URL_BASE", mirror.as_uri() + "/")
    root = tmp_path / "root"
    path = download_dataset("cifar10", root)
    assert path == root / "cifar-10-python.tar.gz" and path.read_bytes() == (mirror / path.name).read_bytes()
    assert download_dataset("cifar10", root) == path  # already there: verified, not fetched again
    assert [p.name for p in root.iterdir()] == ["cifar-10-python.tar.gz"]  # no temporary files left
    # a download whose checksum is wrong is not kept
    md5_table["cifar-100-python.tar.gz"] = "0" * 32
    install(mirror, "cifar100", {**md5_table})
    with pytest.raises(DataError, match="expected 0000"):
        download_dataset("cifar100", root)
    assert not (root / "cifar-100-python.tar.gz").exists()


def test_info_lists_files_and_classes(tmp_path, md5_table):
    info = dataset_info("cifar100", tmp_path)
    assert info["ready"] is False and info["classes"] is None
    assert info["files"][0] == {"file": str(tmp_path / "cifar-100-python.tar.gz"), "present": False, "bytes": None,
                                "md5": md5_table["cifar-100-python.tar.gz"]}
    install(tmp_path, "cifar100", md5_table)
    info = dataset_info("cifar100", tmp_path)
    assert info["ready"] and info["files"][0]["present"] and info["files"][0]["bytes"] > 0
    assert info["classes"][:2] == ["fine0", "fine1"] and len(info["coarse_classes"]) == 20
    assert (info["train_images"], info["test_images"], info["image_shape"]) == (50000, 10000, [3, 32, 32])


def test_checksum_table_covers_every_file_exactly():
    """Every file either layout reads has a checksum (a misspelt key would be a KeyError at load
    time), each a distinct md5 hex digest, and the table holds nothing else."""
    needed = {rel for spec in cifar.SPECS.values() for rel in (spec.archive, *spec.members)}
    assert set(cifar.MD5) == needed
    assert all(re.fullmatch(r"[0-9a-f]{32}", v) for v in cifar.MD5.values())
    assert len(set(cifar.MD5.values())) == len(cifar.MD5)
