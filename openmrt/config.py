"""Model and codec presets as frozen dataclasses.

``mrt2_small`` and ``mrt2_base`` are the released Magenta RealTime 2 sizes (shared/spec/mrt2_lm.md §1),
``tiny`` is the reduced configuration of the golden vectors (shared/golden/tiny_config.json),
``demo*`` are our own small sizes for the offline demo bundle.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from openmrt.errors import ConfigError

# Fields older files carry that nothing reads any more (the frame is fixed: openmrt/frame.py).
RETIRED_LM_FIELDS = frozenset({"style_codebook_size"})
RETIRED_CODEC_FIELDS = frozenset({"sample_rate", "channels", "hop", "extra"})


def _known(d: dict, cls: type, retired: frozenset[str], what: str) -> dict:
    """``d`` without the retired fields; a field that is neither known nor retired is an error."""
    unknown = set(d) - {f.name for f in dataclasses.fields(cls)} - retired
    if unknown:
        raise ConfigError(f"unknown {what} config fields {sorted(unknown)} (a file from a newer openmrt?)")
    return {k: v for k, v in d.items() if k not in retired}


@dataclass(frozen=True)
class TransformerConfig:
    num_layers: int
    dim: int  # model width
    hidden: int  # FFN width (tanh-GELU, not gated, with biases)
    num_heads: int
    head_dim: int


@dataclass(frozen=True)
class LMConfig:
    """The Depthformer LM: conditioning encoder, temporal transformer, depth transformer."""

    name: str
    temporal: TransformerConfig
    depth: TransformerConfig
    enc_dim: int  # conditioning-encoder output width (cross-attention K/V input)
    style_emb_dim: int = 768  # MusicCoCa dequantizer width (32 in the golden tiny model)
    self_window: int = 41  # temporal self-attention: past frames visible besides the current one
    cross_window: int = 41  # temporal cross-attention: past conditioning frames besides the current
    num_levels: int = 12  # RVQ levels per frame (depth steps)
    codebook_size: int = 1024
    style_levels: int = 12  # MusicCoCa RVQ tokens per frame
    soft_cap: float = 30.0
    eps: float = 1e-6
    # Ours, not the official architecture (False there): the frame's conditioning vector is also added to the
    # temporal input, so a small model reads the current notes directly instead of finding the current frame
    # among 83 cross-attended ones without positions.
    cond_to_input: bool = False
    # Ours too (False there): the conditioning encoder SUMS the 132 regular channels' rows instead of averaging
    # them. The mean dilutes one note to 1/132 of the vector while Adam moves each row by about the learning rate,
    # so the style branch (summed) outgrew the notes 132-fold: a demo LM trained with the mean ignored them
    # (held-out loss 0.02 nats lower with the notes than without).
    regular_sum: bool = False

    @property
    def vocab_size(self) -> int:
        from openmrt.tokens import NUM_RESERVED

        return NUM_RESERVED + self.num_levels * self.codebook_size

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @staticmethod
    def from_json(text: str) -> LMConfig:
        d = _known(json.loads(text), LMConfig, RETIRED_LM_FIELDS, "LM")
        d["temporal"] = TransformerConfig(**d["temporal"])
        d["depth"] = TransformerConfig(**d["depth"])
        return LMConfig(**d)


LM_PRESETS: dict[str, LMConfig] = {
    # 229,732,614 parameters; windows 500 // 12 = 41.
    "mrt2_small": LMConfig(
        name="mrt2_small",
        temporal=TransformerConfig(num_layers=12, dim=1024, hidden=4096, num_heads=8, head_dim=128),
        depth=TransformerConfig(num_layers=2, dim=768, hidden=3072, num_heads=6, head_dim=128),
        enc_dim=256,
        self_window=41,
        cross_window=41,
    ),
    # 2,406,701,830 parameters; windows 500 // 20 = 25.
    "mrt2_base": LMConfig(
        name="mrt2_base",
        temporal=TransformerConfig(num_layers=20, dim=3072, hidden=8192, num_heads=24, head_dim=128),
        depth=TransformerConfig(num_layers=6, dim=1024, hidden=4096, num_heads=8, head_dim=128),
        enc_dim=1024,
        self_window=25,
        cross_window=25,
    ),
    # The golden-vector model: windows 5 / 3 on purpose (a swap is caught).
    "tiny": LMConfig(
        name="tiny",
        temporal=TransformerConfig(num_layers=2, dim=128, hidden=256, num_heads=4, head_dim=32),
        depth=TransformerConfig(num_layers=2, dim=96, hidden=192, num_heads=2, head_dim=48),
        enc_dim=64,
        style_emb_dim=32,
        self_window=5,
        cross_window=3,
    ),
    # Our offline demo LM: sized to run in real time on 2 CPU cores (shared/notes/environment.md).
    "demo": LMConfig(
        name="demo",
        temporal=TransformerConfig(num_layers=6, dim=256, hidden=1024, num_heads=4, head_dim=64),
        depth=TransformerConfig(num_layers=2, dim=256, hidden=512, num_heads=4, head_dim=64),
        enc_dim=256,
        style_emb_dim=128,
        self_window=83,
        cross_window=83,
        cond_to_input=True,
        regular_sum=True,
    ),
}


def lm_config(name: str) -> LMConfig:
    try:
        return LM_PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown LM preset {name!r}; choose one of {sorted(LM_PRESETS)}") from None


@dataclass(frozen=True)
class CodecConfig:
    """SpectroStream (shared/spec/spectrostream.md). ``width`` scales every conv's channels.

    The token interface (25 Hz frames of ``token_levels`` codes in 0..codebook_size-1) is the
    same for every width; only the convolutions shrink.
    """

    name: str = "spectrostream"
    width: float = 1.0  # channel multiplier: 1.0 = official, 0.25 = our narrow demo codec
    num_quantizers: int = 64  # RVQ levels held in the codebook table (encode/decode any prefix)
    codebook_size: int = 1024
    latent_dim: int = 256
    token_levels: int = 12  # RVQ levels the LM reads and writes per frame

    @property
    def encoder_base(self) -> int:
        """Channels of the encoder's first conv (32 official)."""
        return _scaled(32, self.width)

    @property
    def decoder_base(self) -> int:
        """Channels of the decoder's last unit (64 official)."""
        return _scaled(64, self.width)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @staticmethod
    def from_json(text: str) -> CodecConfig:
        return CodecConfig(**_known(json.loads(text), CodecConfig, RETIRED_CODEC_FIELDS, "codec"))


def _scaled(channels: int, width: float) -> int:
    if width <= 0:
        raise ConfigError(f"codec width must be positive, got {width}")
    return max(1, round(channels * width))


CODEC_PRESETS: dict[str, CodecConfig] = {
    # The released codec: 9,251,904 encoder + 35,684,546 decoder + 16,777,216 codebook parameters.
    "spectrostream": CodecConfig(),
    # Our own demo codec: ¼ of the channels (about 1/16 of the conv compute), 12 RVQ levels.
    "narrow": CodecConfig(name="narrow", width=0.25, num_quantizers=12),
    # The shipped demo codec (docs/models.md): ⅛ of the channels, so the streaming decode step
    # leaves most of a 40 ms frame to the LM on 2 CPU cores (docs/benchmarks.md, Codec).
    "demo": CodecConfig(name="demo", width=0.125, num_quantizers=12),
}


def codec_config(name: str) -> CodecConfig:
    try:
        return CODEC_PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown codec preset {name!r}; choose one of {sorted(CODEC_PRESETS)}") from None
