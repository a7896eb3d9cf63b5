"""scripts/device_train.sh --dry-run: the GPU recipe (codec v2, then the demo LM) runs on the CPU at tiny size
with only torch, numpy, safetensors and tqdm importable (the GPU image lacks soundfile, librosa, pretty_midi,
fluidsynth, numba, scipy), writes at most 8 files under the size limit to $OUT, and its weights load (the LM's
parts joined); --prepare / --prepare-lm pack shards under a budget; the LM trainer's time budget stops it."""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
MISSING_ON_GPU = ("soundfile", "librosa", "pretty_midi", "mido", "fluidsynth", "basic_pitch", "numba", "mir_eval",
                  "sounddevice", "scipy")


def _gpu_like_python(tmp: Path) -> Path:
    """A `python` that refuses to import what the GPU image lacks."""
    wrapper = tmp / "python"
    block = "; ".join(f"sys.modules[{m!r}] = None" for m in MISSING_ON_GPU)
    wrapper.write_text(f"#!/usr/bin/env bash\nexec {sys.executable} -c \"import sys, runpy; {block}; "
                       "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')\" \"$@\"\n")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    return wrapper


def _script():
    spec = importlib.util.spec_from_file_location("device_train", ROOT / "scripts" / "device_train.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_dry_run_needs_only_the_gpu_image_packages(tmp_path):
    """Codec, then LM; the LM's 7 MiB float16 file split at 4 MiB (the demo LM's 30 MiB is split at 15.5)."""
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": str(_gpu_like_python(tmp_path)), "OMP_NUM_THREADS": "1"}
    res = subprocess.run(["bash", str(ROOT / "scripts" / "device_train.sh"), "--dry-run", "--data",
                          str(tmp_path / "no_data"), "--lm-data", str(tmp_path / "no_lm_data"), "--max-file-mib", "4"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    files = sorted(p.name for p in out.iterdir())
    parts = [f for f in files if f.startswith("lm.part")]
    assert files == sorted(["codec_v2.safetensors", "codec_log.csv", "lm_log.csv", "stdout.log", "summary.json",
                            *parts])
    assert 2 <= len(parts) and len(files) <= 8
    assert all((out / f).stat().st_size < 4 * 2**20 for f in parts)
    assert all((out / f).stat().st_size < 16 * 2**20 for f in files)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dry_run"] and summary["codec"]["last"]["step"] == 4
    lm = summary["lm"]
    assert lm["last"]["step"] == 4 and lm["preset"] == "tiny" and lm["files"] == parts
    assert [e["step"] for e in lm["eval"]] == [2, 4] and np.isfinite(lm["last"]["eval_loss"])
    assert len((out / "lm_log.csv").read_text().splitlines()) == 5  # header + one row a step
    from openmrt.codec.v2 import load_codec_v2
    from openmrt.lm.checkpoint import load_lm
    from openmrt.weights import load_tensors

    model = load_codec_v2(out / "codec_v2.safetensors")
    assert model.config.latent_dim == 16
    joined = tmp_path / "lm.safetensors"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "device_train.py"), "--join-lm",
                    *[str(out / f) for f in reversed(parts)], "-o", str(joined)], check=True, timeout=120)
    lm_model = load_lm(joined)
    assert lm_model.cfg.name == "tiny"
    sd = lm_model.state_dict()
    for f in parts:  # every part's tensors, float16, in the joined model
        tensors, meta = load_tensors(out / f, "part")
        assert meta["dtype"] == "float16" and meta["step"] == "4"
        for k, v in tensors.items():
            assert v.dtype.itemsize == 2 and (sd[k] == v.float()).all(), k
    with pytest.raises(SystemExit, match="expected all of"):  # a part missing
        _script().join_lm([out / parts[0]], tmp_path / "bad.safetensors")


def test_lm_phase_alone_refuses_missing_data_before_training(tmp_path):
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "device_train.py"), "--phase", "lm", "--lm-data",
                          str(tmp_path / "none"), "--out", str(tmp_path / "out")], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode != 0 and "--prepare-lm" in res.stderr and not (tmp_path / "out").exists()


