"""Every model × every attention variant trains: forward/backward, and memorizing one batch."""
import pytest
import torch
import torch.nn.functional as F

from vitlab.config import ATTN_NORMS
from vitlab.models import create_model, list_models

# Shrunk versions of every preset so the matrix stays fast: the same code paths, fewer blocks/channels.
SMALL = {
    "vit_nano": {},
    "vit_study_b": {"depth": 1},
    "vit_tiny": {"depth": 1},
    "vit_keras_72": {"depth": 1, "image_size": 36, "head_hidden": [16]},
    "mobilevit_xxs": {"level": "C1"},
    "mobilevit_xs": {"level": "C1"},
    "mobilevit_s": {"level": "C1"},
}


def test_small_table_covers_every_model():
    assert sorted(SMALL) == list_models()


@pytest.mark.parametrize("norm", ATTN_NORMS)
@pytest.mark.parametrize("name", sorted(SMALL))
def test_forward_backward_every_model_and_variant(name, norm):
    torch.manual_seed(0)
    model = create_model(name, num_classes=5, attn_norm=norm, **SMALL[name]).train()
    size = model.input_size
    x = torch.randn(2, 3, size, size)
    out = model(x)
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    F.cross_entropy(out, torch.tensor([0, 3])).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname


def _overfit(name, steps, lr, n=32, size=32, **kw):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, dropout=0.0, **kw)
    x = torch.randn(n, 3, size, size)
    y = torch.arange(n) % 10
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    # refresh BatchNorm statistics on this batch, then check the eval-mode model memorized it
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        model(x)
    model.eval()
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    return loss.item(), acc


@pytest.mark.parametrize("name,kw,steps,lr", [
    ("vit_nano", {}, 25, 5e-3),
    ("mobilevit_xxs", {"level": "C1"}, 20, 5e-3),
])
def test_overfits_one_batch(name, kw, steps, lr):
    loss, acc = _overfit(name, steps, lr, **kw)
    assert acc == 1.0 and loss < 0.5


# Every variant learns, in both model families, on a budget that fits the fast suite (about 6 s of
# CPU for all 18): a one-block 16 px ViT and a quarter-width MobileViT memorize a small batch.
VARIANT_BUDGET = {
    "vit_nano": dict(steps=20, n=16, size=16, dim=32, depth=1, num_heads=2, image_size=16),
    "mobilevit_xxs": dict(steps=15, n=10, size=32, width_mult=0.25),
}


@pytest.mark.parametrize("norm", ATTN_NORMS)
@pytest.mark.parametrize("name", sorted(VARIANT_BUDGET))
def test_overfits_one_batch_every_variant(name, norm):
    loss, acc = _overfit(name, lr=5e-3, attn_norm=norm, **VARIANT_BUDGET[name])
    assert acc == 1.0, (loss, acc)
