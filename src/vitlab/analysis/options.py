"""The knobs of `vitlab analyze` (typed, documented, validated like every vitlab config)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..schema import build, knob, suggest
from ..errors import ConfigError

SECTIONS = ("attention", "robustness", "calibration", "efficiency")
"""The analyses of a run, in the order they are computed and shown."""

CIFAR_C_IMAGES = 10_000
"""CIFAR-10-C / CIFAR-100-C corrupt the 10,000 test images; the sweep uses at most this many."""


@dataclass
class AnalysisOptions:
    sections: list[str] = knob(list(SECTIONS), "analyses to compute: attention, robustness, calibration, efficiency")
    samples: int = knob(256, "attention: test images in the fixed, seeded sample the statistics are averaged over")
    map_images: int = knob(8, "attention: images of that sample (the first ones) whose attention maps and rollouts are drawn")
    attention_batch: int = knob(32, "attention: images per forward pass while recording weights (memory bound)")
    corruption_images: Optional[int] = knob(None, "robustness: corrupt a stratified, seeded subset of this many test "
                                                  f"images (default: the whole test set, at most {CIFAR_C_IMAGES:,})")
    corruption_batch: int = knob(2000, "robustness: images corrupted at once (the random stream of each batch is "
                                       "seeded separately, so results depend on it); classified in the run's "
                                       "train.eval_batch_size")
    seed: int = knob(0, "seed of the image samples and of every corruption's random numbers")
    reliability_bins: int = knob(15, "calibration: equal-width confidence bins of the reliability diagram "
                                     "(Guo et al. 2017 use 15)")
    latency_calls: int = knob(50, "efficiency: timed batch-1 forward calls; the median is reported")
    warmup_calls: int = knob(10, "efficiency: untimed calls before timing (and after compiling)")
    throughput_batch: int = knob(256, "efficiency: batch size of the throughput measurement")
    throughput_calls: int = knob(5, "efficiency: timed calls at that batch size; the median rate is reported")
    compile: bool = knob(True, "efficiency: also time the torch.compile'd model")
    timing_threads: int = knob(1, "efficiency: CPU threads of every timing (latency, throughput; ONNX Runtime in "
                                  "`vitlab export`): 1 gives the same measurement standalone, in a study and on "
                                  "any core count, and suffers least from other jobs")

    def __post_init__(self):
        for s in self.sections:
            if s not in SECTIONS:
                raise ConfigError("analysis.sections", f"unknown section {s!r}; one of {', '.join(SECTIONS)}"
                                  + suggest(str(s), SECTIONS))
        if len(set(self.sections)) != len(self.sections):
            raise ConfigError("analysis.sections", f"a section is listed twice: {self.sections}")
        for name in ("samples", "map_images", "attention_batch", "corruption_batch", "reliability_bins",
                     "latency_calls", "throughput_batch", "throughput_calls", "timing_threads"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"analysis.{name}", f"must be > 0, got {getattr(self, name)}")
        if self.corruption_images is not None and self.corruption_images <= 0:
            raise ConfigError("analysis.corruption_images", f"must be > 0, got {self.corruption_images}")
        if self.seed < 0 or self.warmup_calls < 0:
            raise ConfigError("analysis.seed" if self.seed < 0 else "analysis.warmup_calls", "must be >= 0")


def make_options(**values) -> AnalysisOptions:
    """AnalysisOptions from keyword values (None = default), validated field by field."""
    return build(AnalysisOptions, {k: v for k, v in values.items() if v is not None}, "analysis.")
