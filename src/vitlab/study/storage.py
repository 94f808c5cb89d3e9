"""Where a study's run directories live: a small key -> bytes interface over a directory or any fsspec URL.

    storage = open_storage("s3://bucket/study")    # or "gs://…", "az://…", "file:///mnt/nfs/x", "/mnt/nfs/x"
    storage.put("runs/ab12/summary.json", data)    # atomic: readers see the old object or the new one
    storage.get("runs/ab12/summary.json")          # bytes, or None when missing
    storage.list("runs/ab12")                      # keys below a prefix

Keys are relative POSIX paths ("runs/<id>/metrics.jsonl"). Two implementations:

- `LocalStorage(path)`: a directory on this machine (local disk or a network mount), written with
  tmp + fsync + rename. The default storage of a study is its own directory: workers then train in
  place and nothing is copied (see runsync.py).
- `FsspecStorage(url)`: any filesystem fsspec knows. Credentials and options come from the environment,
  as the backend library reads them (AWS_* / instance roles for s3fs, GOOGLE_APPLICATION_CREDENTIALS for
  gcsfs, AZURE_STORAGE_* for adlfs, or fsspec's own `FSSPEC_<PROTOCOL>` JSON options). Objects are
  written whole by one PUT (object stores never expose a partial object); on filesystems that have a
  rename (file://, sftp, hdfs…) a write goes to a temporary key that is then renamed into place.

Every operation is retried with backoff while the storage is unreachable (`RETRY_DELAYS_S`), then fails
with a one-line `StorageError`. Missing objects are not errors (`get` -> None, `delete` is a no-op).

Storage is someone else's directory as much as ours: a key that is not a plain relative path (`..`,
`//`: possible object names in a bucket) is left out of listings and refused by name
(`StorageKeyError`), and a storage on this machine (a path, file://) never follows a symbolic link —
listings do not enter linked folders, and reading, writing or deleting a key whose path passes
through a link is an `UnsafePathError` (safepath.py): the run it belongs to is refused, not written.
"""
from __future__ import annotations

import os
import time
import uuid
from abc import ABC, abstractmethod
from pathlib import Path, PurePosixPath
from typing import Callable, TypeVar

import fsspec
import fsspec.core

from ..errors import QUOTED_ERROR_CHARS, UserError, one_line, short_repr, warn
from ..io import NOFOLLOW, atomic_write_bytes
from ..safepath import UnsafePathError, inside, walk_files

#: Seconds slept before each retry of a failed storage operation (then it gives up): ~30 s in all.
RETRY_DELAYS_S: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0)
#: Marks a temporary object of an unfinished write; listings skip such keys.
TMP_MARK = ".tmp-"
#: Protocols whose filesystems rename atomically: writes go to a temporary key first.
RENAME_PROTOCOLS = frozenset({"file", "local", "sftp", "ssh", "hdfs", "webhdfs"})
#: Protocols whose root is a directory on this machine: checked for symbolic links like a path.
LOCAL_PROTOCOLS = frozenset({"file", "local"})
#: The package that provides each cloud protocol (named in the error when it is missing).
PROTOCOL_PACKAGES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs",
                     "abfss": "adlfs", "adl": "adlfs"}
#: Seconds an object store claim waits between writing a new key and reading it back (`put_new`).
CLAIM_SETTLE_S = 0.5
#: Errors that retrying cannot fix (a bug, or a permanent refusal); all else is treated as transient.
PERMANENT_ERRORS = (PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError, FileNotFoundError,
                    TypeError, ValueError, AttributeError, KeyError, NotImplementedError, ImportError)

T = TypeVar("T")


class StorageError(UserError):
    """Storage unreachable after retries, or refusing an operation; the message is one line."""


class StorageKeyError(StorageError):
    """A key that is not a plain relative path (empty, absolute, with '.', '..' or '//')."""


def valid_key(key: str) -> bool:
    return bool(key) and not PurePosixPath(key).is_absolute() and all(
        part not in ("", ".", "..") for part in key.split("/"))


def check_key(key: str) -> str:
    """A storage key: a relative POSIX path without '..' or empty parts; StorageKeyError otherwise."""
    if not isinstance(key, str) or not valid_key(key):
        raise StorageKeyError(f"bad storage key {short_repr(key)} (expected a relative path without '..' or '//')")
    return key


def is_temporary(key: str) -> bool:
    """An unfinished write, or bookkeeping that is no run file: a dot-name (a run's `.lease` and
    `.lock`, a local temporary file)."""
    name = key.rsplit("/", 1)[-1]
    return TMP_MARK in name or name.startswith(".")


def _link_new(path: Path, data: bytes) -> bool:
    """Create `path` holding `data` unless it exists (a hard link never replaces: atomic). True if created."""
    if os.path.lexists(path):  # the common case: claimed long ago; nothing is written then
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{TMP_MARK}{uuid.uuid4().hex[:12]}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        tmp.unlink(missing_ok=True)


