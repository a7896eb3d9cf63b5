"""``openmrt bench longrun``: does a long stream keep its quality? (issue 16 §2)

A ``Session`` plays a MIDI file on repeat for ``minutes`` of audio, offline: each frame is made with
``Session.produce`` and read straight back, so no wall clock is involved and the model always keeps up (timing
is the soak's business, engine/soak.py). The audio is judged in windows (5 minutes by default): note-onset F1
against the notes the file asked for (the project's judge: basic-pitch through ``transcribe_notes``, then
``onset_f1``), integrated loudness (LUFS, ITU-R BS.1770 by pyloudnorm), the spectral centroid, the peak, and
how many samples were NaN/inf and how many frames the session played as silence because the model step failed
(the session replaces such frames, so both counts are reported). Output: JSON and a PNG beside it.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from openmrt.controls import Controls, LiveControls
from openmrt.data.heldout import Notes
from openmrt.engine.bundle import Bundle
from openmrt.engine.session import FrameInput, Session
from openmrt.engine.soak import machine
from openmrt.errors import ControlError
from openmrt.frame import FRAME_RATE, FRAME_SAMPLES, SAMPLE_RATE
from openmrt.io.midi import MidiTimeline

DEFAULT_PIECE = ("solo_piano", 0, 60.0)  # composed when no MIDI file is given: clear onsets, in the data's domain
CENTROID_FFT = 2048


def composed_timeline(style: str = DEFAULT_PIECE[0], seed: int = DEFAULT_PIECE[1],
                      seconds: float = DEFAULT_PIECE[2]) -> MidiTimeline:
    """A piece from the data engine's composer, as a timeline (through a MIDI file, as ``--notes`` would be)."""
    from openmrt.data.compose import compose

    piece = compose(style, seed, seconds)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"{style}-{seed}.mid"
        piece.midi.write(str(path))
        timeline = MidiTimeline.from_file(path)
    timeline.source = f"composed {style}, seed {seed} ({piece.duration:.1f} s)"
    return timeline


def loop_notes(timeline: MidiTimeline) -> list[tuple[int, int, int]]:
    """(start frame, end frame, pitch) of one pass of the file, note-ons paired with their note-offs."""
    held: dict[int, int] = {}
    out = []
    for e in timeline.events:
        if e.kind == "note_on" and e.b > 0:
            if e.a in held:  # a re-strike ends the sounding note
                out.append((held.pop(e.a), e.frame, e.a))
            held[e.a] = e.frame
        elif e.kind in ("note_on", "note_off") and e.a in held:
            out.append((held.pop(e.a), e.frame, e.a))
    out += [(s, timeline.num_frames, p) for p, s in held.items()]
    return sorted(out)


