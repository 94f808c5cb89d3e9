"""Mixed precision: what `train.amp` resolves to on this machine, and the autocast context for it.

`train.amp=auto` resolves once, when a run starts, to `bf16` on CUDA and on a CPU with bf16 matrix
units (AMX or AVX512-BF16), where bf16 autocast trains the study models faster than float32 (see
benchmarks/RESULTS.md, "bf16 on the CPU"), and to `none` elsewhere. The resolved precision is
recorded in summary.json and in every checkpoint (`amp`), and a resumed run or an analysis uses the
recorded one: a run never changes precision when it moves to another machine.

The parts that are slow in bf16 on a CPU are handled where they are computed: softmax attention
avoids the fused kernel's bf16 backward (`models.attention.softmax_attention`), the ViT's patch
embedding stays float32 (`models.vit.ViT.embed`: its bf16 output costs accuracy), and MobileViT keeps
its convolution + BatchNorm + SiLU units in float32 (`models.mobilevit.ConvBNAct`).
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch

PRECISIONS = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
"""A resolved precision (what summary.json and checkpoints record) -> the autocast dtype (None: float32)."""

COMPUTE_DTYPE_NAMES = {"none": "float32", "bf16": "bfloat16", "fp16": "float16"}
"""A resolved precision -> the dtype its matrix products compute in, as reports name it."""

BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
"""/proc/cpuinfo flags of x86 bf16 matrix/dot-product units; with either one bf16 GEMMs run several
times faster than float32 ones (AVX512-BF16 alone: ≈ 3.6× on `F.linear` at vit_study_b's shapes)."""

CPUINFO = Path("/proc/cpuinfo")

LEGACY_PRECISION = "none"
"""The precision of a CPU run whose checkpoint predates the `amp` record: `auto` meant float32 on CPU."""


def cpu_has_bf16_units() -> bool:
    """True when the CPU has AMX-BF16 or AVX512-BF16 (torch's probe, else the /proc/cpuinfo flags)."""
    probes = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    if all(p is not None for p in probes):
        return any(p() for p in probes)
    try:
        flags = CPUINFO.read_text().split()
    except OSError:
        return False
    return any(f in flags for f in BF16_CPU_FLAGS)


def resolve_amp(requested: str, device: torch.device) -> str:
    """`train.amp` -> the precision this run computes in: none, bf16 or fp16."""
    if requested != "auto":
        return requested
    if device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16_units()):
        return "bf16"
    return "none"


def legacy_amp(requested: str, device: torch.device) -> str:
    """The precision a run recorded before `amp` was written into checkpoints: `auto` then meant bf16
    on CUDA and float32 elsewhere."""
    if requested != "auto":
        return requested
    return "bf16" if device.type == "cuda" else LEGACY_PRECISION


def check_recorded(amp, requested: str) -> str:
    """The precision a checkpoint recorded (untrusted input): one of PRECISIONS, and the one that
    `requested` (train.amp) forces unless it is `auto`. ValueError otherwise."""
    if not isinstance(amp, str) or amp not in PRECISIONS:
        raise ValueError(f"amp {amp!r} is not one of {', '.join(PRECISIONS)}")
    if requested != "auto" and amp != requested:
        raise ValueError(f"amp {amp!r} does not fit train.amp={requested}")
    return amp


def amp_dtype(amp: str) -> torch.dtype | None:
    """The autocast dtype of a resolved precision (None: float32, no autocast)."""
    return PRECISIONS[amp]


def autocast(device: torch.device, amp: str):
    """The autocast context of a resolved precision on `device` (a no-op for `none`)."""
    dtype = amp_dtype(amp)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
