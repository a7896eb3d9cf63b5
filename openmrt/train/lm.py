"""Teacher-forced training of the Depthformer on token shards with aligned labels.

    openmrt train lm --data SHARDS --out RUN [--preset demo] [--steps N] [--batch B] [--crop F]
    torchrun --nproc_per_node 2 -m openmrt.cli train lm ...      (DDP; gloo on CPU, nccl on GPU)
    torchrun --nproc_per_node 2 -m openmrt.cli train lm --fsdp ...   (FSDP2: parameters, gradients and
                                                                      optimizer state sharded)

Batches are a pure function of (seed, step, rank): resuming needs no data-loader state and
continues the exact same stream, and every rank draws its own crops. Checkpoints (model,
optimizer, step, RNG) are written atomically every ``--ckpt-every`` steps to RUN/last.pt;
rerunning the same command resumes from it. The checkpoint holds full (unsharded) state dicts
whether or not the run is sharded, so a --fsdp run resumes with or without --fsdp. Loss:
cross-entropy per RVQ level over that level's 1024 ids (the sampler's support), reported per
level in RUN/log.csv.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from openmrt import tokens as tk
from openmrt.config import lm_config
from openmrt.data.shards import load_shard, read_index
from openmrt.errors import ConfigError, DataError
from openmrt.lm.checkpoint import init_weights, load_any_lm, save_lm
from openmrt.lm.lora import apply_lora, lora_state_dict, merge_lora
from openmrt.lm.model import Depthformer
from openmrt.style.data import style_label
from openmrt.train.common import (
    CSVLog,
    budget_lr,
    cleanup_distributed,
    full_state,
    load_checkpoint,
    load_full_state,
    save_checkpoint,
    set_rng_state,
    setup_distributed,
)
from openmrt.train.conditioning import Augment, augment
from openmrt.train.guidance import distill_losses, guided_logits, sample_scales


class TokenData:
    """Every tokenised example of a shard folder in memory (tokens are small: 600 bytes a second)."""

    def __init__(self, root: str | Path, holdout: int = 0):
        root = Path(root)
        self.examples: list[dict] = []
        for s in read_index(root)["shards"]:
            shard = load_shard(root / s["file"])
            for i in range(len(shard.offsets) - 1):
                ex = shard.example(i)
                if "tokens" not in ex:
                    raise DataError(f"{root / s['file']} has no tokens: run `openmrt data tokenize {root}` first")
                keep = {k: ex[k] for k in ("tokens", "style_tokens", "notes", "drums") if k in ex}
                meta = ex.get("meta") or {}  # style name (as a prompt would say it) and caption, for --text-style
                name = style_label(meta["style"]) if meta.get("style") else None
                keep["texts"] = [t for t in (name, meta.get("caption")) if t]
                keep["fixed_drums"] = meta.get("variant") == "drumless"  # a twin's flag 0 is never masked
                self.examples.append(keep)
        if len(self.examples) <= holdout:
            raise DataError(f"{root}: {len(self.examples)} examples, need more than the {holdout} held out")
        self.heldout = self.examples[:holdout]
        self.train = self.examples[holdout:]

    def add_text_tokens(self, style) -> None:
        """Style tokens of each example's style name and caption through ``style``'s text path (what a text prompt
        gives at play time), for ``batch(text_style=...)``."""
        cache: dict[str, np.ndarray] = {}
        for ex in self.examples:
            for t in ex["texts"]:
                if t not in cache:
                    cache[t] = np.asarray(style.tokens_for([(t, 1.0)]), np.int64)
            ex["text_tokens"] = [cache[t] for t in ex["texts"]]

    @staticmethod
    def batch(pool: list[dict], rng: np.random.Generator, size: int, crop: int, aug: Augment | None,
              random_cfg: bool = False, text_style: float = 0.0) -> dict:
        """``size`` crops of ``crop`` frames; ``random_cfg`` draws each example's guidance scales (CFG tokens);
        ``text_style``: the chance that a crop's style tokens are those of its style name or caption (text path)
        instead of its own audio's."""
        lengths = np.array([len(e["tokens"]) for e in pool], dtype=np.float64)
        conds, toks, valid = [], [], []
        for i in rng.choice(len(pool), size=size, p=lengths / lengths.sum()):
            ex = pool[i]
            n = len(ex["tokens"])
            s = int(rng.integers(0, max(1, n - crop + 1)))
            m = min(crop, n - s)
            codes = np.zeros((crop, 12), np.int64)
            codes[:m] = ex["tokens"][s : s + m]
            notes = np.zeros((crop, 128), np.int64)
            notes[:m] = ex["notes"][s : s + m]
            drums = np.full(crop, tk.MASKED, np.int64)
            drums[:m] = ex["drums"][s : s + m]
            style = np.full((crop, 12), tk.MASKED, np.int64)  # masked where the shards carry no style tokens
            if "style_tokens" in ex:
                style[:m] = ex["style_tokens"][s : s + m]
            if text_style > 0 and ex.get("text_tokens") and rng.random() < text_style:
                style[:m] = ex["text_tokens"][int(rng.integers(len(ex["text_tokens"])))]
            cfg = sample_scales(rng) if random_cfg else None
            cond = augment(style, notes, drums, rng, aug, cfg, ex.get("fixed_drums", False)) if aug else np.stack(
                [tk.make_conditioning(style[t], notes[t], int(drums[t]), cfg) for t in range(crop)])
            conds.append(cond)
            toks.append(codes)
            valid.append(np.arange(crop) < m)
        return {"cond": tk.encode_conditioning(np.stack(conds)),
                "tokens": tk.to_unique(torch.as_tensor(np.stack(toks))), "valid": torch.as_tensor(np.stack(valid))}


