"""The networks of our style model: a conv audio tower over log-mels, a small transformer text tower over
SentencePiece ids, both ending in L2-normalised D-dim embeddings (a CLIP-style shared space)."""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from openmrt.errors import ConfigError
from openmrt.style.features import N_MELS

__all__ = ["AudioEncoder", "StyleConfig", "TextEncoder", "TextTokenizer", "fit_tokenizer"]


@dataclass(frozen=True)
class StyleConfig:
    dim: int = 128  # shared embedding width D (the LM sees only the 12 tokens, so D is free; see docs/models.md)
    n_mels: int = N_MELS  # audio tower input bands
    audio_channels: int = 160  # conv width
    audio_blocks: int = 4  # residual blocks, each halving time: 10 s = 500 mel frames -> 16 after stem + 4 blocks
    clip_seconds: float = 10.0  # audio is embedded in clips of this length, averaged (as MusicCoCa does)
    vocab: int = 256  # SentencePiece vocabulary size
    text_width: int = 128
    text_layers: int = 2
    text_heads: int = 4
    max_text_len: int = 96  # ids kept per text (captions are ~60 ids)
    rvq_levels: int = 12
    rvq_codes: int = 1024

    def to_dict(self) -> dict:
        return asdict(self)


class _Block(nn.Module):
    """Residual conv block that halves time: x -> pool(x) + conv(gelu(norm(conv_s2(x))))."""

    def __init__(self, c: int):
        super().__init__()
        self.down = nn.Conv1d(c, c, 3, stride=2, padding=1)
        self.norm1, self.norm2 = nn.GroupNorm(8, c), nn.GroupNorm(8, c)
        self.conv = nn.Conv1d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(F.gelu(self.norm1(self.down(x))))
        skip = F.avg_pool1d(x, 2, ceil_mode=True)[..., : h.shape[-1]]
        return F.gelu(self.norm2(h + skip))


class AudioEncoder(nn.Module):
    """log-mel [B, n_mels, F] -> L2-normalised [B, D]: strided stem, residual blocks, mean+max pool, projection."""

    def __init__(self, cfg: StyleConfig):
        super().__init__()
        c = cfg.audio_channels
        self.stem = nn.Sequential(nn.Conv1d(cfg.n_mels, c, 3, stride=2, padding=1), nn.GroupNorm(8, c), nn.GELU())
        self.blocks = nn.Sequential(*[_Block(c) for _ in range(cfg.audio_blocks)])
        self.proj = nn.Linear(2 * c, cfg.dim)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.stem(mel))
        pooled = torch.cat([h.mean(-1), h.amax(-1)], dim=-1)  # mean: overall timbre; max: salient events
        return F.normalize(self.proj(pooled), dim=-1)


class TextEncoder(nn.Module):
    """ids [B, L] (0 = pad) -> L2-normalised [B, D]: embeddings + learned positions, pre-norm transformer,
    mean over real positions, projection."""

    def __init__(self, cfg: StyleConfig):
        super().__init__()
        w = cfg.text_width
        self.tok = nn.Embedding(cfg.vocab, w, padding_idx=0)
        self.pos = nn.Parameter(torch.zeros(cfg.max_text_len, w))
        layer = nn.TransformerEncoderLayer(w, cfg.text_heads, 2 * w, dropout=0.1, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.body = nn.TransformerEncoder(layer, cfg.text_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(w)
        self.proj = nn.Linear(w, cfg.dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        real = ids != 0
        h = self.tok(ids) + self.pos[: ids.shape[1]]
        h = self.norm(self.body(h, src_key_padding_mask=~real))
        m = real.unsqueeze(-1).to(h.dtype)
        return F.normalize(self.proj((h * m).sum(1) / m.sum(1).clamp(min=1.0)), dim=-1)


class TextTokenizer:
    """SentencePiece over lower-cased text; id 0 is padding (and SentencePiece's <unk> is 1, so 0 never occurs)."""

    def __init__(self, model_proto: bytes, max_len: int):
        try:
            import sentencepiece
        except ImportError as e:
            raise ConfigError("our style model needs sentencepiece: pip install sentencepiece") from e
        self.proto, self.max_len = bytes(model_proto), max_len
        self.sp = sentencepiece.SentencePieceProcessor(model_proto=self.proto)

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        """texts -> int64 [B, L] ids, zero-padded, each cut to max_len."""
        rows = [self.sp.encode(t.lower())[: self.max_len] or [self.sp.unk_id()] for t in texts]
        out = torch.zeros(len(rows), max(len(r) for r in rows), dtype=torch.int64)
        for i, r in enumerate(rows):
            out[i, : len(r)] = torch.tensor(r)
        return out


def fit_tokenizer(texts: Iterable[str], vocab: int, max_len: int) -> TextTokenizer:
    """Fit a unigram SentencePiece model on lower-cased texts; the vocabulary may come out smaller than asked
    (captions use few distinct words), which is fine: the embedding table keeps `vocab` rows."""
    import sentencepiece

    buf = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter([t.lower() for t in texts]), model_writer=buf, vocab_size=vocab, model_type="unigram",
        character_coverage=1.0, hard_vocab_limit=False, pad_id=0, unk_id=1, bos_id=-1, eos_id=-1,
        minloglevel=2, num_threads=1)
    return TextTokenizer(buf.getvalue(), max_len)


def proto_tensor(tok: TextTokenizer) -> torch.Tensor:
    """The tokenizer's model file as a uint8 tensor, so it travels inside the safetensors file."""
    return torch.from_numpy(np.frombuffer(tok.proto, dtype=np.uint8).copy())
