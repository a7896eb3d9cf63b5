"""Building shard folders: composed music (compose -> render -> label) and a user's folder (MIDI
files rendered and labelled exactly, audio files transcribed).

The work functions run in worker processes; each keeps one ``Renderer`` per process so SoundFonts
load once.
"""

from __future__ import annotations

import functools
import io
import math
import time
import zlib
from dataclasses import asdict
from pathlib import Path

import numpy as np

from openmrt.data.compose import compose, style_names
from openmrt.data.labels import midi_labels, n_frames
from openmrt.data.render import Renderer, available_soundfonts, choose_soundfont, draw_augment
from openmrt.data.shards import Example, build_shards, write_shard
from openmrt.errors import DataError
from openmrt.frame import FRAME_SAMPLES, SAMPLE_RATE

__all__ = ["compose_dataset", "plan_compose", "render_piece"]

PIECE_SECONDS = (20.0, 50.0)  # target length range; whole sections make pieces ~25 % longer on average
OVERSHOOT = 1.25
@functools.cache
def _renderer() -> Renderer:
    """One per process: SoundFonts load once per worker."""
    return Renderer()


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
    mix, drums = _renderer().render(pm, frames * FRAME_SAMPLES, soundfont, aug)
    labels = midi_labels(pm, frames)
    facts = {"soundfont": Path(soundfont).name, "augment": {k: round(v, 3) for k, v in asdict(aug).items()}}
    return mix, drums, labels, facts


def _midi_bytes(pm) -> bytes:
    buf = io.BytesIO()
    pm.write(buf)
    return buf.getvalue()


def _compose_work(item: tuple) -> dict:
    index, path, pieces = item
    t0 = time.process_time()
    examples = []
    for spec in pieces:
        piece = compose(spec["style"], spec["seed"], spec["seconds"])
        mix, drums, labels, facts = render_piece(piece.midi, piece.duration, spec["seed"])
        meta = {**labels.meta, **facts, "source": "compose", "seed": spec["seed"], "frames": labels.notes.shape[0]}
        examples.append(Example(mix, labels, meta, drums, _midi_bytes(piece.midi)))
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


# ---------------------------------------------------------------------------- a user's folder

MIDI_SUFFIXES = {".mid", ".midi", ".kar"}
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff", ".opus"}


def list_inputs(folder: str | Path) -> list[str]:
    """MIDI and audio files under ``folder`` (recursively), sorted: the build's fixed order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder")
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.is_file() and p.suffix.lower() in MIDI_SUFFIXES | AUDIO_SUFFIXES)


def _file_seed(name: str) -> int:
    return zlib.crc32(name.encode())  # stable across processes (str hash is salted)


def ingest_file(folder: Path, name: str, style: str = "", caption: str = "") -> Example:
    """One file -> Example. MIDI is rendered (exact labels); audio is transcribed. Raises DataError
    with the reason when the file cannot be used."""
    import pretty_midi

    path = folder / name
    if path.stat().st_size == 0:
        raise DataError("empty file")
    if path.suffix.lower() in MIDI_SUFFIXES:
        try:
            pm = pretty_midi.PrettyMIDI(str(path))
        except Exception as e:  # mido/pretty_midi raise many types (OSError, EOFError, KeyError, ValueError ...)
            raise DataError(f"malformed MIDI ({type(e).__name__}: {e})") from e
        if not any(i.notes for i in pm.instruments):
            raise DataError("MIDI has no notes")
        seed = _file_seed(name)
        end = pm.get_end_time()
        if end > 3600:
            raise DataError(f"MIDI lasts {end:.0f} s; longer than an hour is surely an error")
        mix, drums, labels, facts = render_piece(pm, end + 1.0, seed)
        meta = {**labels.meta, **facts, "source": "midi", "file": name, "frames": labels.notes.shape[0]}
        if style:
            meta["style"] = style
        if caption:
            meta["caption"] = caption
        return Example(mix, labels, meta, drums, path.read_bytes())
    from openmrt.audio import read_audio
    from openmrt.data.labels import Labels
    from openmrt.data.transcribe import transcription_labels

    audio = read_audio(path).T  # [2, N] at 48 kHz
    if audio.shape[1] < FRAME_SAMPLES:
        raise DataError("no audio (shorter than one 40 ms frame)")
    if not np.isfinite(audio).all() or np.abs(audio).max() < 1e-4:
        raise DataError("silent or invalid samples")
    frames = audio.shape[1] // FRAME_SAMPLES  # whole frames; the last partial frame is dropped
    audio = audio[:, :frames * FRAME_SAMPLES]
    notes, drum_flags, n_notes = transcription_labels(audio, SAMPLE_RATE, frames)
    meta = {"source": "audio", "file": name, "frames": frames, "labels": "basic-pitch + drum detector",
            "notes": n_notes, "style": style, "caption": caption or style, "has_drums": bool(drum_flags.any())}
    return Example(audio, Labels(notes, drum_flags, meta), meta)


def _ingest_work(item: tuple) -> dict:
    index, path, (folder, names, style, caption) = item
    t0 = time.process_time()
    examples, skipped = [], []
    for name in names:
        try:
            examples.append(ingest_file(Path(folder), name, style, caption))
        except (DataError, OSError) as e:
            skipped.append([name, str(e)])
    entry = write_shard(path, examples, {"skipped": skipped})
    return {"seconds": entry["seconds"], "cpu_s": time.process_time() - t0, "ingested": len(examples),
            "skipped": skipped}


def ingest_folder(folder: str | Path, out_dir: str | Path, workers: int = 1, files_per_shard: int = 8,
                  style: str = "", caption: str = "") -> dict:
    """Shards from a folder of MIDI and audio files. Unusable files are skipped, each with its
    reason, and counted; a file that fails never stops the build."""
    folder = Path(folder).resolve()
    names = list_inputs(folder)
    if not names:
        raise DataError(f"no MIDI or audio files in {folder} ({', '.join(sorted(MIDI_SUFFIXES | AUDIO_SUFFIXES))})")
    groups = [names[i:i + files_per_shard] for i in range(0, len(names), files_per_shard)]
    jobs = [(str(folder), g, style, caption) for g in groups]
    build = {"kind": "ingest", "folder": str(folder), "files": names, "files_per_shard": files_per_shard,
             "style": style, "caption": caption, "soundfonts": [Path(f).name for f in available_soundfonts()]}
    stats = build_shards(out_dir, build, jobs, _ingest_work, workers, [float(len(g)) for g in groups],
                         desc="ingesting")
    # Files skipped in shards built by an earlier (interrupted) run are reported too.
    stats["skipped"] = [s for sh in stats["index"]["shards"] for s in sh.get("skipped", [])]
    stats["ingested"] = stats["index"]["examples"]
    return stats
