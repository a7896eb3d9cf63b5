"""Training of the SpectroStream-architecture codec on audio shards.

    openmrt train codec --data SHARDS --eval-data HELDOUT --out RUN [--preset demo] [--steps N] ...
    torchrun --nproc_per_node 2 -m openmrt.cli train codec ...      (DDP; gloo on CPU, nccl on GPU)

Whole-sequence mode (the streaming path shares the weights). Per step: random crops of
``--crop`` frames -> encoder latents -> residual VQ with straight-through gradients and quantizer
dropout (each example keeps a random number of levels with probability ``--quantizer-dropout``,
so every prefix of levels learns to decode) -> decoder -> multi-resolution STFT + log-mel L1
losses and the commitment loss. The codebook learns by EMA with k-means initialisation and
dead-code restarts (codec_vq.py). ``--adv-start S`` adds a multi-scale STFT discriminator with
feature matching from step S on (off by default: on CPU it costs ~2x per step; docs/models.md).

As in train/lm.py, batches are a pure function of (seed, step, rank), checkpoints (models,
optimizers, codebook statistics, step, RNG) go atomically to RUN/last.pt every ``--ckpt-every``
steps, and rerunning the same command resumes; ``--stop-after`` time-boxes a run. RUN/codec.safetensors
is the latest weights as an openmrt codec file; RUN/log.csv has the losses, RUN/eval.csv the held-out metrics.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from openmrt.codec.checkpoint import load_codec, save_codec
from openmrt.codec.model import FRAME_SAMPLES, SpectroStream
from openmrt.codec.stft import istft
from openmrt.config import codec_config
from openmrt.data.shards import float_audio, load_shard, read_index
from openmrt.errors import ConfigError, DataError
from openmrt.eval.codec import evaluate_codec, heldout_clips
from openmrt.train.codec_losses import (
    MultiScaleSTFTDiscriminator,
    complex_spectral_loss,
    discriminator_loss,
    feature_matching,
    frame_spectrum_loss,
    generator_adv_loss,
    phase_derivative_loss,
    reconstruction_loss,
)
from openmrt.train.codec_vq import CodebookLearner, keep_levels
from openmrt.train.common import (
    CSVLog,
    cleanup_distributed,
    cosine_lr,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
    setup_distributed,
)


class AudioData:
    """Every example's int16 audio [2, N] of a shard folder in memory (0.5 h ≈ 350 MB)."""

    def __init__(self, root: str | Path):
        root = Path(root)
        self.examples: list[np.ndarray] = []
        for s in read_index(root)["shards"]:
            shard = load_shard(root / s["file"])
            self.examples += [shard.example(i)["audio"] for i in range(len(shard))]
        if not self.examples:
            raise DataError(f"{root}: no examples")
        lengths = np.array([e.shape[1] for e in self.examples], dtype=np.float64)
        self.p = lengths / lengths.sum()

    def batch(self, rng: np.random.Generator, size: int, samples: int) -> torch.Tensor:
        """[size, samples, 2] float32 crops; near-silent crops are redrawn (up to 4 tries)."""
        out = np.zeros((size, samples, 2), np.float32)
        for b in range(size):
            for _ in range(4):
                ex = self.examples[int(rng.choice(len(self.examples), p=self.p))]
                s = int(rng.integers(0, max(1, ex.shape[1] - samples + 1)))
                a = float_audio(ex[:, s:s + samples])
                if np.sqrt(np.mean(a**2)) > 1e-3:
                    break
            out[b, : len(a)] = a
        return torch.from_numpy(out)


class AutoEncoder(nn.Module):
    """The training forward (DDP wraps ``forward``): audio -> latents -> VQ (straight-through) -> audio."""

    def __init__(self, codec: SpectroStream, learner: CodebookLearner):
        super().__init__()
        self.codec, self.learner = codec, learner

    def forward(self, audio: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                        dict | None]:
        """[B, N, 2], keep [B] -> (decoded [B, N − 1920, 2], its STFT frames [B, 4, T, 480], latents z [B, K, D],
        quantizer output). Before the codebook is initialised the latents pass unquantized (output None).
        """
        z = self.codec.encode_latents(audio)
        out = None
        if bool(self.learner.initialised):
            st, out = self.learner.quantize(z.float(), keep)
            z_dec = st.to(z.dtype)
        else:
            z_dec = z
        spec = self.codec.decoder_spectrogram(z_dec)
        return istft(spec), spec, z, out



def _kmeans_latents(model: SpectroStream, data: AudioData, args, rank: int, device) -> torch.Tensor:
    """Latents of the k-means batches (their own seeds, apart from the training stream)."""
    zs = []
    with torch.no_grad():
        for j in range(args.kmeans_batches):
            x = data.batch(np.random.default_rng([args.seed, 10**9 + j, rank]), args.batch, args.crop * FRAME_SAMPLES)
            zs.append(model.encode_latents(x.to(device)).float().flatten(0, 1))
    return torch.cat(zs)


