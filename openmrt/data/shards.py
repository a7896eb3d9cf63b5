"""The on-disk dataset: a folder of ``shard_NNNNN.npz`` files plus ``build.json`` and ``index.json``.

One shard holds several examples back to back:

==============  ======================  ===================================================
key             dtype, shape            meaning
==============  ======================  ===================================================
``audio``       int16 [2, 1920 T]       48 kHz stereo mix, T = all frames of the shard
``drum_audio``  int16 [2, 1920 T]       the drum stem of the mix (composed data only)
``notes``       int8 [T, 128]           note states per frame (labels.py)
``drums``       int8 [T]                drums-playing flag per frame
``offsets``     int64 [n + 1]           example i is frames offsets[i]:offsets[i+1]
``meta``        str (JSON)              per-example metadata (caption, style, tempo, ...)
``tokens``      int16 [T, 12]           codec tokens, once ``openmrt data tokenize`` ran
``style_tokens``int16 [T, 12]           style tokens, once ``openmrt style tokens`` ran
``midi``        uint8 [bytes]           the source MIDI files back to back (composed and
                                        ingested MIDI; empty for audio), split by
``midi_offsets``int64 [n + 1]           byte offsets
==============  ======================  ===================================================

Every example is a whole number of frames, so frame f of an example is audio samples
[1920 f, 1920 (f + 1)) and token frame f: labels and tokens align by index.

Building is resumable: the list of shards and what goes in each is a pure function of the build
arguments (kept in ``build.json``); a worker writes its shard to a temporary name and renames it
when complete, so a shard file either is whole or does not exist. Rerunning the same command skips
the shards that exist and builds the rest; an interrupted build loses at most the shards in flight.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from openmrt.errors import DataError
from openmrt.frame import FRAME_RATE, FRAME_SAMPLES, SAMPLE_RATE
from openmrt.weights import atomic_write

if TYPE_CHECKING:  # labels need pretty_midi, which training on token shards (the GPU image) lacks
    from openmrt.data.labels import Labels

__all__ = ["Example", "Shard", "build_shards", "load_shard", "read_index", "shard_path", "write_shard", "write_index"]

FORMAT = "openmrt-shards"
VERSION = 1


@dataclass
class Example:
    """One example before it goes into a shard."""

    audio: np.ndarray  # float32 [2, 1920 T]
    labels: Labels
    meta: dict
    drum_audio: np.ndarray | None = None
    midi: bytes = b""  # the source .mid file, when there is one


@dataclass
class Shard:
    """A loaded shard (arrays fully in memory)."""

    audio: np.ndarray
    notes: np.ndarray
    drums: np.ndarray
    offsets: np.ndarray
    meta: list[dict]
    drum_audio: np.ndarray | None = None
    tokens: np.ndarray | None = None
    style_tokens: np.ndarray | None = None
    midi: np.ndarray | None = None
    midi_offsets: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.meta)

    def example(self, i: int) -> dict:
        """Arrays and metadata of example ``i``."""
        f0, f1 = int(self.offsets[i]), int(self.offsets[i + 1])
        s0, s1 = f0 * FRAME_SAMPLES, f1 * FRAME_SAMPLES
        out = {"audio": self.audio[:, s0:s1], "notes": self.notes[f0:f1], "drums": self.drums[f0:f1],
               "meta": self.meta[i]}
        if self.drum_audio is not None:
            out["drum_audio"] = self.drum_audio[:, s0:s1]
        if self.tokens is not None:
            out["tokens"] = self.tokens[f0:f1]
        if self.style_tokens is not None:
            out["style_tokens"] = self.style_tokens[f0:f1]
        if self.midi is not None:
            out["midi"] = self.midi[self.midi_offsets[i]:self.midi_offsets[i + 1]].tobytes()
        return out


def shard_path(out_dir: str | Path, index: int) -> Path:
    return Path(out_dir) / f"shard_{index:05d}.npz"


def _int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)


def float_audio(x: np.ndarray) -> np.ndarray:
    """Stored int16 audio [2, N] -> float32 [N, 2] in [-1, 1), as the models take it."""
    return np.ascontiguousarray(x.T, dtype=np.float32) / 32768.0


def save_arrays(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez`` to ``path`` atomically (temporary file, fsync, rename): readers and resumed builds
    never see half a shard."""
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def _plain(x):
    """numpy scalars (from pretty_midi, numpy maths) as plain JSON numbers."""
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"{type(x).__name__} is not JSON serialisable")


def write_shard(path: str | Path, examples: Sequence[Example], extra_meta: dict | None = None,
                per_frame: dict[str, Sequence[np.ndarray]] | None = None) -> dict:
    """Write examples to ``path`` atomically (temporary file, then rename). Returns its index entry.

    ``per_frame`` adds arrays of one row per label frame, one array per example (e.g. ``tokens``
    [T, 12] made elsewhere), as `openmrt data tokenize` adds them to existing shards.
    """
    path = Path(path)
    frames = [e.labels.notes.shape[0] for e in examples]
    for e, t in zip(examples, frames, strict=True):
        if e.audio.shape != (2, t * FRAME_SAMPLES) or e.labels.drums.shape != (t,):
            raise DataError(f"example {e.meta.get('source')}: audio {e.audio.shape} does not match {t} label frames")
    total = sum(frames)
    arrays = {
        "audio": _int16(np.concatenate([e.audio for e in examples], axis=1)) if examples
        else np.zeros((2, 0), np.int16),
        "notes": np.concatenate([e.labels.notes for e in examples]) if examples else np.zeros((0, 128), np.int8),
        "drums": np.concatenate([e.labels.drums for e in examples]) if examples else np.zeros(0, np.int8),
        "offsets": np.concatenate([[0], np.cumsum(frames)]).astype(np.int64),
        "meta": np.array(json.dumps({"examples": [e.meta for e in examples], **(extra_meta or {})}, default=_plain)),
    }
    for key, values in (per_frame or {}).items():
        if [len(v) for v in values] != frames:
            raise DataError(f"{key}: {[len(v) for v in values]} rows for {frames} label frames")
        arrays[key] = np.concatenate(values)
    if examples and all(e.drum_audio is not None for e in examples):
        arrays["drum_audio"] = _int16(np.concatenate([e.drum_audio for e in examples], axis=1))
    if any(e.midi for e in examples):
        arrays["midi"] = np.frombuffer(b"".join(e.midi for e in examples), dtype=np.uint8)
        arrays["midi_offsets"] = np.concatenate([[0], np.cumsum([len(e.midi) for e in examples])]).astype(np.int64)
    save_arrays(path, arrays)
    return {"file": path.name, "examples": len(examples), "frames": int(total),
            "seconds": round(total / FRAME_RATE, 2)}


