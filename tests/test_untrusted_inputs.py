"""Unbounded inputs are bounded: YAML alias bombs, deep nesting and NUL bytes in configs and specs,
huge values in error messages, gzip bombs and oversized files in the data root, decompression-bomb
images and symbolic links leaving a folder dataset. Each is a one-line error (exit 2 on the CLI)."""
from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from vitlab import yamlsafe
from vitlab.config import DataConfig, RunConfig, load_config
from vitlab.schema import build
from vitlab.yamlsafe import read_yaml
from vitlab.data import cifar, fashion_mnist, load_dataset, verify_dataset
from vitlab.errors import ConfigError, DataError, UserError, short_repr

pytestmark = pytest.mark.timeout(60)  # a bomb that got through would hang here, not pass


def alias_bomb(levels: int = 9, width: int = 9) -> list[str]:
    """YAML lines defining anchors a0..a{levels-1}: a_k is `width` copies of a_{k-1} (width**levels values)."""
    lines = ["a0: &a0 [" + ", ".join(['"lol"'] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return lines


# ---------------------------------------------------------------------------------------------- YAML


def test_alias_bomb_in_a_config_is_refused(tmp_path, cli_error):
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(alias_bomb()) + "\nmodel: {name: *a8}\n")
    with pytest.raises(UserError, match="aliases expand"):
        read_yaml(path)
    for argv in (["train", path, "--out", tmp_path / "run"], ["config", "show", path]):
        assert "aliases expand" in cli_error(argv)
    assert not (tmp_path / "run").exists()


def test_alias_bomb_in_a_spec_name_and_through_base_config(tmp_path, cli_error):
    spec = tmp_path / "spec.yaml"
    spec.write_text("\n".join(alias_bomb()) + "\nname: *a8\nvary: {model.attn_norm: [softmax]}\n")
    assert "aliases expand" in cli_error(["study", spec, "--out", tmp_path / "s1"])
    base = tmp_path / "base.yaml"
    base.write_text("\n".join(alias_bomb()) + "\nmodel: {name: *a8}\n")
    spec.write_text("name: s\nbase_config: base.yaml\nvary: {model.attn_norm: [softmax]}\n")
    err = cli_error(["study", spec, "--out", tmp_path / "s2"])
    assert "aliases expand" in err and "base.yaml" in err
    assert not (tmp_path / "s1").exists() and not (tmp_path / "s2").exists()


def test_small_aliases_still_work(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("common: &c {dim: 32, depth: 2}\nmodel: {name: vit_nano, <<: *c}\n")
    data = read_yaml(path)
    del data["common"]
    assert build(RunConfig, data).model.dim == 32


@pytest.mark.parametrize("text, fragment", [
    ("a: &a [*a]\n", "refers to the collection"),                       # a recursive alias
    ("a: " + "[" * 1500 + "]" * 1500 + "\n", "nested deeper"),           # PyYAML's composer would overflow
    ("a: " + "[" * 100 + "]" * 100 + "\n", "nested deeper"),             # within Python's stack, past the cap
    ("seed: 1\nmodel:\x00 {}\n", "line 2: character U+0000"),             # a NUL byte
    ("seed: 1\n\x07\n", "U+0007"),                                        # another control character
])
def test_malformed_yaml_is_one_line(tmp_path, text, fragment, cli_error):
    path = tmp_path / "c.yaml"
    path.write_bytes(text.encode())
    assert fragment in cli_error(["config", "show", path])
    spec = tmp_path / "spec.yaml"
    spec.write_bytes(text.encode())
    assert fragment in cli_error(["study", spec, "--out", tmp_path / "s"])


def test_an_oversized_yaml_file_is_not_read(tmp_path, monkeypatch, cli_error):
    monkeypatch.setattr(yamlsafe, "MAX_YAML_BYTES", 1000)
    path = tmp_path / "c.yaml"
    path.write_text("seed: 1\n" + "# padding\n" * 200)
    assert "larger than 1,000 bytes" in cli_error(["config", "show", path])


def test_error_messages_cap_what_they_print_of_a_value(tmp_path):
    path = tmp_path / "c.yaml"
    # 9**5 = 59049 strings: under the alias limit, but its repr would be 600 kB.
    path.write_text("\n".join(alias_bomb(levels=5)) + "\nmodel: {name: *a4}\n")
    data = {"model": read_yaml(path)["model"]}
    with pytest.raises(ConfigError, match="model.name: must be a string") as e:
        build(RunConfig, data)
    assert len(str(e.value)) < 200
    huge = "x" * 10**7
    for bad in ({"model": {"attn_norm": huge}}, {"optim": {"betas": [0.5] * 10**5}}, {"device": huge},
                {"train": {huge: 1}}):
        with pytest.raises(UserError) as e:
            build(RunConfig, bad)
        assert len(str(e.value)) < 300, str(e.value)[:300]
    with pytest.raises(UserError) as e:
        load_config(None, ["y" * 10**6])
    assert len(str(e.value)) < 300


def test_short_repr():
    assert short_repr("abc") == "'abc'"
    assert short_repr(3.5) == "3.5"
    assert len(short_repr("x" * 10**6)) <= 80 and short_repr("x" * 10**6).endswith("…")
    assert short_repr(list(range(10**6))) == "<list of 1000000 items>"
    nested = [[["z"] * 50] * 50] * 50  # 125k leaves sharing lists: never expanded
    assert short_repr(nested) == "<list>"


# ---------------------------------------------------------------------------------------------- data files


def test_gzip_bomb_named_like_fashion_mnist_stops_at_the_official_size(tmp_path, cli_error):
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    comp = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # gzip framing
    zeros = b"\0" * (1 << 20)
    with open(folder / "train-images-idx3-ubyte.gz", "wb") as f:
        for _ in range(100):  # 100 MB of zeros in 100 kB: twice the official 47 MB
            f.write(comp.compress(zeros))
        f.write(comp.flush())
    assert (folder / "train-images-idx3-ubyte.gz").stat().st_size < 1_000_000
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: decompresses to more than 47,040,016 bytes"):
        fashion_mnist.read_idx("train-images-idx3-ubyte", tmp_path)
    err = cli_error(["data", "verify", "fashion_mnist", "--root", tmp_path])
    assert "gzip bomb" in err


def test_oversized_plain_idx_file_is_not_read(tmp_path):
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    with open(folder / "t10k-labels-idx1-ubyte", "wb") as f:
        f.truncate(10**9)  # sparse: 1 GB that costs no disk
    with pytest.raises(DataError, match="larger than the official file"):
        fashion_mnist.read_idx("t10k-labels-idx1-ubyte", tmp_path)


def test_oversized_cifar_archive_is_not_read(tmp_path):
    with open(tmp_path / "cifar-10-python.tar.gz", "wb") as f:
        f.truncate(cifar.MAX_FILE_BYTES + 1)
    with pytest.raises(DataError, match="larger than the official file"):
        load_dataset(DataConfig(name="cifar10", root=str(tmp_path), download=False), 0)


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height RGB pixels (PIL checks the size when it opens it)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b""))


