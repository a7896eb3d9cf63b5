"""``openmrt train mapper``: the pMF text -> audio embedding mapper (openmrt/style/mapper.py) of a trained style model.

Pairs come from the style model's frozen towers on shard folders: the audio embedding of a 10 s window, and the text
embedding of a caption view of the same example. Run folder: pairs.npz (cached embeddings), last.pt (resumable),
log.csv, and style.safetensors (the style model with the mapper added) when training finishes.

pairs.npz records what it was built from (``pairs_source``: the style model file's sha256, each data folder's path
and index.json sha256, the options that shape the pairs); a run whose inputs differ rebuilds it and says why.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import zipfile
from pathlib import Path

import numpy as np
import torch

from openmrt.hub import sha256
from openmrt.style.data import load_examples, sample_text, text_views
from openmrt.style.features import FRAMES_PER_SECOND
from openmrt.style.mapper import Mapper, MapperConfig, pmf_loss
from openmrt.style.model import StyleModel
from openmrt.train.common import CSVLog, cosine_lr, load_checkpoint, save_checkpoint, set_rng_state
from openmrt.train.style import audio_bank
from openmrt.weights import atomic_write

__all__ = ["add_arguments", "embedding_pairs", "load_pairs", "pairs_source", "train"]

HOP_SECONDS = 2.0  # audio windows of the pairs start every 2 s


def embedding_pairs(model: StyleModel, examples, texts_per_example: int, seed: int,
                    hop_seconds: float = HOP_SECONDS):
    """Frozen-tower embeddings: audio windows [N, D] with their example index [N], and text embeddings [E, K, D]
    (K texts per example: caption, tag part, style label, then sampled views)."""
    frames = int(model.cfg.clip_seconds * FRAMES_PER_SECOND)
    audio, owner = audio_bank(model, examples, frames, hop=int(hop_seconds * FRAMES_PER_SECOND))
    rng = np.random.default_rng(seed)
    text = []
    for ex in examples:
        v = text_views(ex.meta)
        ts = [v["caption"], v["tags"], v["label"]]
        ts += [sample_text(ex.meta, rng) for _ in range(texts_per_example - len(ts))]
        text.append(model.text_embeddings(ts))
    return audio, owner, np.stack(text)


def pairs_source(style: str | Path, data: list[str | Path], texts_per_example: int, seed: int,
                 hop_seconds: float = HOP_SECONDS) -> dict:
    """What the pairs are a function of: the style model file (its bytes), the data folders in order (path and
    index.json: a rebuilt folder has a new index), and the options that shape the pairs."""
    return {"style_sha256": sha256(Path(style)),
            "data": [{"path": str(Path(r).resolve()), "index_sha256": sha256(Path(r) / "index.json")} for r in data],
            "texts_per_example": texts_per_example, "seed": seed, "hop_seconds": hop_seconds}


def load_pairs(path: Path, source: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The cached (audio, owner, text) when ``path`` was built from ``source``; else None, printing why."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if "source" not in z.files:
                print(f"rebuilding {path}: it does not record what it was built from (made by an older openmrt)")
                return None
            old = json.loads(str(z["source"]))
            changed = [k for k in source if old.get(k) != source[k]]
            if changed:
                print(f"rebuilding {path}: its {', '.join(changed)} differ from this run's")
                return None
            return z["audio"], z["owner"], z["text"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:  # truncated, not an npz: rebuild
        print(f"rebuilding {path}: cannot read it ({e})")
        return None


def train(args: argparse.Namespace) -> Path | None:
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = StyleModel.load(args.style, use_mapper=False)
    pairs = out / "pairs.npz"
    source = pairs_source(args.style, args.data, args.texts_per_example, args.seed)
    cached = load_pairs(pairs, source)
    if cached is not None:
        audio, owner, text = cached
    else:
        if pairs.exists() and (out / "last.pt").exists():
            print(f"note: {out / 'last.pt'} was trained on the previous pairs; delete it to start afresh")
        examples = load_examples(args.data, cache=out)
        audio, owner, text = embedding_pairs(model, examples, args.texts_per_example, args.seed, HOP_SECONDS)
        with atomic_write(pairs) as tmp, open(tmp, "wb") as f:  # a kill never leaves half a pairs.npz
            np.savez(f, audio=audio, owner=owner, text=text, source=json.dumps(source))
    print(f"{len(audio)} audio windows, {text.shape[0]} examples x {text.shape[1]} texts")
    ck_path = out / "last.pt"
    ck = load_checkpoint(ck_path) if ck_path.exists() else None
    cfg = MapperConfig(**ck["config"]) if ck else MapperConfig(dim=model.dim, width=args.width, layers=args.layers)
    torch.manual_seed(args.seed)  # initial weights (a resumed run then restores every generator)
    net = Mapper(cfg)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=0.0)
    rng = np.random.default_rng(args.seed)
    step = 0
    if ck:
        net.load_state_dict(ck["mapper"])
        opt.load_state_dict(ck["opt"])
        rng.bit_generator.state = ck["sampler"]
        set_rng_state(ck["rng"])
        step = ck["step"]
        print(f"resumed {ck_path} at step {step}")
    a_t, t_t = torch.from_numpy(audio), torch.from_numpy(text)
    log = CSVLog(out / "log.csv")
    stop = min(args.steps, args.stop_after or args.steps)
    t_end = time.monotonic() + 60 * args.minutes if args.minutes else math.inf
    last_save = time.monotonic()

    def checkpoint() -> None:
        save_checkpoint(ck_path, mapper=net, opt=opt, step=step, sampler=rng.bit_generator.state, config=cfg.to_dict())

    net.train()
    while step < stop and time.monotonic() < t_end:
        lr = cosine_lr(step, args.lr, args.warmup, args.steps)
        for g in opt.param_groups:
            g["lr"] = lr
        j = rng.integers(0, len(audio), args.batch)
        k = rng.integers(0, text.shape[1], args.batch)
        loss, mse = pmf_loss(net, a_t[j], t_t[owner[j], k])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        step += 1
        if step % args.log_every == 0:
            row = {"step": step, "loss": round(loss.item(), 4), "velocity_mse": round(mse, 4), "lr": lr}
            log.write(row)
            print(row, flush=True)
        if time.monotonic() - last_save > args.ckpt_seconds:
            checkpoint()
            last_save = time.monotonic()
    checkpoint()
    if step < args.steps:
        print(f"stopped at step {step} of {args.steps}; rerun the same command to continue")
        return None
    model.mapper = net.eval()
    model.info = {**model.info, "mapper": {"steps": step, "batch": args.batch, "lr": args.lr, "pairs": len(audio),
                                           "texts_per_example": int(text.shape[1])}}
    path = model.save(out / "style.safetensors")
    print(f"wrote {path}")
    return path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--style", required=True, help="a trained style model file (openmrt train style)")
    p.add_argument("--data", action="append", required=True, help="shard folder (repeatable)")
    p.add_argument("-o", "--out", required=True, help="run folder: pairs.npz, last.pt, log.csv, style.safetensors")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--texts-per-example", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--ckpt-seconds", type=float, default=60.0)
    p.add_argument("--minutes", type=float, help="stop after this much wall time (checkpointed; rerun resumes)")
    p.add_argument("--stop-after", type=int, help="stop at this step (the schedule still spans --steps)")
