"""``openmrt train mapper``: the pMF text -> audio embedding mapper (openmrt/style/mapper.py) of a trained style model.

Pairs come from the style model's frozen towers on shard folders: the audio embedding of a 10 s window, and the text
embedding of a caption view of the same example. Run folder: pairs_*.npz (cached embeddings), last.pt (resumable),
log.csv, and style.safetensors (the style model with the mapper added) when training finishes.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch

from openmrt.style.data import load_examples, sample_text, text_views
from openmrt.style.features import FRAMES_PER_SECOND
from openmrt.style.mapper import Mapper, MapperConfig, pmf_loss
from openmrt.style.model import StyleModel
from openmrt.train.common import CSVLog, cosine_lr, load_checkpoint, save_checkpoint, set_rng_state
from openmrt.train.style import audio_bank

__all__ = ["add_arguments", "embedding_pairs", "train"]


def embedding_pairs(model: StyleModel, examples, texts_per_example: int, seed: int, hop_seconds: float = 2.0):
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


def train(args: argparse.Namespace) -> Path | None:
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = StyleModel.load(args.style, use_mapper=False)
    pairs = out / "pairs.npz"
    if pairs.exists():
        z = np.load(pairs)
        audio, owner, text = z["audio"], z["owner"], z["text"]
    else:
        examples = load_examples(args.data, cache=out)
        audio, owner, text = embedding_pairs(model, examples, args.texts_per_example, args.seed)
        np.savez(pairs, audio=audio, owner=owner, text=text)
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
    p.add_argument("--out", required=True, help="run folder: pairs.npz, last.pt, log.csv, style.safetensors")
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
