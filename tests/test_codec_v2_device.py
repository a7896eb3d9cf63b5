"""scripts/device_train.sh --dry-run: the GPU recipe runs on the CPU at tiny size with only torch, numpy,
safetensors and tqdm importable (the GPU image lacks soundfile, librosa, pretty_midi, fluidsynth, numba),
writes at most 8 files under 16 MiB to $OUT, and its weights load; --prepare packs shards under a budget."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MISSING_ON_GPU = ("soundfile", "librosa", "pretty_midi", "mido", "fluidsynth", "basic_pitch", "numba", "mir_eval",
                  "sounddevice")


def _gpu_like_python(tmp: Path) -> Path:
    """A `python` that refuses to import what the GPU image lacks."""
    wrapper = tmp / "python"
    block = "; ".join(f"sys.modules[{m!r}] = None" for m in MISSING_ON_GPU)
    wrapper.write_text(f"#!/usr/bin/env bash\nexec {sys.executable} -c \"import sys, runpy; {block}; "
                       "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')\" \"$@\"\n")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    return wrapper


def test_dry_run_needs_only_the_gpu_image_packages(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": str(_gpu_like_python(tmp_path)), "OMP_NUM_THREADS": "1"}
    res = subprocess.run(["bash", str(ROOT / "scripts" / "device_train.sh"), "--dry-run", "--data",
                          str(tmp_path / "no_data")], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    files = sorted(p.name for p in out.iterdir())
    assert files == ["codec_v2.safetensors", "log.csv", "stdout.log", "summary.json"]
    assert all((out / f).stat().st_size < 16 * 2**20 for f in files)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dry_run"] and summary["last"]["step"] == 4
    from openmrt.codec.v2 import load_codec_v2

    model = load_codec_v2(out / "codec_v2.safetensors")
    assert model.config.latent_dim == 16


def test_prepare_packs_shards_under_the_budget(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    shards = []
    for i in range(3):
        audio = (rng.standard_normal((2, 25 * 1920)) * 3000).astype(np.int16)  # noise: barely compresses
        np.savez(src / f"shard_{i:05d}.npz", audio=audio, notes=np.zeros((25, 128), np.int8),
                 offsets=np.array([0, 25], np.int64))
        shards.append({"file": f"shard_{i:05d}.npz"})
    (src / "index.json").write_text(json.dumps({"shards": shards}))
    dst = tmp_path / "dst"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "device_train.py"), "--prepare", str(src), "--data",
                    str(dst), "--budget-mib", "0.4"], check=True, capture_output=True, timeout=120)
    index = json.loads((dst / "index.json").read_text())
    total = sum((dst / s["file"]).stat().st_size for s in index["shards"])
    assert 1 <= len(index["shards"]) < 3 and total <= 0.4 * 2**20
    with np.load(dst / index["shards"][0]["file"]) as z:
        np.testing.assert_array_equal(z["audio"], np.load(src / "shard_00000.npz")["audio"])
