"""Image-folder datasets: class-per-subfolder PNG/JPEG, with or without train/ and test/."""
import numpy as np
import pytest
import torch
from PIL import Image

from vitlab.config import DataConfig
from vitlab.data import dataset_info, folder, load_dataset, verify_dataset
from vitlab.errors import ConfigError, DataError


def write_image(path, colour, size=(20, 12), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path)


@pytest.fixture
def flat(tmp_path):
    """cats/ (red PNGs) and dogs/ (grayscale JPEGs), 10 images each, no train/test split."""
    for i in range(10):
        write_image(tmp_path / "cats" / f"c{i}.png", (200, 10, 10))
        write_image(tmp_path / "dogs" / f"d{i}.JPG", 90, mode="L")
    (tmp_path / "cats" / "notes.txt").write_text("ignored")
    return tmp_path


def test_flat_folder_holds_out_a_stratified_test_set(flat):
    cfg = DataConfig(name="folder", folder_path=str(flat), folder_image_size=8, folder_test_fraction=0.2,
                     val_fraction=0.25)
    b = load_dataset(cfg, seed=0)
    assert b.classes == ["cats", "dogs"] and b.in_chans == 3 and b.image_size == 8
    assert torch.bincount(b.test_y).tolist() == [2, 2]
    assert len(b.train_y) + len(b.val_y) == 16
    cat = b.train_x[b.train_y == 0][0]
    assert cat[:, 4, 4].tolist() == [200, 10, 10]
    dog = b.train_x[b.train_y == 1][0]  # grayscale converted to RGB
    assert abs(int(dog[0, 4, 4]) - 90) <= 2 and dog[0].equal(dog[1]) and dog[1].equal(dog[2])
    # the test hold-out does not depend on the run seed
    assert torch.equal(load_dataset(cfg, seed=5).test_x, b.test_x)


def test_train_and_test_subfolders_are_used(tmp_path):
    for split, n in (("train", 6), ("test", 3)):
        for c, colour in (("a", (0, 0, 255)), ("b", (0, 255, 0))):
            for i in range(n):
                write_image(tmp_path / split / c / f"{i}.png", colour, size=(16, 16))
    b = load_dataset(DataConfig(name="folder", folder_path=str(tmp_path), folder_image_size=16, val_fraction=0.5), 0)
    assert len(b.test_y) == 6 and len(b.train_y) + len(b.val_y) == 12
    assert dataset_info("folder", tmp_path)["test_images"] == 6
    assert dataset_info("folder", tmp_path / "train")["test_images"] is None


def test_centre_crop_then_resize():
    img = np.zeros((10, 30, 3), dtype=np.uint8)
    img[:, 10:20] = 255  # the centre square is white, the sides black
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.png"
        Image.fromarray(img).save(p)
        out = folder.read_image(p, 5)
    assert out.shape == (3, 5, 5) and out.min() == 255


def test_bad_folders_are_one_line_errors(tmp_path):
    with pytest.raises(DataError, match="image folder not found"):
        load_dataset(DataConfig(name="folder", folder_path=str(tmp_path / "nope")), 0)
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(DataError, match="empty_class: no PNG or JPEG images"):
        load_dataset(DataConfig(name="folder", folder_path=str(tmp_path)), 0)
    bad = tmp_path / "empty_class" / "broken.png"
    bad.write_bytes(b"this is not a png")
    with pytest.raises(DataError, match=r"broken\.png: cannot read image"):
        verify_dataset("folder", tmp_path)
    with pytest.raises(ConfigError, match="data.folder_path"):
        DataConfig(name="folder")


def test_test_class_unknown_to_train_is_rejected(tmp_path):
    write_image(tmp_path / "train" / "a" / "0.png", (1, 2, 3))
    write_image(tmp_path / "test" / "zebra" / "0.png", (1, 2, 3))
    with pytest.raises(DataError, match="zebra"):
        folder.layout(tmp_path)
