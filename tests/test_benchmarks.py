"""The benchmark scripts run and write what they promise: realtime.py's JSON rows, and the GPU
check's dry run (every phase on the CPU) with only the packages the GPU image has."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The GPU image lacks these (/work/.library/device/KINDS.md): the device check must not import them.
BLOCKED = ("soundfile", "sounddevice", "mido", "pretty_midi", "librosa", "fluidsynth", "scipy")
ROW_KEYS = {"impl", "model", "device", "dtype", "setting", "streams", "frames", "p50_ms", "p95_ms", "p99_ms",
            "max_ms", "rtf", "threads", "part"}

BLOCKER = f"""
import importlib.abc, sys

class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ModuleNotFoundError(f"{{name}} is blocked (not on the GPU image)", name=name)
        return None

sys.meta_path.insert(0, _Blocker())
"""


def _env(tmp_path: Path, golden: Path | None = None, block: bool = False) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    paths = [str(ROOT)]
    if block:
        (tmp_path / "blocker").mkdir()
        (tmp_path / "blocker" / "sitecustomize.py").write_text(BLOCKER)
        paths.insert(0, str(tmp_path / "blocker"))
    env["PYTHONPATH"] = os.pathsep.join(paths)
    if golden is not None:
        env["OPENMRT_GOLDEN"] = str(golden)
    return env


def test_realtime_tiny_writes_schema_rows_and_histogram(tmp_path):
    out = tmp_path / "rt.json"
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "realtime.py"), "--device", "cpu", "--model", "tiny",
                        "--frames", "6", "--warmup", "1", "--threads", "1", "--rounds", "2",
                        "--settings", "eager,graphs", "--out", str(out)],
                       env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert {"cpu", "cores", "torch"} <= set(doc["machine"])
    frame = [r for r in doc["rows"] if r["part"] == "frame" and r["setting"] == "eager"]
    assert len(frame) == 1
    r = frame[0]
    assert ROW_KEYS <= set(r), ROW_KEYS - set(r)
    assert (r["impl"], r["model"], r["device"], r["dtype"], r["streams"], r["threads"]) == (
        "openmrt", "tiny", "cpu", "float32", 1, 1)
    # Two rounds of ceil(6 / 2) frames, pooled; the statistics describe those frames.
    assert r["frames"] == 6 == len(r["frames_ms"]) and len(r["rounds"]) == 2
    assert 0 < min(r["frames_ms"]) <= r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"] <= r["max_ms"] == max(r["frames_ms"])
    assert r["rtf"] == pytest.approx(40.0 / r["p50_ms"], rel=1e-2)
    assert r["fastest"] is True
    # The LM and codec parts are timed inside the same frames: together never longer than the frame.
    parts = {x["part"]: x for x in doc["rows"] if x["setting"] == "eager" and x["part"] != "frame"}
    assert set(parts) == {"lm", "codec"}
    for lm, codec, whole in zip(parts["lm"]["frames_ms"], parts["codec"]["frames_ms"], r["frames_ms"], strict=True):
        assert 0 < lm and 0 < codec and lm + codec <= whole + 0.002
    # A setting whose API is missing is a row that says so, not a crash.
    g = [x for x in doc["rows"] if x["setting"] == "graphs"]
    assert len(g) == 1 and g[0]["frames"] == 0 and g[0]["error"]
    assert (tmp_path / "rt.png").stat().st_size > 1000 and doc["histogram"] == "rt.png"


def test_realtime_rejects_peer_for_other_models(tmp_path):
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "realtime.py"), "--model", "tiny",
                        "--peer", "official", "--out", str(tmp_path / "x.json")],
                       env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "mrt2_small" in p.stderr
    assert not (tmp_path / "x.json").exists()


@pytest.mark.slow
def test_device_check_dry_run_with_only_the_gpu_image_packages(tmp_path, golden_dir):
    out = tmp_path / "out"
    env = dict(_env(tmp_path, golden_dir, block=True), PYTHON=sys.executable)
    p = subprocess.run(["bash", str(ROOT / "benchmarks" / "device_check.sh"), "--dry-run", "--out", str(out)],
                       env=env, capture_output=True, text=True, timeout=900)
    report = json.loads((out / "device_check.json").read_text())
    phases = report["phases"]
    assert p.returncode == 0, json.dumps({k: {a: b for a, b in v.items() if a != "result"}
                                          for k, v in phases.items()})[-3000:]
    assert list(phases) == ["env", "correctness", "small", "base", "v1", "sweep", "kernels"]
    assert all(e["status"] == "ok" for e in phases.values())
    # The blocker was active, and the phases imported none of the blocked packages.
    env_r = phases["env"]["result"]
    assert all(env_r["packages"][m].startswith("missing") for m in BLOCKED)
    assert env_r["phase_imports_forbidden"] == []
    c = phases["correctness"]["result"]
    assert c["lm_golden_sampled"]["tokens_equal"] == "144/144"  # the reduced golden, noise injected
    assert c["lm_golden_greedy"]["pass"] and c["codec_golden"]["pass"]
    assert c["bf16_logits"]["finite"] and c["bf16_logits"]["capped_max_err"] > 0  # bf16 really ran
    small = {(r["setting"], r["part"]): r for r in phases["small"]["result"]["rows"]}
    assert small[("eager", "frame")]["frames"] == 10 and small[("eager", "frame")]["p50_ms"] > 0
    assert (out / "small.json").is_file() and (out / "base.json").is_file()
    sweep = phases["sweep"]["result"]
    assert sweep["points"] and sweep["points"][0]["streams"] == 1
    assert phases["kernels"]["result"]["eager"]["total"] > 100  # aten ops of one tiny frame
    v1 = phases["v1"]["result"]  # the v1 golden through the engine's chunk decoder (eager here, graphs on a GPU)
    assert v1["v1_golden"]["tiny_cfg_sampled"] == "800/800 steps equal" and v1["tiny_float32_eager"]["p50_ms"] > 0


FAKE_PEER = """
import argparse, json, sys
ap = argparse.ArgumentParser()
ap.add_argument("mode"); ap.add_argument("--dtype"); ap.add_argument("--threads", type=int)
ap.add_argument("--warmup", type=int); ap.add_argument("--frames", type=int); ap.add_argument("--out")
a = ap.parse_args()
with open(__file__ + ".log", "a") as f:
    f.write(" ".join(sys.argv[1:]) + "\\n")
