"""Add codec tokens to a shard folder: every example's audio -> 12 SpectroStream levels per 25 Hz
frame, stored as ``tokens`` int16 [T, 12] next to the labels (frame f of both is the same 40 ms).

Which codec: the official SpectroStream encoder (``resources/spectrostream/encoder.safetensors``
of the MRT2 release, keys ``params/encoder/...``) loads today. Checkpoints of our own trained codec
are issue 6's work; until they exist such a file is refused with a message saying so.
Shards gain their tokens one at a time, atomically (rewrite, then rename), so a run can be resumed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from openmrt.data.shards import read_index, write_index
from openmrt.errors import CheckpointError, DataError

__all__ = ["load_codec", "tokenize_folder"]


def load_codec(path: str | Path):
    """A SpectroStream model with encoder weights from ``path`` (official encoder file)."""
    from openmrt.codec import SpectroStream, load_official
    from openmrt.codec.convert import ENCODER_PREFIX, read_official_file

    path = Path(path)
    if not path.is_file():
        raise DataError(f"codec file {path} not found. Tokenising needs the official SpectroStream encoder "
                        "(resources/spectrostream/encoder.safetensors of the MRT2 release); checkpoints of our own "
                        "trained codec are a later issue's work (issue 6) and do not exist yet")
    try:
        has_encoder = bool(read_official_file(path, (ENCODER_PREFIX,)))
    except CheckpointError as e:
        raise DataError(str(e)) from e
    if not has_encoder:
        raise DataError(f"{path} holds no official encoder weights ({ENCODER_PREFIX}...). Our own codec "
                        "checkpoints are a later issue's work (issue 6); tokenise with the official encoder for now")
    model = SpectroStream()
    load_official(model, encoder_file=path)
    return model.eval()


def tokenize_folder(folder: str | Path, model, levels: int = 12, codec_name: str = "") -> dict:
    """Encode every shard of ``folder`` that has no tokens yet; returns counts."""
    import torch
    from tqdm import tqdm

    folder = Path(folder)
    index = read_index(folder)
    done = skipped = 0
    for entry in tqdm(index["shards"], desc="tokenizing", unit="shard"):
        path = folder / entry["file"]
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        if "tokens" in arrays:
            skipped += 1
            continue
        offsets, audio = arrays["offsets"], arrays["audio"]
        tokens = np.zeros((int(offsets[-1]), levels), dtype=np.int16)
        for i in range(len(offsets) - 1):
            f0, f1 = int(offsets[i]), int(offsets[i + 1])
            x = torch.from_numpy(audio[:, f0 * 1920:f1 * 1920].T.astype(np.float32) / 32768.0)[None]
            with torch.inference_mode():
                codes = model.encode(x, levels)[0]  # [T, levels]
            if codes.shape[0] != f1 - f0:
                raise DataError(f"codec gave {codes.shape[0]} frames for {f1 - f0} label frames in {path}")
            tokens[f0:f1] = codes.numpy().astype(np.int16)
        meta = json.loads(str(arrays["meta"]))
        meta["tokens"] = {"codec": codec_name, "levels": levels}
        arrays.update(tokens=tokens, meta=np.array(json.dumps(meta)))
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
        done += 1
    write_index(folder, {**index["build"], "tokens": {"codec": codec_name, "levels": levels}})
    return {"tokenized": done, "already": skipped}
