"""CIFAR-10 / CIFAR-100 from the official python archives (Krizhevsky, 2009).

A data root may hold the archive (`cifar-100-python.tar.gz`) or its extracted folder
(`cifar-100-python/`); the folder wins when complete because it needs no decompression. Every file
is checked against the published md5 before it is unpickled, so only the official pickles are
ever loaded. The archive is read in memory: the root may be read-only.
"""
from __future__ import annotations

import io
import pickle
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..datasets import image_shape
from ..errors import DataError
from .bundle import RawSplits
from .files import check_md5, download, md5_bytes, md5_file, read_bytes

URL_BASE = "https://www.cs.toronto.edu/~kriz/"

# Published checksums (the ones torchvision's CIFAR10/CIFAR100 classes check), keyed by the path
# relative to the data root. Module level so tests can substitute checksums of generated archives.
MD5 = {
    "cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85",
    "cifar-100-python/train": "16019d7e3df5f24257cddd939b257f8d",
    "cifar-100-python/test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
    "cifar-100-python/meta": "7973b15100ade9c7d40fb424638fde48",
    "cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a",
    "cifar-10-batches-py/data_batch_1": "c99cafc152244af753f735de768cd75f",
    "cifar-10-batches-py/data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "cifar-10-batches-py/data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "cifar-10-batches-py/data_batch_4": "634d18415352ddfa80567beed471001a",
    "cifar-10-batches-py/data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "cifar-10-batches-py/test_batch": "40351d587109b95175f43aff81a1287e",
    "cifar-10-batches-py/batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}

IMAGE_SHAPE = image_shape("cifar10")  # CIFAR-100's is the same
#: No official CIFAR file (archive or extracted pickle) is larger (the archives are 169 and 171 MB):
#: a larger file is refused before it is read into memory.
MAX_FILE_BYTES = 200_000_000


@dataclass(frozen=True)
class CifarSpec:
    """Layout of one official CIFAR archive."""

    name: str
    archive: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: bytes
    names_key: bytes
    coarse_label_key: bytes | None = None
    coarse_names_key: bytes | None = None
    n_train: int = 50000
    n_test: int = 10000

    @property
    def members(self) -> list[str]:
        """Paths of the needed files inside the archive (= relative to the root once extracted)."""
        return [f"{self.folder}/{f}" for f in (*self.train_files, *self.test_files, self.meta_file)]

    @property
    def url(self) -> str:
        return URL_BASE + self.archive


CIFAR10 = CifarSpec(
    name="cifar10",
    archive="cifar-10-python.tar.gz",
    folder="cifar-10-batches-py",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_files=("test_batch",),
    meta_file="batches.meta",
    label_key=b"labels",
    names_key=b"label_names",
)
CIFAR100 = CifarSpec(
    name="cifar100",
    archive="cifar-100-python.tar.gz",
    folder="cifar-100-python",
    train_files=("train",),
    test_files=("test",),
    meta_file="meta",
    label_key=b"fine_labels",
    names_key=b"fine_label_names",
    coarse_label_key=b"coarse_labels",
    coarse_names_key=b"coarse_label_names",
)
SPECS = {s.name: s for s in (CIFAR10, CIFAR100)}


def locate(spec: CifarSpec, root: Path) -> tuple[str, Path] | None:
    """("folder", path) when the extracted folder is complete, else ("archive", path), else None."""
    folder = root / spec.folder
    if all((root / m).is_file() for m in spec.members):
        return "folder", folder
    archive = root / spec.archive
    if archive.is_file():
        return "archive", archive
    return None


def file_table(spec: CifarSpec, root: Path) -> list[dict]:
    """Every file either layout uses: path, present, bytes, expected md5 (for `vitlab data info`)."""
    rows = []
    for rel in (spec.archive, *spec.members):
        p = root / rel
        present = p.is_file()
        rows.append({"file": str(p), "present": present, "bytes": p.stat().st_size if present else None,
                     "md5": MD5[rel]})
    return rows


def missing_message(spec: CifarSpec, root: Path) -> str:
    return (
        f"{root / spec.archive}: {spec.name} not found; download {spec.url} and put it there "
        f"(or its extracted {spec.folder}/ folder), or run `vitlab data download {spec.name}`"
    )


def verify(spec: CifarSpec, root: Path) -> list[str]:
    """md5-check what `locate` finds; one 'ok' line per file, DataError naming a bad or missing file."""
    found = locate(spec, root)
    if found is None:
        raise DataError(missing_message(spec, root))
    kind, _ = found
    rels = [spec.archive] if kind == "archive" else spec.members
    lines = []
    for rel in rels:
        path = root / rel
        check_md5(md5_file(path), MD5[rel], path)
        lines.append(f"ok  {path}  md5 {MD5[rel]}")
    return lines


def fetch(spec: CifarSpec, root: Path) -> Path:
    """Download the official archive into the root (no-op when a verified copy is there)."""
    dest = root / spec.archive
    if dest.is_file():
        check_md5(md5_file(dest), MD5[spec.archive], dest)
        return dest
    return download(spec.url, dest, MD5[spec.archive])


def read_files(spec: CifarSpec, root: Path, members: list[str] | None = None) -> dict[str, tuple[bytes, str]]:
    """{member: (verified raw bytes, name for messages)} from the extracted folder or the archive."""
    found = locate(spec, root)
    if found is None:
        raise DataError(missing_message(spec, root))
    wanted = set(members or spec.members)
    kind, path = found
    if kind == "folder":
        out = {}
        for rel in sorted(wanted):
            data = read_bytes(root / rel, MAX_FILE_BYTES)
            check_md5(md5_bytes(data), MD5[rel], root / rel)
            out[rel] = (data, str(root / rel))
        return out
    blob = read_bytes(path, MAX_FILE_BYTES)  # md5-checked before it is decompressed
    check_md5(md5_bytes(blob), MD5[spec.archive], path)
    out = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
            for member in tar:
                if member.name in wanted and member.isfile():
                    out[member.name] = (tar.extractfile(member).read(), f"{path}:{member.name}")
                    if len(out) == len(wanted):
                        break
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise DataError(f"{path}: cannot read the archive ({e}); delete it and download it again") from None
    missing = wanted - out.keys()
    if missing:
        raise DataError(f"{path}: archive lacks {', '.join(sorted(missing))}")
    return out


def _unpickle(data: bytes, source: str) -> dict:
    try:
        obj = pickle.loads(data, encoding="bytes")
    except Exception as e:  # any unpickling failure is a bad file, named as such
        raise DataError(f"{source}: cannot unpickle ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{source}: expected a pickled dict, got {type(obj).__name__}")
    return obj


def _batch(data: bytes, source: str, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    d = _unpickle(data, source)
    if b"data" not in d or label_key not in d:
        raise DataError(f"{source}: missing key {b'data' if b'data' not in d else label_key!r}")
    x = np.asarray(d[b"data"])
    y = np.asarray(d[label_key], dtype=np.int64)
    n_values = int(np.prod(IMAGE_SHAPE))
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != n_values or len(y) != len(x):
        raise DataError(f"{source}: expected uint8 data of shape (N, {n_values}) and N labels, "
                        f"got {x.dtype} {x.shape} and {len(y)} labels")
    return x.reshape(-1, *IMAGE_SHAPE), y


def class_names(spec: CifarSpec, meta: bytes, source: str, coarse: bool = False) -> list[str]:
    key = spec.coarse_names_key if coarse else spec.names_key
    d = _unpickle(meta, source)
    if key not in d:
        raise DataError(f"{source}: missing key {key!r}")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in d[key]]


def load(spec: CifarSpec, root: Path, coarse: bool = False) -> RawSplits:
    """Read the official train and test sets (fine labels, or the coarse ones for CIFAR-100)."""
    if coarse and spec.coarse_label_key is None:
        raise DataError(f"{spec.name} has no coarse labels (data.coarse_labels is for cifar100)")
    files = read_files(spec, root)
    label_key = spec.coarse_label_key if coarse else spec.label_key

    def read(names):
        parts = [_batch(*files[f"{spec.folder}/{n}"], label_key) for n in names]
        x = np.concatenate([p[0] for p in parts])
        y = np.concatenate([p[1] for p in parts])
        return torch.from_numpy(x), torch.from_numpy(y)

    train_x, train_y = read(spec.train_files)
    test_x, test_y = read(spec.test_files)
    classes = class_names(spec, *files[f"{spec.folder}/{spec.meta_file}"], coarse)
    return RawSplits(classes, train_x, train_y, test_x, test_y).check(str(root / spec.folder))


def info_classes(spec: CifarSpec, root: Path, coarse: bool = False) -> list[str] | None:
    """Class names from the meta file when the dataset is present and intact, else None."""
    meta = f"{spec.folder}/{spec.meta_file}"
    try:
        return class_names(spec, *read_files(spec, root, [meta])[meta], coarse)
    except DataError:
        return None