def image_folder(root: Path) -> Path:
    for cls, colour in (("cats", (200, 10, 10)), ("dogs", (10, 10, 200))):
        (root / cls).mkdir(parents=True)
        for i in range(5):
            Image.new("RGB", (12, 12), colour).save(root / cls / f"{i}.png")
    return root


@pytest.mark.parametrize("size", [(30000, 30000), (10000, 10000)])  # past twice PIL's limit, and just past it
def test_decompression_bomb_image_is_one_line(tmp_path, size, cli_error):
    root = image_folder(tmp_path / "imgs")
    (root / "dogs" / "bomb.png").write_bytes(png_claiming(*size))
    with pytest.raises(DataError, match=r"bomb\.png: image larger than") as e:
        load_dataset(DataConfig(name="folder", folder_path=str(root), folder_image_size=8), 0)
    assert "\n" not in str(e.value)
    assert "bomb.png" in cli_error(["data", "verify", "folder", "--root", root])


def test_symlinks_leaving_the_dataset_folder_are_refused(tmp_path, cli_error):
    root = image_folder(tmp_path / "imgs")
    outside = tmp_path / "secret"
    outside.mkdir()
    Image.new("RGB", (12, 12), 0).save(outside / "x.png")
    # a link inside the folder is fine
    os.symlink(root / "cats" / "0.png", root / "cats" / "alias.png")
    assert verify_dataset("folder", root)
    cfg = DataConfig(name="folder", folder_path=str(root), folder_image_size=8)
    cases = [(root / "cats" / "link.png", outside / "x.png"),   # an image file
             (root / "birds", outside),                          # a class folder
             (root / "dogs" / "h.png", Path("/etc/hostname"))]   # a system file
    for link, target in cases:
        os.symlink(target, link)
        with pytest.raises(DataError, match="outside the dataset folder") as e:
            load_dataset(cfg, 0)
        assert str(link) in str(e.value) and "\n" not in str(e.value)
        assert "symbolic link" in cli_error(["data", "verify", "folder", "--root", root])
        link.unlink()
    assert verify_dataset("folder", root)
    # the folder itself may be reached through a link
    os.symlink(root, tmp_path / "via")
    assert verify_dataset("folder", tmp_path / "via")
