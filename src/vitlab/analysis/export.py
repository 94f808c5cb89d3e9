"""`vitlab export RUN_DIR --format onnx`: the run's best checkpoint as RUN/analysis/model.onnx.

The model is exported with torch's ONNX exporter (`torch.onnx.export(..., dynamo=True)`, opset
`ONNX_OPSET`, a dynamic batch dimension), then checked: logits of a batch of test images of another
size than the export sample, from PyTorch and from the ONNX model (onnxruntime when installed, else
onnx's reference evaluator), must agree to `MAX_LOGIT_DIFF`. With onnxruntime, its batch-1 latency
(median of `ORT_LATENCY_CALLS`) joins the efficiency section of analysis.json.

Needs `pip install 'vitlab[export]'` (onnx, onnxscript, onnxruntime).
"""
from __future__ import annotations

import re
import statistics
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import UserError
from ..io import atomic_write_bytes, atomic_write_json, check_output_file
from ..rundir import ANALYSIS_DIR, ONNX_FILE
from ..safepath import writable_run_dir
from .analyze import analysis_path, merge_summary, read_analysis
from .efficiency import busy_warning, load_average
from .loading import check_run_dir, load_run
from .options import AnalysisOptions

FORMATS = ("onnx",)
ONNX_OPSET = 18
"""ONNX opset of the export (≥ 17: LayerNormalization is a native op)."""
MAX_LOGIT_DIFF = 1e-4
"""Largest |logit(PyTorch) − logit(ONNX)| accepted."""
EXPORT_BATCH = 2
"""Batch size of the sample the graph is traced with ..."""
CHECK_BATCH = 5
"""... and of the check, which therefore also tests the dynamic batch dimension."""
ORT_LATENCY_CALLS = 50
ORT_WARMUP_CALLS = 5
TIMING_THREADS = AnalysisOptions().timing_threads
"""Intra-op threads of the ONNX Runtime latency: the same as `vitlab analyze` times PyTorch with."""


class ExportError(Exception):
    """The export failed or the exported model disagrees with PyTorch (exit code 1, one line)."""


_OP = re.compile(r"(aten(?:::|\.)[A-Za-z_][\w.]*|prims(?:::|\.)[A-Za-z_][\w.]*|onnx::\w+|torch\.ops\.[\w.]+)")


def op_from_error(message: str) -> str | None:
    """The operator an exporter error message names (aten::xyz, aten.xyz.default, ...), if any."""
    m = _OP.search(message)
    return m.group(1) if m else None


def _require(module: str) -> None:
    try:
        __import__(module)
    except ImportError:
        raise UserError(f"ONNX export needs the {module} package: pip install 'vitlab[export]'") from None


def onnx_bytes(model: torch.nn.Module, sample: torch.Tensor, opset: int = ONNX_OPSET) -> bytes:
    """Serialized ONNX model of `model` with a dynamic batch dimension; ExportError naming the
    operator when the exporter cannot convert one."""
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(model, (sample,), dynamo=True, opset_version=opset,
                                        input_names=["images"], output_names=["logits"],
                                        dynamic_shapes=({0: batch},), verbose=False)
    except Exception as e:  # the exporter raises many types; name the op when it says which
        text = str(e)
        op = op_from_error(text)
        first = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(e).__name__)
        where = f"operator {op} is not supported" if op else first[:200]
        raise ExportError(f"ONNX export failed ({getattr(model, 'resolved', {}).get('attn_norm', '?')} attention): "
                          f"{where}") from None
    return program.model_proto.SerializeToString()


def run_onnx(model_bytes: bytes, x: np.ndarray) -> tuple[np.ndarray, str]:
    """Logits of the ONNX model for x, and the engine used (onnxruntime, else onnx's reference evaluator)."""
    try:
        import onnxruntime as ort
    except ImportError:
        from onnx.reference import ReferenceEvaluator

        return ReferenceEvaluator(model_bytes).run(None, {"images": x})[0], "onnx.reference"
    sess = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    return sess.run(None, {"images": x})[0], f"onnxruntime {ort.__version__}"


