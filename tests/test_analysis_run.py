"""`analyze_run` / `vitlab analyze` end to end on a tiny trained run, resumption, summary merge, the
one-run report, CLI errors; compute_attention on a MobileViT."""
from __future__ import annotations

import contextlib
import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from vitlab.analysis import SCALAR_METRICS, analyze_run, is_analysis_metric, metric_names, read_analysis
from vitlab.analysis.analyze import analysis_path
from vitlab.analysis.attention import compute_attention
from vitlab.analysis.corruptions import CORRUPTIONS
from vitlab.analysis.options import make_options
from vitlab.cli import main
from vitlab.config import load_config
from vitlab.errors import UserError
from vitlab.io import read_json_object, read_jsonl
from vitlab.models import create_model
from vitlab.training import run_training

TINY = [
    "data.name=synthetic", "data.synthetic_train=320", "data.synthetic_test=60", "data.val_fraction=0.25",
    "model.name=vit_nano", "model.dim=32", "model.depth=2", "model.num_heads=2",
    "train.batch_size=32", "train.eval_batch_size=64", "train.epochs=1", "train.progress=false",
    "train.threads=1", "sched.warmup_epochs=0",
]
FAST = dict(samples=6, map_images=2, attention_batch=4, corruption_images=20, corruption_batch=10, latency_calls=3,
            warmup_calls=1, throughput_calls=1, throughput_batch=8, compile=False)
