"""Labels for audio without MIDI: notes by basic-pitch, drums by a percussive-energy detector.

Notes. basic-pitch (Spotify, ICASSP 2022; its ONNX model ships in the wheel and runs with
onnxruntime) gives note events; they become the same 25 Hz note states as MIDI labels
(``labels.note_states``). basic-pitch over-detects onsets, most of all on sustained and layered
sounds (a pad comes back as a train of short notes, often an octave off). Against that, the
labels use a higher onset threshold and a longer minimum note than basic-pitch's defaults, both
chosen on rendered pieces with known MIDI (``fitted.py``, benchmarks/data_transcription.py).
``merge_reonsets`` (join a note to the previous note of its pitch when the gap is under
``MERGE_GAP_S``) is measured there too; it removes spurious re-onsets but also merges genuine
repeated notes, and on our material it lowered onset F1 at every gap tried, so the fitted gap is
0 (off) unless a new fit says otherwise. docs/data.md has the figures.

Drums. ``drum_activity`` separates the percussive part with librosa's HPSS, takes band-wise
percussive energy, share and flux per 25 Hz frame, summarises each over about a second, and
applies a logistic model fitted on rendered material with known drum tracks
(benchmarks/data_transcription.py); the result is the same 0/1 flag as ``labels.drum_flags``.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import tempfile
from pathlib import Path

import numpy as np

from openmrt.data.fitted import MERGE_GAP_S, MIN_NOTE_MS, ONSET_THRESHOLD  # chosen on rendered data
from openmrt.data.labels import note_states
from openmrt.frame import FRAME_RATE

__all__ = ["MERGE_GAP_S", "DrumDetector", "drum_activity", "drum_features", "merge_reonsets", "transcribe_notes",
           "transcription_labels"]

ANALYSIS_SR = 22050  # basic-pitch's and the drum detector's rate
HOP = ANALYSIS_SR // FRAME_RATE  # 882 samples: one 25 Hz frame
@functools.cache
def _model():
    """basic-pitch's ONNX session, loaded once per process."""
    # basic-pitch logs a warning per runtime it does not find (TF, TFLite, CoreML) at import.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        from basic_pitch import ICASSP_2022_MODEL_PATH
        from basic_pitch.inference import Model
    finally:
        root.setLevel(level)
    return Model(ICASSP_2022_MODEL_PATH)


def _mono(audio: np.ndarray, sr: int) -> np.ndarray:
    """float32 mono at ``ANALYSIS_SR`` from [channels, N] or [N] audio (soxr resampler)."""
    import soxr

    x = np.asarray(audio, dtype=np.float32)
    x = x.mean(0) if x.ndim == 2 else x
    return soxr.resample(x, sr, ANALYSIS_SR).astype(np.float32) if sr != ANALYSIS_SR else x


def model_output(audio: np.ndarray, sr: int) -> dict:
    """basic-pitch's raw posteriorgrams (notes, onsets, contours) for a clip: the expensive part."""
    import soundfile as sf

    model = _model()
    from basic_pitch.inference import run_inference

    with tempfile.TemporaryDirectory() as d, contextlib.redirect_stdout(io.StringIO()):  # it prints per file
        path = Path(d) / "clip.wav"  # basic-pitch reads a file path
        sf.write(path, _mono(audio, sr), ANALYSIS_SR)
        return run_inference(path, model)


def notes_from_output(output: dict, onset_threshold: float = ONSET_THRESHOLD, frame_threshold: float = 0.3,
                      min_note_ms: float = MIN_NOTE_MS) -> list[tuple[float, float, int]]:
    """Note events (start s, end s, MIDI pitch) from ``model_output``, unmerged, sorted by start.
    Parameters as basic-pitch's ``predict``; the defaults are ours (fitted.py), not basic-pitch's
    (onset 0.5, minimum note 127.7 ms)."""
    from basic_pitch.constants import AUDIO_SAMPLE_RATE, FFT_HOP
    from basic_pitch.note_creation import model_output_to_notes

    min_len = int(np.round(min_note_ms / 1000 * (AUDIO_SAMPLE_RATE / FFT_HOP)))
    _, events = model_output_to_notes(output, onset_thresh=onset_threshold, frame_thresh=frame_threshold,
                                      min_note_len=min_len)
    return sorted((float(s), float(e), int(p)) for s, e, p, *_ in events)


Notes = list[tuple[float, float, int]]


def transcribe_notes(audio: np.ndarray, sr: int, onset_threshold: float = ONSET_THRESHOLD) -> Notes:
    """basic-pitch note events (start s, end s, MIDI pitch), unmerged, sorted by start."""
    return notes_from_output(model_output(audio, sr), onset_threshold)


