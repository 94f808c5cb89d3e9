"""The built-in synthetic dataset: deterministic, balanced, fast, learnable but not trivial."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from vitlab.config import AugmentConfig, DataConfig
from vitlab.data import Augmenter, load_dataset, synthetic


def test_deterministic_in_the_dataset_seed_only():
    a = synthetic.generate(200, 12, seed=7)
    b = synthetic.generate(200, 12, seed=7)
    c = synthetic.generate(200, 12, seed=8)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    # every run seed sees the same images; data.synthetic_seed picks another dataset
    cfg = DataConfig(synthetic_train=200, synthetic_test=50)
    r0, r1 = load_dataset(cfg, seed=0), load_dataset(cfg, seed=1)
    assert torch.equal(r0.test_x, r1.test_x)
    other = load_dataset(DataConfig(synthetic_train=200, synthetic_test=50, synthetic_seed=99), seed=0)
    assert not torch.equal(r0.test_x, other.test_x)


def test_shapes_balance_and_class_names():
    x, y = synthetic.generate(330, 11, seed=0)
    assert x.shape == (330, 3, 32, 32) and x.dtype == torch.uint8 and y.dtype == torch.int64
    assert torch.bincount(y).tolist() == [30] * 11
    b = load_dataset(DataConfig(synthetic_classes=16, synthetic_train=160, synthetic_test=32), 0)
    assert b.synthetic and b.classes == synthetic.CLASSES and b.num_classes == 16
    assert len(set(b.classes)) == 16


def test_train_and_test_are_different_draws():
    raw = synthetic.load(10, 100, 100, seed=3)
    flat_train = {bytes(v) for v in raw.train_x.flatten(1).numpy()}
    assert not any(bytes(v) in flat_train for v in raw.test_x.flatten(1).numpy())


def test_images_vary_within_a_class():
    """Position, size, colour and background vary: the pixel template of a class is no classifier."""
    x, y = synthetic.generate(1600, 16, seed=0)
    xt, yt = synthetic.generate(800, 16, seed=1)
    flat = lambda t: t.float().flatten(1) / 255  # noqa: E731
    means = torch.stack([flat(x[y == c]).mean(0) for c in range(16)])
    accuracy = (torch.cdist(flat(xt), means).argmin(1) == yt).float().mean()
    assert accuracy < 0.25  # chance is 1/16; a trivial dataset would be near 1
    assert x.float().std() > 40  # full use of the intensity range


class TinyCNN(nn.Module):
    def __init__(self, k):
        super().__init__()
        block = lambda i, o: nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU())  # noqa: E731
        self.net = nn.Sequential(block(3, 32), nn.MaxPool2d(2), block(32, 64), nn.MaxPool2d(2), block(64, 64),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, k))

    def forward(self, x):
        return self.net(x)


@pytest.mark.slow
def test_learnable_but_not_solved_at_once():
    """A small CNN learns the classes well above chance in a few epochs, but not perfectly after one."""
    torch.manual_seed(0)
    b = load_dataset(DataConfig(synthetic_train=3000, synthetic_test=1000), seed=0)
    aug = Augmenter(AugmentConfig(), b.mean, b.std, b.num_classes, 32)
    model = TinyCNN(b.num_classes)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)

    def accuracy():
        model.eval()
        with torch.no_grad():
            pred = model(aug.eval_batch(b.test_x)).argmax(1)
        model.train()
        return float((pred == b.test_y).float().mean())

    accs = []
    for _ in range(4):
        perm = torch.randperm(len(b.train_y), generator=g)
        for i in range(0, len(perm), 64):
            x, y = aug.train_batch(b.train_x[perm[i:i + 64]], b.train_y[perm[i:i + 64]], g)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        accs.append(accuracy())
    assert accs[0] < 0.9
    assert accs[-1] > 0.5
