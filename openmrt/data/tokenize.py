"""Add codec tokens to a shard folder: every example's audio -> 12 SpectroStream levels per 25 Hz
frame, stored as ``tokens`` int16 [T, 12] next to the labels (frame f of both is the same 40 ms).

Which codec: an openmrt codec checkpoint (``openmrt.codec.checkpoint``; the trained demo codec
is issue 6's work), or the official SpectroStream encoder with the official LM checkpoint (for the
RVQ codebook).
Shards gain their tokens one at a time, atomically (rewrite, then rename), so a run can be resumed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from openmrt.data.shards import read_index, write_index
from openmrt.errors import DataError

__all__ = ["load_codec", "tokenize_folder"]


def load_codec(codec: str | Path | None = None, encoder: str | Path | None = None,
               lm_checkpoint: str | Path | None = None):
    """The codec to tokenise with: an openmrt codec checkpoint (``codec``), or the official encoder
    plus the official LM checkpoint, whose ``params/soundstream`` holds the RVQ codebook."""
    from openmrt.codec import SpectroStream, load_official
    from openmrt.codec.checkpoint import load_codec as load_own

    if codec is not None:
        return load_own(codec)
    if encoder is None or lm_checkpoint is None:
        raise DataError("tokenising needs --codec (an openmrt codec checkpoint; our demo codec is trained by a "
                        "later issue, issue 6, and not shipped yet) or both --encoder and --lm-checkpoint "
                        "(the official MRT2 encoder.safetensors and mrt2_*.safetensors)")
    model = SpectroStream()
    load_official(model, lm_checkpoint, encoder)
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
