"""Writes stay inside their directory: the one rule every writer into a run, study or storage root obeys.

A run directory, a study directory or a storage may have been handed over by someone else, who can
plant a symbolic link where vitlab will write (`RUN/analysis -> /home/you/.ssh`, a storage run folder
linked to another run's). Before writing, a destination is resolved against its root with `inside` (a
name relative to the root) or `within` (a path as the process sees it):

- the path must stay under the root lexically (no `..` that climbs out of it), and
- no existing component *below* the root may be a symbolic link (the root itself may be one: that is
  where the user pointed vitlab).

A violation is an `UnsafePathError` (a UserError: one line, exit 2; a study worker reports the run as
failed with that line, a coordinator warns and skips the run). `walk_files` lists a tree without
following links and says which links it met, for copies out of storage that must not follow them.
io.py adds the file-level half: temporary files and appends are opened with O_NOFOLLOW, and an atomic
replace replaces a link at the final name instead of writing through it.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import UserError
from .rundir import RUN_DIR_ENTRIES, RUNS_DIR, WANDB_DIR

#: Run-directory folders whose owner keeps links of its own inside them (wandb's `latest-run` and
#: `debug*.log` links, recreated each start): only the folder itself must not be a link.
FOREIGN_LINK_DIRS = frozenset({WANDB_DIR})


class UnsafePathError(UserError):
    """A destination under a root is (or passes through) a symbolic link, or leaves the root."""


def inside(root: str | os.PathLike, path: str | os.PathLike, label: str = "directory") -> Path:
    """`path` (absolute, or relative to `root`) after checking that it stays under `root` and that no
    existing component below `root` is a symbolic link; UnsafePathError (one line) otherwise.

    Components that do not exist yet are fine: whoever creates them creates real directories."""
    root = Path(os.path.abspath(root))
    target = Path(os.path.abspath(root / path))  # normalizes `..` lexically, follows nothing
    try:
        rel = target.relative_to(root)
    except ValueError:
        raise UnsafePathError(f"{path}: leaves the {label} {root}; vitlab writes only inside it") from None
    current = root
    for part in rel.parts:
        current = current / part
        try:
            st = os.lstat(current)
        except (FileNotFoundError, NotADirectoryError):
            break  # nothing exists below a missing component (or a file); the write itself will say so
        except OSError as e:
            raise UnsafePathError(f"{current}: cannot be checked ({e.strerror or e})") from None
        if stat.S_ISLNK(st.st_mode):
            raise UnsafePathError(f"{current}: is a symbolic link inside the {label} {root}; vitlab does not "
                                  "write through links (replace it with a real directory or file)")
    return target


def within(root: str | os.PathLike, path: str | os.PathLike, label: str = "directory") -> Path:
    """`inside` for a path as the process sees it (absolute, or relative to the working directory, such as
    `run_dir / "summary.json"`), not relative to `root`: with a relative root, `inside(root, root / x)`
    would check (and return) ROOT/ROOT/x. Returns the absolute path."""
    return inside(root, os.path.abspath(path), label)


def walk_files(root: str | os.PathLike) -> tuple[dict[str, int], list[str]]:
    """({relative POSIX path: size} of the regular files below `root`, [relative paths of the symbolic
    links met]), never following a link (so a linked folder or a link loop is listed, not entered).
    A root that is itself a link or is missing gives nothing."""
    root = Path(root)
    files: dict[str, int] = {}
    links: list[str] = []
    try:
        if stat.S_ISLNK(os.lstat(root).st_mode):
            return files, [""]
    except OSError:
        return files, links
    if not root.is_dir():
        return files, links
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(dirpath)
        for name in dirnames + filenames:
            p = base / name
            rel = p.relative_to(root).as_posix()
            try:
                st = os.lstat(p)
            except OSError:
                continue
            if stat.S_ISLNK(st.st_mode):
                links.append(rel)
            elif stat.S_ISREG(st.st_mode):
                files[rel] = st.st_size
    return files, sorted(links)


def check_tree(root: str | os.PathLike, label: str = "run directory") -> Path:
    """`root` after checking that nothing below it is a symbolic link (a run directory about to be
    trained or analyzed in: every file vitlab writes there lies below it); UnsafePathError otherwise."""
    root = Path(root)
    _, links = walk_files(root)
    if links:
        where = root / links[0] if links[0] else root
        raise UnsafePathError(f"{where}: is a symbolic link inside the {label} {root}; vitlab does not write "
                              "through links (replace it with a real directory or file)")
    return root


def writable_run_dir(run_dir: str | os.PathLike) -> Path:
    """A run directory about to be written (trained, analyzed, exported, tracked): when it sits in a
    study (STUDY/runs/<id>), inside the study directory with no link on the way; and none of the entries
    vitlab writes there (rundir.RUN_DIR_ENTRIES, whole sub-trees for its folders) a symbolic link.
    Only those are looked at, so a bad --out (`/`, `~`) is not walked. UnsafePathError otherwise; a
    directory not created yet passes."""
    run_dir = Path(run_dir)
    if run_dir.parent.name == RUNS_DIR:
        within(run_dir.parent.parent, run_dir, "study directory")
    for name in sorted(RUN_DIR_ENTRIES):
        entry = inside(run_dir, name, "run directory")
        if name not in FOREIGN_LINK_DIRS:
            check_tree(entry, "run directory")
    return run_dir


__all__ = ["UnsafePathError", "check_tree", "inside", "walk_files", "writable_run_dir"]
