"""Drumless twins: the same music with its drum stem taken out, as paired training data for the
drums switch.

A composed example keeps its drum stem (``drum_audio``), and FluidSynth mixes linearly, so
``audio - drum_audio`` is exactly the piece as it sounds without drums: same notes, same
instruments, same room. Each example whose drums play somewhere becomes a twin with that audio,
the drums flag 0 on every frame and a silent stem. Trained beside the originals, the LM sees the
one difference the drums flag stands for, instead of having to tell it apart from style and
arrangement (pieces that have drums and pieces that do not also differ in much else).

    openmrt data drumless SHARDS -o SHARDS_DRUMLESS [--skip N]
    openmrt data tokenize SHARDS_DRUMLESS --codec ...; openmrt style tokens SHARDS_DRUMLESS ...

Codec and style tokens of the source are dropped (they describe the mix); tokenize the twins again.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from openmrt.data.shards import read_index, save_arrays, shard_path, write_index
from openmrt.errors import DataError
from openmrt.frame import FRAME_SAMPLES

__all__ = ["drumless_folder", "drumless_shard"]


def _strip_drum_tracks(midi: bytes) -> bytes:
    """The MIDI file without its drum instruments (the twin's pitched notes are the source's)."""
    import io

    import pretty_midi

    pm = pretty_midi.PrettyMIDI(io.BytesIO(midi))
    pm.instruments = [inst for inst in pm.instruments if not inst.is_drum]
    buf = io.BytesIO()
    pm.write(buf)
    return buf.getvalue()


def drumless_shard(src: dict[str, np.ndarray], skip: int = 0) -> dict[str, np.ndarray] | None:
    """The arrays of one shard (as ``np.load`` gives them) -> the shard of its examples' drumless twins,
    or None when no example (after the first ``skip``) has drums. Needs the source's drum stem."""
    if "drum_audio" not in src:
        raise DataError("this shard keeps no drum stem (only composed data has one): no drumless twin can be made")
    offsets, meta = src["offsets"], json.loads(str(src["meta"]))
    midi_offsets = src.get("midi_offsets")
    audio, notes, examples, midi = [], [], [], []
    for i in range(skip, len(offsets) - 1):
        f0, f1 = int(offsets[i]), int(offsets[i + 1])
        if not src["drums"][f0:f1].any():
            continue
        s0, s1 = f0 * FRAME_SAMPLES, f1 * FRAME_SAMPLES
        mix = src["audio"][:, s0:s1].astype(np.int32) - src["drum_audio"][:, s0:s1].astype(np.int32)
        audio.append(np.clip(mix, -32768, 32767).astype(np.int16))
        notes.append(src["notes"][f0:f1])
        examples.append({**meta["examples"][i], "variant": "drumless"})
        if midi_offsets is not None:
            midi.append(_strip_drum_tracks(src["midi"][midi_offsets[i]:midi_offsets[i + 1]].tobytes()))
    if not examples:
        return None
    frames = [len(n) for n in notes]
    out = {"audio": np.concatenate(audio, axis=1), "notes": np.concatenate(notes),
           "drums": np.zeros(sum(frames), np.int8),
           "offsets": np.concatenate([[0], np.cumsum(frames)]).astype(np.int64),
           "meta": np.array(json.dumps({"examples": examples}))}
    out["drum_audio"] = np.zeros_like(out["audio"])
    if midi:
        out["midi"] = np.frombuffer(b"".join(midi), dtype=np.uint8)
        out["midi_offsets"] = np.concatenate([[0], np.cumsum([len(m) for m in midi])]).astype(np.int64)
    return out


def drumless_folder(src: str | Path, out: str | Path, skip: int = 0) -> dict:
    """Write the drumless twins of every example with drums in shard folder ``src`` to ``out``.

    ``skip``: leave out the first ``skip`` examples of the folder (e.g. the ones a trainer's
    ``--holdout`` keeps for evaluation, so no twin of a held-out piece is trained on). Resumable:
    shards already written are kept."""
    src, out = Path(src), Path(out)
    index = read_index(src)
    out.mkdir(parents=True, exist_ok=True)
    made = twins = 0
    build = {"kind": "drumless", "source": index["build"], "skip": skip}
    for n, entry in enumerate(index["shards"]):
        path = shard_path(out, n)
        skip_here = min(skip, entry["examples"])
        skip -= skip_here
        if path.exists():
            continue
        with np.load(src / entry["file"], allow_pickle=False) as z:
            shard = drumless_shard({k: z[k] for k in z.files}, skip_here)
        if shard is not None:
            save_arrays(path, shard)
            made += 1
            twins += len(json.loads(str(shard["meta"]))["examples"])
    result = write_index(out, build)
    return {"shards": made, "twins": twins, "index": result}