def reference_notes(notes: list[tuple[int, int, int]], period: int, start: int, frames: int, lag: int) -> Notes:
    """The notes asked for whose onsets sound in output frames [start, start + frames), in seconds from ``start``.
    A note fed at conditioning frame f of pass k sounds from output frame k·period + f + lag."""
    out = []
    first = max(0, (start - lag - period) // period)
    for k in range(first, (start + frames) // period + 1):
        for s, e, p in notes:
            on = k * period + s + lag - start
            if 0 <= on < frames:
                out.append((on / FRAME_RATE, min(k * period + e + lag - start, frames) / FRAME_RATE, p))
    return sorted(out)


def loudness(audio: np.ndarray) -> float | None:
    """Integrated loudness in LUFS of [N, 2] audio; None where it is undefined (silence, under 0.4 s)."""
    import pyloudnorm

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # log10(0) on silent blocks
            value = pyloudnorm.Meter(SAMPLE_RATE).integrated_loudness(audio.astype(np.float64))
    except ValueError:  # shorter than one gating block
        return None
    return float(value) if math.isfinite(value) else None


def spectral_centroid(audio: np.ndarray) -> float | None:
    """Centroid (Hz) of the mean magnitude spectrum of the mono mix (Hann, 2048 points, hop 1024); None for silence."""
    mono = audio.mean(1, dtype=np.float64)
    if len(mono) < CENTROID_FFT:
        mono = np.pad(mono, (0, CENTROID_FFT - len(mono)))
    frames = np.lib.stride_tricks.sliding_window_view(mono, CENTROID_FFT)[:: CENTROID_FFT // 2]
    window = np.hanning(CENTROID_FFT)
    mag = np.zeros(CENTROID_FFT // 2 + 1)
    for i in range(0, len(frames), 512):  # chunks: 5 minutes at once would be 1 GB of spectra
        mag += np.abs(np.fft.rfft(frames[i : i + 512] * window, axis=1)).sum(0)
    total = mag.sum()
    if total <= 1e-9 * len(frames):
        return None
    return float((np.fft.rfftfreq(CENTROID_FFT, 1 / SAMPLE_RATE) * mag).sum() / total)


def window_metrics(audio: np.ndarray, ref: Notes) -> dict:
    """The figures of one window of output audio [N, 2] against the notes asked for in it."""
    from openmrt.data.transcribe import transcribe_notes
    from openmrt.eval.codec import onset_f1

    finite = np.isfinite(audio)
    x = np.where(finite, audio, 0.0).astype(np.float32)  # judged without them; counted instead
    est = transcribe_notes(x.T, SAMPLE_RATE) if len(x) else []
    p, r, f = onset_f1(ref, est) if ref else (None, None, None)  # nothing asked: nothing to judge
    peak = float(np.abs(x).max()) if len(x) else 0.0
    return {"onset_f1": f, "onset_precision": p, "onset_recall": r, "ref_notes": len(ref), "est_notes": len(est),
            "lufs": loudness(x), "spectral_centroid_hz": spectral_centroid(x), "peak": peak,
            "nonfinite_samples": int((~finite).sum())}


def longrun(bundle: Bundle, timeline: MidiTimeline, minutes: float, window_minutes: float = 5.0,
            seed: int = 0, echo=print) -> dict:
    """Play ``timeline`` on repeat through a session for ``minutes`` of audio; the figures per window."""
    for name, v in (("--minutes", minutes), ("--window-minutes", window_minutes)):
        if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
            raise ControlError(f"{name} must be a positive number, got {v}")
    info = machine()
    notes = loop_notes(timeline)
    if not notes:
        raise ControlError(f"{timeline.source or 'the MIDI file'} has no notes (drums on channel 10 are not judged)")
    total = max(1, round(minutes * 60 * FRAME_RATE))
    per = max(1, min(total, round(window_minutes * 60 * FRAME_RATE)))
    period = timeline.num_frames
    live = LiveControls(Controls(seed=seed))
    session = Session(bundle, lambda: FrameInput.from_live(live), seed=seed, history=1)
    lag = session.stream.latency_frames
    windows = []
    t_start = time.perf_counter()
    for start in range(0, total, per):
        n = min(per, total - start)
        chunks, ms = [], []
        silent0 = session.silent_frames
        t0 = time.perf_counter()
        for f in range(start, start + n):
            if f % period == 0 and f:
                live.all_notes_off()  # a file that leaves notes on must not carry them into the next pass
            timeline.feed(f % period, live)
            session.produce()
            chunks.append(session.read(FRAME_SAMPLES).copy())
            ms.append(session.metrics[-1].compute_ms)
        t1 = time.perf_counter()
        audio = np.concatenate(chunks)
        w = {"index": len(windows), "start_s": start / FRAME_RATE, "seconds": n / FRAME_RATE,
             **window_metrics(audio, reference_notes(notes, period, start, n, lag)),
             "failed_frames": session.silent_frames - silent0,
             "compute_ms_p50": round(float(np.percentile(ms, 50)), 3),
             "compute_ms_p99": round(float(np.percentile(ms, 99)), 3),
             "generate_s": round(t1 - t0, 2), "analyse_s": round(time.perf_counter() - t1, 2)}
        windows.append(w)
        echo(f"window {w['index']} ({w['start_s'] / 60:.2f}-{(w['start_s'] + w['seconds']) / 60:.2f} min): "
             f"onset F1 {_fmt(w['onset_f1'])}, {_fmt(w['lufs'], '.1f')} LUFS, centroid "
             f"{_fmt(w['spectral_centroid_hz'], '.0f')} Hz, {w['nonfinite_samples']} NaN/inf samples, "
             f"{w['failed_frames']} failed frames ({w['generate_s']} s to make, {w['analyse_s']} s to judge)")
    wall = time.perf_counter() - t_start
    st = session.stats()
    return {"model": bundle.name, "notes": timeline.source, "loop_seconds": period / FRAME_RATE,
            "minutes": total / FRAME_RATE / 60, "window_minutes": per / FRAME_RATE / 60, "seed": seed,
            "latency_frames": lag, "windows": windows, "summary": summary(windows),
            "dropped_frames": st.dropped_frames, "faults": st.extra["faults"],
            "wall_seconds": round(wall, 1), "wall_seconds_per_audio_minute": round(wall / (total / FRAME_RATE / 60), 2),
            "machine": {**info, "load_average_at_end": [round(x, 2) for x in os.getloadavg()]}}


def summary(windows: list[dict]) -> dict:
    """The acceptance figures of issue 16: last window's F1 over the first's, loudness spread, NaN never."""
    f1 = [w["onset_f1"] for w in windows]
    lufs = [w["lufs"] for w in windows if w["lufs"] is not None]
    ratio = f1[-1] / f1[0] if f1[0] and f1[-1] is not None else None
    return {"onset_f1_first": f1[0], "onset_f1_last": f1[-1], "onset_f1_last_over_first": ratio,
            "lufs_spread_lu": round(max(lufs) - min(lufs), 3) if lufs else None,
            "silent_windows": sum(w["lufs"] is None for w in windows),
            "nonfinite_samples": sum(w["nonfinite_samples"] for w in windows),
            "failed_frames": sum(w["failed_frames"] for w in windows)}


def _fmt(v, spec: str = ".3f") -> str:
    return "none" if v is None else format(v, spec)


def plot(result: dict, path: str | Path) -> None:
    """Onset F1, loudness, spectral centroid and NaN/failed frames per window, against the window's middle."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ws = result["windows"]
    t = [(w["start_s"] + w["seconds"] / 2) / 60 for w in ws]

    def series(key):
        return [np.nan if w[key] is None else w[key] for w in ws]

    fig, axes = plt.subplots(4, 1, figsize=(10, 8), sharex=True)
    for ax, key, label in zip(axes[:3], ("onset_f1", "lufs", "spectral_centroid_hz"),
                              ("onset F1", "loudness (LUFS)", "spectral centroid (Hz)"), strict=True):
        ax.plot(t, series(key), "o-")
        ax.set_ylabel(label)
    axes[0].set_ylim(0, 1)
    if ws[0]["lufs"] is not None:  # the acceptance band: within 3 LU of the first window
        axes[1].axhspan(ws[0]["lufs"] - 3, ws[0]["lufs"] + 3, color="g", alpha=0.1, label="first window ±3 LU")
        axes[1].legend(loc="upper right")
    axes[3].plot(t, series("nonfinite_samples"), "o-", label="NaN/inf samples")
    axes[3].plot(t, series("failed_frames"), "s-", label="failed (silent) frames")
    axes[3].legend(loc="upper right")
    axes[3].set_xlabel("minutes (window middle)")
    s = result["summary"]
    axes[0].set_title(f"longrun: {result['model']}, {result['notes']} on repeat, {result['minutes']:.1f} min: "
                      f"F1 last/first {_fmt(s['onset_f1_last_over_first'], '.2f')}, "
                      f"loudness spread {_fmt(s['lufs_spread_lu'], '.1f')} LU", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
