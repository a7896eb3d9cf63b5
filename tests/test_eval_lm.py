"""LM evaluation judges: hand-worked pitch-class F1, and an oracle 'model' that returns the source
rendering scores exactly the ceiling (ratio 1) and the drum-stem floor."""

from __future__ import annotations

import numpy as np
import pytest

from openmrt import tokens as tk
from openmrt.cli import main
from openmrt.data.heldout import heldout_clips, midi_bytes_notes
from openmrt.data.shards import load_shard
from openmrt.eval.lm import evaluate_lm, heldout_pieces, percussive_energy, pitch_class_f1, pitch_class_roll


def test_pitch_class_roll_and_f1_by_hand():
    ref = [(0.0, 0.2, 60), (0.1, 0.3, 64)]  # C in frames 0..4, E in frames 2..7 (25 Hz)
    roll = pitch_class_roll(ref, 10)
    assert roll[:, 0].nonzero()[0].tolist() == [0, 1, 2, 3, 4]
    assert roll[:, 4].nonzero()[0].tolist() == [2, 3, 4, 5, 6, 7]
    assert pitch_class_f1(ref, ref, 10) == 1.0
    est = [(0.0, 0.2, 72)]  # C an octave up: same pitch class, 5 of 11 reference cells, no false cell
    assert pitch_class_f1(ref, est, 10) == pytest.approx(2 * 5 / (11 + 5))
    assert pitch_class_f1(ref, [(0.0, 0.2, 61)], 10) == 0.0
    assert pitch_class_f1([], [], 10) == 1.0


def test_the_drums_judge_hears_hats_not_a_bright_plucked_part():
    sr, n = 48000, 4 * 48000
    t = np.arange(n) / sr
    rng = np.random.default_rng(0)
    pitched = np.zeros(n)  # plucked notes every 250 ms, partials up to 11 kHz, sharp attacks
    for i, f0 in enumerate([220.0, 277.2, 329.6, 440.0] * 4):
        a = i * n // 16
        tt = t[: n - a]
        tone = sum(np.sin(2 * np.pi * k * f0 * tt) / k for k in range(1, int(11000 / f0) + 1))
        pitched[a:] += 0.2 * tone * np.exp(-tt / 0.15)
    hats = np.zeros(n)  # 20 ms noise bursts on every eighth note at 120 bpm
    for a in range(0, n, sr // 4):
        hats[a:a + 960] += 0.1 * rng.standard_normal(960) * np.exp(-np.arange(960) / 150)
    stereo = lambda x: np.stack([x, x], axis=1).astype(np.float32)  # noqa: E731
    mix, no_drums = percussive_energy(stereo(pitched + hats)), percussive_energy(stereo(pitched))
    assert no_drums < 0.03 * mix  # the judge's floor: the music without its drums (measured 0.018)
    assert percussive_energy(stereo(hats)) == pytest.approx(mix, rel=0.2)
    # above 5 kHz (the judge before) the plucked part's attacks counted as drums several times as much
    floor_5k = percussive_energy(stereo(pitched), low_hz=5000.0) / percussive_energy(stereo(pitched + hats), 5000.0)
    print(f"floor above 12 kHz {no_drums / mix:.4f}, above 5 kHz {floor_5k:.4f}")
    assert floor_5k > 4 * no_drums / mix


@pytest.fixture(scope="module")
def heldout(tmp_path_factory):
    root = tmp_path_factory.mktemp("heldout")
    assert main(["data", "compose", "--hours", "0.012", "--out", str(root), "--seed", "5"]) == 0
    return root


@pytest.fixture(scope="module")
def pieces(heldout):
    out = heldout_pieces(heldout, count=2, seconds=4.0)
    assert out and all(p.notes and p.audio.shape == (4 * 48000, 2) for p in out)
    return out


def test_pieces_are_the_shared_loaders_first_window_after_the_intro(heldout, pieces):
    windows = {c.name: c for c in heldout_clips(heldout, 0, 4.0, skip_seconds=2.0)}  # count 0: all of them
    for p in pieces:
        shard, rest = p.name.split("#")
        i, f0 = map(int, rest.split("@"))
        assert f0 == 50 and p.has_midi
        w = windows[p.name]
        assert (w.audio == p.audio).all() and (w.states == p.states).all() and w.notes == p.notes
        midi = load_shard(heldout / shard).example(i)["midi"]
        assert p.notes == [(a - 2.0, b - 2.0, k) for a, b, k in midi_bytes_notes(midi) if 2.0 <= a < 6.0]


def test_an_oracle_scores_the_ceiling(pieces):
    # the calls evaluate_lm makes, in order: each piece as it is (drums on if it has drums, else auto),
    # then for pieces with drums its drums-off and drums-auto twins
    calls = iter([(p, flag) for p in pieces
                  for flag in ((1, 0, tk.MASKED) if p.drums.any() else (tk.MASKED,))])

    def oracle(cond: np.ndarray, samples: int) -> np.ndarray:
        p, flag = next(calls)
        assert samples == len(p.audio) and int(cond[0, tk.DRUMS]) == flag
        assert (cond[:, tk.NOTES] == p.states).all()  # the clip's own note states drive generation
        if flag == 0:
            return p.audio - p.drum_audio  # the stem removed: what a perfect drums-off sounds like
        return p.audio  # a perfect drums on, and an auto that plays the piece's drums

    out = evaluate_lm(oracle, pieces)
    assert out["note_clips"] == len(pieces)
    assert out["onset_f1_ratio"] == pytest.approx(1.0) and out["pitch_class_f1_ratio"] == pytest.approx(1.0)
    assert 0 < out["onset_f1_ceiling"] <= 1
    assert out["drum_clips"] == sum(bool(p.drums.any()) for p in pieces) > 0
    assert out["drums_off_energy_ratio"] == pytest.approx(out["drums_off_energy_floor"])
    assert out["drums_off_vs_auto_energy_ratio"] == pytest.approx(out["drums_off_energy_floor"])
    assert next(calls, None) is None  # every expected call was made
    assert out["drums_off_energy_ratio"] < 0.9  # removing the stem removes percussive energy


def test_silence_scores_zero(pieces):
    out = evaluate_lm(lambda cond, n: np.zeros((n, 2), np.float32), pieces)
    assert out["onset_f1"] == 0.0 and out["pitch_class_f1"] == 0.0 and out["onset_f1_ceiling"] > 0


def test_cli_on_a_random_bundle(heldout, tmp_path):
    import json

    out = tmp_path / "eval.json"
    assert main(["eval", "lm", "--model", "random:tiny", "--data", str(heldout), "--clips", "1", "--seconds", "2",
                 "--no-style", "--out", str(out)]) == 0
    figures = json.loads(out.read_text(), parse_constant=pytest.fail)  # strict JSON: a NaN figure is null
    assert figures["pieces"] == 1 and 0 <= figures["onset_f1"] <= 1 and figures["onset_f1_ceiling"] > 0
    assert "style_top1" not in figures
    assert main(["eval", "lm", "--model", "random:tiny", "--data", str(tmp_path / "none")]) == 1
