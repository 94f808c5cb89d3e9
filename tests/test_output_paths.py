"""Where `vitlab train --out` and `vitlab report -o` may write: `/`, a symlink loop, a read-only
directory, a directory given for a file, a directory holding something else are one-line errors
(exit 2) checked before anything is written; input that fails after the output directory was
created leaves no empty directory behind."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from fsutil import read_only_dir
from test_report_data import study_meta, study_records
from test_report_study import write_index
from vitlab.cli import main
from vitlab.io import check_output_file, make_writable_dir

TINY = ["data.synthetic_train=100", "data.synthetic_test=20", "model.name=vit_nano", "model.dim=16",
        "model.depth=1", "model.num_heads=2", "train.epochs=1", "train.batch_size=40", "train.threads=1", "--quiet"]


def tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


# ---------------------------------------------------------------------------------------------- train --out


def test_train_out_root_is_refused(cli_error):
    before = sorted(os.listdir("/"))
    assert "filesystem root" in cli_error(["train", "--out", "/", *TINY])
    assert sorted(os.listdir("/")) == before


def test_train_out_symlink_loop(tmp_path, cli_error):
    os.symlink(tmp_path / "loop", tmp_path / "loop")
    assert "symbolic links" in cli_error(["train", "--out", tmp_path / "loop", *TINY])
    assert "symbolic links" in cli_error(["train", "--out", tmp_path / "loop" / "run", *TINY])
    assert tree(tmp_path) == ["loop"]


def test_train_out_read_only(tmp_path, cli_error):
    with read_only_dir(tmp_path / "ro") as ro:
        assert "not writable" in cli_error(["train", "--out", ro, *TINY])
        assert "not writable" in cli_error(["train", "--out", ro / "a" / "b", *TINY])
        assert os.listdir(ro) == []


def test_train_out_holding_something_else_is_refused(tmp_path, cli_error):
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.yaml").write_text("my: own file\n")
    (home / "notes.txt").write_text("keep me")
    err = cli_error(["train", "--out", home, *TINY])
    assert "not a vitlab run directory (has notes.txt)" in err
    assert tree(home) == ["config.yaml", "notes.txt"] and (home / "config.yaml").read_text() == "my: own file\n"
    (tmp_path / "file").write_text("x")
    assert "not writable" in cli_error(["train", "--out", tmp_path / "file", *TINY])
    assert "not writable" in cli_error(["train", "--out", tmp_path / "file" / "run", *TINY])


def test_bad_input_after_creating_the_directory_leaves_nothing(tmp_path, cli_error):
    out = tmp_path / "a" / "b" / "run"
    cli_error(["train", "--out", out, *TINY, "model.num_heads=3"])  # fails building the model
    cli_error(["train", "--out", out, *TINY, "data.name=cifar10", f"data.root={tmp_path / 'nodata'}",
               "data.download=false"])  # fails loading data
    assert tree(tmp_path) == []
    existing = tmp_path / "mine"
    existing.mkdir()
    cli_error(["train", "--out", existing, *TINY, "model.num_heads=3"])
    assert existing.is_dir()  # a directory the user made stays


def test_a_run_directory_with_lock_and_temp_files_is_accepted(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").write_text("123")  # what a study worker leaves before training
    assert main(["train", "--out", str(out), *TINY]) == 0


# ---------------------------------------------------------------------------------------------- report -o


@pytest.fixture
def study(tmp_path) -> Path:
    d = tmp_path / "study"
    d.mkdir()
    write_index(d, study_records(), study_meta())
    return d


@pytest.mark.parametrize("target", ["dir", "root", "loop", "read_only", "under_a_file"])
def test_report_output_refused_before_anything_is_written(study, tmp_path, target, cli_error):
    before = tree(study)
    if target == "dir":
        out, fragment = tmp_path, "is a directory"
    elif target == "root":
        out, fragment = Path("/"), "is a directory"
    elif target == "loop":
        os.symlink(tmp_path / "loop", tmp_path / "loop")
        out, fragment = tmp_path / "loop" / "r.html", "symbolic links"
    elif target == "under_a_file":
        (tmp_path / "f").write_text("x")
        out, fragment = tmp_path / "f" / "r.html", "Not a directory"
    if target == "read_only":
        with read_only_dir(tmp_path / "ro") as ro:
            assert "not writable" in cli_error(["report", study, "-o", ro / "r.html"])
            assert os.listdir(ro) == []
    else:
        assert fragment in cli_error(["report", study, "-o", out])
    assert tree(study) == before  # no tables or figures were written before the refusal


def test_report_dir_not_writable(study, cli_error):
    (study / "report").write_text("a file where the report directory goes")
    before = tree(study)
    assert "not writable (Not a directory)" in cli_error(["report", study])
    assert tree(study) == before


def test_report_to_a_new_nested_path_still_works(study, tmp_path):
    assert main(["report", str(study), "-o", str(tmp_path / "x" / "y" / "r.html")]) == 0
    assert (tmp_path / "x" / "y" / "r.html").read_text().startswith("<!DOCTYPE html>")


def test_io_checks_create_nothing_on_refusal(tmp_path):
    from vitlab.errors import UserError

    with pytest.raises(UserError):
        check_output_file(tmp_path)
    (tmp_path / "f").write_text("")
    with pytest.raises(UserError):
        make_writable_dir(tmp_path / "f" / "a" / "b")
    assert make_writable_dir(tmp_path / "n" / "m") == [tmp_path / "n", tmp_path / "n" / "m"]
    assert make_writable_dir(tmp_path / "n" / "m") == []


def test_a_started_run_may_hold_files_of_its_user(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *TINY]) == 0
    (out / "notes.txt").write_text("mine")
    assert main(["train", "--out", str(out), *TINY, "--resume"]) == 0
    assert (out / "notes.txt").read_text() == "mine"