def train(args: argparse.Namespace) -> dict:
    d = setup_distributed(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    cfg = codec_config(args.preset)
    if args.width:
        cfg = dataclasses.replace(cfg, name=f"{cfg.name}-w{args.width:g}", width=args.width)
    levels = args.levels or cfg.token_levels
    torch.manual_seed(args.seed)
    model = SpectroStream(cfg).to(d.device).train()
    learner = CodebookLearner(model.quantizer, levels, args.ema_decay, args.restart_every).to(d.device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.8, 0.99), weight_decay=0.0)
    disc = dopt = None
    if args.adv_start >= 0:
        disc = MultiScaleSTFTDiscriminator(channels=args.disc_channels).to(d.device)
        dopt = torch.optim.AdamW(disc.parameters(), lr=args.lr, betas=(0.8, 0.99), weight_decay=0.0)
    step = 0
    ckpt = out / "last.pt"
    if args.init and not ckpt.exists():  # fine-tune a trained codec: its codebook seeds the EMA statistics
        init = load_codec(args.init)
        if init.config.latent_dim != cfg.latent_dim or init.config.width != cfg.width:
            raise ConfigError(f"--init {args.init}: a {init.config.name} codec (width {init.config.width:g}) does "
                              f"not fit --preset {cfg.name} (width {cfg.width:g})")
        model.load_state_dict(init.state_dict())
        learner.seed_from_codebook()
    if ckpt.exists():
        state = load_checkpoint(ckpt)
        model.load_state_dict(state["model"])
        learner.load_state_dict(state["learner"])
        opt.load_state_dict(state["optimizer"])
        if disc is not None and state.get("disc"):
            disc.load_state_dict(state["disc"])
            dopt.load_state_dict(state["disc_opt"])
        step = int(state["step"])
        set_rng_state(state["rng"])
        if d.main:
            print(f"resuming {ckpt} at step {step}")
    data = AudioData(args.data)
    clips = heldout_clips(args.eval_data, args.eval_clips, args.eval_seconds) if args.eval_data and d.main else []
    net: nn.Module = AutoEncoder(model, learner)
    if d.world > 1:
        ids = [d.local_rank] if d.device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(net, device_ids=ids, broadcast_buffers=False)
    log, eval_log = CSVLog(out / "log.csv", enabled=d.main), CSVLog(out / "eval.csv", enabled=d.main)
    on_gpu = d.device.type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if on_gpu else torch.autocast("cpu", enabled=False)
    last: dict = {}
    t0 = time.perf_counter()
    stop = min(args.steps, args.stop_after or args.steps)
    while step < stop:
        lr = cosine_lr(step, args.lr, args.warmup, args.steps)
        for o in (opt, dopt):
            for g in o.param_groups if o is not None else []:
                g["lr"] = lr
        if step >= args.vq_start and not bool(learner.initialised):
            # k-means on latents of a briefly trained encoder: a random encoder's latents are
            # nearly constant and would seed a collapsed codebook.
            learner.kmeans_init(_kmeans_latents(model, data, args, d.rank, d.device), seed=args.seed)
        rng = np.random.default_rng([args.seed, step, d.rank])
        x = data.batch(rng, args.batch, args.crop * FRAME_SAMPLES).to(d.device)
        keep = keep_levels(rng, args.batch, levels, args.quantizer_dropout).to(d.device)
        with autocast:
            y, spec, z, q = net(x, keep)
        ref = x[:, : y.shape[1]]
        rec = reconstruction_loss(ref, y, args.mel_weight)
        commit = F.mse_loss(z.float(), q["quantized"]) if q is not None else z.new_zeros(())
        cplx = complex_spectral_loss(ref, y) if args.complex_weight else commit.new_zeros(())
        phase = phase_derivative_loss(ref, y) if args.phase_weight else commit.new_zeros(())
        frame = frame_spectrum_loss(ref, spec) if args.frame_weight else commit.new_zeros(())
        loss = (rec["stft"] + rec["mel"] + args.complex_weight * cplx + args.phase_weight * phase
                + args.frame_weight * frame + args.commit_weight * commit)
        row = {"stft": rec["stft"].item(), "mel": rec["mel"].item(), "complex": cplx.item(), "phase": phase.item(),
               "frame": frame.item(), "commit": commit.item()}
        if disc is not None and step >= args.adv_start:
            row.update(_adversarial_step(disc, dopt, ref, y, d.world, autocast))
            with autocast:
                fake = disc(y)
                with torch.no_grad():
                    real = disc(ref)
            adv, fm = generator_adv_loss(fake), feature_matching(real, fake)
            loss = loss + args.adv_weight * adv + args.fm_weight * fm
            row.update({"adv": adv.item(), "fm": fm.item()})
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, args.clip)
        opt.step()
        restarts = learner.update(q, torch.Generator().manual_seed(args.seed * 1_000_003 + step)) if q else 0
        step += 1
        if d.main and (step % args.log_every == 0 or step == stop):
            used = [len(torch.unique(q["codes"][..., i])) for i in range(levels)] if q else [0]
            last = {"step": step, "lr": lr, "loss": loss.item(), **row, "restarts": restarts,
                    "batch_codes_min": min(used), "sec": round(time.perf_counter() - t0, 2)}
            if clips and bool(learner.initialised) and (step % args.eval_every == 0 or step == args.steps):
                m = evaluate_codec(model, clips, levels, onsets=args.eval_onsets)
                ev = {"step": step, **{k: v for k, v in m.items() if isinstance(v, float)},
                      **{f"perplexity_l{i}": p for i, p in enumerate(m["perplexity"])}}
                eval_log.write(ev)  # its own file: one row per evaluation, not per log step
                last.update({"eval_mel_l1": m["mel_l1"], "eval_perplexity_min": min(m["perplexity"])})
                model.train()
            log.write(last)
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in last.items()}), flush=True)
        if d.main and (step % args.ckpt_every == 0 or step == stop):
            save_checkpoint(ckpt, model=model, learner=learner, optimizer=opt, disc=disc, disc_opt=dopt, step=step)
            save_codec(model, out / "codec.safetensors", extra={"step": str(step)})
    cleanup_distributed()
    return last


