"""Add codec tokens to a shard folder: every example's audio -> 12 SpectroStream levels per 25 Hz
frame, stored as ``tokens`` int16 [T, 12] next to the labels (frame f of both is the same 40 ms);
and the LM's style input, ``style_tokens`` int16 [T, 12], from a style model over the audio.

Which codec: whatever ``openmrt.codec.checkpoint.load_codec`` resolves (the shipped demo codec by
default, our codec file, or the official SpectroStream encoder and codebook).
Shards gain their tokens one at a time, atomically (rewrite, then rename), so a run can be resumed.

``retokenize_folder`` writes the tokens of another codec into a new folder instead: token-only copies
of the shards (audio dropped, labels and style tokens kept), what an LM needs after the codec changed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from openmrt.data.shards import float_audio, read_index, save_arrays, write_index
from openmrt.errors import DataError
from openmrt.frame import FRAME_RATE, FRAME_SAMPLES

__all__ = ["retokenize_folder", "style_tokenize_folder", "tokenize_folder"]


def _encoder(model, levels: int):
    import torch

    def encode(audio: np.ndarray, frames: int) -> np.ndarray:
        x = torch.from_numpy(float_audio(audio))[None].to(next(model.parameters()).device)
        with torch.inference_mode():
            return model.encode(x, levels)[0].cpu().numpy()  # [T, levels]

    return encode


def tokenize_folder(folder: str | Path, model, levels: int = 12, codec_name: str = "") -> dict:
    """Encode every shard of ``folder`` that has no tokens yet; returns counts."""
    encode = _encoder(model, levels)
    info = {"codec": codec_name, "levels": levels}
    done, skipped = _add_per_frame(folder, "tokens", encode, info, "tokenizing")
    return {"tokenized": done, "already": skipped}


def style_tokenize_folder(folder: str | Path, style, window_s: float = 10.0, hop_frames: int = 25,
                          style_name: str = "") -> dict:
    """Add ``style_tokens`` int16 [T, 12]: every ``hop_frames`` frames, the style model's 12 tokens of the
    ``window_s`` seconds of audio centred on that hop (clamped to the example), for the hop's frames.

    This is the LM's style input in training (the paper's "style tokens over the audio around each
    frame"); the trainer's sticky augmentation then holds a frame's tokens across hops at random.
    """
    half = int(round(window_s * FRAME_RATE / 2))

    def tokens(audio: np.ndarray, frames: int) -> np.ndarray:
        out = np.zeros((frames, 12), np.int16)
        for h in range(0, frames, hop_frames):
            mid = min(h + hop_frames // 2, frames - 1)
            a, b = max(0, mid - half), min(frames, mid + half)
            clip = float_audio(audio[:, a * FRAME_SAMPLES:b * FRAME_SAMPLES])
            out[h:h + hop_frames] = style.tokenize(style.embed_audio(clip))
        return out

    info = {"style": style_name, "window_s": window_s, "hop_frames": hop_frames}
    done, skipped = _add_per_frame(folder, "style_tokens", tokens, info, "style tokens")
    return {"tokenized": done, "already": skipped}


def retokenize_folder(folder: str | Path, out: str | Path, model, levels: int = 12, codec_name: str = "") -> dict:
    """Token-only copies of ``folder``'s shards in ``out`` (same file names and index entries) with every
    example encoded afresh by ``model``; the audio is left out (an empty [2, 0] array), all else kept.
    Shards already in ``out`` are skipped (resume); returns counts."""
    from tqdm import tqdm

    folder, out = Path(folder), Path(out)
    if folder.resolve() == out.resolve():
        raise DataError(f"--out {out} is the source folder: retokenising writes a new folder")
    index = read_index(folder)
    out.mkdir(parents=True, exist_ok=True)
    encode = _encoder(model, levels)
    info = {"codec": codec_name, "levels": levels}
    done = skipped = 0
    for entry in tqdm(index["shards"], desc="retokenizing", unit="shard"):
        if (out / entry["file"]).is_file():
            skipped += 1
            continue
        with np.load(folder / entry["file"], allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        offsets, audio = arrays["offsets"], arrays.pop("audio")
        if audio.shape[1] < int(offsets[-1]) * FRAME_SAMPLES:
            raise DataError(f"{folder / entry['file']} holds no audio for its frames: retokenise from the "
                            "folder the audio is in")
        tokens = np.zeros((int(offsets[-1]), levels), np.int16)
        for f0, f1 in zip(offsets[:-1], offsets[1:], strict=True):
            tokens[f0:f1] = encode(audio[:, f0 * FRAME_SAMPLES:f1 * FRAME_SAMPLES], int(f1 - f0))
        meta = json.loads(str(arrays["meta"]))
        meta["tokens"] = info
        arrays.update({"audio": np.zeros((2, 0), np.int16), "tokens": tokens, "meta": np.array(json.dumps(meta))})
        arrays.pop("drum_audio", None)  # audio too: the LM never reads it
        save_arrays(out / entry["file"], arrays)
        done += 1
    new = {**index, "build": {"kind": "retokenized", "source": str(folder), "source_build": index.get("build"),
                              "tokens": info}}
    (out / "index.json").write_text(json.dumps(new, indent=1))
    return {"tokenized": done, "already": skipped}


def _add_per_frame(folder: str | Path, key: str, per_example, info: dict, desc: str) -> tuple[int, int]:
    """Add array ``key`` [T, ...] (``per_example(audio int16 [2, N], frames)``) to every shard lacking it,
    one shard at a time, atomically (rewrite, then rename): an interrupted run resumes."""
    from tqdm import tqdm

    folder = Path(folder)
    index = read_index(folder)
    done = skipped = 0
    for entry in tqdm(index["shards"], desc=desc, unit="shard"):
        path = folder / entry["file"]
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        if key in arrays:
            skipped += 1
            continue
        offsets, audio = arrays["offsets"], arrays["audio"]
        out = None
        for i in range(len(offsets) - 1):
            f0, f1 = int(offsets[i]), int(offsets[i + 1])
            value = per_example(audio[:, f0 * FRAME_SAMPLES:f1 * FRAME_SAMPLES], f1 - f0)
            if value.shape[0] != f1 - f0:
                raise DataError(f"{key}: got {value.shape[0]} frames for {f1 - f0} label frames in {path}")
            if out is None:
                out = np.zeros((int(offsets[-1]), *value.shape[1:]), dtype=np.int16)
            out[f0:f1] = value.astype(np.int16)
        meta = json.loads(str(arrays["meta"]))
        meta[key] = info
        arrays.update({key: out, "meta": np.array(json.dumps(meta))})
        save_arrays(path, arrays)
        done += 1
    write_index(folder, {**index["build"], key: info})
    return done, skipped
