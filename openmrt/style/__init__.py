"""Style sources: text or audio prompts -> embeddings -> 12 style tokens (shared/spec/musiccoca_assets_api.md §1).

The engine talks only to `StyleSource`. Two implementations exist:

* `openmrt.style.musiccoca.MusicCoCa`: the official MusicCoCa TFLite files (768-d, with the pMF mapper file).
* `openmrt.style.model.StyleModel`: our own small contrastive model + RVQ + pMF mapper (the demo bundle's).

Blending follows the official engine (§1.5, live_engine_and_controls.md §3.6): every prompt is embedded, the
embeddings are averaged with the normalised positive weights (`controls.blend_embeddings`), and the blend is
quantised once. A prompt "musiccoca:a,...,l" is a literal token vector and bypasses the model.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from openmrt.audio import read_audio
from openmrt.controls import blend_embeddings, blend_weights, parse_token_prompt
from openmrt.errors import ControlError

NUM_TOKENS = 12
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")

__all__ = ["AUDIO_SUFFIXES", "NUM_TOKENS", "StyleSource", "is_audio_prompt", "load_style"]


def is_audio_prompt(src: str) -> bool:
    """A prompt naming an existing file with an audio suffix is an audio prompt; anything else is text."""
    return src.lower().endswith(AUDIO_SUFFIXES) and Path(src).is_file()


class StyleSource(abc.ABC):
    """Turns prompts into the 12 style tokens the LM reads.

    Implementations provide the three model calls; blending and the literal-token bypass live here once.
    """

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """What this source is, for logs ("musiccoca", "openmrt-demo-style")."""

    @property
    @abc.abstractmethod
    def dim(self) -> int:
        """Embedding width D (768 for MusicCoCa)."""

    @abc.abstractmethod
    def embed_text(self, text: str) -> np.ndarray:
        """One text -> float32 [D] (the mapper, if the source uses one for text prompts, is applied here)."""

    @abc.abstractmethod
    def embed_audio(self, audio: np.ndarray) -> np.ndarray:
        """48 kHz stereo float32 [T, 2] -> float32 [D] (clips pooled over time)."""

    @abc.abstractmethod
    def tokenize(self, emb: np.ndarray) -> tuple[int, ...]:
        """One embedding [D] -> 12 ints in 0..1023."""

    def embed_prompt(self, src: str) -> np.ndarray:
        """A prompt slot's source: an audio file path is read and embedded as audio, anything else as text."""
        if is_audio_prompt(src):
            return self.embed_audio(read_audio(src))
        return self.embed_text(src)

    def tokens_for(self, prompts: Sequence[tuple[str, float]]) -> tuple[int, ...]:
        """12 tokens for weighted prompts: blend in embedding space, quantise once (§1.5).

        Zero-weight slots are left out before anything is embedded (they cost nothing). A literal "musiccoca:..."
        prompt bypasses the model; it can't be blended with others (tokens have no average), so it must be the only
        prompt with a positive weight.
        """
        if not prompts:
            raise ControlError("style: no prompts to turn into tokens")
        w = blend_weights([p[1] for p in prompts])  # validates weights (negative/NaN -> ControlError)
        active = [(src, wi) for (src, _), wi in zip(prompts, w, strict=True) if wi > 0]
        literal = [parse_token_prompt(src) for src, _ in active]
        if any(t is not None for t in literal):
            if len(active) > 1:
                raise ControlError("style: a 'musiccoca:...' token prompt can't be blended with other prompts; "
                                   "give it the only positive weight")
            return literal[0]
        embs = [self.embed_prompt(src) for src, _ in active]
        return self.tokenize(blend_embeddings(embs, [wi for _, wi in active]))


def load_style(spec: str) -> StyleSource:
    """A style source by name: "demo" (our shipped model), "musiccoca" (official files), or a .safetensors path."""
    if spec == "musiccoca":
        from openmrt.style.musiccoca import MusicCoCa

        return MusicCoCa()
    from openmrt.style.model import StyleModel

    return StyleModel.load(None if spec == "demo" else spec)
