"""v1 model sizes (shared/spec/mrt_v1.md §1; tiny = the golden set's overrides, golden/v1/README.md).

``base`` and ``large`` differ only in width, MLP width, heads and encoder depth; everything about
the token layout and the chunk shape is fixed by the released models.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from openmrt.errors import ConfigError


@dataclass(frozen=True)
class V1Config:
    name: str
    dim: int  # EMBED_DIM
    num_heads: int
    head_dim: int  # H * head_dim need not equal dim (tiny: 4 x 16 = 64 vs 32)
    mlp_dim: int  # gated-GELU hidden width (encoder, temporal and depth alike)
    encoder_layers: int
    temporal_layers: int
    depth_layers: int
    levels: int = 16  # RVQ levels per frame = depth positions
    frames: int = 50  # frames per chunk (2 s at 25 Hz) = temporal positions
    encoder_len: int = 1006  # 250 context frames x 4 levels + 6 style tokens (FixedEmbed table length)
    vocab_size: int = 29698  # ids in use (PassThroughVocabulary)
    num_embeddings: int = 29824  # vocab rounded up to a multiple of 128: the embedding/logit width
    temporal_buckets: int = 128
    temporal_max_distance: int = 128
    depth_buckets: int = 16
    depth_max_distance: int = 16
    eps: float = 1e-6

    @property
    def steps(self) -> int:
        """Decode steps per chunk (one target token each)."""
        return self.frames * self.levels

    @property
    def inner(self) -> int:
        return self.num_heads * self.head_dim

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:  # session states record the model they were saved with
        return json.dumps(self.to_dict())


PRESETS = {
    "tiny": V1Config("tiny", dim=32, num_heads=4, head_dim=16, mlp_dim=96, encoder_layers=2, temporal_layers=2,
                     depth_layers=2),
    "base": V1Config("base", dim=768, num_heads=12, head_dim=64, mlp_dim=2048, encoder_layers=12,
                     temporal_layers=20, depth_layers=4),
    "large": V1Config("large", dim=1024, num_heads=16, head_dim=64, mlp_dim=2816, encoder_layers=24,
                      temporal_layers=20, depth_layers=4),
}


def v1_config(name: str) -> V1Config:
    """A preset by name (tiny, base, large)."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown v1 LM preset {name!r}; choose one of {sorted(PRESETS)}") from None
