"""`vitlab demo`: a small attention-normalization study on the built-in synthetic data, end to end."""
from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

from .report import report_main
from .study import run_study, summary_table

DEMO_SPEC = files("vitlab") / "demo.yaml"


def run_demo(out: str | Path = "demo-out", workers: int | None = None) -> bool:
    """Run (or resume) the demo study in `out`, print its table and write the HTML report."""
    if workers is None:
        workers = 2 if (os.cpu_count() or 1) >= 2 else 1
    result = run_study(str(DEMO_SPEC), out, workers=workers)
    print(summary_table(out))
    print(f"report: {report_main(out)}")
    return result.ok
