"""Held-out clips: the fixed, deterministic audio windows (with their source notes and frame labels)
that the evaluations score (openmrt/eval/codec.py, openmrt/eval/lm.py).

A clip's notes are the source MIDI's pitched notes (drums excluded) that start inside it, in seconds
relative to its start. The source MIDI is the one the shard keeps (``midi``), or, for composed shards
built before shards kept it, regenerated from the build plan (composition is a pure function of
style, seed and length); shards with neither fall back to their 25 Hz onset labels, placed mid-frame
(at most 20 ms off).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from openmrt.frame import FRAME_RATE, FRAME_SAMPLES
from openmrt.tokens import NOTE_ONSET

__all__ = ["STANDARD_HOURS", "STANDARD_SEED", "HeldoutClip", "Notes", "heldout_clips", "midi_bytes_notes",
           "standard_heldout"]

# The held-out set that docs/models.md measures every demo model on (`openmrt data compose --hours 0.1 --seed 9001`):
# composition is a pure function of the seed, and no training recipe of ours uses that seed.
STANDARD_HOURS, STANDARD_SEED = 0.1, 9001

Notes = list[tuple[float, float, int]]  # (start s, end s, MIDI pitch)


@dataclass
class HeldoutClip:
    """One held-out window of an example, with everything the judges and the conditioning need."""

    audio: np.ndarray  # float32 [N, 2] at 48 kHz, N = 1920 · frames
    drum_audio: np.ndarray | None  # its drum stem [N, 2] when the shard keeps one
    notes: Notes  # source notes starting inside the clip (drums excluded), clip-relative seconds
    states: np.ndarray  # int8 [frames, 128] note states (off / held / onset)
    drums: np.ndarray  # int8 [frames] drums active flag
    style: str  # the example's style ("" when it has none)
    name: str  # "shard_NNNNN.npz#example@first_frame"
    has_midi: bool  # the notes come from the source MIDI the shard keeps


def _pitched_notes(pm) -> Notes:
    """(start, end, pitch) of a PrettyMIDI's notes, drum tracks left out, sorted."""
    return sorted((n.start, n.end, n.pitch) for inst in pm.instruments if not inst.is_drum for n in inst.notes)


def midi_bytes_notes(data: bytes) -> Notes:
    """(start, end, pitch) of a MIDI file's pitched notes (drum tracks left out), sorted, from its bytes."""
    import pretty_midi

    return _pitched_notes(pretty_midi.PrettyMIDI(io.BytesIO(data)))


def _composed_notes(root: Path, meta: dict) -> Notes | None:
    """The example's source MIDI notes (drums excluded), regenerated from its composition seed
    (for shards built before they kept the MIDI file itself)."""
    if meta.get("source") != "compose":
        return None
    from openmrt.data.compose import compose
    from openmrt.data.pipeline import plan_compose

    build = json.loads((root / "build.json").read_text())
    for job in plan_compose(build["hours"], build["seed"], build["pieces_per_shard"], tuple(build["piece_seconds"])):
        for spec in job:
            if spec["seed"] == meta.get("seed") and spec["style"] == meta.get("style"):
                return _pitched_notes(compose(spec["style"], spec["seed"], spec["seconds"]).midi)
    return None


def _label_notes(notes: np.ndarray) -> Notes:
    """Onsets from 25 Hz note states, placed mid-frame; a frame's length stands in for the offset."""
    f, p = np.nonzero(notes == NOTE_ONSET)
    return sorted(((fi + 0.5) / FRAME_RATE, (fi + 1.5) / FRAME_RATE, int(pi)) for fi, pi in zip(f, p, strict=True))


def heldout_clips(root: str | Path, count: int = 24, seconds: float = 8.0, *, skip_seconds: float = 0.0,
                  per_example: int | None = None, need_midi: bool = False) -> list[HeldoutClip]:
    """Up to ``count`` consecutive ``seconds``-long windows of a shard folder's examples, in shard order.

    Each example gives its windows from ``skip_seconds`` on, back to back, at most ``per_example`` of
    them (None: all that fit whole); with ``need_midi``, examples whose shard keeps no source MIDI are
    left out. A fixed, deterministic set: every evaluation of every checkpoint sees the same audio.
    """
    from openmrt.data.shards import float_audio, load_shard, read_index

    root = Path(root)
    frames, first = int(round(seconds * FRAME_RATE)), int(round(skip_seconds * FRAME_RATE))
    clips: list[HeldoutClip] = []
    for s in read_index(root)["shards"]:
        shard = load_shard(root / s["file"])
        for i in range(len(shard)):
            ex = shard.example(i)
            midi = ex.get("midi") or b""
            starts = list(range(first, ex["notes"].shape[0] - frames + 1, frames))[:per_example]
            if not starts or (need_midi and not midi):
                continue
            if midi:
                notes = midi_bytes_notes(midi)
            else:
                notes = _composed_notes(root, ex["meta"]) or _label_notes(ex["notes"])
            stem = ex.get("drum_audio")
            for f0 in starts:
                t0, t1 = f0 / FRAME_RATE, (f0 + frames) / FRAME_RATE
                span = slice(f0 * FRAME_SAMPLES, (f0 + frames) * FRAME_SAMPLES)
                clips.append(HeldoutClip(
                    audio=float_audio(ex["audio"][:, span]),
                    drum_audio=None if stem is None else float_audio(stem[:, span]),
                    notes=[(st - t0, en - t0, p) for st, en, p in notes if t0 <= st < t1],
                    states=np.array(ex["notes"][f0:f0 + frames]),
                    drums=np.array(ex["drums"][f0:f0 + frames]),
                    style=ex["meta"].get("style", ""),
                    name=f"{s['file']}#{i}@{f0}",
                    has_midi=bool(midi),
                ))
                if len(clips) == count:
                    return clips
    return clips


def standard_heldout(echo: Callable[[str], None] = print) -> Path:
    """The standard held-out shards, composed into the cache (``$XDG_CACHE_HOME/openmrt/heldout``) on first use
    (about 6 minutes of music, a few seconds to a minute of CPU): what ``openmrt eval`` scores without ``--data``."""
    from openmrt.data.pipeline import compose_dataset

    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "openmrt" / "heldout"
    root = cache / f"compose-{STANDARD_HOURS:g}h-seed{STANDARD_SEED}"
    how = f"openmrt data compose --hours {STANDARD_HOURS:g} --seed {STANDARD_SEED}"
    if (root / "index.json").is_file():
        echo(f"openmrt: no --data: the standard held-out set ({how}) in {root}")
    else:  # an interrupted build resumes: compose keeps the shards it finished
        echo(f"openmrt: no --data: composing the standard held-out set ({how}) into {root}, once")
        compose_dataset(root, STANDARD_HOURS, STANDARD_SEED)
    return root