def load_shard(path: str | Path) -> Shard:
    """Read a whole shard; a damaged file raises DataError naming it."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            opt = {k: z[k] for k in ("drum_audio", "tokens", "style_tokens", "midi", "midi_offsets") if k in z.files}
            return Shard(z["audio"], z["notes"], z["drums"], z["offsets"], meta["examples"], **opt)
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f"cannot read shard {path}: {e}") from e


def shard_info(path: str | Path) -> dict:
    """Index entry of an existing shard, reading only its small arrays."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            offsets = z["offsets"]
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f"cannot read shard {path}: {e}") from e
    info = {"file": Path(path).name, "examples": len(meta["examples"]), "frames": int(offsets[-1]),
            "seconds": round(int(offsets[-1]) / FRAME_RATE, 2), "example_frames": np.diff(offsets).tolist()}
    if "skipped" in meta:
        info["skipped"] = meta["skipped"]
    return info


def write_index(out_dir: str | Path, build: dict) -> dict:
    """Scan the shards of ``out_dir`` and write ``index.json`` (atomically)."""
    out_dir = Path(out_dir)
    shards = [shard_info(p) for p in sorted(out_dir.glob("shard_*.npz"))]
    index = {"format": FORMAT, "version": VERSION, "sample_rate": SAMPLE_RATE, "frame_rate": FRAME_RATE,
             "samples_per_frame": FRAME_SAMPLES, "build": build, "shards": shards,
             "examples": sum(s["examples"] for s in shards), "seconds": round(sum(s["seconds"] for s in shards), 2)}
    with atomic_write(out_dir / "index.json") as tmp:
        tmp.write_text(json.dumps(index, indent=1))
    return index


def read_index(out_dir: str | Path) -> dict:
    path = Path(out_dir) / "index.json"
    if not path.is_file():
        raise DataError(f"{out_dir} has no index.json: not a shard folder, or its build has not finished")
    return json.loads(path.read_text())


def build_shards(out_dir: str | Path, build: dict, jobs: list, work: Callable[[tuple], dict], workers: int = 1,
                 unit_seconds: Sequence[float] | None = None, desc: str = "building") -> dict:
    """Run ``work((index, path, job))`` for every shard not yet on disk, ``workers`` at a time, with a
    progress bar; then write ``index.json``. ``build`` identifies the build: resuming into a folder
    built with different arguments is refused, since the shards would not fit together.

    ``work`` writes its shard itself (with ``write_shard``) and returns a dict with at least
    ``seconds`` (audio made) and ``cpu_s`` (its process time).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    build_file = out_dir / "build.json"
    if build_file.is_file():
        old = json.loads(build_file.read_text())
        if old != build:
            raise DataError(f"{out_dir} holds a build made with other arguments ({build_file}); "
                            "rerun with the same arguments to resume, or choose a new --out")
    else:
        build_file.write_text(json.dumps(build, indent=1))
    for tmp in out_dir.glob("*.tmp"):  # left by an interrupted build: never valid
        tmp.unlink()
    todo = [(i, str(shard_path(out_dir, i)), job) for i, job in enumerate(jobs) if not shard_path(out_dir, i).exists()]
    weights = list(unit_seconds) if unit_seconds is not None else [1.0] * len(jobs)
    total = sum(weights)
    done = total - sum(weights[i] for i, _, _ in todo)
    stats = {"built": 0, "skipped_existing": len(jobs) - len(todo), "seconds": 0.0, "cpu_s": 0.0}
    wall = time.perf_counter()
    with tqdm(total=round(total, 1), initial=round(done, 1), unit="s", desc=desc, dynamic_ncols=True) as bar:
        def account(i: int, result: dict) -> None:
            stats["built"] += 1
            for k, v in result.items():
                if isinstance(v, int | float) and not isinstance(v, bool):
                    stats[k] = stats.get(k, 0) + v
                elif isinstance(v, list):
                    stats.setdefault(k, []).extend(v)
            bar.update(max(0.0, min(round(weights[i], 1), bar.total - bar.n)))  # weights are estimates
            if stats["cpu_s"] > 0:
                bar.set_postfix(speed=f"{stats['seconds'] / stats['cpu_s']:.0f}x/cpu")

        if workers <= 1 or len(todo) <= 1:
            for item in todo:
                account(item[0], work(item))
        else:
            ctx = mp.get_context("fork")  # workers inherit the imported modules: no re-import cost
            with ctx.Pool(workers) as pool:
                for i, result in pool.imap_unordered(_indexed, [(work, item) for item in todo]):
                    account(i, result)
    stats["wall_s"] = time.perf_counter() - wall
    index = write_index(out_dir, build)
    stats["index"] = index
    return stats


def _indexed(arg: tuple) -> tuple[int, dict]:
    work, item = arg
    return item[0], work(item)
