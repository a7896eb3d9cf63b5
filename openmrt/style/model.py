"""Our own style model behind the `StyleSource` interface: audio and text towers (nets.py), a frozen 12 × 1024 RVQ
(rvq.py) and, optionally, the pMF text -> audio mapper (mapper.py), all in one safetensors file.

File layout (float tensors stored as float16): tensors "audio.*", "text.*", "mapper.*", "rvq.codebooks"
[12, 1024, D], "tokenizer.spm" (the SentencePiece model bytes as uint8); metadata "kind", "config" (StyleConfig
JSON, with the MapperConfig under "mapper" if a mapper is present; older files keep it in "mapper_config") and
free-form "info" (recipe, metrics). Written and read by openmrt/weights.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from openmrt.errors import CheckpointError, ConfigError
from openmrt.frame import SAMPLE_RATE
from openmrt.style import StyleSource
from openmrt.style.features import FRAMES_PER_SECOND, SILENCE, logmel, to_mono16k
from openmrt.style.mapper import Mapper, MapperConfig, seeded_noise
from openmrt.style.nets import AudioEncoder, StyleConfig, TextEncoder, TextTokenizer, proto_tensor
from openmrt.style.rvq import rvq_decode, rvq_encode
from openmrt.weights import config_json, load_tensors, save_tensors

KIND = "openmrt-style"
DEMO_PATH = Path(__file__).resolve().parents[1] / "assets" / "demo" / "style.safetensors"

__all__ = ["DEMO_PATH", "StyleModel"]


class StyleModel(StyleSource):
    """Args:
        cfg: network sizes. tokenizer: fitted SentencePiece. codebooks: [12, 1024, D] or None (not fitted yet).
        mapper: optional pMF mapper; `use_mapper` (default: when present) applies it to text prompts with noise
        seeded by `seed`, as the official engine applies mapper.tflite to every text prompt.
    """

    def __init__(self, cfg: StyleConfig, tokenizer: TextTokenizer, codebooks: np.ndarray | None = None,
                 mapper: Mapper | None = None, use_mapper: bool | None = None, seed: int = 0):
        self.cfg, self.tokenizer = cfg, tokenizer
        self.audio_net, self.text_net = AudioEncoder(cfg).eval(), TextEncoder(cfg).eval()
        self.codebooks = None if codebooks is None else np.asarray(codebooks, dtype=np.float32)
        self.mapper = mapper.eval() if mapper is not None else None
        if use_mapper and mapper is None:
            raise ConfigError("style model: use_mapper=True but this model file has no mapper")
        self.use_mapper = (mapper is not None) if use_mapper is None else bool(use_mapper)
        self.seed = int(seed)
        self.info: dict = {}
        self.device = torch.device("cpu")

    def to(self, device: torch.device | str) -> StyleModel:
        """Run the towers and the mapper on ``device`` (inputs and outputs stay numpy arrays)."""
        self.device = torch.device(device)
        for net in (self.audio_net, self.text_net, self.mapper):
            if net is not None:
                net.to(self.device)
        return self

    @property
    def name(self) -> str:
        return "openmrt-style"

    @property
    def dim(self) -> int:
        return self.cfg.dim

    # -- embeddings ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def text_embeddings(self, texts: list[str]) -> np.ndarray:
        """texts -> float32 [B, D] plain text-tower embeddings (unit norm; no mapper)."""
        return self.text_net(self.tokenizer(texts).to(self.device)).cpu().numpy()

    @torch.no_grad()
    def map_text(self, emb: np.ndarray, seed: int | None = None) -> np.ndarray:
        """Text embedding(s) [D] or [B, D] -> audio-space sample(s), one pMF step; noise RandomState(seed).randn(D)."""
        if self.mapper is None:
            raise ConfigError("style model: this model file has no mapper")
        e = np.array(np.atleast_2d(emb), dtype=np.float32)  # a writable copy for torch
        noise = np.tile(seeded_noise(self.seed if seed is None else seed, self.dim), (len(e), 1))
        out = self.mapper.sample(torch.from_numpy(e).to(self.device), torch.from_numpy(noise).to(self.device))
        out = out.cpu().numpy()
        return out.reshape(np.shape(emb))

    def embed_text(self, text: str) -> np.ndarray:
        emb = self.text_embeddings([text])[0]
        return self.map_text(emb) if self.use_mapper else emb

    @torch.no_grad()
    def mel_embeddings(self, mels: torch.Tensor) -> np.ndarray:
        """log-mel clips [B, n_mels, F] -> float32 [B, D] (unit norm)."""
        return self.audio_net(mels.to(self.device)).cpu().numpy()

    def embed_audio(self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
        """[T, 2] audio -> [D]: 16 kHz mono log-mels cut into clip_seconds clips (the last padded with silence;
        audio shorter than a clip is one clip as it is), embedded, averaged and re-normalised."""
        x = to_mono16k(audio, sample_rate)
        if x.size == 0:
            raise ConfigError("style model: empty audio")
        mel = logmel(x)
        n = int(self.cfg.clip_seconds * FRAMES_PER_SECOND)
        if mel.shape[-1] <= n:
            clips = mel[None]  # shorter than a clip: the convs and pooling take any length
        else:
            k = -(-mel.shape[-1] // n)
            mel = torch.cat([mel, torch.full((mel.shape[0], k * n - mel.shape[-1]), SILENCE)], dim=-1)
            clips = mel.reshape(mel.shape[0], k, n).permute(1, 0, 2)  # [k, n_mels, n]
        e = self.mel_embeddings(clips).mean(0)
        return (e / np.linalg.norm(e)).astype(np.float32)

    # -- tokens ----------------------------------------------------------------------------------------------------
    def _books(self) -> np.ndarray:
        if self.codebooks is None:
            raise ConfigError("style model: no RVQ fitted yet (openmrt train style fits it after the towers)")
        return self.codebooks

    def tokenize(self, emb: np.ndarray) -> tuple[int, ...]:
        e = np.asarray(emb, dtype=np.float32).reshape(-1)
        if e.size != self.dim:
            raise ConfigError(f"style model tokenize: expected a {self.dim}-d embedding, got shape {np.shape(emb)}")
        return tuple(int(t) for t in rvq_encode(e, self._books()))

    def dequantize(self, tokens, levels: int | None = None) -> np.ndarray:
        """12 tokens [..., 12] -> [..., D] (sum of the first `levels` codes)."""
        return rvq_decode(np.asarray(tokens), self._books(), levels)

    # -- files -----------------------------------------------------------------------------------------------------
    def tensors(self) -> dict[str, torch.Tensor]:
        out = {f"audio.{k}": v for k, v in self.audio_net.state_dict().items()}
        out |= {f"text.{k}": v for k, v in self.text_net.state_dict().items()}
        if self.mapper is not None:
            out |= {f"mapper.{k}": v for k, v in self.mapper.state_dict().items()}
        if self.codebooks is not None:
            out["rvq.codebooks"] = torch.from_numpy(self.codebooks)
        # float16 on disk halves the shipped file; everything computes in float32 after loading (load_state_dict
        # casts), and the shipped figures are measured on the loaded file.
        out = {k: (v.half() if v.is_floating_point() else v) for k, v in out.items()}
        out["tokenizer.spm"] = proto_tensor(self.tokenizer)
        return {k: v.detach().contiguous() for k, v in out.items()}

    def save(self, path: str | Path) -> Path:
        cfg = self.cfg.to_dict() | ({"mapper": self.mapper.cfg.to_dict()} if self.mapper is not None else {})
        return save_tensors(path, self.tensors(), kind=KIND, config=json.dumps(cfg),
                            metadata={"info": json.dumps(self.info)})

    @classmethod
    def load(cls, path: str | Path | None = None, use_mapper: bool | None = None, seed: int = 0) -> StyleModel:
        """Load a style model file (default: the shipped demo model)."""
        path = Path(path) if path is not None else DEMO_PATH
        if not path.is_file():
            raise CheckpointError(f"style model file {path} not found"
                                  + (" (the demo style model ships with the package; reinstall openmrt, or train "
                                     "one with `openmrt train style`)" if path == DEMO_PATH else ""))
        t, meta = load_tensors(path, "style model", kind=KIND)
        try:
            cfg = json.loads(config_json(meta, path, "style model"))
            # the mapper's config sits inside "config"; files from before the one key kept it beside
            mapper_cfg = cfg.pop("mapper", None) or json.loads(meta.get("mapper_config", "null"))
            cfg = StyleConfig(**cfg)
            tok = TextTokenizer(t["tokenizer.spm"].numpy().tobytes(), cfg.max_text_len)
        except (TypeError, ValueError, KeyError, AttributeError, RuntimeError, OSError) as e:  # bad JSON or tokenizer
            raise CheckpointError(f"{path} is not an openmrt style model file ({e!r})") from e
        try:
            mapper = None
            if mapper_cfg is not None:
                mapper = Mapper(MapperConfig(**mapper_cfg))
                mapper.load_state_dict(_strip(t, "mapper."))
            books = t["rvq.codebooks"].float().numpy() if "rvq.codebooks" in t else None
            m = cls(cfg, tok, books, mapper, use_mapper, seed)
            m.audio_net.load_state_dict(_strip(t, "audio."))
            m.text_net.load_state_dict(_strip(t, "text."))
        except (RuntimeError, TypeError, ValueError, KeyError, AttributeError) as e:  # damaged tensors or config
            raise CheckpointError(f"{path}: weights don't fit the config in its metadata: {e}") from e
        m.info = json.loads(meta.get("info", "{}"))
        return m


def _strip(t: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in t.items() if k.startswith(prefix)}
