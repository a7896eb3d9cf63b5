"""Training pairs for the style model from our shard folders: whole-example log-mels (cached) and caption texts.

A composed example's caption reads "<tempo> <style>, <instrument>, ..., <drums>, <bpm>, <key>. <sentence>." Texts are
drawn from four views of it, so the text tower learns both full captions and short prompts ("disco funk").
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from openmrt.data.shards import float_audio, load_shard, read_index
from openmrt.data.styles import STYLES
from openmrt.style.features import logmel, to_mono16k
from openmrt.weights import atomic_write

__all__ = ["Example", "audio_bank", "load_examples", "sample_text", "style_label", "text_views"]


def style_label(tag: str) -> str:
    """Style tag ("disco_funk") -> its caption words ("disco funk")."""
    return STYLES[tag].label if tag in STYLES else tag.replace("_", " ")


def text_views(meta: dict) -> dict[str, object]:
    """The caption's views: full caption, the tag list part, the style label and the list of single tags."""
    cap = meta.get("caption", "") or style_label(meta.get("style", ""))
    tags_part = cap.split(". ")[0]
    return {"caption": cap, "tags": tags_part, "label": style_label(meta.get("style", "")),
            "tag_list": [t.strip() for t in tags_part.split(",") if t.strip()]}


def sample_text(meta: dict, rng: np.random.Generator) -> str:
    """One training text: full caption 30 %, tag part 20 %, style label alone 25 %, a shuffled tag subset 25 %."""
    v = text_views(meta)
    u = rng.random()
    if u < 0.30:
        return v["caption"]
    if u < 0.50:
        return v["tags"]
    if u < 0.75:
        return v["label"]
    tags = list(v["tag_list"])
    k = int(rng.integers(1, len(tags) + 1))
    pick = [tags[i] for i in rng.permutation(len(tags))[:k]]
    if rng.random() < 0.5 and v["label"] not in " ".join(pick):
        pick.insert(0, v["label"])
    return ", ".join(pick)


class Example:
    """One example: meta (caption, style, ...) and its log-mel [n_mels, F] at 50 frames/s."""

    def __init__(self, meta: dict, mel: torch.Tensor, source: str):
        self.meta, self.mel, self.source = meta, mel, source

    @property
    def style(self) -> str:
        return self.meta.get("style", "")


def load_examples(roots: Sequence[str | Path], cache: str | Path | None = None) -> list[Example]:
    """Every example of the shard folders with its log-mel; with `cache`, features are stored in / read from an
    .npz named by a hash of the folders' index files (so a rebuilt folder is recomputed)."""
    key = hashlib.sha1("".join(sorted(json.dumps(read_index(Path(r))["shards"]) + str(r) for r in roots))
                       .encode()).hexdigest()[:12]
    path = Path(cache) / f"mels_{key}.npz" if cache else None
    if path is not None and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                metas, sources = json.loads(str(z["metas"])), json.loads(str(z["sources"]))
                mels = [torch.from_numpy(z[f"mel{i}"].astype(np.float32)) for i in range(len(metas))]
            return [Example(m, mel, s) for m, mel, s in zip(metas, mels, sources, strict=True)]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:  # half written before writes were atomic
            print(f"recomputing the features cache {path}: cannot read it ({e})")
    out = []
    for root in roots:
        root = Path(root)
        for sh in tqdm(read_index(root)["shards"], desc=f"log-mels {root.name}", leave=False):
            shard = load_shard(root / sh["file"])
            for i in range(len(shard.offsets) - 1):
                ex = shard.example(i)
                audio = float_audio(ex["audio"])  # [T, 2]
                out.append(Example(ex["meta"], logmel(to_mono16k(audio)).half().float(), f"{root.name}/{sh['file']}"))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {f"mel{i}": e.mel.numpy().astype(np.float16) for i, e in enumerate(out)}
        with atomic_write(path) as tmp, open(tmp, "wb") as f:  # a kill never leaves half a cache to be read
            np.savez(f, metas=json.dumps([e.meta for e in out]), sources=json.dumps([e.source for e in out]),
                     **arrays)
    return out


def crop(mel: torch.Tensor, frames: int, rng: np.random.Generator) -> torch.Tensor:
    """A random [n_mels, frames] window (examples shorter than that are padded with silence)."""
    n = mel.shape[-1]
    if n <= frames:
        return torch.nn.functional.pad(mel, (0, frames - n), value=-1.0)
    s = int(rng.integers(0, n - frames + 1))
    return mel[:, s:s + frames]


@torch.no_grad()
def audio_bank(model, examples, frames: int, hop: int, batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings of every `frames`-long window at `hop` in every example -> ([N, D], example index [N])."""
    clips, owner = [], []
    for k, ex in enumerate(examples):
        n = ex.mel.shape[-1]
        for s in range(0, max(1, n - frames + 1), hop):
            clips.append(ex.mel[:, s:s + frames])
            owner.append(k)
    embs = [model.mel_embeddings(torch.stack(clips[i:i + batch])) for i in range(0, len(clips), batch)]
    return np.concatenate(embs), np.array(owner)
