"""The `efficiency` section: parameters, FLOPs, batch-1 latency and batch-256 throughput of the run's
model on the run's device, eager and `torch.compile`d.

Latency = median wall time of `latency_calls` single-image forward passes after `warmup_calls`
(each call synchronized on CUDA); throughput = median images/s of `throughput_calls` batches. The
numbers are those of the machine the analysis ran on: `device`, `threads`, and the load average
at the start are recorded beside them.
"""
from __future__ import annotations

import os
import statistics
import time

import torch

from ..models import count_flops, count_params
from ..train.precision import COMPUTE_DTYPE_NAMES


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn, calls: int, warmup: int, device: torch.device) -> list[float]:
    """Wall times in seconds of `calls` calls of fn() after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return times


def measure(forward, run, opts) -> dict:
    """Latency (ms, batch 1) and throughput (img/s, batch `throughput_batch`) of forward(x)."""
    x_all = run.data.test_x
    one = run.inputs(x_all[:1])
    reps = -(-opts.throughput_batch // len(x_all))
    big = run.inputs(x_all.repeat(reps, 1, 1, 1)[:opts.throughput_batch])

    def call(x):
        def fn():
            with torch.inference_mode(), run.autocast():
                forward(x)
        return fn

    lat = time_calls(call(one), opts.latency_calls, opts.warmup_calls, run.device)
    thr = time_calls(call(big), opts.throughput_calls, min(opts.warmup_calls, 2), run.device)
    return {"latency_ms_b1": 1000 * statistics.median(lat),
            "latency_ms_b1_p90": 1000 * statistics.quantiles(lat, n=10)[-1] if len(lat) > 1 else 1000 * lat[0],
            "throughput_img_s_b256": opts.throughput_batch / statistics.median(thr)}


def compute_efficiency(run, opts) -> dict:
    model = run.model
    sec = {
        "params": count_params(model),
        "flops": count_flops(model, model.input_size, run.data.in_chans),
        "device": str(run.device),
        "threads": torch.get_num_threads(),
        "precision": COMPUTE_DTYPE_NAMES[run.amp],  # the run's own precision
        "throughput_batch": opts.throughput_batch,
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    sec.update(measure(model, run, opts))
    if opts.compile:
        t = time.perf_counter()
        try:
            compiled = torch.compile(model)
            with torch.inference_mode(), run.autocast():
                compiled(run.inputs(run.data.test_x[:1]))
            sec["compile_time_s"] = time.perf_counter() - t
            sec["compiled"] = measure(compiled, run, opts)
        except Exception as e:  # no C++ compiler, unsupported backend: report, do not fail the analysis
            sec["compiled"] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]}
    return sec