def level_losses(model: torch.nn.Module, batch: dict, device: torch.device) -> torch.Tensor:
    """Mean cross-entropy per level [12] over valid frames; ``model(cond, tokens)`` gives level logits."""
    cond, tokens, valid = batch["cond"].to(device), batch["tokens"].to(device), batch["valid"].to(device)
    logits = model(cond, tokens)
    target = tk.from_unique(tokens)
    ce = F.cross_entropy(logits.flatten(0, 2).float(), target.flatten(), reduction="none").view(target.shape)
    w = valid[..., None].float()
    return (ce * w).sum((0, 1)) / w.sum((0, 1)).clamp(min=1)


def shard(model: Depthformer, device: torch.device, world: int) -> Depthformer:
    """FSDP2 in place: one unit per temporal and per depth block, the root holding the rest (conditioning encoder,
    embeddings, depth adapter, output layer). Parameters stay f32 (bf16 comes from autocast, as under DDP)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    # The root returns training_logits(...).view(...); nothing modifies it in place, so FSDP's warning is moot.
    warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view tensor")
    mesh = init_device_mesh(device.type, (world,))
    for block in (*model.temporal, *model.depth):
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    register_fsdp_forward_method(model, "training_logits")  # what training, evaluation and guidance call
    return model


def _plain(cfg, model_sd: dict, lora: int) -> Depthformer:
    """An unsharded CPU model holding ``model_sd`` (built on the meta device: no second initialisation)."""
    with torch.device("meta"):
        model = Depthformer(cfg)
        if lora:
            apply_lora(model, rank=lora, alpha=2.0 * lora)
    model.load_state_dict(model_sd, assign=True)
    return model


class _Train(torch.nn.Module):
    """DDP wraps ``forward``: route it to the level-slice training logits."""

    def __init__(self, lm: Depthformer):
        super().__init__()
        self.lm = lm

    def forward(self, cond, tokens):
        return self.lm.training_logits(cond, tokens)


def train(args: argparse.Namespace) -> dict:
    d = setup_distributed(args.device)
    if args.fsdp and not torch.distributed.is_initialized():
        raise ConfigError("--fsdp shards the model across processes: launch with torchrun")
    out = Path(args.out)
    torch.manual_seed(args.seed)
    if args.init:
        model = load_any_lm(args.init, preset=args.preset if args.preset.startswith("mrt2") else None)
    else:
        cfg = lm_config(args.preset)
        if args.window:
            cfg = dataclasses.replace(cfg, self_window=args.window, cross_window=args.window)
        model = init_weights(Depthformer(cfg), args.seed)
    if args.lora:
        apply_lora(model, rank=args.lora, alpha=2.0 * args.lora)
    if args.fsdp:
        shard(model, d.device, d.world)  # moves each unit to the device as it shards it
    else:
        model.to(d.device)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]  # the local shards under FSDP
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.95), weight_decay=args.weight_decay)
    step = 0
    ckpt = out / "last.pt"
    if ckpt.exists():
        state = load_checkpoint(ckpt)
        load_full_state(model, opt, state["model"], state["optimizer"])
        step = int(state["step"])
        set_rng_state(state["rng"])
        if d.main:
            print(f"resuming {ckpt} at step {step}")
    wrapped = _Train(model)
    if d.world > 1 and not args.fsdp:
        ids = [d.local_rank] if d.device.type == "cuda" else None
        wrapped = torch.nn.parallel.DistributedDataParallel(wrapped, device_ids=ids)
    teacher = None
    if args.distill_from:  # guidance distillation: match the teacher's CFG-mixed distribution, one row
        teacher = load_any_lm(args.distill_from).eval().requires_grad_(False)
        teacher = shard(teacher, d.device, d.world) if args.fsdp else teacher.to(d.device)
    data = TokenData(args.data, holdout=args.holdout)
    if args.text_style > 0:
        from openmrt.style import load_style

        data.add_text_tokens(load_style(args.style))
    aug = Augment() if not args.no_augment else None
    log, eval_log = CSVLog(out / "log.csv", enabled=d.main), CSVLog(out / "eval.csv", enabled=d.main)
    on_gpu = d.device.type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if on_gpu else torch.autocast("cpu", enabled=False)
    last = {}
    t0 = time.perf_counter()
    stop = min(args.steps, args.stop_after or args.steps)
    deadline = t0 + args.max_minutes * 60 if args.max_minutes else math.inf
    while step < stop:
        lr = budget_lr(step, args, t0)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        per_level = torch.zeros(12)
        for micro in range(args.accum):
            rng = np.random.default_rng([args.seed, step, d.rank, micro])
            batch = TokenData.batch(data.train, rng, args.batch, args.crop, aug, random_cfg=teacher is not None,
                                    text_style=args.text_style)
            with autocast:
                if teacher is None:
                    losses = level_losses(wrapped, batch, d.device)
                else:
                    cond, toks = batch["cond"].to(d.device), batch["tokens"].to(d.device)
                    losses = distill_losses(wrapped(cond, toks), guided_logits(teacher, cond, toks),
                                            batch["valid"].to(d.device))
            (losses.mean() / args.accum).backward()
            per_level += losses.detach().cpu() / args.accum
        torch.nn.utils.clip_grad_norm_(params, args.clip)
        opt.step()
        step += 1
        # Every rank must agree to stop together: rank 0's clock decides.
        timed_out = _agree(time.perf_counter() >= deadline, d.device) if args.max_minutes else False
        final = step == args.steps or timed_out
        log_now = step % args.log_every == 0 or final
        eval_now = log_now and bool(data.heldout) and (step % args.eval_every == 0 or final)
        if d.main and log_now:
            last = {"step": step, "lr": lr, "loss": float(per_level.mean()),
                    **{f"loss_l{q}": float(per_level[q]) for q in range(12)},
                    "sec": round(time.perf_counter() - t0, 2)}
            log.write(last)
        if eval_now and (d.main or args.fsdp):  # every rank runs a sharded model's forward
            eval_loss = evaluate(model, data.heldout, args, d.device)
            if d.main:
                last["eval_loss"] = eval_loss
                eval_log.write({"step": step, "eval_loss": eval_loss})  # the held-out curve, on its own
        if d.main and log_now:
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in last.items()
                              if not k.startswith("loss_l")}))
        if step % args.ckpt_every == 0 or step == stop or timed_out:
            model_sd, optim_sd = full_state(model, opt)  # gathers the shards under FSDP: every rank calls it
            if d.main:
                save_checkpoint(ckpt, model=model_sd, optimizer=optim_sd, step=step)
                export(_plain(model.cfg, model_sd, args.lora) if args.fsdp else model, out, step, lora=bool(args.lora),
                       int8_tables=args.int8_tables)
        if timed_out:
            break
    cleanup_distributed()
    return last


def _agree(flag: bool, device: torch.device) -> bool:
    """Rank 0's ``flag`` on every rank (a no-op without torch.distributed)."""
    if not torch.distributed.is_initialized():
        return flag
    t = torch.tensor([float(flag)], device=device)
    torch.distributed.broadcast(t, src=0)
    return bool(t.item())