def test_lm_trainer_stops_at_its_time_budget(tmp_path):
    """--max-minutes: the run ends at the first step past the budget, evaluates, checkpoints and exports."""
    import argparse

    import torch

    from openmrt.lm.checkpoint import load_lm
    from openmrt.train.lm import add_arguments, train

    torch.set_num_threads(1)
    data = _script()._tiny_lm_data(tmp_path / "data")
    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["--data", str(data), "--out", str(tmp_path / "run"), "--preset", "tiny", "--steps", "50",
                         "--batch", "2", "--crop", "16", "--holdout", "1", "--device", "cpu", "--log-every", "10",
                         "--eval-every", "10", "--ckpt-every", "100", "--max-minutes", "1e-6", "--time-schedule"])
    last = train(args)
    assert last["step"] == 1 and np.isfinite(last["eval_loss"])  # logged and evaluated although step 1 is off-cycle
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=False)["step"] == 1
    assert load_lm(tmp_path / "run" / "lm.safetensors").cfg.name == "tiny"


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
    dst, lm = tmp_path / "dst", tmp_path / "lm"

    def pack() -> tuple[int, int]:
        subprocess.run([sys.executable, str(ROOT / "scripts" / "device_train.py"), "--prepare", str(src), "--data",
                        str(dst), "--lm-data", str(lm), "--budget-mib", "0.4"], check=True, capture_output=True,
                       timeout=120)
        index = json.loads((dst / "index.json").read_text())
        assert sorted(p.name for p in dst.glob("shard_*.npz")) == [s["file"] for s in index["shards"]]
        return len(index["shards"]), sum((dst / s["file"]).stat().st_size for s in index["shards"])

    n, total = pack()
    assert 1 < n < 3 and total <= 0.4 * 2**20
    with np.load(dst / "shard_00000.npz") as z:
        np.testing.assert_array_equal(z["audio"], np.load(src / "shard_00000.npz")["audio"])
    lm.mkdir()
    (lm / "shard_00000.npz").write_bytes(bytes(int(0.2 * 2**20)))  # LM shards already packed: 0.2 MiB of the 0.4
    n_with_lm, total = pack()
    assert n_with_lm < n and total <= 0.2 * 2**20


def test_prepare_lm_packs_only_what_the_lm_reads(tmp_path):
    from openmrt.train.lm import TokenData

    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    shards = []
    for i in range(3):
        frames = 250 * (i + 2)
        arrays = {"audio": (rng.standard_normal((2, frames * 1920)) * 3000).astype(np.int16),
                  "notes": (rng.random((frames, 128)) < 0.02).astype(np.int8),
                  "drums": np.zeros(frames, np.int8), "offsets": np.array([0, 250, frames], np.int64),
                  "tokens": rng.integers(0, 1024, (frames, 12)).astype(np.int16),
                  "style_tokens": rng.integers(0, 1024, (frames, 12)).astype(np.int16),
                  "meta": np.array(json.dumps({"examples": [{"i": i}, {"i": i}]}))}
        np.savez(src / f"shard_{i:05d}.npz", **arrays)
        shards.append({"file": f"shard_{i:05d}.npz"})
    (src / "index.json").write_text(json.dumps({"shards": shards, "build": {"tokens": {"codec": "c.safetensors"}}}))
    dst = tmp_path / "lm"
    (dst / "shard_00007.npz").parent.mkdir()
    (dst / "shard_00007.npz").write_bytes(b"stale")  # an earlier packing's: must not travel
    res = _script().prepare_lm([str(src)], dst, budget_mib=0.05)
    index = json.loads((dst / "index.json").read_text())
    files = sorted(p.name for p in dst.glob("shard_*.npz"))
    assert files == [s["file"] for s in index["shards"]] and 1 <= len(files) < 3  # the budget cut it short
    assert sum((dst / f).stat().st_size for f in files) <= 0.05 * 2**20 and res["shards"] == len(files)
    assert index["tokenised"][str(src)]["tokens"] == {"codec": "c.safetensors"}
    with np.load(dst / files[0]) as z, np.load(src / "shard_00000.npz") as s0:
        assert z["audio"].size == 0 and "drum_audio" not in z.files
        for k in ("tokens", "style_tokens", "notes", "drums", "offsets"):
            np.testing.assert_array_equal(z[k], s0[k])
    data = TokenData(dst, holdout=1)
    assert len(data.examples) == 2 * len(files)
    np.testing.assert_array_equal(data.examples[1]["tokens"], np.load(src / "shard_00000.npz")["tokens"][250:])
    np.savez(src / "shard_00000.npz", audio=np.zeros((2, 0), np.int16), notes=np.zeros((0, 128), np.int8),
             offsets=np.array([0], np.int64))
    with pytest.raises(SystemExit, match="has no tokens"):
        _script().prepare_lm([str(src)], dst, budget_mib=1)
