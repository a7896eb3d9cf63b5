"""What every training loop shares: distributed set-up, atomic checkpoints with exact resume,
the learning-rate schedule and CSV logs.

Checkpoints are one ``torch.save`` file holding model, optimizer and scheduler state, the step,
the data position and every random generator's state, written to a temporary name and renamed,
so a kill at any moment leaves either the previous checkpoint or the new one, never half a file.
"""

from __future__ import annotations

import csv
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from openmrt.errors import CheckpointError


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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = {k: (v.state_dict() if hasattr(v, "state_dict") else v) for k, v in state.items()}
    out["rng"] = rng_state()
    tmp = path.with_name(path.name + ".tmp")
    torch.save(out, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # truncated, not a checkpoint, ...
        raise CheckpointError(f"cannot read training checkpoint {path}: {e}") from e


class CSVLog:
    """Appends one row per call; the header comes from the first row's keys (rank 0 only)."""

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
        new = self._fields is None
        if new:
            self._fields = list(row)
        with open(self.path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self._fields, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(row)
