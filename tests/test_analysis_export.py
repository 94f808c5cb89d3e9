"""ONNX export: every attention normalization round-trips (tiny models), `vitlab export` end to end,
and a failing export names the operator. Skipped only where onnx / onnxscript are not installed."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")

from vitlab.analysis import export as ex  # noqa: E402
from vitlab.cli import main  # noqa: E402
from vitlab.config import ATTN_NORMS  # noqa: E402
from vitlab.io import read_json_object  # noqa: E402
from vitlab.models import create_model  # noqa: E402


def round_trip(model, size=32):
    model.eval()
    data = ex.onnx_bytes(model, torch.randn(ex.EXPORT_BATCH, 3, size, size))
    x = torch.randn(ex.CHECK_BATCH, 3, size, size)  # another batch size: the batch dimension is dynamic
    with torch.no_grad():
        ref = model(x).numpy()
    got, engine = ex.run_onnx(data, x.numpy())
    return float(np.abs(got - ref).max()), data


@pytest.mark.parametrize("norm", ATTN_NORMS)
def test_every_attention_normalization_exports(norm):
    torch.manual_seed(0)
    model = create_model("vit_nano", num_classes=3, attn_norm=norm, dim=16, depth=1, num_heads=2, patch_size=8)
    diff, data = round_trip(model)
    assert diff <= ex.MAX_LOGIT_DIFF, (norm, diff)
    import onnx

    m = onnx.load_from_string(data)
    assert max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic batch


def test_mobilevit_exports():
    torch.manual_seed(0)
    model = create_model("mobilevit_xxs", num_classes=3, width_mult=0.25, num_heads=2)
    diff, _ = round_trip(model)
    assert diff <= ex.MAX_LOGIT_DIFF


def test_op_named_in_export_errors(monkeypatch):
    assert ex.op_from_error("Unsupported: aten::_foo_bar.default could not be converted") == "aten::_foo_bar.default"
    assert ex.op_from_error("no decomposition for aten.weird_op.Tensor") == "aten.weird_op.Tensor"
    assert ex.op_from_error("something else") is None

    def boom(*a, **k):
        raise RuntimeError("ConversionError: Unsupported FX nodes: {'call_function': ['aten.frobnicate.default']}\nmore")

    monkeypatch.setattr(torch.onnx, "export", boom)
    model = create_model("vit_nano", num_classes=3, attn_norm="lsa", dim=16, depth=1, num_heads=2, patch_size=8)
    with pytest.raises(ex.ExportError, match=r"lsa attention\): operator aten.frobnicate.default is not supported"):
        ex.onnx_bytes(model, torch.randn(2, 3, 32, 32))


def test_cli_export_writes_a_checked_model(tmp_path, capsys):
    from test_analysis_run import TINY
    from vitlab.config import load_config
    from vitlab.training import run_training

    run = tmp_path / "run"
    run_training(load_config(None, TINY), run)
    assert main(["export", str(run), "--format", "onnx"]) == 0
    out = capsys.readouterr().out
    assert "max |Δ logit|" in out and (run / "analysis" / "model.onnx").stat().st_size > 1000
    eff = read_json_object(run / "analysis" / "analysis.json")["efficiency"]
    assert eff["onnx"]["max_abs_diff"] <= ex.MAX_LOGIT_DIFF and eff["onnx"]["opset"] >= 17
    if shutil.which("true") and eff["onnx"].get("latency_ms_b1") is not None:
        assert read_json_object(run / "summary.json")["onnx_latency_ms_b1"] == eff["onnx"]["latency_ms_b1"]
