"""A PyTorch ``IterableDataset`` of random fixed-length crops from a shard folder.

Crops start on frame boundaries, so a crop of F frames holds audio samples [1920 s, 1920 (s + F))
of its example, label frames [s, s + F) and, when the shards are tokenised, token frames
[s, s + F): everything aligned by index. Examples shorter than a crop are zero-padded and the
``valid`` mask says which frames are real.

Randomness comes from (seed, epoch, shard), never from the worker layout: the same shards give
the same crops whatever the number of DataLoader workers (only their interleaving differs).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from openmrt.data.shards import load_shard, read_index
from openmrt.frame import FRAME_SAMPLES

__all__ = ["CropDataset"]


class CropDataset(IterableDataset):
    """Random crops of ``crop_frames`` frames (10 s = 250 by default) from every shard of ``root``.

    Each epoch visits the shards in a seeded order and takes about one crop per ``crop_frames``
    of audio in each shard. ``epochs=None`` repeats forever. Items are dicts of tensors:
    ``audio`` float32 [2, 1920 F] (unless ``audio=False``), ``tokens`` int64 [F, 12] (if present),
    ``notes`` int64 [F, 128], ``drums`` int64 [F], ``valid`` bool [F], plus ``caption``, ``style``,
    ``shard``, ``example``, ``start``.
    """

    def __init__(self, root: str | Path, crop_frames: int = 250, seed: int = 0, epochs: int | None = 1,
                 audio: bool = True):
        super().__init__()
        self.root = Path(root)
        self.index = read_index(self.root)
        self.files = [s["file"] for s in self.index["shards"] if s["examples"] > 0]
        self.crop_frames, self.seed, self.epochs, self.audio = crop_frames, seed, epochs, audio

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        epoch = 0
        while self.epochs is None or epoch < self.epochs:
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.files))
            for k in order[wid::nw]:
                yield from self._crops(int(k), epoch)
            epoch += 1

    def _crops(self, k: int, epoch: int) -> Iterator[dict]:
        shard = load_shard(self.root / self.files[k])
        rng = np.random.default_rng([self.seed, epoch, k])
        lengths = np.diff(shard.offsets)
        n = max(1, int(lengths.sum()) // self.crop_frames)
        F = self.crop_frames
        for _ in range(n):
            i = int(rng.choice(len(lengths), p=lengths / lengths.sum()))  # longer examples, more crops
            start = int(rng.integers(0, max(1, lengths[i] - F + 1)))
            ex = shard.example(i)
            m = min(F, int(lengths[i]) - start)
            item = {"notes": _pad(ex["notes"][start:start + m], F), "drums": _pad(ex["drums"][start:start + m], F),
                    "valid": torch.arange(F) < m, "caption": ex["meta"].get("caption", ""),
                    "style": ex["meta"].get("style", ""), "shard": self.files[k], "example": i, "start": start}
            if self.audio:
                a = ex["audio"][:, start * FRAME_SAMPLES:(start + m) * FRAME_SAMPLES]
                audio = torch.zeros(2, F * FRAME_SAMPLES)
                audio[:, : a.shape[1]] = torch.from_numpy(a.astype(np.float32) / 32768.0)
                item["audio"] = audio
            if "tokens" in ex:
                item["tokens"] = _pad(ex["tokens"][start:start + m], F)
            yield item


def _pad(x: np.ndarray, frames: int) -> torch.Tensor:
    out = torch.zeros((frames, *x.shape[1:]), dtype=torch.int64)
    out[: x.shape[0]] = torch.from_numpy(x.astype(np.int64))
    return out
