"""`openmrt bench soak`: the JSON and PNG it writes (their form, not the timing: that is a measurement)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from openmrt.engine.bundle import random_bundle
from openmrt.engine.soak import soak
from openmrt.errors import ControlError


def test_bench_soak_writes_json_and_png(tmp_path):
    out = tmp_path / "soak.json"
    r = subprocess.run([sys.executable, "-m", "openmrt", "bench", "soak", "--model", "random:tiny", "--seconds", "3",
                        "--hog", "-o", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    d = json.loads(out.read_text())
    for key in ("frames", "dropped_frames", "p50_ms", "p99_ms", "max_ms", "buffer", "hog", "machine", "timeline"):
        assert key in d, key
    assert d["buffer"] == 2048 and d["hog"] is True and d["seconds"] == 3
    assert d["frames"] >= 3 and 0 <= d["dropped_frames"] <= 3 * 25 + 1
    assert 0 < d["p50_ms"] <= d["p99_ms"] <= d["max_ms"]
    tl = d["timeline"]
    assert len(tl["compute_ms"]) == len(tl["buffer_fill"]) == len(tl["t_s"]) == len(tl["dropped_frames"]) > 0
    assert np.all(np.diff(tl["dropped_frames"]) >= 0)  # cumulative
    assert max(tl["buffer_fill"]) <= 8192 + 3 * 1920
    assert 60 <= len(tl["buffer_low"]) <= 80 and min(tl["buffer_low"]) >= 0  # 3 s of playback, per 40 ms
    assert d["machine"]["cores"] >= 1 and "load_average_at_start" in d["machine"]
    png = out.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_bench_soak_rejects_bad_seconds():
    with pytest.raises(ControlError, match="--seconds"):
        soak(random_bundle("tiny", "demo"), float("nan"))