def ort_latency_ms(model_bytes: bytes, x1: np.ndarray, threads: int = TIMING_THREADS) -> float | None:
    """Median batch-1 latency (ms) in onnxruntime with `threads` intra-op threads (as `vitlab analyze`
    times PyTorch), or None without onnxruntime."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
    for _ in range(ORT_WARMUP_CALLS):
        sess.run(None, {"images": x1})
    times = []
    for _ in range(ORT_LATENCY_CALLS):
        t = time.perf_counter()
        sess.run(None, {"images": x1})
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def export_run(run_dir: str | Path, format: str = "onnx", out: str | Path | None = None,
               progress: Callable[[str], None] | None = None) -> dict:
    """Export the run's best checkpoint (default RUN/analysis/model.onnx), check it against PyTorch and
    return {path, max_abs_diff, engine, opset, latency_ms_b1 (onnxruntime) ...}. Raises ExportError
    when the export fails or the logits differ by more than MAX_LOGIT_DIFF."""
    if format not in FORMATS:
        raise UserError(f"--format: unknown export format {format!r}; one of {', '.join(FORMATS)}")
    p = writable_run_dir(check_run_dir(run_dir))  # analysis.json and summary.json are written there
    # The output is checked before the export work, as `vitlab report -o` does: a directory, `/`, a
    # read-only place, a path under a file or a symlink loop is one line now, not a traceback later.
    path = check_output_file(out, "export file") if out is not None else p / ANALYSIS_DIR / ONNX_FILE
    for module in ("onnx", "onnxscript"):
        _require(module)
    say = progress or (lambda _m: None)
    run = load_run(p, "cpu")
    model = run.model.to(memory_format=torch.contiguous_format).float().eval()
    test_x = run.data.test_x

    def inputs(k: int) -> torch.Tensor:
        return run.augment.eval_batch(test_x[:k]).contiguous()

    t0 = time.perf_counter()
    data = onnx_bytes(model, inputs(EXPORT_BATCH))
    atomic_write_bytes(path, data, root=None if out is not None else p)
    say(f"export: wrote {path} ({len(data) / 1e6:.2f} MB) in {time.perf_counter() - t0:.1f} s")
    x = inputs(CHECK_BATCH)
    with torch.no_grad():
        ref = model(x).numpy()
    got, engine = run_onnx(data, x.numpy())
    diff = float(np.abs(got - ref).max())
    result = {"path": str(path), "format": "onnx", "opset": ONNX_OPSET, "max_abs_diff": diff, "engine": engine,
              "check_batch": CHECK_BATCH, "bytes": len(data)}
    say(f"export: max |Δ logit| = {diff:.2e} over {CHECK_BATCH} test images ({engine})")
    if not diff <= MAX_LOGIT_DIFF:
        raise ExportError(f"{path}: ONNX logits differ from PyTorch by {diff:.2e} > {MAX_LOGIT_DIFF:.0e}")
    load = load_average()
    result["latency_ms_b1"] = ort_latency_ms(data, inputs(1).numpy())
    result.update(threads=TIMING_THREADS, load_average=load)
    if result["latency_ms_b1"] is not None:
        say(f"export: onnxruntime batch-1 latency {result['latency_ms_b1']:.3f} ms (median of {ORT_LATENCY_CALLS}, "
            f"{TIMING_THREADS} thread{'s' if TIMING_THREADS != 1 else ''})")
        if busy_warning(load):
            say(f"export: warning: {busy_warning(load)}")
    analysis = read_analysis(p) or {"format": 1}
    eff = analysis.setdefault("efficiency", {"complete": False})
    eff["onnx"] = {k: v for k, v in result.items() if k != "path"}
    atomic_write_json(analysis_path(p), analysis)
    merge_summary(p, analysis)
    return result
