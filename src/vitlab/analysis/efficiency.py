"""The `efficiency` section: parameters, FLOPs, batch-1 latency and batch-256 throughput of the run's
model on the run's device, eager and `torch.compile`d.

Latency = median wall time of `latency_calls` single-image forward passes after `warmup_calls`
(each call synchronized on CUDA); throughput = median images/s of `throughput_calls` batches. The
numbers are those of the machine the analysis ran on: `device`, `threads`, and the load average
at the start are recorded beside them.

Every timing runs with `timing_threads` CPU threads (default 1), whatever the process had: `vitlab
analyze` on its own would otherwise use every core and an analysis inside a study its worker's share,
and on a loaded machine many threads spin against other jobs (a model measured 220 ms with 2 threads
and 0.8 ms with 1 on a busy 2-core machine). A load average above the core count is recorded as
`busy`, with a warning that the report and the terminal show.
"""
from __future__ import annotations

import contextlib
import os
import statistics
import time

import torch

from ..models import count_flops, count_params
from ..training.precision import COMPUTE_DTYPE_NAMES


def load_average() -> float | None:
    """The 1-minute load average (None where the system has none)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def busy_warning(load: float | None, cores: int | None = None) -> str | None:
    """A warning when the load average exceeds the core count: timings are then slower and noisier."""
    cores = cores or os.cpu_count() or 1
    if load is None or load <= cores:
        return None
    return (f"the machine was busy during timing (load average {load:.1f} on {cores} cores): latency and "
            "throughput are slower and noisier than on an idle machine; re-measure on a quiet one "
            "(vitlab analyze RUN --sections efficiency --force)")


@contextlib.contextmanager
def cpu_threads(n: int):
    """torch's intra-op threads set to n for the block, restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


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
    load = load_average()
    sec = {
        "params": count_params(model),
        "flops": count_flops(model, model.input_size, run.data.in_chans),
        "device": str(run.device),
        "threads": opts.timing_threads,
        "precision": COMPUTE_DTYPE_NAMES[run.amp],  # the run's own precision
        "throughput_batch": opts.throughput_batch,
        "load_average": load,
        "cores": os.cpu_count(),
    }
    warning = busy_warning(load)
    sec["busy"] = warning is not None
    if warning:
        sec["warning"] = warning
    with cpu_threads(opts.timing_threads):
        _measure_all(sec, model, run, opts)
    return sec


def _measure_all(sec: dict, model, run, opts) -> None:
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
