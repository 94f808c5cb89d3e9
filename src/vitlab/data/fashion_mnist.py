"""Fashion-MNIST (Xiao, Rasul & Vollgraf, 2017) from the four official idx files in ROOT/fashion-mnist/.

The files may be gzipped (`train-images-idx3-ubyte.gz`, as published) or plain. Checksums are those
of the DECOMPRESSED files, so re-compressed copies (e.g. Debian's) verify too.
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import torch

from ..datasets import image_shape
from ..errors import DataError
from .bundle import RawSplits
from .files import check_md5, download, gunzip_file, md5_bytes, read_bytes

FOLDER = "fashion-mnist"
URL_BASE = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
# md5 of the decompressed idx files, keyed by their name without `.gz`; tests substitute their own.
MD5 = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}
# Sizes of the decompressed idx files (header + one byte per pixel or label): nothing larger is read.
SIZES = {
    "train-images-idx3-ubyte": 16 + 60000 * 28 * 28,
    "train-labels-idx1-ubyte": 8 + 60000,
    "t10k-images-idx3-ubyte": 16 + 10000 * 28 * 28,
    "t10k-labels-idx1-ubyte": 8 + 10000,
}
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
N_TRAIN, N_TEST = 60000, 10000
IMAGE_SHAPE = image_shape("fashion_mnist")
_IDX_UBYTE = 0x08  # idx type code of unsigned bytes


def find(root: Path, name: str) -> Path | None:
    """The gzipped or plain copy of idx file `name`, or None."""
    for candidate in (root / FOLDER / f"{name}.gz", root / FOLDER / name):
        if candidate.is_file():
            return candidate
    return None


def file_table(root: Path) -> list[dict]:
    rows = []
    for name, md5 in MD5.items():
        p = find(root, name) or root / FOLDER / f"{name}.gz"
        present = p.is_file()
        rows.append({"file": str(p), "present": present, "bytes": p.stat().st_size if present else None,
                     "md5": f"{md5} (decompressed)"})
    return rows


def missing_message(root: Path, name: str) -> str:
    return (
        f"{root / FOLDER / (name + '.gz')}: Fashion-MNIST file not found; download {URL_BASE}{name}.gz "
        f"and put it there, or run `vitlab data download fashion_mnist`"
    )


def read_idx(name: str, root: Path) -> np.ndarray:
    """The md5-verified array stored in idx file `name` (decompressed in memory, at most SIZES[name] bytes)."""
    path = find(root, name)
    if path is None:
        raise DataError(missing_message(root, name))
    limit = SIZES[name]
    data = gunzip_file(path, limit) if path.suffix == ".gz" else read_bytes(path, limit)
    check_md5(md5_bytes(data), MD5[name], path)
    return parse_idx(data, str(path))


def parse_idx(data: bytes, source: str) -> np.ndarray:
    """Decode an idx file of unsigned bytes: magic (0, 0, type, ndim), ndim big-endian sizes, values."""
    if len(data) < 4:
        raise DataError(f"{source}: too short for an idx file")
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != _IDX_UBYTE or not 1 <= ndim <= 3:
        raise DataError(f"{source}: not an idx file of unsigned bytes")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{source}: truncated idx header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    if len(data) - header != int(np.prod(shape)):
        raise DataError(f"{source}: idx header says {shape} but holds {len(data) - header} bytes")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def load(root: Path) -> RawSplits:
    def split(prefix):
        x = read_idx(f"{prefix}-images-idx3-ubyte", root)
        y = read_idx(f"{prefix}-labels-idx1-ubyte", root)
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataError(f"{root / FOLDER}: {prefix} images {x.shape} do not match labels {y.shape}")
        return torch.from_numpy(x.copy()).unsqueeze(1), torch.from_numpy(y.astype(np.int64))

    train_x, train_y = split("train")
    test_x, test_y = split("t10k")
    return RawSplits(list(CLASSES), train_x, train_y, test_x, test_y).check(str(root / FOLDER))


def verify(root: Path) -> list[str]:
    lines = []
    for name in MD5:
        read_idx(name, root)
        lines.append(f"ok  {find(root, name)}  md5 {MD5[name]} (decompressed)")
    return lines


def fetch(root: Path) -> Path:
    """Download the missing idx files from the official URL; md5 is checked after decompression."""
    for name in MD5:
        if find(root, name) is None:
            hint = f"fetch the four files {', '.join(n + '.gz' for n in MD5)} from {URL_BASE} into {root / FOLDER}"
            dest = download(f"{URL_BASE}{name}.gz", root / FOLDER / f"{name}.gz", hint=hint)
            try:
                read_idx(name, root)
            except DataError:
                dest.unlink(missing_ok=True)
                raise
        else:
            read_idx(name, root)
    return root / FOLDER
