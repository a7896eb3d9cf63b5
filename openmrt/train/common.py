"""What every training loop shares: distributed set-up, atomic checkpoints with exact resume,
the learning-rate schedule and CSV logs.

Checkpoints are one ``torch.save`` file holding model, optimizer and scheduler state, the step,
the data position and every random generator's state, written to a temporary name and renamed,
so a kill at any moment leaves either the previous checkpoint or the new one, never half a file.
``full_state``/``load_full_state`` move model and optimizer state in and out of a plain, DDP or
FSDP-sharded model as full (unsharded) CPU state dicts, so one file resumes under any of them.
"""

from __future__ import annotations

import csv
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from openmrt.errors import CheckpointError
from openmrt.weights import atomic_write


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str | None = None) -> Dist:
    """Join the ``torchrun`` process group when launched by it (gloo on CPU, nccl on CUDA)."""
    want = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if "RANK" not in os.environ:
        return Dist(device=want)
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    if want.type == "cuda":
        torch.cuda.set_device(local)
        want = torch.device("cuda", local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if want.type == "cuda" else "gloo")
    return Dist(rank, world, local, want)


def cleanup_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def cosine_lr(step: int, base: float, warmup: int, total: int, final_ratio: float = 0.1) -> float:
    """Linear warm-up to ``base``, then cosine decay to ``final_ratio * base`` at ``total``."""
    if step < warmup:
        return base * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def budget_lr(step: int, args, t0: float) -> float:
    """``cosine_lr`` over ``args.steps``, or, with ``--time-schedule`` and ``--max-minutes``, with the decay
    spanning the wall-time budget that started at ``t0`` (a time-boxed run on a machine of unknown speed)."""
    sched = step
    if args.time_schedule and args.max_minutes and step >= args.warmup:
        done = (time.perf_counter() - t0) / (60 * args.max_minutes)
        sched = args.warmup + int((args.steps - args.warmup) * min(1.0, done))
    return cosine_lr(sched, args.lr, args.warmup, args.steps)


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    np.random.set_state(s["numpy"])
    random.setstate(s["python"])
    if s.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def save_checkpoint(path: str | Path, **state) -> None:
    """Atomically write ``state`` (modules/optimizers are stored by their state dicts)."""
    out = {k: (v.state_dict() if hasattr(v, "state_dict") else v) for k, v in state.items()}
    out["rng"] = rng_state()
    with atomic_write(path) as tmp:
        torch.save(out, tmp)


def full_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Full (unsharded) model and optimizer state dicts on CPU, on rank 0 (empty dicts on the other ranks).

    A collective under FSDP (the shards are gathered): every rank must call it. The optimizer's
    per-parameter state is keyed by parameter name, not by position."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    return get_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, model_sd: dict, optim_sd: dict) -> None:
    """Load full state dicts (every rank passes the whole of them) into a plain or FSDP-sharded model, each rank
    keeping its own shard. Optimizer state saved by ``optimizer.state_dict()`` (keyed by position, as checkpoints
    were written before ``full_state``) is renamed first; that assumes the optimizer was built on the model's
    trainable parameters in ``named_parameters`` order."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    ids = [i for g in optim_sd["param_groups"] for i in g["params"]]
    if ids and not isinstance(ids[0], str):
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        if len(names) != len(ids):
            raise CheckpointError(f"optimizer state for {len(ids)} parameters, the model trains {len(names)}")
        name = dict(zip(ids, names, strict=True))
        optim_sd = {"state": {name[i]: v for i, v in optim_sd["state"].items()},
                    "param_groups": [{**g, "params": [name[i] for i in g["params"]]} for g in optim_sd["param_groups"]]}
    set_state_dict(model, optimizer, model_state_dict=model_sd, optim_state_dict=optim_sd,
                   options=StateDictOptions(full_state_dict=True))


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # truncated, not a checkpoint, ...
        raise CheckpointError(f"cannot read training checkpoint {path}: {e}") from e


class CSVLog:
    """Appends one row per call (rank 0 only); the header is the union of the keys seen, in order of appearance.

    A row with keys the header lacks widens it: the file is rewritten with the new header (earlier rows
    get empty cells in the new columns) to a temporary name and renamed, so a kill leaves the old file
    or the new one, whole. A row lacking some of the header's keys gets empty cells there. Opening an
    existing log (a resumed run) takes its header and appends.
    """

    def __init__(self, path: str | Path, enabled: bool = True):
        self.path, self.enabled = Path(path), enabled
        self._fields: list[str] | None = None
        if enabled and self.path.exists():
            with open(self.path, newline="") as f:
                self._fields = next(csv.reader(f), None)

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self._fields is None:
            self._fields = list(row)
            with open(self.path, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=self._fields)
                w.writeheader()
                w.writerow(row)
            return
        added = [k for k in row if k not in self._fields]
        if added:
            self._widen(added)
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self._fields).writerow(row)

    def _widen(self, added: list[str]) -> None:
        """Rewrite the file with ``added`` columns after the present ones (atomically: write, then rename)."""
        with open(self.path, newline="") as f:
            old = list(csv.reader(f))[1:]
        fields = self._fields + added
        with atomic_write(self.path) as tmp, open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(fields)
            w.writerows(r + [""] * (len(fields) - len(r)) for r in old)
        self._fields = fields
