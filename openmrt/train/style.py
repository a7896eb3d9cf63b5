"""``openmrt train style``: our style model's audio and text towers, trained contrastively on (audio crop, caption
view) pairs from shard folders; at the end a 12 × 1024 RVQ is fitted on audio embeddings and the model is written.

Run folder: last.pt (resumable checkpoint: towers, optimizer, step, sampler state, tokenizer), log.csv,
style.safetensors (when training finishes). Rerunning the same command resumes; --minutes / --stop-after stop early
(the cosine schedule still spans --steps).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch

from openmrt.style.data import audio_bank, crop, load_examples, sample_text, text_views
from openmrt.style.features import FRAMES_PER_SECOND
from openmrt.style.model import StyleModel
from openmrt.style.nets import AudioEncoder, StyleConfig, TextEncoder, TextTokenizer, fit_tokenizer
from openmrt.style.rvq import fit_rvq
from openmrt.train.common import CSVLog, cosine_lr, load_checkpoint, save_checkpoint, set_rng_state

__all__ = ["add_arguments", "clip_loss", "train"]


def clip_loss(a: torch.Tensor, t: torch.Tensor, pos: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over a batch of audio [B, D] and text [B, D] embeddings with multi-positive targets.

    pos [B, B] bool: text i describes audio j (same example, or the same text string: "rock" fits every rock crop,
    so those pairs must not be pushed apart). Targets are pos rows normalised to sum 1.
    """
    logits = logit_scale.exp().clamp(max=100.0) * t @ a.T  # [texts, audios]
    p = pos.float()
    t2a = -(p / p.sum(1, keepdim=True) * logits.log_softmax(1)).sum(1).mean()
    a2t = -(p.T / p.T.sum(1, keepdim=True) * logits.T.log_softmax(1)).sum(1).mean()
    return 0.5 * (t2a + a2t)


def _batch(examples, rng: np.random.Generator, b: int, frames: int, augment: bool = True):
    idx = rng.integers(0, len(examples), b)
    mels = torch.stack([crop(examples[i].mel, frames, rng) for i in idx])
    if augment:  # loudness: ±6 dB as an offset in the scaled log10 domain (6 dB = 0.6 log10 units, /2.5)
        mels = mels + torch.from_numpy(rng.uniform(-0.24, 0.24, (b, 1, 1)).astype(np.float32))
    texts = [sample_text(examples[i].meta, rng) for i in idx]
    same_ex = torch.from_numpy(idx[:, None] == idx[None, :])
    same_text = torch.tensor([[x == y for y in texts] for x in texts])
    return mels, texts, same_ex | same_text


def train(args: argparse.Namespace) -> Path | None:
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    examples = load_examples(args.data, cache=out)
    ckpt_path = out / "last.pt"
    ck = load_checkpoint(ckpt_path) if ckpt_path.exists() else None
    new = StyleConfig(dim=args.dim, vocab=args.vocab, rvq_codes=args.rvq_codes)
    cfg = StyleConfig(**ck["config"]) if ck else new
    if ck:
        tok = TextTokenizer(ck["tokenizer"], cfg.max_text_len)
    else:
        texts = [t for e in examples for v in [text_views(e.meta)] for t in (v["caption"], v["tags"], v["label"],
                                                                               *v["tag_list"])]
        tok = fit_tokenizer(texts, cfg.vocab, cfg.max_text_len)
    torch.manual_seed(args.seed)  # initial weights (a resumed run then restores every generator)
    audio_net, text_net = AudioEncoder(cfg), TextEncoder(cfg)
    logit_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    params = [*audio_net.parameters(), *text_net.parameters(), logit_scale]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    rng = np.random.default_rng(args.seed)
    step = 0
    if ck:
        audio_net.load_state_dict(ck["audio"])
        text_net.load_state_dict(ck["text"])
        logit_scale.data.copy_(ck["logit_scale"])
        opt.load_state_dict(ck["opt"])
        rng.bit_generator.state = ck["sampler"]
        set_rng_state(ck["rng"])
        step = ck["step"]
        print(f"resumed {ckpt_path} at step {step}")
    frames = int(args.crop_seconds * FRAMES_PER_SECOND)
    log = CSVLog(out / "log.csv")
    stop = min(args.steps, args.stop_after or args.steps)
    t_end = time.monotonic() + 60 * args.minutes if args.minutes else math.inf
    last_save, t0 = time.monotonic(), time.monotonic()

    def checkpoint() -> None:
        save_checkpoint(ckpt_path, audio=audio_net, text=text_net, logit_scale=logit_scale.detach(), opt=opt,
                        step=step, sampler=rng.bit_generator.state, config=cfg.to_dict(), tokenizer=tok.proto)

    audio_net.train(), text_net.train()
    while step < stop and time.monotonic() < t_end:
        lr = cosine_lr(step, args.lr, args.warmup, args.steps)
        for g in opt.param_groups:
            g["lr"] = lr
        mels, texts, pos = _batch(examples, rng, args.batch, frames)
        loss = clip_loss(audio_net(mels), text_net(tok(texts)), pos, logit_scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        if step % args.log_every == 0:
            row = {"step": step, "loss": round(loss.item(), 4), "lr": lr, "scale": round(logit_scale.exp().item(), 2),
                   "s_per_step": round((time.monotonic() - t0) / args.log_every, 3)}
            log.write(row)
            print(row, flush=True)
            t0 = time.monotonic()
        if time.monotonic() - last_save > args.ckpt_seconds:
            checkpoint()
            last_save = time.monotonic()
    checkpoint()
    if step < args.steps:
        print(f"stopped at step {step} of {args.steps}; rerun the same command to continue")
        return None
    model = StyleModel(cfg, tok)
    model.audio_net.load_state_dict(audio_net.state_dict())
    model.text_net.load_state_dict(text_net.state_dict())
    embs, _ = audio_bank(model, examples, frames, hop=int(args.rvq_hop * FRAMES_PER_SECOND))
    print(f"fitting the RVQ ({cfg.rvq_levels} x {cfg.rvq_codes}) on {len(embs)} audio embeddings")
    model.codebooks = fit_rvq(embs, cfg.rvq_levels, cfg.rvq_codes, seed=args.seed)
    model.info = {"steps": step, "batch": args.batch, "crop_seconds": args.crop_seconds, "lr": args.lr,
                  "data": [str(d) for d in args.data], "examples": len(examples), "rvq_fit_embeddings": len(embs)}
    path = model.save(out / "style.safetensors")
    print(f"wrote {path}")
    return path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", action="append", required=True, help="shard folder (repeatable)")
    p.add_argument("-o", "--out", required=True, help="run folder: last.pt, log.csv, style.safetensors")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=48)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--dim", type=int, default=128, help="embedding width D of a new model")
    p.add_argument("--vocab", type=int, default=256, help="SentencePiece vocabulary of a new model")
    p.add_argument("--rvq-codes", type=int, default=1024, help="codes per RVQ level of a new model")
    p.add_argument("--crop-seconds", type=float, default=10.0)
    p.add_argument("--rvq-hop", type=float, default=2.0, help="seconds between the windows the RVQ is fitted on")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (the machines are shared)")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--ckpt-seconds", type=float, default=120.0)
    p.add_argument("--minutes", type=float, help="stop after this much wall time (checkpointed; rerun resumes)")
    p.add_argument("--stop-after", type=int, help="stop at this step (the schedule still spans --steps)")
