"""The official MusicCoCa style model, run from its TFLite files with ai-edge-litert on CPU.

Follows shared/spec/musiccoca_assets_api.md §1: 16 kHz mono, 10 s clips (zero-padded end) averaged over time, 768-d
embeddings, 12 × 1024 RVQ tokens; the optional pMF mapper (`mapper.tflite`) maps a raw text embedding plus seeded
Gaussian noise (numpy RandomState(seed).randn(768)) to an L2-normalised audio-space embedding in one call.

Files (`resources/musiccoca/` under the official layout; see `musiccoca_dir`): spm.model, text_encoder.tflite,
audio_preprocessor.tflite, music_encoder.tflite, pretrained_vector_quantizer.tflite, mapper.tflite (optional).
They are not shipped with openmrt; `openmrt models download mrt2_small` (Hugging Face google/magenta-realtime-2,
CC-BY-4.0) puts them there.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from openmrt.errors import CheckpointError, ConfigError
from openmrt.style import StyleSource

SAMPLE_RATE = 16000
CLIP_SECONDS = 10.0
CLIP_SAMPLES = 160000
EMBED_DIM = 768
RVQ_DEPTH = 12
MAX_TEXT_IDS = 127  # then SOS is prepended: 128 ids
TEXT_LEN = 128
SOS_ID = 1
FILES = {
    "spm": "spm.model",
    "text": "text_encoder.tflite",
    "preprocessor": "audio_preprocessor.tflite",
    "encoder": "music_encoder.tflite",
    "quantizer": "pretrained_vector_quantizer.tflite",
    "mapper": "mapper.tflite",
}
REQUIRED = ("spm", "text", "preprocessor", "encoder", "quantizer")
# The C++ engine's tokens until the first prompt encode completes ("piano", §1.7).
DEFAULT_PIANO_TOKENS = (325, 98, 979, 657, 802, 453, 475, 622, 729, 934, 567, 782)

__all__ = ["MusicCoCa", "candidate_dirs", "musiccoca_dir", "mapper_noise"]


def candidate_dirs() -> list[Path]:
    """Where the MusicCoCa files are looked for, in order: `resources/musiccoca` under each root of openmrt.hub
    ($OPENMRT_HOME, then the official $MAGENTA_HOME/magenta-rt-v2, MAGENTA_HOME defaulting to ~/Documents/Magenta)."""
    from openmrt.hub import roots

    return [r / "resources" / "musiccoca" for r in roots()]


def musiccoca_dir() -> Path:
    """The first candidate folder holding all required files; CheckpointError listing what is missing otherwise."""
    dirs = candidate_dirs()
    for d in dirs:
        if all((d / FILES[k]).is_file() for k in REQUIRED):
            return d
    need = ", ".join(FILES[k] for k in REQUIRED)
    raise CheckpointError(
        f"MusicCoCa files not found. Put {need} (and optionally {FILES['mapper']}) in one of: "
        + "; ".join(str(d) for d in dirs)
        + ". Get them with `openmrt models download mrt2_small` (Hugging Face google/magenta-realtime-2, "
        "resources/musiccoca), or use openmrt's own style model (--style demo).")


def mapper_noise(seed: int = 0, dim: int = EMBED_DIM) -> np.ndarray:
    """The mapper's Gaussian input: exactly numpy's legacy RandomState(seed).randn(dim) as float32 (§1.4)."""
    return np.random.RandomState(seed).randn(dim).astype(np.float32)


def _litert_interpreter(path: Path) -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as e:
        raise ConfigError("MusicCoCa needs ai-edge-litert: pip install ai-edge-litert") from e
    it = Interpreter(model_path=str(path))
    it.allocate_tensors()
    return it


def _spm(path: Path) -> Any:
    try:
        import sentencepiece
    except ImportError as e:
        raise ConfigError("MusicCoCa needs sentencepiece: pip install sentencepiece") from e
    return sentencepiece.SentencePieceProcessor(model_file=str(path))


def _fill(buf_shape: Any, x: np.ndarray, dtype: Any) -> np.ndarray:
    """x flattened into a zero buffer of the input's shape: truncated or zero-padded to its size (§1.3)."""
    shape = tuple(int(s) for s in buf_shape)
    out = np.zeros(int(np.prod(shape)), dtype=dtype)
    flat = np.asarray(x, dtype=dtype).reshape(-1)[: out.size]
    out[: flat.size] = flat
    return out.reshape(shape)


