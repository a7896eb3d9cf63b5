"""Driver of scripts/device_train.sh: train the demo codec v2 in a few minutes on one GPU from shards carried
with the working tree, writing the weights and a log to $OUT (at most 8 files, each under 16 MiB).

    python scripts/device_train.py --prepare SHARDS [SHARDS ...]   # here: pack <= 34 MiB into device_data/codec2
    python scripts/device_train.py --out $OUT                      # on the GPU machine (device_train.sh)
    python scripts/device_train.py --dry-run --out DIR             # CPU, tiny model and data, < 2 minutes

Needs only torch, numpy, safetensors and tqdm at training time (the GPU image has no soundfile, librosa,
pretty_midi or fluidsynth): shards are plain .npz (audio int16, note states, offsets) read with numpy, and
the targets are computed from the audio on the GPU. Outputs: codec_v2.safetensors (float16), log.csv,
summary.json, stdout.log (the shell script tees into it).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT / "device_data" / "codec2"
FRAME = 1920


def prepare(sources: list[str], out: Path, budget_mib: float) -> dict:
    """Repack examples of shard folders into compressed shards under ``out`` until ``budget_mib``."""
    out.mkdir(parents=True, exist_ok=True)
    budget, used, shards, seconds = budget_mib * 2**20, 0, [], 0.0
    for src in sources:
        index = json.loads((Path(src) / "index.json").read_text())
        for s in index["shards"]:
            with np.load(Path(src) / s["file"], allow_pickle=False) as z:
                audio, notes, offsets = z["audio"], z["notes"], z["offsets"]
            for a, b in zip(offsets[:-1], offsets[1:], strict=True):
                name = f"shard_{len(shards):05d}.npz"
                path = out / name
                np.savez_compressed(path, audio=audio[:, a * FRAME:b * FRAME], notes=notes[a:b],
                                    offsets=np.array([0, b - a], np.int64))
                size = path.stat().st_size
                if used + size > budget:
                    path.unlink()
                    break
                used += size
                seconds += (b - a) / 25
                shards.append({"file": name, "examples": 1, "frames": int(b - a)})
            else:
                continue
            break
        else:
            continue
        break
    index = {"format": "openmrt-shards", "version": 1, "shards": shards, "seconds": round(seconds, 1),
             "sources": sources}
    (out / "index.json").write_text(json.dumps(index, indent=1))
    return {"shards": len(shards), "seconds": round(seconds, 1), "mib": round(used / 2**20, 1)}


def _tiny_data(root: Path) -> Path:
    """Two seconds of two labelled tones per example: data for the dry run when none is carried."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    frames, shards = 50, []
    for i, pitch in enumerate((57, 64)):
        t = np.arange(frames * FRAME) / 48000
        x = 0.2 * np.sin(2 * np.pi * 440 * 2 ** ((pitch - 69) / 12) * t) + 0.01 * rng.standard_normal(len(t))
        notes = np.zeros((frames, 128), np.int8)
        notes[:, pitch] = 1
        audio = np.round(np.stack([x, x]) * 32767).astype(np.int16)
        np.savez(root / f"shard_{i:05d}.npz", audio=audio, notes=notes, offsets=np.array([0, frames], np.int64))
        shards.append({"file": f"shard_{i:05d}.npz", "examples": 1, "frames": frames})
    (root / "index.json").write_text(json.dumps({"shards": shards}))
    return root


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/device", help="where the weights and logs go ($OUT on the GPU machine)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="shard folder carried with the working tree")
    ap.add_argument("--minutes", type=float, default=5.0, help="training time (evaluation-free)")
    ap.add_argument("--steps", type=int, default=1000000, help="step cap (the LR schedule follows the time budget)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--crop", type=int, default=32)
    ap.add_argument("--decoder", default="harmonic", choices=("harmonic", "plain"))
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny model, 4 steps: checks the recipe runs")
    ap.add_argument("--prepare", nargs="+", metavar="SHARDS", help="pack these shard folders into --data and exit")
    ap.add_argument("--budget-mib", type=float, default=34.0)
    args = ap.parse_args(argv)
    if args.prepare:
        res = prepare(args.prepare, args.data, args.budget_mib)
        print(json.dumps(res))
        return res

    sys.path.insert(0, str(ROOT))
    import torch

    from openmrt.train.codec2 import add_arguments, train

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run = Path(tempfile.mkdtemp(prefix="codec2_run_"))  # last.pt (optimizer state) stays out of $OUT: too big
    data = args.data
    if args.dry_run:
        size = ["--latent-dim", "16", "--width", "32", "--frame-width", "16", "--groups", "2"]
        sched = ["--steps", "4", "--batch", "2", "--crop", "8", "--vq-start", "2", "--kmeans-batches", "2",
                 "--device", "cpu", "--threads", "1", "--log-every", "1", "--warmup", "1", "--max-minutes", "1",
                 "--time-schedule"]
        if not (data / "index.json").is_file():
            data = _tiny_data(run / "data")
    else:
        size = []
        sched = ["--steps", str(args.steps), "--batch", str(args.batch), "--crop", str(args.crop),
                 "--max-minutes", str(args.minutes), "--time-schedule", "--log-every", "50", "--warmup", "200",
                 "--vq-start", "400", "--kmeans-batches", "8", "--restart-every", "50", "--lr", "2e-3"]
    p = argparse.ArgumentParser()
    add_arguments(p)
    targs = p.parse_args(["--data", str(data), "--out", str(run), "--decoder", args.decoder,
                          "--ckpt-every", "1000000", "--ckpt-minutes", "1000000", *size, *sched])
    device = "cuda" if torch.cuda.is_available() and not args.dry_run else "cpu"
    t0 = time.perf_counter()
    last = train(targs)
    wall = time.perf_counter() - t0
    from openmrt.codec.v2 import load_codec_v2, save_codec_v2

    model = load_codec_v2(run / "codec_v2.safetensors")
    save_codec_v2(model, out / "codec_v2.safetensors", extra={"step": last.get("step", 0)}, dtype=torch.float16)
    shutil.copy(run / "log.csv", out / "log.csv")
    summary = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu", "wall_s": round(wall, 1),
               "data_seconds": sum(s["frames"] for s in json.loads((data / "index.json").read_text())["shards"]) / 25,
               "steps_per_s": round(last.get("step", 0) / wall, 2), "last": last, "dry_run": args.dry_run,
               "config": json.loads(model.config.to_json())}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    shutil.rmtree(run, ignore_errors=True)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