def merge_reonsets(notes: list[tuple[float, float, int]], gap_s: float = MERGE_GAP_S) -> list[tuple[float, float, int]]:
    """Join notes of one pitch separated by less than ``gap_s`` (see the module doc)."""
    out: list[tuple[float, float, int]] = []
    last: dict[int, int] = {}  # pitch -> index in out
    for s, e, p in sorted(notes):
        i = last.get(p)
        if i is not None and s - out[i][1] < gap_s:
            out[i] = (out[i][0], max(out[i][1], e), p)
        else:
            last[p] = len(out)
            out.append((s, e, p))
    return out


# ---------------------------------------------------------------------------- drums


BANDS_HZ = (0, 150, 400, 1000, 2500, 5000, 8000, 11026)  # kick, low toms/snare body, ..., hats and cymbals


def drum_features(audio: np.ndarray, sr: int, frames: int) -> np.ndarray:
    """[frames, 44] features per 25 Hz frame. From librosa's HPSS of a 20 ms-hop STFT, for each of
    7 bands: the percussive share of all energy (log), the percussive share within the band, and
    the positive flux of the band's percussive energy (transients); plus the percussive spectral
    flatness. Pooled to 25 Hz, then the mean and standard deviation of each over one second (a
    groove is a pattern of hits, not one hit)."""
    import librosa

    y = _mono(audio, sr)
    spec = librosa.stft(y, n_fft=1024, hop_length=HOP // 2)
    harm, perc = librosa.decompose.hpss(spec, margin=2.0)
    p_pow, h_pow = np.abs(perc) ** 2, np.abs(harm) ** 2
    total = p_pow.sum(0) + h_pow.sum(0) + 1e-10
    freqs = librosa.fft_frequencies(sr=ANALYSIS_SR, n_fft=1024)
    cols = []
    for lo, hi in zip(BANDS_HZ, BANDS_HZ[1:], strict=False):
        band = (freqs >= lo) & (freqs < hi)
        pb, hb = p_pow[band].sum(0), h_pow[band].sum(0)
        lp = np.log10(pb + 1e-10)
        cols += [np.log10(pb / total + 1e-6), pb / (pb + hb + 1e-10), np.maximum(0, np.diff(lp, prepend=lp[:1]))]
    cols.append(librosa.feature.spectral_flatness(S=np.abs(perc))[0])
    x = np.stack(cols, axis=1)
    x = x[: 2 * (len(x) // 2)].reshape(-1, 2, x.shape[1]).mean(1)  # two 441-sample hops per frame
    x = _fit_frames(x, frames)
    mean = np.stack([_smooth(c) for c in x.T], axis=1)
    std = np.sqrt(np.maximum(np.stack([_smooth(c**2) for c in x.T], axis=1) - mean**2, 0.0))
    return np.concatenate([mean, std], axis=1).astype(np.float32)


def _smooth(x: np.ndarray, n: int = FRAME_RATE) -> np.ndarray:
    return np.convolve(np.pad(x, n // 2, mode="edge"), np.ones(n) / n, mode="valid")


def _fit_frames(x: np.ndarray, frames: int) -> np.ndarray:
    # librosa centres its frames (a frame is centred on its hop, 10-20 ms off the label frame's
    # middle): small next to the 1 s pooling. The length is made to match the label frames.
    if len(x) >= frames:
        return x[:frames]
    return np.concatenate([x, np.repeat(x[-1:], frames - len(x), axis=0)]) if len(x) else np.zeros((frames, x.shape[1]))


class DrumDetector:
    """Logistic model on ``drum_features`` (standardisation folded into the weights). The weights
    in ``fitted.py`` are written by benchmarks/data_transcription.py, fitted on rendered
    pieces with known drum tracks; docs/data.md has its held-out accuracy."""

    def __init__(self, weights: np.ndarray | None = None, bias: float | None = None):
        if weights is None:
            from openmrt.data import fitted

            weights, bias = np.asarray(fitted.DRUM_WEIGHTS), fitted.DRUM_BIAS
        self.weights = np.asarray(weights, dtype=np.float64)
        self.bias = float(bias or 0.0)

    def probability(self, feats: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(feats @ self.weights + self.bias)))

    def __call__(self, feats: np.ndarray) -> np.ndarray:
        return (self.probability(feats) > 0.5).astype(np.int8)


def drum_activity(audio: np.ndarray, sr: int, frames: int) -> np.ndarray:
    """int8 [frames] drums-playing flag detected from audio."""
    return DrumDetector()(drum_features(audio, sr, frames))


def transcription_labels(
    audio: np.ndarray, sr: int, frames: int, merge_gap_s: float = MERGE_GAP_S
) -> tuple[np.ndarray, np.ndarray, int]:
    """(note states [frames, 128], drum flags [frames], number of notes) for audio without MIDI."""
    notes = transcribe_notes(audio, sr)
    if merge_gap_s > 0:
        notes = merge_reonsets(notes, merge_gap_s)
    return note_states(notes, frames), drum_activity(audio, sr, frames), len(notes)