def export(model: Depthformer, out: Path, step: int, lora: bool, int8_tables: bool = False) -> None:
    """RUN/lm.safetensors (adapters merged into a copy when training LoRA; RUN/lora.safetensors alone too);
    ``int8_tables``: in the package's form (``save_lm``), so a demo run's file ships as it is."""
    if lora:
        import copy

        from openmrt.weights import save_tensors

        save_tensors(out / "lora.safetensors", lora_state_dict(model), kind="openmrt-lora",
                     metadata={"step": str(step)})
        model = merge_lora(copy.deepcopy(model))
    save_lm(model, out / "lm.safetensors", extra={"step": str(step)}, int8_tables=int8_tables)


@torch.no_grad()
def evaluate(model: Depthformer, pool: list[dict], args, device) -> float:
    model.eval()
    rng = np.random.default_rng([args.seed, 10**9])  # the same held-out crops every time
    loss = float(level_losses(_Train(model), TokenData.batch(pool, rng, args.batch, args.crop, None), device).mean())
    model.train()
    return loss


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="tokenised shard folder (openmrt data tokenize)")
    p.add_argument("-o", "--out", required=True, help="run folder: last.pt, lm.safetensors, log.csv, eval.csv")
    p.add_argument("--preset", default="demo", help="LM preset for a new model (openmrt/config.py LM_PRESETS)")
    p.add_argument("--init", help="start from these weights: an openmrt LM file, or an official checkpoint "
                   "(then --preset mrt2_small / mrt2_base names its size)")
    p.add_argument("--distill-from", metavar="TEACHER", help="guidance distillation: learn the teacher's batched-CFG "
                   "distribution from the CFG tokens alone (random scales per example)")
    p.add_argument("--lora", type=int, default=0, metavar="RANK", help="fine-tune LoRA adapters of this rank only")
    p.add_argument("--window", type=int, help="override the attention windows (frames)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--accum", type=int, default=1, help="gradient accumulation micro-batches")
    p.add_argument("--crop", type=int, default=125, help="frames per example (25 = 1 s)")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--holdout", type=int, default=2, help="examples kept out for evaluation")
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--text-style", type=float, default=0.0, metavar="P",
                   help="chance that a crop's style tokens come from its style name or caption through the style "
                        "model's text path instead of its audio: per-piece audio tokens let a small LM memorise "
                        "pieces, and text prompts land where it never trained (GPU recipe: 0.5; the shipped demo "
                        "LM's last fine-tune: 0.3)")
    p.add_argument("--style", default="demo", help="style model for --text-style: demo, musiccoca or a file")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--int8-tables", action="store_true", help="write RUN/lm.safetensors as the package ships an LM: "
                   "token tables int8, the rest float16 (resuming still uses RUN/last.pt, in full precision)")
    p.add_argument("--device")
    p.add_argument("--fsdp", action="store_true", help="under torchrun: shard parameters, gradients and optimizer "
                   "state across the processes (FSDP2, one unit per transformer block) instead of DDP")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--ckpt-every", type=int, default=100)
    p.add_argument("--stop-after", type=int, help="stop at this step (the schedule still spans --steps); "
                   "rerun without it to continue, e.g. across time-boxed sessions")
    p.add_argument("--max-minutes", type=float, help="stop (evaluate, checkpoint, export) after this much wall time")
    p.add_argument("--time-schedule", action="store_true", help="with --max-minutes: the LR decays over the time "
                   "budget instead of --steps (a time-boxed run on a machine of unknown speed; not reproducible)")