class Storage(ABC):
    """Key -> bytes, atomic per object. Subclasses implement the `_raw_*` operations; the public
    ones add key checks and retries."""

    url: str

    @abstractmethod
    def _raw_put(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def _raw_get(self, key: str) -> bytes:
        """The object's bytes; FileNotFoundError when it does not exist."""

    @abstractmethod
    def _raw_list(self, prefix: str) -> dict[str, int]:
        """{key: size in bytes} of the objects at or below `prefix`."""

    @abstractmethod
    def _raw_delete(self, key: str) -> None: ...

    def local_dir(self) -> Path | None:
        """The directory on this machine that holds the keys, when there is one."""
        return None

    def _checked(self, key: str) -> str:
        """`key` checked (check_key), and on a storage on this machine its path checked to pass
        through no symbolic link (safepath.inside: UnsafePathError)."""
        check_key(key)
        root = self.local_dir()
        if root is not None:
            inside(root, Path(*key.split("/")), f"storage {self.url}")
        return key

    # ------------------------------------------------------------------------------- public
    def put(self, key: str, data: bytes) -> None:
        """Store `data` under `key` atomically (a reader never sees a torn object)."""
        self._retry("put", self._checked(key), lambda: self._raw_put(key, bytes(data)))

    def get(self, key: str) -> bytes | None:
        """The bytes under `key`, or None when there is no such object."""
        def op():
            try:
                return self._raw_get(key)
            except FileNotFoundError:
                return None
        return self._retry("get", self._checked(key), op)

    def put_new(self, key: str, data: bytes) -> bool:
        """Store `data` under `key` only when no object is there; True when this call created it.

        Atomic on a directory (a hard link never replaces a file). Object stores offer no create-if-absent
        through fsspec: write, wait CLAIM_SETTLE_S, read back; of writers racing within that time, the
        one whose bytes are read back wins."""
        check_key(key)
        root = self.local_dir()
        if root is not None:
            return self._retry("put_new", key, lambda: _link_new(root.joinpath(*key.split("/")), bytes(data)))
        if self.get(key) is not None:
            return False
        self.put(key, data)
        time.sleep(CLAIM_SETTLE_S)
        return self.get(key) == bytes(data)

    def exists(self, key: str) -> bool:
        return key in self.list(key)

    def list(self, prefix: str = "") -> list[str]:
        """Sorted keys at or below `prefix` (every depth); unfinished writes and keys that are not
        plain relative paths (a warning names them) are left out."""
        return sorted(self.sizes(prefix))

    def sizes(self, prefix: str = "") -> dict[str, int]:
        """{key: size in bytes} of the objects `list(prefix)` names."""
        prefix = prefix.rstrip("/")
        if prefix:
            self._checked(prefix)
        found = self._retry("list", prefix or ".", lambda: self._raw_list(prefix))
        bad = [k for k in found if not valid_key(k)]
        if bad:
            warn(f"storage {self.url}: ignoring {len(bad)} object(s) whose name is not a plain relative path "
                 f"(e.g. {short_repr(bad[0])})")
        return {k: n for k, n in found.items() if valid_key(k) and not is_temporary(k)
                and (not prefix or k == prefix or k.startswith(prefix + "/"))}

    def delete(self, key: str) -> None:
        """Remove `key` (no error when it is already gone)."""
        def op():
            try:
                self._raw_delete(key)
            except FileNotFoundError:
                pass
        self._retry("delete", self._checked(key), op)

    def upload(self, key: str, path: str | os.PathLike) -> None:
        self.put(key, Path(path).read_bytes())

    def download(self, key: str, path: str | os.PathLike) -> bool:
        """Copy `key` to the local file `path` (atomically); False when there is no such object."""
        data = self.get(key)
        if data is None:
            return False
        atomic_write_bytes(path, data)
        return True

    def _retry(self, op: str, key: str, fn: Callable[[], T]) -> T:
        """Run `fn`, retrying transient failures after each of RETRY_DELAYS_S; then a StorageError."""
        for attempt in range(len(RETRY_DELAYS_S) + 1):
            try:
                return fn()
            except UserError:  # a refused key or path: retrying cannot change it
                raise
            except PERMANENT_ERRORS as e:
                if isinstance(e, (PermissionError, IsADirectoryError, NotADirectoryError, FileNotFoundError)):
                    raise StorageError(f"storage {self.url}: {op} {key}: {_one_line(e)}") from None
                raise
            except Exception as e:  # unreachable, timed out, throttled, a flaky network mount
                if attempt == len(RETRY_DELAYS_S):
                    raise StorageError(f"storage {self.url}: {op} {key} still failing after {attempt + 1} tries "
                                       f"over {sum(RETRY_DELAYS_S):.0f} s ({_one_line(e)})") from None
                time.sleep(RETRY_DELAYS_S[attempt])
        raise AssertionError("unreachable")  # pragma: no cover

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


def _one_line(e: BaseException) -> str:
    """An exception as `Type: message` on one line (`errors.one_line`), the type alone without a message."""
    text = one_line(e, QUOTED_ERROR_CHARS)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


class LocalStorage(Storage):
    """A directory on this machine: a local disk, or a network mount (NFS, SMB) every node sees."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).absolute()
        self.url = str(self.root)

    def local_dir(self) -> Path:
        return self.root

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*key.split("/"))

    def _raw_put(self, key: str, data: bytes) -> None:
        atomic_write_bytes(self._path(key), data)  # tmp + fsync + os.replace

    def _raw_get(self, key: str) -> bytes:
        return read_nofollow(self._path(key))

    def _raw_list(self, prefix: str) -> dict[str, int]:
        return list_local(self.root, prefix)

    def _raw_delete(self, key: str) -> None:
        self._path(key).unlink()


class FsspecStorage(Storage):
    """Any fsspec filesystem URL (s3://, gs://, az://, file://, memory://, …)."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.protocol = url.split("://", 1)[0].lower()
        self.fs, root = fsspec.core.url_to_fs(self.url)
        self.root = root.rstrip("/")
        self.renames = self.protocol in RENAME_PROTOCOLS

    def local_dir(self) -> Path | None:
        return Path(self.root) if self.protocol in LOCAL_PROTOCOLS else None

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}" if key else self.root

    def _raw_put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        if not self.renames:
            self.fs.pipe_file(path, data)  # one PUT: the object appears whole or not at all
            return
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        tmp = f"{path}{TMP_MARK}{uuid.uuid4().hex[:12]}"
        try:
            self.fs.pipe_file(tmp, data)
            self.fs.mv(tmp, path)
        except BaseException:
            try:
                self.fs.rm_file(tmp)
            except Exception:
                pass
            raise

    def _raw_get(self, key: str) -> bytes:
        if self.local_dir() is not None:
            return read_nofollow(Path(self._path(key)))
        return self.fs.cat_file(self._path(key))

    def _raw_list(self, prefix: str) -> dict[str, int]:
        if self.local_dir() is not None:  # fsspec's find would follow links (and loop in a link loop)
            return list_local(self.local_dir(), prefix)
        base = self._path(prefix)
        try:
            found = self.fs.find(base, detail=True)
        except FileNotFoundError:
            return {}
        cut = len(self.root.lstrip("/")) + 1
        return {p.lstrip("/")[cut:]: int(info.get("size") or 0) for p, info in found.items()}

    def _raw_delete(self, key: str) -> None:
        self.fs.rm_file(self._path(key))


def read_nofollow(path: Path) -> bytes:
    """A local file's bytes; a symbolic link at the name is refused (ELOOP), never followed."""
    fd = os.open(path, os.O_RDONLY | NOFOLLOW)
    with open(fd, "rb") as f:
        return f.read()


def list_local(root: Path, prefix: str) -> dict[str, int]:
    """{key: size} of the regular files at or below `prefix` of a local storage root, without entering
    linked folders; the symbolic links met are listed too (size 0), so that reading one is refused by
    name (UnsafePathError) rather than the link silently skipped or followed."""
    base = root.joinpath(*prefix.split("/")) if prefix else root
    try:
        if base.is_file() and not base.is_symlink():
            return {prefix: base.stat().st_size}
    except OSError:
        return {}
    files, links = walk_files(base)
    head = f"{prefix}/" if prefix else ""
    found = {head + rel: n for rel, n in files.items()}
    found.update({head + rel: 0 for rel in links if rel})
    return found


def is_url(location: str) -> bool:
    return "://" in location


def open_storage(location: str | os.PathLike) -> Storage:
    """A Storage for a path or a URL; one-line UserError for an unknown scheme or a missing package."""
    text = str(location).strip()
    if not text:
        raise UserError("--storage: empty location")
    if not is_url(text):
        return LocalStorage(Path(text).expanduser())
    protocol = text.split("://", 1)[0].lower()
    try:
        fsspec.get_filesystem_class(protocol)
    except ImportError as e:
        pkg = PROTOCOL_PACKAGES.get(protocol)
        hint = f"pip install {pkg}" if pkg else _one_line(e)
        raise UserError(f"--storage {text}: the {protocol}:// filesystem needs a package that is not installed ({hint})") from None
    except ValueError:
        known = sorted(fsspec.available_protocols())
        raise UserError(f"--storage {text}: unknown scheme {protocol!r} (fsspec knows e.g. "
                        f"{', '.join(p for p in ('s3', 'gs', 'az', 'file', 'memory') if p in known)})") from None
    if protocol in ("file", "local") and not text.split("://", 1)[1].startswith("/"):
        raise UserError(f"--storage {text}: a file:// URL needs an absolute path (file:///abs/path)")
    try:
        return FsspecStorage(text)
    except Exception as e:  # bad bucket name, options the backend refuses
        raise UserError(f"--storage {text}: cannot open ({_one_line(e)})") from None


__all__ = ["FsspecStorage", "LocalStorage", "RETRY_DELAYS_S", "Storage", "StorageError", "StorageKeyError",
           "UnsafePathError", "check_key", "is_temporary", "is_url", "open_storage", "valid_key"]
