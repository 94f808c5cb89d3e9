"""Formulas of the training loop against naive reference implementations."""
import math
import random

import numpy as np
import pytest
import torch
import torch.nn as nn

from vitlab.config import ScheduleConfig
from vitlab.training.checkpoint import capture_rng, restore_rng
from vitlab.training.loop import param_groups, soft_cross_entropy
from vitlab.training.metrics import ECE_BINS, SplitMetrics
from vitlab.training.schedules import LRMultiplier, make_scheduler


def naive_lr(step, base, epochs, spe, name, warmup_epochs, min_lr=0.0, milestones=(), gamma=0.1):
    total = epochs * spe
    warm = min(round(warmup_epochs * spe), total)
    if step < warm:
        return base * (step + 1) / warm
    if name == "cosine":
        t = (step - warm) / max(1, total - warm)
        return min_lr + (base - min_lr) * (1 + math.cos(math.pi * min(t, 1))) / 2
    if name == "step":
        k = len([m for m in milestones if step >= m * spe])
        return base * gamma ** k
    return base


@pytest.mark.parametrize("kw", [
    dict(name="cosine", warmup_epochs=2, min_lr=1e-5),
    dict(name="cosine", warmup_epochs=0),
    dict(name="step", warmup_epochs=1, milestones=[4, 7], gamma=0.1),
    dict(name="constant", warmup_epochs=0.5),
])
def test_schedule_matches_reference(kw):
    base, epochs, spe = 1e-3, 10, 7
    cfg = ScheduleConfig(**kw)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=base)
    sched = make_scheduler(opt, cfg, base, epochs, spe)
    for step in range(epochs * spe):
        assert opt.param_groups[0]["lr"] == pytest.approx(naive_lr(step, base, epochs, spe, **kw), rel=1e-9)
        opt.step()
        sched.step()


def test_schedule_state_roundtrip():
    cfg = ScheduleConfig(name="cosine", warmup_epochs=1)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    s1 = make_scheduler(opt, cfg, 0.1, 5, 4)
    for _ in range(9):
        opt.step()
        s1.step()
    opt2 = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    s2 = make_scheduler(opt2, cfg, 0.1, 5, 4)
    s2.load_state_dict(s1.state_dict())
    opt2.param_groups[0]["lr"] = s2.get_last_lr()[0]
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    assert isinstance(s2.lr_lambdas[0], LRMultiplier)


def test_soft_cross_entropy_reference():
    torch.manual_seed(0)
    logits = torch.randn(6, 5)
    hard = torch.randint(0, 5, (6,))
    eps = 0.1
    soft = torch.softmax(torch.randn(6, 5), dim=-1)

    def naive(lg, t):
        total = 0.0
        for i in range(lg.shape[0]):
            logp = lg[i] - torch.logsumexp(lg[i], 0)
            q = t[i] * (1 - eps) + eps / lg.shape[1]
            total += -(q * logp).sum()
        return total / lg.shape[0]

    onehot = torch.nn.functional.one_hot(hard, 5).float()
    assert soft_cross_entropy(logits, hard, eps) == pytest.approx(naive(logits, onehot).item(), rel=1e-5)
    assert soft_cross_entropy(logits, soft, eps) == pytest.approx(naive(logits, soft).item(), rel=1e-5)


def test_no_decay_groups():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)
            self.norm = nn.LayerNorm(4)
            self.pos = nn.Parameter(torch.zeros(1, 3, 4))

        def no_weight_decay(self):
            return {"pos"}

    decay, no_decay = param_groups(M(), 0.05, decay_all=False)
    assert len(decay["params"]) == 1 and decay["params"][0].shape == (4, 4)
    assert len(no_decay["params"]) == 4 and no_decay["weight_decay"] == 0.0
    decay, no_decay = param_groups(M(), 0.05, decay_all=True)
    assert len(decay["params"]) == 5 and not no_decay["params"]


def _naive_metrics(logits, y, k):
    probs = torch.softmax(logits, -1)
    pred = probs.argmax(-1)
    top1 = (pred == y).float().mean().item()
    top5 = np.mean([y[i].item() in probs[i].topk(5).indices.tolist() for i in range(len(y))])
    precs, recs, f1s = [], [], []
    for c in range(k):
        tp = ((pred == c) & (y == c)).sum().item()
        fp = ((pred == c) & (y != c)).sum().item()
        fn = ((pred != c) & (y == c)).sum().item()
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        precs.append(p)
        recs.append(r)
        f1s.append(2 * p * r / (p + r) if p + r else 0.0)
    conf = probs.max(-1).values
    ece = 0.0
    edges = torch.linspace(0, 1, ECE_BINS + 1)
    for b in range(ECE_BINS):
        m = (conf > edges[b]) & (conf <= edges[b + 1])
        if m.any():
            ece += m.float().mean().item() * abs(conf[m].mean().item() - (pred[m] == y[m]).float().mean().item())
    loss = torch.nn.functional.cross_entropy(logits, y).item()
    return dict(loss=loss, top1=top1, top5=top5, precision_macro=np.mean(precs), recall_macro=np.mean(recs),
                f1_macro=np.mean(f1s), ece=ece)


def test_split_metrics_match_reference():
    torch.manual_seed(1)
    k, n = 10, 300
    y = torch.randint(0, k, (n,))
    logits = torch.randn(n, k) * 2 + torch.nn.functional.one_hot(y, k) * 1.5
    m = SplitMetrics(k, "cpu", confusion=True)
    for i in range(0, n, 64):  # accumulate over batches
        m.update(logits[i:i + 64], y[i:i + 64])
    got = m.compute("test")
    want = _naive_metrics(logits, y, k)
    for key, v in want.items():
        assert got[f"test_{key}"] == pytest.approx(v, abs=1e-4), key
    cm = m.confusion_matrix()
    assert cm.sum() == n and cm.trace() == (logits.argmax(-1) == y).sum()
    assert cm[3, 5] == ((y == 3) & (logits.argmax(-1) == 5)).sum()


def test_rng_capture_restore():
    g = torch.Generator().manual_seed(5)
    state = capture_rng({"g": g})
    a = (random.random(), np.random.rand(), torch.rand(3), torch.rand(2, generator=g))
    restore_rng(state, {"g": g})
    b = (random.random(), np.random.rand(), torch.rand(3), torch.rand(2, generator=g))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2]) and torch.equal(a[3], b[3])
