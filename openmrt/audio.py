"""Audio file I/O for the codec: anything libsndfile reads -> 48 kHz stereo float32 ``[T, 2]``.

Resampling uses the soxr library (high quality); mono is duplicated to both channels, and
files with more than two channels keep their first two (front left / right in WAV order).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from openmrt.errors import DataError
from openmrt.frame import SAMPLE_RATE

WRITE_FORMATS = {".wav": "WAV", ".flac": "FLAC"}
MIN_RATE, MAX_RATE = 4000, 768_000  # sample rates real audio files use


def to_stereo(audio: np.ndarray) -> np.ndarray:
    """[T] or [T, C] -> [T, 2] float32 (mono duplicated, extra channels dropped)."""
    a = np.asarray(audio, dtype=np.float32)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or a.shape[1] == 0:
        raise DataError(f"audio must be [T] or [T, C], got shape {a.shape}")
    if a.shape[1] == 1:
        a = np.repeat(a, 2, axis=1)
    return np.ascontiguousarray(a[:, :2])


def resample(audio: np.ndarray, sr_in: int, sr_out: int = SAMPLE_RATE) -> np.ndarray:
    """[T, C] at ``sr_in`` -> [round(T · sr_out / sr_in), C] float32 at ``sr_out`` (soxr, high quality)."""
    if sr_in == sr_out:
        return np.asarray(audio, dtype=np.float32)
    import soxr

    return soxr.resample(np.asarray(audio, dtype=np.float32), sr_in, sr_out, quality="HQ").astype(np.float32)


def read_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read a WAV/FLAC/OGG/MP3/AIFF/... file as float32 ``[T, 2]`` at ``sample_rate``.

    Raises:
        DataError: the file is missing, libsndfile cannot decode it, or it holds NaN/inf samples.
    """
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise DataError(f"audio file {path} not found")
    try:
        audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise DataError(f"cannot read {path} as audio ({e}); convert it to WAV or FLAC first") from e
    if not MIN_RATE <= sr <= MAX_RATE:  # a damaged header: 1 Hz would resample 2400 samples into 40 minutes
        raise DataError(f"{path} says its sample rate is {sr} Hz, outside {MIN_RATE}..{MAX_RATE}: a damaged file?")
    if not np.isfinite(audio).all():  # a damaged float file: NaN would spread through resampling and the codec
        raise DataError(f"{path} has NaN or infinite samples (a damaged file?); re-export it")
    return resample(to_stereo(audio), sr, sample_rate)


def write_audio(
    path: str | Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE, subtype: str | None = None
) -> Path:
    """Write ``[T, C]`` (or mono ``[T]``) float audio as WAV or FLAC, chosen by the extension.

    Args:
        subtype: libsndfile subtype; default PCM_16 (values beyond ±1 clip), e.g. "FLOAT" for WAV.
    """
    import soundfile as sf

    path = Path(path)
    fmt = WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"cannot write {path.suffix!r} audio; use one of {sorted(WRITE_FORMATS)}")
    a = np.asarray(audio, dtype=np.float32)
    if not np.isfinite(a).all():
        raise DataError(f"refusing to write {path}: the audio has NaN or inf samples")
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), a, sample_rate, format=fmt, subtype=subtype or "PCM_16")
    return path
