"""Building shard folders: composed music (compose -> render -> label) and a user's folder (MIDI
files rendered and labelled exactly, audio files transcribed).

The work functions run in worker processes; each keeps one ``Renderer`` per process so SoundFonts
load once.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from openmrt.data.compose import compose, style_names
from openmrt.data.labels import SAMPLES_PER_FRAME, midi_labels, n_frames
from openmrt.data.render import Renderer, available_soundfonts, choose_soundfont, draw_augment
from openmrt.data.shards import Example, build_shards, write_shard
from openmrt.errors import DataError

__all__ = ["compose_dataset", "plan_compose", "render_piece"]

PIECE_SECONDS = (20.0, 50.0)  # target length range; whole sections make pieces ~25 % longer on average
OVERSHOOT = 1.25
_RENDERER: Renderer | None = None


def _renderer() -> Renderer:
    global _RENDERER  # one per process: SoundFonts load once per worker
    if _RENDERER is None:
        _RENDERER = Renderer()
    return _RENDERER


def plan_compose(hours: float, seed: int, pieces_per_shard: int = 4,
                 piece_seconds: tuple[float, float] = PIECE_SECONDS) -> list[list[dict]]:
    """Pieces per shard for about ``hours`` of music: styles in balanced rotation (reshuffled every
    round), a seed and a target length per piece. A pure function of its arguments."""
    rng = np.random.default_rng([seed, 1])
    mean = OVERSHOOT * sum(piece_seconds) / 2
    n = max(1, math.ceil(hours * 3600 / mean))
    styles: list[str] = []
    while len(styles) < n:
        styles += list(rng.permutation(style_names()))
    pieces = [{"style": str(styles[i]), "seed": int(rng.integers(2**31)),
               "seconds": round(float(rng.uniform(*piece_seconds)), 2)} for i in range(n)]
    return [pieces[i:i + pieces_per_shard] for i in range(0, n, pieces_per_shard)]


def render_piece(pm, duration: float, seed: int, soundfont: str | None = None, light_augment: bool = True):
    """Render a PrettyMIDI to whole frames and label it: (Example parts) audio, drum stem, labels, facts."""
    frames = n_frames(duration)
    soundfont = soundfont or choose_soundfont(seed)
    aug = draw_augment(seed, light_augment)
    mix, drums = _renderer().render(pm, frames * SAMPLES_PER_FRAME, soundfont, aug)
    labels = midi_labels(pm, frames)
    facts = {"soundfont": Path(soundfont).name, "augment": {k: round(v, 3) for k, v in asdict(aug).items()}}
    return mix, drums, labels, facts


def _compose_work(item: tuple) -> dict:
    index, path, pieces = item
    t0 = time.process_time()
    examples = []
    for spec in pieces:
        piece = compose(spec["style"], spec["seed"], spec["seconds"])
        mix, drums, labels, facts = render_piece(piece.midi, piece.duration, spec["seed"])
        meta = {**labels.meta, **facts, "source": "compose", "seed": spec["seed"], "frames": labels.notes.shape[0]}
        examples.append(Example(mix, labels, meta, drums))
    entry = write_shard(path, examples)
    return {"seconds": entry["seconds"], "cpu_s": time.process_time() - t0}


def compose_dataset(out_dir: str | Path, hours: float, seed: int = 0, workers: int = 1, pieces_per_shard: int = 4,
                    piece_seconds: tuple[float, float] = PIECE_SECONDS) -> dict:
    """Compose, render and label about ``hours`` of music into shards under ``out_dir``."""
    fonts = available_soundfonts()
    if not fonts:
        raise DataError("no General MIDI SoundFont found: install fluid-soundfont-gm (see scripts/install.sh)")
    jobs = plan_compose(hours, seed, pieces_per_shard, piece_seconds)
    build = {"kind": "compose", "hours": hours, "seed": seed, "pieces_per_shard": pieces_per_shard,
             "piece_seconds": list(piece_seconds),
             "soundfonts": [Path(f).name for f in fonts], "shards": len(jobs)}
    est = [OVERSHOOT * sum(p["seconds"] for p in job) for job in jobs]
    return build_shards(out_dir, build, jobs, _compose_work, workers, est, desc="composing")
