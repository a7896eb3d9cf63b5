"""Driver of scripts/device_train.sh: train the demo codec v2, then the demo LM, in about 6 minutes on one GPU
from shards carried with the working tree, writing the weights and logs to $OUT (at most 8 files, each under
16 MiB).

    python scripts/device_train.py --prepare-lm TOKENISED [...]  # here: the LM's arrays into device_data/lm
    python scripts/device_train.py --prepare SHARDS [...]        # here: audio into device_data/codec2 (34 MiB in all)
    python scripts/device_train.py --out $OUT                    # on the GPU machine (device_train.sh)
    python scripts/device_train.py --phase lm --out $OUT         # one phase only (lm or codec)
    python scripts/device_train.py --dry-run --out DIR           # CPU, tiny models and data, well under 2 minutes
    python scripts/device_train.py --join-lm FILES_AT/lm.part*.safetensors -o lm.safetensors   # here, after

Needs only torch, numpy, safetensors and tqdm at training time (the GPU image has no soundfile, librosa,
pretty_midi or fluidsynth): shards are plain .npz read with numpy; the codec's targets are computed from the
audio on the GPU. The LM learns the tokens the carried LM shards hold (tokenised here, by the codec named in
device_data/lm/index.json), not the codec trained in the same run. Outputs: codec_v2.safetensors (float16),
codec_log.csv, the LM in float16 (lm.safetensors, or lm.part1/2.safetensors when over --max-file-mib: join
them here with --join-lm), lm_log.csv, summary.json, stdout.log (the shell script tees into it).
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
DEFAULT_LM_DATA = ROOT / "device_data" / "lm"
FRAME = 1920
LM_KEYS = ("tokens", "style_tokens", "notes", "drums")  # what TokenData reads (besides offsets and meta)
T0 = time.perf_counter()


def _clear(out: Path) -> None:
    """Drop an earlier packing's shards: stale ones would travel with the tree."""
    out.mkdir(parents=True, exist_ok=True)
    for p in (*out.glob("shard_*.npz"), out / "index.json"):
        p.unlink(missing_ok=True)


def prepare(sources: list[str], out: Path, budget_mib: float) -> dict:
    """Repack examples of shard folders into compressed shards under ``out`` until ``budget_mib``."""
    _clear(out)
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


def _write_lm_shard(path: Path, arrays: dict) -> int:
    """A shard openmrt.data.shards.load_shard reads, with an empty audio array: the LM never reads audio."""
    np.savez_compressed(path, audio=np.zeros((2, 0), np.int16), **arrays)
    return path.stat().st_size


def prepare_lm(sources: list[str], out: Path, budget_mib: float) -> dict:
    """Pack the LM trainer's arrays (no audio) of every shard of tokenised folders into ``out``, compressed,
    until ``budget_mib``; whole source shards, in order."""
    _clear(out)
    budget, used, shards, frames, tokenised = budget_mib * 2**20, 0, [], 0, {}
    for src in sources:
        index = json.loads((Path(src) / "index.json").read_text())
        tokenised[src] = {k: index.get("build", {}).get(k) for k in ("tokens", "style_tokens")}
        for s in index["shards"]:
            with np.load(Path(src) / s["file"], allow_pickle=False) as z:
                if "tokens" not in z.files:
                    raise SystemExit(f"{Path(src) / s['file']} has no tokens: run `openmrt data tokenize {src}` "
                                     "with the codec the LM is for, then --prepare-lm again")
                arrays = {k: z[k] for k in (*LM_KEYS, "offsets", "meta") if k in z.files}
            path = out / f"shard_{len(shards):05d}.npz"
            size = _write_lm_shard(path, arrays)
            if used + size > budget:
                path.unlink()
                break
            used += size
            frames += int(arrays["offsets"][-1])
            shards.append({"file": path.name, "examples": len(arrays["offsets"]) - 1,
                           "frames": int(arrays["offsets"][-1])})
        else:
            continue
        break
    index = {"format": "openmrt-shards", "version": 1, "shards": shards, "seconds": round(frames / 25, 1),
             "sources": sources, "tokenised": tokenised}
    (out / "index.json").write_text(json.dumps(index, indent=1))
    return {"shards": len(shards), "examples": sum(s["examples"] for s in shards), "seconds": round(frames / 25, 1),
            "mib": round(used / 2**20, 2)}


