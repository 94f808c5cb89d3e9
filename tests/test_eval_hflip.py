"""train.eval_hflip: test-time mirror averaging, one predictor for training's evaluation and analysis."""
import json

import torch

import vitlab
from vitlab.analysis.loading import load_run
from vitlab.config import load_config
from vitlab.identity import config_hash
from vitlab.training.predict import predict_logits

TINY = ["data.name=synthetic", "data.synthetic_train=160", "data.synthetic_test=60", "model.name=vit_nano",
        "model.dim=32", "model.depth=1", "model.num_heads=2", "train.epochs=2", "train.batch_size=32",
        "train.eval_batch_size=60", "train.progress=false"]


def test_hflip_prediction_is_the_log_of_the_mean_probability_of_the_image_and_its_mirror():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2 * 3 * 5, 4))
    x = torch.randn(6, 2, 3, 5)
    naive = []
    for img in x:  # one image at a time, the mirror built by indexing columns backwards
        mirror = img[:, :, list(range(img.shape[-1] - 1, -1, -1))]
        p = (torch.softmax(model(img[None]), -1) + torch.softmax(model(mirror[None]), -1)) / 2
        naive.append(torch.log(p[0]))
    got = predict_logits(model, x, hflip=True)
    torch.testing.assert_close(got, torch.stack(naive), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.exp().sum(-1), torch.ones(6))
    torch.testing.assert_close(predict_logits(model, x, hflip=False), model(x))


def test_eval_hflip_scores_the_mirror_averaged_predictor_everywhere(tmp_path):
    cfg = load_config(None, TINY + ["train.eval_hflip=true"])
    plain = load_config(None, TINY)
    assert config_hash(plain) == config_hash(load_config(None, TINY + ["train.eval_hflip=false"]))  # IDs kept
    assert config_hash(cfg) != config_hash(plain)
    summary = vitlab.train(cfg, tmp_path / "run")
    run = load_run(tmp_path / "run")
    logits = run.logits(run.data.test_x)
    with torch.inference_mode(), run.autocast():
        mirrored = predict_logits(run.model, run.inputs(run.data.test_x), hflip=True)
        single = predict_logits(run.model, run.inputs(run.data.test_x), hflip=False)
    torch.testing.assert_close(logits, mirrored)
    assert not torch.allclose(logits, single)  # the mirror changes the scores of a model that is not symmetric
    top1 = float((logits.argmax(-1).cpu() == run.data.test_y.cpu()).float().mean())
    assert abs(top1 - summary["test_top1"]) < 1e-6
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["test_top1"] == summary["test_top1"]
