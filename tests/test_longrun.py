"""`openmrt bench longrun`: the per-window figures come from the audio (onset F1 against the looped notes at the
stream's latency, loudness, centroid, NaN), silence and failed model steps are handled, and the command writes
its JSON and PNG. The long runs themselves are measurements (docs/reliability.md), not tests."""

from __future__ import annotations

import json

import mido
import numpy as np
import pytest
from needs import need

from openmrt.cli import main
from openmrt.errors import ControlError
from openmrt.eval.longrun import (
    longrun,
    loop_notes,
    loudness,
    reference_notes,
    spectral_centroid,
    window_metrics,
)
from openmrt.frame import FRAME_RATE, SAMPLE_RATE
from openmrt.io.midi import MidiTimeline

PITCHES = [60, 64, 67, 72, 69]


@pytest.fixture(autouse=True)
def judge():
    for module in ("basic_pitch", "pyloudnorm"):
        try:
            __import__(module)
        except ImportError:
            need(False, module)


@pytest.fixture
def midi(tmp_path):
    """Five piano notes, 0.4 s apart and 0.3 s long: a 2 s loop."""
    mid = mido.MidiFile(ticks_per_beat=480)  # 120 bpm: 960 ticks a second
    tr = mido.MidiTrack()
    mid.tracks.append(tr)
    t = 0
    for i, p in enumerate(PITCHES):
        tr.append(mido.Message("note_on", note=p, velocity=90, time=int(0.4 * 960 * i) - t))
        tr.append(mido.Message("note_off", note=p, velocity=0, time=int(0.3 * 960)))
        t = int(0.4 * 960 * i) + int(0.3 * 960)
    path = tmp_path / "five.mid"
    mid.save(path)
    return path


def sines(notes, seconds: float, shift_s: float = 0.0) -> np.ndarray:
    """Decaying sines at the notes' pitches and onsets: what a model that follows the notes perfectly plays."""
    n = int(seconds * SAMPLE_RATE)
    x = np.zeros(n)
    for s, _, p in notes:
        a = int((s + shift_s) * SAMPLE_RATE)
        if not 0 <= a < n:
            continue
        t = np.arange(min(n - a, int(0.35 * SAMPLE_RATE))) / SAMPLE_RATE
        x[a:a + len(t)] += 0.3 * np.sin(2 * np.pi * 440 * 2 ** ((p - 69) / 12) * t) * np.exp(-4 * t)
    return np.stack([x, x], 1).astype(np.float32)


def test_reference_notes_follow_the_loop_and_the_latency(midi):
    tl = MidiTimeline.from_file(midi)
    notes = loop_notes(tl)
    assert [p for *_, p in notes] == PITCHES and tl.num_frames == 49  # the last note-off, at 1.9 s, is fed at frame 48
    # a window starting mid-loop: the third note of pass 0, then pass 1 from its start (at frame 49, +1 latency)
    ref = reference_notes(notes, tl.num_frames, start=20, frames=50, lag=1)
    assert [p for *_, p in ref] == [67, 72, 69, 60, 64]
    assert ref[0][0] == pytest.approx((20 + 1 - 20) / FRAME_RATE)  # note 3 fed at frame 20, sounds at frame 21
    assert ref[3][0] == pytest.approx((49 + 0 + 1 - 20) / FRAME_RATE)


def test_onset_f1_judges_the_audio_against_the_notes_asked(midi):
    tl = MidiTimeline.from_file(midi)
    notes = loop_notes(tl)
    for start in (0, 30, 61):  # windows across the loop's wrap
        ref = reference_notes(notes, tl.num_frames, start, 75, lag=1)
        on_time = window_metrics(sines(ref, 3.0), ref)
        assert on_time["ref_notes"] == len(ref) >= 4
        assert on_time["onset_f1"] >= 0.8, on_time
        late = window_metrics(sines(ref, 3.0, shift_s=0.15), ref)  # 150 ms late: outside the 50 ms tolerance
        assert late["onset_f1"] <= 0.3, late
        assert window_metrics(np.zeros((3 * SAMPLE_RATE, 2), np.float32), ref)["onset_f1"] == 0.0


