"""One table of datasets (vitlab.datasets): the config's choices, the readers, `vitlab data info`, the
study planner's input shape and the data root all follow it."""
import dataclasses

import pytest

from vitlab.config import DataConfig
from vitlab.data import dataset_info, load_dataset
from vitlab.data.registry import READERS
from vitlab.datasets import DATASET_NAMES, DATASETS
from vitlab.errors import ConfigError
from vitlab.training.environment import data_root_hint


def test_every_dataset_has_a_reader_and_is_a_config_choice():
    assert set(READERS) == set(DATASETS)
    choices = next(f for f in dataclasses.fields(DataConfig) if f.name == "name").metadata["choices"]
    assert choices == DATASET_NAMES == tuple(DATASETS)
    with pytest.raises(ConfigError, match=r"^data.name: must be one of synthetic, cifar10.*did you mean 'fashion_mnist'"):
        DataConfig(name="FashionMNIST")


@pytest.mark.parametrize("name", [n for n, d in DATASETS.items() if d.rooted])
def test_info_of_a_rooted_dataset_matches_the_table(name, tmp_path):
    """Shapes and class counts come from the table, files or not."""
    d = DATASETS[name]
    info = dataset_info(name, tmp_path)
    assert info["image_shape"] == [d.channels, d.image_size, d.image_size]
    assert info["num_classes"] == d.classes and info["root"] == str(tmp_path)
    assert data_root_hint(DataConfig(name=name, root=str(tmp_path))) == str(tmp_path.absolute())


def test_synthetic_images_have_the_tables_shape():
    cfg = DataConfig(synthetic_train=100, synthetic_test=20)
    b = load_dataset(cfg, seed=0)
    d = DATASETS["synthetic"]
    assert tuple(b.train_x.shape[1:]) == (d.channels, d.image_size, d.image_size)
    assert cfg.input_shape() == (d.channels, d.image_size) and data_root_hint(cfg) is None
    assert dataset_info("synthetic")["image_shape"] == [d.channels, d.image_size, d.image_size]


def test_folder_size_comes_from_the_config():
    assert DataConfig(name="folder", folder_path="x", folder_image_size=48).input_shape() == (3, 48)