FIGURES = ["attention_maps", "attention_rollout", "attention_layers", "attention_epochs", "robustness_severity",
           "robustness_heatmap", "reliability"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "tiny"
    run_training(load_config(None, TINY), out)
    return out


@pytest.fixture(scope="module")
def analyzed(trained, tmp_path_factory):
    run = tmp_path_factory.mktemp("analyzed") / "tiny"
    shutil.copytree(trained, run)
    analysis = analyze_run(run, **FAST)
    return run, analysis


def test_trainer_records_attention_entropy_per_layer(trained):
    rows = read_jsonl(trained / "metrics.jsonl")
    h = [rows[0]["val_attn_entropy_norm_l0"], rows[0]["val_attn_entropy_norm_l1"]]
    assert all(0.0 < v <= 1.0 for v in h) and "val_attn_entropy_norm_l2" not in rows[0]
    assert rows[0]["val_attn_entropy_norm_mean"] == pytest.approx(sum(h) / 2)


def test_analysis_json_layout(analyzed):
    run, analysis = analyzed
    assert json.loads(analysis_path(run).read_text()) == json.loads(json.dumps(analysis))
    assert {"attention", "robustness", "calibration", "efficiency", "run", "format"} <= analysis.keys()
    layers = analysis["attention"]["layers"]
    assert [lay["name"] for lay in layers] == ["blocks.0.attn", "blocks.1.attn"]
    for lay in layers:
        assert {"name", "tokens", "entropy", "entropy_norm", "max_weight", "distance_px", "heads"} <= lay.keys()
        assert lay["tokens"] == 65 and len(lay["heads"]) == 2
        assert 0 < lay["entropy_norm"] <= 1 and lay["entropy"] == pytest.approx(lay["entropy_norm"] * np.log(65))
        assert lay["entropy"] == pytest.approx(np.mean([h["entropy"] for h in lay["heads"]]))
        assert 0 < lay["distance_px"] < 32 * 2 ** 0.5
    rob = analysis["robustness"]
    assert set(rob["corruptions"]) == set(CORRUPTIONS) and all(len(v) == 5 for v in rob["corruptions"].values())
    assert rob["complete"] and rob["images"] == 20 and 0 <= rob["clean_top1"] <= 1
    faithful = [a for k, v in rob["corruptions"].items() if k != "frost" for a in v]
    assert rob["mean_top1"] == pytest.approx(np.mean(faithful)) and rob["excluded_from_mean"] == ["frost"]
    eff = analysis["efficiency"]
    assert {"latency_ms_b1", "throughput_img_s_b256", "params", "flops"} <= eff.keys()
    assert eff["params"] == read_json_object(run / "summary.json")["params"]
    cal = analysis["calibration"]
    assert sum(b["count"] for b in cal["bins"]) == cal["images"] == 60


def test_figures_and_maps_are_written(analyzed):
    run, _ = analyzed
    for name in FIGURES:
        assert (run / "analysis" / f"{name}.png").read_bytes()[:4] == b"\x89PNG", name
        assert b"<svg" in (run / "analysis" / f"{name}.svg").read_bytes()[:3000], name
    with np.load(run / "analysis" / "attention_maps.npz", allow_pickle=False) as z:
        assert z["images"].shape == (2, 3, 32, 32) and z["rollout_1"].shape == (2, 8, 8)


def test_scalars_are_merged_into_summary(analyzed):
    run, analysis = analyzed
    summary = read_json_object(run / "summary.json")
    assert summary["status"] == "completed"  # the trainer's keys are kept
    for key in ("attn_entropy_norm_mean", "attn_entropy_norm_l0", "attn_entropy_norm_l1", "corruption_top1_mean",
                "latency_ms_b1", "throughput_img_s_b256", "calib_overconfidence", "corruption_top1_fog"):
        assert isinstance(summary[key], float), key
        assert is_analysis_metric(key)
    assert summary["attn_entropy_norm_l1"] == analysis["attention"]["layers"][1]["entropy_norm"]
    assert not is_analysis_metric("attn_entropy_norm_lx") and not is_analysis_metric("test_top1")
    assert set(SCALAR_METRICS) <= set(metric_names(analysis)) and "attn_distance_px_l1" in metric_names(analysis)


def test_rerun_skips_and_force_recomputes(analyzed):
    run, analysis = analyzed
    again = analyze_run(run, **FAST)
    assert again == analysis  # nothing recomputed: identical, timings included
    forced = analyze_run(run, sections=["calibration"], force=True, **FAST)
    assert forced["calibration"]["time_s"] != analysis["calibration"]["time_s"]
    assert forced["attention"] == analysis["attention"]


def test_interrupted_sweep_continues(analyzed, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(analyzed[0], run)
    full = read_analysis(run)
    partial = json.loads(json.dumps(full))
    names = list(CORRUPTIONS)
    for name in names[5:]:
        del partial["robustness"]["corruptions"][name]
    partial["robustness"]["complete"] = False
    analysis_path(run).write_text(json.dumps(partial))
    resumed = analyze_run(run, sections="robustness", **FAST)["robustness"]
    assert sorted(resumed["corruptions"]) == sorted(names) and resumed["complete"]
    assert resumed["corruptions"] == full["robustness"]["corruptions"]  # deterministic: same numbers
    assert resumed["mean_top1"] == pytest.approx(full["robustness"]["mean_top1"])


def test_run_report_has_the_four_sections(analyzed, tmp_path):
    run, _ = analyzed
    out = tmp_path / "r.html"
    assert main(["report", str(run), "-o", str(out)]) == 0
    text = out.read_text()
    for title in ("Attention", "Robustness", "Calibration", "Efficiency", "synthetic"):
        assert title in text, title
    assert text.count("<img ") >= 6 and "data:image/png;base64," in text
    assert "<script" not in text


def test_cli_analyze_prints_the_headlines(analyzed, capsys):
    run, _ = analyzed
    assert main(["analyze", str(run), "--sections", "attention,robustness", "--samples", "6"]) == 0
    out = capsys.readouterr().out
    assert "normalized entropy per layer" in out and "mean corruption top-1" in out


@pytest.mark.parametrize("args,needle", [
    (["analyze", "{missing}"], "not a directory"),
    (["analyze", "{empty}"], "not a run directory"),
    (["analyze", "{nockpt}"], "no checkpoint"),
    (["analyze", "{run}", "--sections", "atention"], "did you mean 'attention'"),
    (["analyze", "{run}", "--samples", "0"], "analysis.samples"),
    (["export", "{run}", "--format", "tflite"], "unknown export format"),
    (["report", "{empty}"], "not a vitlab study directory"),
])
def test_cli_bad_input_is_one_line_exit_2(analyzed, tmp_path, capsys, args, needle):
    run, _ = analyzed
    (tmp_path / "empty").mkdir()
    (tmp_path / "nockpt").mkdir()
    shutil.copy(run / "config.yaml", tmp_path / "nockpt" / "config.yaml")
    before = analysis_path(run).read_bytes()
    paths = dict(missing=tmp_path / "nope", empty=tmp_path / "empty", nockpt=tmp_path / "nockpt", run=run)
    code = main([a.format(**paths) for a in args])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert analysis_path(run).read_bytes() == before  # nothing overwritten
    assert not (tmp_path / "nockpt" / "analysis").exists()


def test_options_are_validated():
    with pytest.raises(UserError, match="did you mean 'robustness'"):
        make_options(sections=["robustnes"])
    with pytest.raises(UserError, match="analysis.corruption_images"):
        make_options(corruption_images=0)
    with pytest.raises(UserError, match="unknown key"):
        make_options(sampels=4)


def test_compute_attention_on_mobilevit():
    torch.manual_seed(0)
    model = create_model("mobilevit_xxs", num_classes=4, width_mult=0.25, num_heads=2).eval()
    x = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    run = SimpleNamespace(model=model, data=SimpleNamespace(test_x=x), inputs=lambda u: u.float() / 255,
                          autocast=contextlib.nullcontext)
    sec, arrays = compute_attention(run, make_options(samples=5, map_images=2, attention_batch=2))
    assert len(sec["layers"]) == 9 and sec["maps"]["query"] == "mean over queries"
    assert [lay["tokens"] for lay in sec["layers"]] == [16, 16, 4, 4, 4, 4, 4, 4, 4]
    assert sec["layers"][0]["spacing_px"] == 8.0
    assert arrays["rollout_0"].shape == (2, 4, 4) and arrays["query_8"].shape == (2, 2, 2)
    for lay in sec["layers"]:
        assert 0 < lay["entropy_norm"] <= 1 + 1e-6 and lay["distance_px"] > 0
    # rollout restarts at each stage: its first layer's rollout is the identity-mixed attention itself
    r0 = arrays["rollout_2"]
    assert r0.shape == (2, 2, 2) and np.all(r0 > 0)


def test_run_report_renders_in_chromium(analyzed, tmp_path):
    from PIL import Image

    from test_report_html import EXTERNAL, MIN_DISTINCT_COLOURS, chromium

    run, _ = analyzed
    page = tmp_path / "run.html"
    assert main(["report", str(run), "-o", str(page)]) == 0
    shot = tmp_path / "shot.png"
    dom = chromium(["--dump-dom", f"--screenshot={shot}", "--window-size=1200,2000", page.as_uri()], tmp_path).stdout
    for title in ("Attention", "Robustness", "Calibration", "Efficiency"):
        assert f">{title}</h2>" in dom
    assert dom.count("<table") >= 3 and not EXTERNAL.search(dom)
    img = np.asarray(Image.open(shot).convert("RGB"))
    assert len(np.unique(img.reshape(-1, 3), axis=0)) >= MIN_DISTINCT_COLOURS


def test_run_report_without_analysis_says_how_to_get_one(trained, tmp_path):
    out = tmp_path / "r.html"
    assert main(["report", str(trained), "-o", str(out)]) == 0
    text = out.read_text()
    assert "No analysis yet" in text and "vitlab analyze" in text and "<img " not in text
    assert not (trained / "analysis").exists()  # -o elsewhere: the run directory is untouched


def test_timings_use_one_thread_whatever_the_process_has_and_flag_a_busy_machine(trained, tmp_path, monkeypatch):
    """Standalone `vitlab analyze` (all cores) and an analysis in a study (its worker's share) time the
    model the same way: with `timing_threads` (default 1), recorded with the load average; a load above
    the core count is flagged."""
    from vitlab.analysis import efficiency

    run = tmp_path / "tiny"
    shutil.copytree(trained, run)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    seen = []
    real_measure = efficiency.measure
    monkeypatch.setattr(efficiency, "measure", lambda *a: seen.append(torch.get_num_threads()) or real_measure(*a))
    monkeypatch.setattr(efficiency, "load_average", lambda: 64.0 * (efficiency.os.cpu_count() or 1))
    messages = []
    try:
        eff = analyze_run(run, sections="efficiency", progress=messages.append, **FAST)["efficiency"]
        assert torch.get_num_threads() == 2  # restored
    finally:
        torch.set_num_threads(before)
    assert seen == [1] and eff["threads"] == 1 and eff["busy"] is True and "busy" in eff["warning"]
    assert any("warning: the machine was busy" in m for m in messages)
    assert efficiency.busy_warning(1.5, cores=2) is None and efficiency.busy_warning(2.5, cores=2)