def test_loudness_centroid_and_nan_are_measured_on_the_audio():
    t = np.arange(3 * SAMPLE_RATE) / SAMPLE_RATE
    tone = lambda f, a: np.stack([a * np.sin(2 * np.pi * f * t)] * 2, 1).astype(np.float32)  # noqa: E731
    quiet, loud = loudness(tone(997, 0.05)), loudness(tone(997, 0.1))
    assert -27 < quiet < -25 and loud - quiet == pytest.approx(20 * np.log10(2), abs=0.05)  # 6 dB more level
    assert spectral_centroid(tone(440, 0.1)) == pytest.approx(440, rel=0.05)
    assert spectral_centroid(tone(3000, 0.1)) == pytest.approx(3000, rel=0.05)
    silence = np.zeros((3 * SAMPLE_RATE, 2), np.float32)
    m = window_metrics(silence, [])
    assert m["lufs"] is None and m["spectral_centroid_hz"] is None and m["onset_f1"] is None  # nothing to judge
    assert m["peak"] == 0.0 and m["nonfinite_samples"] == 0 and m["est_notes"] == 0
    assert loudness(silence[:1000]) is None  # under one 400 ms gating block
    x = tone(997, 0.1)
    x[100:110, 0] = np.nan
    x[5000, 1] = np.inf
    m = window_metrics(x, [])
    assert m["nonfinite_samples"] == 11
    assert m["lufs"] == pytest.approx(loud, abs=0.01) and m["peak"] <= 0.1 + 1e-6  # judged with them zeroed


def test_failed_model_steps_are_counted_per_window(midi, monkeypatch):
    """A model that makes NaN for 10 frames: the session plays them as silence (no NaN reaches the output) and
    the window that holds them counts 10 failed frames."""
    from openmrt.engine.bundle import random_bundle
    from openmrt.engine.frames import FrameStream

    real, calls = FrameStream.step, [0]

    def step(self, cond):
        audio, tok = real(self, cond)
        calls[0] += 1
        return (audio * np.nan if 70 <= calls[0] < 80 else audio), tok

    monkeypatch.setattr(FrameStream, "step", step)
    res = longrun(random_bundle("tiny", "demo"), MidiTimeline.from_file(midi), minutes=0.1, window_minutes=0.04,
                  echo=lambda line: None)
    assert [w["failed_frames"] for w in res["windows"]] == [0, 10, 0]
    assert [w["seconds"] for w in res["windows"]] == [2.4, 2.4, 1.2]
    assert res["summary"]["failed_frames"] == 10 and res["summary"]["nonfinite_samples"] == 0
    assert len(res["faults"]) == 2  # the failure and the recovery, once each


def test_bench_longrun_writes_json_and_png(midi, tmp_path, capsys):
    out = tmp_path / "lr.json"
    assert main(["bench", "longrun", "--model", "random:tiny", "--minutes", "0.1", "--window-minutes", "0.04",
                 "--notes", str(midi), "-o", str(out)]) == 0
    d = json.loads(out.read_text())
    assert d["model"] == "random:tiny+demo" and d["notes"] == str(midi) and d["loop_seconds"] == 49 / FRAME_RATE
    assert len(d["windows"]) == 3 and d["latency_frames"] >= 1
    tl = MidiTimeline.from_file(midi)
    for w in d["windows"]:
        start = round(w["start_s"] * FRAME_RATE)
        ref = reference_notes(loop_notes(tl), tl.num_frames, start, round(w["seconds"] * FRAME_RATE),
                              d["latency_frames"])
        assert w["ref_notes"] == len(ref) > 0
        assert 0.0 <= w["onset_f1"] <= 1.0 and w["nonfinite_samples"] == 0 and w["failed_frames"] == 0
        assert -70 < w["lufs"] < 0 and 20 < w["spectral_centroid_hz"] < SAMPLE_RATE / 2 and 0 < w["peak"] <= 1.0
        assert 0 < w["compute_ms_p50"] <= w["compute_ms_p99"]
    s = d["summary"]
    assert s["onset_f1_first"] == d["windows"][0]["onset_f1"] and s["onset_f1_last"] == d["windows"][-1]["onset_f1"]
    lufs = [w["lufs"] for w in d["windows"]]
    assert s["lufs_spread_lu"] == pytest.approx(max(lufs) - min(lufs), abs=1e-3)
    assert d["dropped_frames"] == 0 and d["wall_seconds_per_audio_minute"] > 0 and d["machine"]["cores"] >= 1
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "random:tiny+demo" in capsys.readouterr().out


def test_longrun_rejects_bad_lengths_and_noteless_files(midi, tmp_path):
    from openmrt.engine.bundle import random_bundle

    bundle = random_bundle("tiny", "demo")
    tl = MidiTimeline.from_file(midi)
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ControlError, match="--minutes"):
            longrun(bundle, tl, bad)
        with pytest.raises(ControlError, match="--window-minutes"):
            longrun(bundle, tl, 1.0, bad)
    empty = MidiTimeline([], source="empty.mid")
    with pytest.raises(ControlError, match="empty.mid has no notes"):
        longrun(bundle, empty, 1.0)
