"""Study-report sections built from the runs' analysis.json (Attention, Robustness, Efficiency) and mCE."""
from __future__ import annotations

import io
import math

import numpy as np
import pytest

from test_report_data import FACTOR, study_meta, study_records
from vitlab.analysis.analyze import ANALYSIS_FORMAT, analysis_path
from vitlab.analysis.attention import MAPS_FILE
from vitlab.analysis.corruptions import CORRUPTIONS
from vitlab.analysis.robustness import (corruption_error, error_profile, mce, mean_profile,
                                        relative_corruption_error, summarize)
from vitlab.io import atomic_write_bytes, atomic_write_json
from vitlab.report import build_report, render_html
from vitlab.report.analysis_sections import study_sections
from vitlab.study.index import run_dir

LEVEL_ENTROPY = {"softmax": 0.6, "zscore": 0.97, "cosine": 0.8}


def fake_analysis(label: str, seed: int, acc: float) -> dict:
    rng = np.random.default_rng(seed)
    base = LEVEL_ENTROPY[label]
    layers = [{"name": f"blocks.{i}.attn", "tokens": 65, "keys": 65, "entropy_norm": base - 0.05 * i + 0.01 * seed,
               "entropy": (base - 0.05 * i) * math.log(65), "max_weight": 0.1 + 0.1 * i, "distance_px": 10.0 - i,
               "max_logit": 3.0 + i, "qk_spectral_norm": 2.0, "rank_residual": 0.5, "token_cosine": 0.3,
               "heads": []} for i in range(3)]
    corruptions = {name: [max(0.0, acc - 0.04 * s - 0.02 * k % 3 + 0.01 * rng.standard_normal()) for s in range(1, 6)]
                   for k, name in enumerate(CORRUPTIONS)}
    rob = {"images": 1000, "seed": 0, "batch": 500, "clean_top1": acc, "corruptions": corruptions, "complete": True}
    rob.update(summarize(corruptions, acc))
    eff = {"params": 100_000, "flops": 20_000_000, "latency_ms_b1": 2.0 + LEVEL_ENTROPY[label] + 0.1 * seed,
           "throughput_img_s_b256": 1000.0, "device": "cpu", "threads": 2, "precision": "float32",
           "compiled": {"latency_ms_b1": 1.5, "throughput_img_s_b256": 1500.0}}
    return {"format": ANALYSIS_FORMAT, "attention": {"samples": 256, "layers": layers,
                                                     "maps": {"query": "class token", "images": [3, 5]}},
            "robustness": rob, "efficiency": eff}


@pytest.fixture
def study(tmp_path):
    records = study_records(statuses={("cosine", 2): "failed"})
    accs = {"softmax": 0.70, "zscore": 0.73, "cosine": 0.68}
    for r in records:
        if r.status != "completed":
            continue
        d = run_dir(tmp_path, r.run_id)
        atomic_write_json(analysis_path(d), fake_analysis(r.level_label, r.seed, accs[r.level_label]))
        buf = io.BytesIO()
        np.savez(buf, images=np.zeros((2, 3, 32, 32), np.uint8),
                 **{f"rollout_{i}": np.random.default_rng(i).random((2, 8, 8)).astype(np.float32) for i in range(3)})
        atomic_write_bytes(d / "analysis" / MAPS_FILE, buf.getvalue())
    return tmp_path, records


def test_study_sections_have_tables_figures_and_ci(study):
    study_dir, records = study
    sections = study_sections(study_meta(), records, study_dir, study_dir / "report")
    assert [t for _, t, _ in sections] == ["Attention", "Robustness", "Efficiency"]
    html = {t: body for _, t, body in sections}
    assert html["Attention"].count("<table>") == 1 and html["Attention"].count("<img ") == 3  # entropy + 2 rollout grids
    assert html["Robustness"].count("<img ") == 2 and "mCE" in html["Robustness"] and "frost" in html["Robustness"]
    assert html["Efficiency"].count("<img ") == 1
    assert "inference throughput b256 (img/s)" in html["Efficiency"]  # a forward pass, not training img/s
    assert "n=2/3" in html["Attention"]  # the failed cosine run is counted as missing
    assert "[" in html["Robustness"] and "(no interval)" not in html["Attention"]
    for name in (f"{FACTOR}_attn_entropy", f"{FACTOR}_rollout_0", f"{FACTOR}_severity", f"{FACTOR}_corruptions",
                 f"{FACTOR}_acc_latency"):
        assert (study_dir / "report" / "figures" / f"{name}.png").is_file(), name
        assert (study_dir / "report" / "figures" / f"{name}.svg").is_file(), name


def test_reference_level_mce_is_100_on_average(study):
    study_dir, records = study
    body = {t: b for _, t, b in study_sections(study_meta(), records, study_dir, study_dir / "report")}["Robustness"]
    row = body.split("<td>softmax</td>")[1].split("</tr>")[0]
    cells = row.split("<td>")
    assert cells[4].startswith("100.0")  # mean over seeds of each seed's mCE vs the seed-mean reference


def test_report_html_includes_the_sections_in_the_toc(study):
    study_dir, records = study
    rep = build_report(study_meta(), records, study_dir / "report")
    rep.extra = study_sections(study_meta(), records, study_dir, study_dir / "report")
    text = render_html(rep)
    for anchor in ("attention", "robustness", "efficiency"):
        assert f'href="#{anchor}"' in text and f'id="{anchor}"' in text
    assert text.index('id="efficiency"') < text.index('id="methods"')


def test_no_analysis_means_no_sections(tmp_path):
    assert study_sections(study_meta(), study_records(), tmp_path, tmp_path / "report") == []


# ------------------------------------------------------------------------------------- CE and mCE


def test_corruption_errors_match_the_paper_formulas():
    f, ref = [0.2, 0.3, 0.4, 0.5, 0.6], [0.4, 0.5, 0.6, 0.7, 0.8]
    assert corruption_error(f, ref) == pytest.approx(2.0 / 3.0)
    assert relative_corruption_error(f, 0.1, ref, 0.3) == pytest.approx((2.0 - 0.5) / (3.0 - 1.5))
    sec = {"clean_top1": 0.9, "corruptions": {"fog": [0.8] * 5, "snow": [0.6] * 5, "frost": [0.0] * 5}}
    ref_sec = {"clean_top1": 0.8, "corruptions": {"fog": [0.6] * 5, "snow": [0.6] * 5, "frost": [0.5] * 5}}
    profile = error_profile(ref_sec)
    # frost is not faithful: left out. fog: 0.2/0.4, snow: 0.4/0.4
    assert mce(sec, profile) == pytest.approx((0.5 + 1.0) / 2)
    assert mce(sec, profile, relative=True) == pytest.approx(((0.2 - 0.1) / (0.4 - 0.2) + (0.4 - 0.1) / (0.4 - 0.2)) / 2)
    both = mean_profile([error_profile(sec), profile])
    assert both["errors"]["fog"] == pytest.approx([0.3] * 5) and both["clean_error"] == pytest.approx(0.15)
