"""Shared fixtures: where the golden vectors live."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(os.environ.get("OPENMRT_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def _golden_dir() -> Path:
    return Path(os.environ.get("OPENMRT_GOLDEN", SHARED / "golden"))


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    """shared/golden; missing: a failure in CI (where it must be), a skip elsewhere."""
    d = _golden_dir()
    if not d.is_dir():
        msg = f"golden vectors not found at {d} (set OPENMRT_GOLDEN)"
        if os.environ.get("CI") or os.environ.get("OPENMRT_CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return d
