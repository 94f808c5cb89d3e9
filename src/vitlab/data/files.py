"""Where dataset files live, how they are checked (md5) and fetched (official URL, atomic write)."""
from __future__ import annotations

import gzip
import hashlib
import os
import urllib.error
import urllib.request
import zlib
from pathlib import Path

from ..errors import DataError

ROOT_ENV = "VITLAB_DATA_ROOT"
DEFAULT_ROOT = Path("~/.cache/vitlab/data")
# Seconds to wait for a connection / between received chunks; offline machines fail fast.
DOWNLOAD_TIMEOUT_S = 15.0
_CHUNK = 1 << 20


def resolve_root(root: str | os.PathLike | None) -> Path:
    """The data root: `root` if given, else $VITLAB_DATA_ROOT, else ~/.cache/vitlab/data.

    The root holds one entry per dataset under its official name (`cifar-100-python.tar.gz`,
    `fashion-mnist/`, ...), so a shared read-only folder such as /usr/share/datasets works too.
    """
    if root is None or str(root) == "":
        root = os.environ.get(ROOT_ENV) or DEFAULT_ROOT
    return Path(root).expanduser()


def md5_bytes(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def md5_file(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def check_md5(actual: str, expected: str, path: Path | str) -> None:
    """Raise a one-line DataError naming `path` when the checksums differ."""
    if actual != expected:
        raise DataError(
            f"{path}: md5 mismatch (expected {expected}, got {actual}); the file is corrupted or not the "
            "official one: delete it and download it again"
        )


def read_bytes(path: Path, max_bytes: int | None = None) -> bytes:
    """The bytes of `path`; with `max_bytes` (the size of the official file), a larger file is refused
    before it is read, so a huge file in the data root cannot exhaust memory."""
    try:
        if max_bytes is not None and path.stat().st_size > max_bytes:
            raise DataError(f"{path}: {path.stat().st_size:,} bytes, larger than the official file "
                            f"({max_bytes:,} bytes); delete it and download it again")
        return path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None


def gunzip_file(path: Path, max_bytes: int) -> bytes:
    """Decompress gzip file `path` as a stream, refusing output past `max_bytes` (the size of the
    official decompressed file): a gzip bomb stops at the cap instead of filling memory."""
    try:
        with gzip.open(path, "rb") as f:
            data = f.read(max_bytes + 1)  # GzipFile.read(n) decompresses only what n needs
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: cannot decompress ({e}); delete it and download it again") from None
    if len(data) > max_bytes:
        raise DataError(f"{path}: decompresses to more than {max_bytes:,} bytes, the size of the official "
                        "file (a gzip bomb?); delete it and download it again")
    return data


def download(url: str, dest: Path, expected_md5: str | None = None, hint: str | None = None) -> Path:
    """Fetch `url` into `dest` atomically (temporary file + os.replace); check its md5 if given.

    Without network (or with a read-only root) this raises one DataError line that says where to
    put the file by hand (`hint` overrides that advice). Nothing is created before the connection
    succeeds, and a partial download never replaces anything.
    """
    hint = hint or f"fetch it by hand and put it at {dest}"
    tmp = dest.with_name(f".{dest.name}.part-{os.getpid()}")
    h = hashlib.md5(usedforsecurity=False)
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp:
            dest.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as out:
                while chunk := resp.read(_CHUNK):
                    h.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
    except (urllib.error.URLError, OSError, ValueError) as e:
        tmp.unlink(missing_ok=True)
        reason = getattr(e, "reason", None) or getattr(e, "strerror", None) or e
        raise DataError(f"cannot download {url} ({reason}); {hint}") from None
    if expected_md5 is not None and h.hexdigest() != expected_md5:
        tmp.unlink(missing_ok=True)
        raise DataError(f"{url}: downloaded file has md5 {h.hexdigest()}, expected {expected_md5}; {hint}")
    os.replace(tmp, dest)
    return dest
