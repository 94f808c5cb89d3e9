"""Where the real datasets are for the tests: the data root the code itself uses ($VITLAB_DATA_ROOT,
else ~/.cache/vitlab/data). Absent data skips the test, unless VITLAB_REQUIRE_DATA=1 (CI sets it
where it provides the data): then it is a failure, so a moved data folder cannot pass unnoticed."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from vitlab.data.files import ROOT_ENV, resolve_root

REQUIRE_ENV = "VITLAB_REQUIRE_DATA"


def real_data_root(folder: str) -> Path:
    """The data root holding `folder` (e.g. 'fashion-mnist'), or skip/fail the calling test."""
    root = resolve_root(None)
    if (root / folder).is_dir():
        return root
    why = f"{root / folder} not found (set ${ROOT_ENV} to the data root)"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but {why}")
    pytest.skip(why)