def _adversarial_step(disc, dopt, ref: torch.Tensor, y: torch.Tensor, world: int, autocast) -> dict:
    """One discriminator update on (real, decoded) audio; gradients averaged over ranks by hand
    (the discriminator runs several times per step, which DDP's hooks do not allow)."""
    with autocast:
        loss = discriminator_loss(disc(ref), disc(y.detach()))
    dopt.zero_grad(set_to_none=True)
    loss.backward()
    if world > 1:
        for p in disc.parameters():
            if p.grad is not None:
                torch.distributed.all_reduce(p.grad)
                p.grad /= world
    dopt.step()
    dopt.zero_grad(set_to_none=True)  # the generator pass must not leave stale gradients behind
    return {"disc": loss.item()}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="training shard folder (openmrt data compose / ingest)")
    p.add_argument("--eval-data", help="held-out shard folder (not in --data) for the periodic evaluation")
    p.add_argument("-o", "--out", required=True, help="run folder: last.pt, codec.safetensors, log.csv")
    p.add_argument("--preset", default="demo", help="codec preset (openmrt/config.py CODEC_PRESETS)")
    p.add_argument("--width", type=float, help="override the preset's channel multiplier")
    p.add_argument("--init", help="start from this trained codec file (same preset), e.g. the shipped demo codec")
    p.add_argument("--levels", type=int, help="RVQ levels to train (default: the preset's token levels, 12)")
    p.add_argument("--steps", type=int, default=2000, help="length of the LR schedule")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=20, help="frames per example (25 = 1 s)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--mel-weight", type=float, default=1.0)
    p.add_argument("--complex-weight", type=float, default=0.0, help="weight of the compressed complex-STFT "
                   "loss (supervises the phase; 0: magnitude losses only)")
    p.add_argument("--phase-weight", type=float, default=0.0, help="weight of the phase-derivative loss "
                   "(instantaneous frequency and group delay: makes partials tones, not a wash)")
    p.add_argument("--frame-weight", type=float, default=0.0, help="weight of the decoder-frame magnitude loss "
                   "(keeps the decoder from loud frames that cancel in the overlap-add)")
    p.add_argument("--commit-weight", type=float, default=1.0)
    p.add_argument("--quantizer-dropout", type=float, default=0.5, help="share of examples with fewer levels")
    p.add_argument("--ema-decay", type=float, default=0.98)
    p.add_argument("--restart-every", type=int, default=40, help="restart codes unused this many steps "
                   "(keep batch·crop·restart_every several times the codebook size, or live codes churn)")
    p.add_argument("--kmeans-batches", type=int, default=20, help="batches of latents for the k-means init")
    p.add_argument("--vq-start", type=int, default=100, help="steps of unquantized autoencoding before the "
                   "k-means init of the codebook")
    p.add_argument("--adv-start", type=int, default=-1, help="step at which the discriminator starts (-1: off)")
    p.add_argument("--adv-weight", type=float, default=0.1)
    p.add_argument("--fm-weight", type=float, default=1.0)
    p.add_argument("--disc-channels", type=int, default=16)
    p.add_argument("--eval-clips", type=int, default=8)
    p.add_argument("--eval-seconds", type=float, default=4.0)
    p.add_argument("--eval-onsets", action="store_true", help="also note-onset F1 at each evaluation (slow)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave the default)")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--ckpt-every", type=int, default=20)
    p.add_argument("--stop-after", type=int, help="stop at this step (the schedule still spans --steps); "
                   "rerun without it to continue, e.g. across time-boxed sessions")