if a.mode == "lm":  # a peer process that hangs: the benchmark must time it out and go on
    import time
    time.sleep(600)
scale = {"f32": 100.0, "bf16": 300.0}[a.dtype] * {"system": 1.0, "lm": 0.6, "codec": 0.3}[a.mode]
json.dump({"frames_ms": [scale + i for i in range(a.frames)], "threads": {"avg_busy_cores": 1.5},
           "loadavg_start": [0.1, 0, 0], "loadavg_end": [9.0, 0, 0], "setup_s": {"build": 1.0, "compile": 2.0},
           "fingerprint": {"lm": {"ok": True}, "codec": {"ok": True}}, "versions": {"jax": "fake"}},
          open(a.out, "w"))
"""


def test_realtime_peer_rows_interleaved_rounds(tmp_path):
    """The peer path end to end with a stand-in for the official bench.py (its CLI and JSON):
    every peer setting and mode in every round, order reversed in the second, rows pooled."""
    peer = tmp_path / "peer"
    peer.mkdir()
    (peer / "bench.py").write_text(FAKE_PEER)
    out = tmp_path / "p.json"
    # openmrt's own setting is unavailable on the CPU (graphs), so only the stand-in runs.
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "realtime.py"), "--device", "cpu",
                        "--model", "mrt2_small", "--settings", "graphs", "--peer", "official", "--peer-dir", str(peer),
                        "--peer-python", sys.executable, "--peer-settings", "f32", "bf16x1", "--peer-parts", "system",
                        "codec", "--threads", "2", "--frames", "8", "--warmup", "3", "--out", str(out)],
                       env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    calls = (peer / "bench.py.log").read_text().splitlines()
    first = ["system --dtype f32 --threads 2", "codec --dtype f32 --threads 2", "system --dtype bf16 --threads 1",
             "codec --dtype bf16 --threads 1"]
    assert [" ".join(c.split()[:5]) for c in calls] == first + first[::-1]
    assert all("--warmup 3 --frames 4" in c for c in calls)  # 8 frames over 2 rounds
    rows = {(r["impl"], r["dtype"], r["part"]): r for r in json.loads(out.read_text())["rows"]}
    f32 = rows[("official", "float32", "frame")]
    assert f32["frames"] == 8 and f32["p50_ms"] == pytest.approx(101.5) and f32["max_ms"] == 103.0
    assert f32["threads"] == 2 and f32["fastest"] is True and f32["disturbed_rounds"] == 2  # load 9 at the end
    assert rows[("official", "bfloat16", "frame")]["threads"] == 1
    assert rows[("official", "bfloat16", "frame")].get("fastest") is None
    assert rows[("official", "float32", "codec")]["p50_ms"] == pytest.approx(31.5)
    assert rows[("openmrt", "float32", "frame")]["unavailable"] is True


def test_realtime_times_out_a_hung_process_and_goes_on(tmp_path):
    peer = tmp_path / "peer"
    peer.mkdir()
    (peer / "bench.py").write_text(FAKE_PEER)
    out = tmp_path / "t.json"
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "realtime.py"), "--device", "cpu",
                        "--model", "mrt2_small", "--settings", "graphs", "--peer", "official", "--peer-dir", str(peer),
                        "--peer-python", sys.executable, "--peer-parts", "lm", "system", "--threads", "1",
                        "--rounds", "1", "--frames", "4", "--timeout", "5", "--out", str(out)],
                       env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    doc = json.loads(out.read_text())
    rows = {r["part"]: r for r in doc["rows"] if r["impl"] == "official"}
    assert rows["lm"]["frames"] == 0 and "timed out after 5 s" in rows["lm"]["error"]
    assert rows["frame"]["frames"] == 4 and doc["complete"] is True  # the next configuration still ran