def _tiny_data(root: Path) -> Path:
    """Two seconds of two labelled tones per example: codec data for the dry run when none is carried."""
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


def _tiny_lm_data(root: Path) -> Path:
    """Three examples of random tokens over held notes with onsets: LM data for the dry run."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    lengths = (40, 60, 50)
    notes = np.zeros((sum(lengths), 128), np.int8)
    for start in range(0, len(notes), 10):  # a note every 10 frames: onset, then 5 held frames
        p = int(rng.integers(48, 72))
        notes[start, p], notes[start + 1:start + 6, p] = 2, 1
    arrays = {"tokens": rng.integers(0, 1024, (len(notes), 12)).astype(np.int16),
              "style_tokens": np.repeat(rng.integers(0, 1024, (1, 12)), len(notes), 0).astype(np.int16),
              "notes": notes, "drums": (np.arange(len(notes)) % 20 < 10).astype(np.int8),
              "offsets": np.cumsum((0, *lengths)).astype(np.int64),
              "meta": np.array(json.dumps({"examples": [{} for _ in lengths]}))}
    _write_lm_shard(root / "shard_00000.npz", arrays)
    (root / "index.json").write_text(json.dumps({"shards": [{"file": "shard_00000.npz", "examples": 3,
                                                             "frames": len(notes)}]}))
    return root


def _data_seconds(data: Path) -> float:
    return sum(s["frames"] for s in json.loads((data / "index.json").read_text())["shards"]) / 25


def train_codec(args, out: Path, data: Path, device: str) -> dict:
    import torch

    from openmrt.codec.v2 import load_codec_v2, save_codec_v2
    from openmrt.train.codec2 import add_arguments, train

    run = Path(tempfile.mkdtemp(prefix="codec2_run_"))  # last.pt (optimizer state) stays out of $OUT: too big
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
                 "--max-minutes", str(args.codec_minutes), "--time-schedule", "--log-every", "50", "--warmup", "200",
                 "--vq-start", "400", "--kmeans-batches", "8", "--restart-every", "50", "--lr", "2e-3"]
    p = argparse.ArgumentParser()
    add_arguments(p)
    targs = p.parse_args(["--data", str(data), "--out", str(run), "--decoder", args.decoder,
                          "--ckpt-every", "1000000", "--ckpt-minutes", "1000000", *size, *sched])
    t0 = time.perf_counter()
    last = train(targs)
    wall = time.perf_counter() - t0
    model = load_codec_v2(run / "codec_v2.safetensors")
    save_codec_v2(model, out / "codec_v2.safetensors", extra={"step": last.get("step", 0)}, dtype=torch.float16)
    shutil.copy(run / "log.csv", out / "codec_log.csv")
    res = {"wall_s": round(wall, 1), "data_seconds": _data_seconds(data),
           "steps_per_s": round(last.get("step", 0) / wall, 2), "last": last,
           "config": json.loads(model.config.to_json())}
    shutil.rmtree(run, ignore_errors=True)
    return res


def save_lm_parts(model, out: Path, max_mib: float, step: int) -> list[str]:
    """The LM in float16 as ``lm.safetensors``, or split by tensor into ``lm.partI.safetensors`` files of at most
    ``max_mib`` each (one file of $OUT may hold 16 MiB; the demo LM is ~30 MiB in float16)."""
    import torch

    from openmrt.lm.checkpoint import KIND
    from openmrt.weights import save_tensors

    sd = {k: v.detach().to(torch.float16) for k, v in model.state_dict().items()}
    bad = [k for k, v in sd.items() if not torch.isfinite(v).all()]
    if bad:
        raise SystemExit(f"LM weights not finite in float16: {bad[:5]}")
    limit = int(max_mib * 2**20) - 2**16  # room for the header (names, config)
    parts: list[dict] = [{}]
    for k, v in sd.items():
        if parts[-1] and sum(t.numel() * 2 for t in parts[-1].values()) + v.numel() * 2 > limit:
            parts.append({})
        parts[-1][k] = v
    meta = {"step": str(step), "dtype": "float16"}
    if len(parts) == 1:
        save_tensors(out / "lm.safetensors", sd, kind=KIND, config=model.cfg.to_json(), metadata=meta)
        return ["lm.safetensors"]
    names = [f"lm.part{i + 1}.safetensors" for i in range(len(parts))]
    for i, (name, part) in enumerate(zip(names, parts, strict=True)):
        save_tensors(out / name, part, kind=KIND, config=model.cfg.to_json(),
                     metadata={**meta, "part": f"{i + 1}/{len(parts)}"})
    return names


def join_lm(paths: list[Path], dst: Path) -> Path:
    """One LM file from ``lm.partI.safetensors`` files (all of them, any order); checks they belong together."""
    from openmrt.lm.checkpoint import KIND, load_lm
    from openmrt.weights import CONFIG_KEY, load_tensors, save_tensors

    tensors, metas = {}, []
    for p in paths:
        sd, meta = load_tensors(p, "LM part", kind=KIND)
        tensors.update(sd)
        metas.append(meta)
    counts = {m.get("part", "?").split("/")[-1] for m in metas}
    got = sorted(m.get("part", "?") for m in metas)
    if len(counts) != 1 or got != sorted(f"{i + 1}/{len(paths)}" for i in range(len(paths))):
        raise SystemExit(f"{[str(p) for p in paths]}: parts {got}, expected all of 1/N..N/N of one LM")
    if len({m[CONFIG_KEY] for m in metas}) != 1 or len({m.get("step") for m in metas}) != 1:
        raise SystemExit("the parts come from different LMs (config or step differ)")
    meta = {k: v for k, v in metas[0].items() if k not in ("part", "kind", CONFIG_KEY)}
    save_tensors(dst, tensors, kind=KIND, config=metas[0][CONFIG_KEY], metadata=meta)
    load_lm(dst)  # every weight present and the right shape
    return dst


def train_lm(args, out: Path, data: Path, device: str, minutes: float) -> dict:
    import csv

    from openmrt.lm.checkpoint import load_lm
    from openmrt.train.lm import add_arguments, train

    run = Path(tempfile.mkdtemp(prefix="lm_run_"))  # last.pt (optimizer state) stays out of $OUT: too big
    if args.dry_run:
        sched = ["--preset", "tiny", "--steps", "4", "--batch", "2", "--crop", "16", "--warmup", "1",
                 "--log-every", "1", "--eval-every", "2", "--holdout", "1", "--max-minutes", "1", "--text-style", "0.5"]
        if not (data / "index.json").is_file():
            data = _tiny_lm_data(run / "data")
    else:
        # The trainer's augmentations stay on (token dropout, region, onset and pitch masking: they also teach the
        # masked conditioning guidance contrasts with); CFG tokens carry the default scales, as without a teacher;
        # half the crops take their style tokens from the piece's name or caption (the shipped style model's text path).
        sched = ["--preset", "demo", "--steps", str(args.lm_steps), "--batch", str(args.lm_batch), "--crop",
                 str(args.lm_crop), "--lr", str(args.lm_lr), "--warmup", "100", "--log-every", "50",
                 "--eval-every", "500", "--holdout", "2", "--max-minutes", f"{minutes:.3f}", "--text-style", "0.5"]
    p = argparse.ArgumentParser()
    add_arguments(p)
    targs = p.parse_args(["--data", str(data), "--out", str(run), "--device", device, "--time-schedule",
                          "--ckpt-every", "1000000000", *sched])
    t0 = time.perf_counter()
    last = train(targs)
    wall = time.perf_counter() - t0
    model = load_lm(run / "lm.safetensors")
    files = save_lm_parts(model, out, args.max_file_mib, last.get("step", 0))
    shutil.copy(run / "log.csv", out / "lm_log.csv")
    evals = []
    if (run / "eval.csv").is_file():
        with open(run / "eval.csv") as f:
            evals = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    res = {"wall_s": round(wall, 1), "budget_minutes": round(minutes, 3), "data_seconds": _data_seconds(data),
           "steps_per_s": round(last.get("step", 0) / wall, 2), "last": last, "eval": evals, "files": files,
           "params": sum(p.numel() for p in model.parameters()), "preset": model.cfg.name,
           "tokenised": json.loads((data / "index.json").read_text()).get("tokenised")}
    shutil.rmtree(run, ignore_errors=True)
    return res


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", "-o", default="runs/device", help="where the weights and logs go ($OUT on the GPU "
                    "machine); with --join-lm, the joined file")
    ap.add_argument("--phase", default="all", choices=("all", "codec", "lm"), help="train both (codec first) or one")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="codec shard folder carried with the tree")
    ap.add_argument("--lm-data", type=Path, default=DEFAULT_LM_DATA, help="LM token shards carried with the tree")
    ap.add_argument("--codec-minutes", type=float, default=2.5, help="codec training time")
    ap.add_argument("--lm-minutes", type=float, default=3.0, help="LM training time (cut to fit --total-minutes)")
    ap.add_argument("--total-minutes", type=float, default=5.6, help="the LM phase ends so that the whole script, "
                    "startup and saving included, ends about then (the GPU window is 6 minutes)")
    ap.add_argument("--steps", type=int, default=1000000, help="codec step cap (the LR follows the time budget)")
    ap.add_argument("--batch", type=int, default=32, help="codec batch")
    ap.add_argument("--crop", type=int, default=32, help="codec crop (tokens)")
    ap.add_argument("--decoder", default="harmonic", choices=("harmonic", "plain"))
    ap.add_argument("--lm-steps", type=int, default=1000000, help="LM step cap (the LR follows the time budget)")
    ap.add_argument("--lm-batch", type=int, default=32)
    ap.add_argument("--lm-crop", type=int, default=250, help="LM crop (frames; 25 = 1 s)")
    ap.add_argument("--lm-lr", type=float, default=1e-3)
    ap.add_argument("--max-file-mib", type=float, default=15.5, help="split the LM into parts above this size")
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny models, 4 steps each: checks the recipe runs")
    ap.add_argument("--prepare", nargs="+", metavar="SHARDS", help="pack these shard folders into --data and exit")
    ap.add_argument("--budget-mib", type=float, default=34.0, help="device_data in all: the codec's audio gets "
                    "what the LM's shards (pack them first, or in the same call) leave")
    ap.add_argument("--prepare-lm", nargs="+", metavar="TOKENISED", help="pack the token arrays of these tokenised "
                    "shard folders into --lm-data and exit")
    ap.add_argument("--lm-budget-mib", type=float, default=16.0)
    ap.add_argument("--join-lm", nargs="+", type=Path, metavar="PART", help="join lm.partI.safetensors into --out")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    if args.prepare or args.prepare_lm:
        res = {}
        if args.prepare_lm:
            res["lm"] = prepare_lm(args.prepare_lm, args.lm_data, args.lm_budget_mib)
        if args.prepare:  # the codec's audio gets what the LM's shards leave of the budget
            lm_mib = sum(p.stat().st_size for p in args.lm_data.glob("shard_*.npz")) / 2**20
            res["codec"] = prepare(args.prepare, args.data, args.budget_mib - lm_mib)
        print(json.dumps(res))
        return res
    if args.join_lm:
        path = join_lm(args.join_lm, Path(args.out))
        print(path)
        return {"joined": str(path)}
    phases = ("codec", "lm") if args.phase == "all" else (args.phase,)
    needs = (("codec", args.data, "--prepare SHARDS"), ("lm", args.lm_data, "--prepare-lm TOKENISED"))
    for phase, folder, how in needs:
        if phase in phases and not args.dry_run and not (folder / "index.json").is_file():  # before any GPU time
            raise SystemExit(f"{folder} has no index.json: run `python scripts/device_train.py {how}` here and carry "
                             f"device_data, or pass --phase {'lm' if phase == 'codec' else 'codec'}")

    import torch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = "cuda" if torch.cuda.is_available() and not args.dry_run else "cpu"
    summary: dict = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
                     "dry_run": args.dry_run}
    if "codec" in phases:
        summary["codec"] = train_codec(args, out, args.data, device)
        print(json.dumps({"codec": summary["codec"]["last"]}), flush=True)
    if "lm" in phases:
        left = args.total_minutes - (time.perf_counter() - T0) / 60 - 0.35  # startup, final checkpoint, saving
        minutes = args.lm_minutes if args.dry_run else max(0.25, min(args.lm_minutes, left))
        summary["lm"] = train_lm(args, out, args.lm_data, device, minutes)
    summary["wall_s"] = round(time.perf_counter() - T0, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