class MusicCoCa(StyleSource):
    """The official MusicCoCa files behind the `StyleSource` interface. Interpreters are created lazily.

    Args:
        resource_dir: folder with the files (default: `musiccoca_dir()`).
        use_mapper: apply mapper.tflite to text prompts. None (default) = when the file exists, as the official live
            engine does (its C++ engine maps every text prompt; its Python API defaults to no mapper).
        seed: the mapper's noise seed (0 = official default).
        interpreter_factory / tokenizer_factory: how a TFLite file / spm.model is opened (tests pass stand-ins).
    """

    def __init__(self, resource_dir: str | Path | None = None, use_mapper: bool | None = None, seed: int = 0,
                 interpreter_factory: Callable[[Path], Any] = _litert_interpreter,
                 tokenizer_factory: Callable[[Path], Any] = _spm):
        self.dir = Path(resource_dir) if resource_dir is not None else musiccoca_dir()
        missing = [FILES[k] for k in REQUIRED if not (self.dir / FILES[k]).is_file()]
        if missing:
            raise CheckpointError(f"MusicCoCa: {', '.join(missing)} missing in {self.dir} "
                                  "(get them with `openmrt models download mrt2_small`)")
        has_mapper = (self.dir / FILES["mapper"]).is_file()
        if use_mapper and not has_mapper:
            raise CheckpointError(f"MusicCoCa: mapper requested but {self.dir / FILES['mapper']} is missing")
        self.use_mapper = has_mapper if use_mapper is None else bool(use_mapper)
        self.seed = int(seed)
        self._open_model, self._open_spm = interpreter_factory, tokenizer_factory
        self._cache: dict[str, Any] = {}

    name = "musiccoca"  # type: ignore[assignment]
    dim = EMBED_DIM  # type: ignore[assignment]

    def _get(self, key: str) -> Any:
        if key not in self._cache:
            path = self.dir / FILES[key]
            self._cache[key] = self._open_spm(path) if key == "spm" else self._open_model(path)
        return self._cache[key]

    @staticmethod
    def _run(it: Any, inputs: list[np.ndarray]) -> np.ndarray:
        """Set inputs in order (each reshaped/padded to its input shape), invoke, return output[0]."""
        for det, x in zip(it.get_input_details(), inputs, strict=True):
            it.set_tensor(det["index"], _fill(det["shape"], x, det["dtype"]))
        it.invoke()
        return np.asarray(it.get_tensor(it.get_output_details()[0]["index"]))

    # -- text (§1.2) ---------------------------------------------------------------------------------------------
    def text_ids(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """text -> (ids int32 [128], paddings float32 [128]): lower-cased SentencePiece ids, at most 127, after SOS 1;
        paddings are 0.0 on real positions (SOS included) and 1.0 on padding."""
        ids = [SOS_ID] + list(self._get("spm").encode(text.lower()))[:MAX_TEXT_IDS]
        out = np.zeros(TEXT_LEN, dtype=np.int32)
        out[: len(ids)] = ids
        pad = np.ones(TEXT_LEN, dtype=np.float32)
        pad[: len(ids)] = 0.0
        return out, pad

    def embed_text_raw(self, text: str) -> np.ndarray:
        """The text tower's raw 768-d output (not normalised)."""
        ids, pad = self.text_ids(text)
        it = self._get("text")
        for det in it.get_input_details():  # the two inputs are told apart by dtype (§1.1)
            x = ids if np.issubdtype(np.dtype(det["dtype"]), np.integer) else pad
            it.set_tensor(det["index"], _fill(det["shape"], x, det["dtype"]))
        it.invoke()
        return np.asarray(it.get_tensor(it.get_output_details()[0]["index"])).reshape(-1).astype(np.float32)

    def map_text(self, emb: np.ndarray, seed: int | None = None) -> np.ndarray:
        """pMF mapper, one call: (text embedding, RandomState(seed).randn(768)) -> L2-normalised [768] (§1.4)."""
        noise = mapper_noise(self.seed if seed is None else seed)
        out = self._run(self._get("mapper"), [np.asarray(emb, np.float32), noise]).reshape(-1).astype(np.float32)
        return out / np.linalg.norm(out)

    def embed_text(self, text: str) -> np.ndarray:
        emb = self.embed_text_raw(text)
        return self.map_text(emb) if self.use_mapper else emb

    # -- audio (§1.3) --------------------------------------------------------------------------------------------
    @staticmethod
    def clips(audio: np.ndarray, sample_rate: int = 48000) -> np.ndarray:
        """[T, C] (or [T]) audio -> [n, 160000] 16 kHz mono 10 s clips (channel average, resampy, end zero-padded)."""
        import resampy

        a = np.asarray(audio, dtype=np.float32)
        mono = a.mean(axis=1) if a.ndim == 2 else a
        if mono.size == 0:
            raise ConfigError("MusicCoCa: empty audio")
        x = resampy.resample(mono, sample_rate, SAMPLE_RATE) if sample_rate != SAMPLE_RATE else mono
        n = -(-x.size // CLIP_SAMPLES)
        out = np.zeros((n, CLIP_SAMPLES), dtype=np.float32)
        out.reshape(-1)[: x.size] = x
        return out

    def embed_audio(self, audio: np.ndarray, sample_rate: int = 48000) -> np.ndarray:
        """[T, 2] audio -> [768]: preprocessor then music encoder per clip, mean over clips."""
        embs = []
        for clip in self.clips(audio, sample_rate):
            feats = self._run(self._get("preprocessor"), [clip])
            embs.append(self._run(self._get("encoder"), [feats]).reshape(-1).astype(np.float32))
        return np.mean(embs, axis=0)

    # -- tokens (§1.5) -------------------------------------------------------------------------------------------
    def tokenize(self, emb: np.ndarray) -> tuple[int, ...]:
        e = np.asarray(emb, dtype=np.float32).reshape(-1)
        if e.size != EMBED_DIM:
            raise ConfigError(f"MusicCoCa tokenize: expected a {EMBED_DIM}-d embedding, got shape {np.shape(emb)}")
        toks = self._run(self._get("quantizer"), [e]).reshape(-1)[:RVQ_DEPTH]
        return tuple(int(t) for t in toks)
