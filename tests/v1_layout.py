"""A seeded tiny v1 install in the official layout, for the v1 engine tests: the T5X LM checkpoint
(tests/test_v1_t5x.py's writer) under ``checkpoints/llm_base_x4286_c1860k/checkpoint_1860000`` and a small
16-level SpectroStream as ``resources/spectrostream/{decoder,quantizer,encoder}.safetensors``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from safetensors.torch import save_file

from openmrt.codec.convert import to_official
from openmrt.codec.model import SpectroStream
from openmrt.config import codec_config

ARCHIVE = "llm_base_x4286_c1860k"


def tiny_codec(seed: int = 0) -> SpectroStream:
    """The demo codec's size with 16 RVQ levels (what v1 decodes), seeded random weights."""
    torch.manual_seed(seed)
    return SpectroStream(dataclasses.replace(codec_config("demo"), num_quantizers=16, token_levels=16)).eval()


def write_layout(root: Path) -> Path:
    from test_v1_t5x import seeded_params, write_t5x

    write_t5x(root / "checkpoints" / ARCHIVE / "checkpoint_1860000", seeded_params())
    res = root / "resources" / "spectrostream"
    res.mkdir(parents=True)
    codec = tiny_codec()
    for part in ("decoder", "quantizer", "encoder"):
        save_file(to_official(codec, (part,)), str(res / f"{part}.safetensors"))
    return root
