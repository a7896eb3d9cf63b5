"""Frame labels: the exact frame rule, and a real FluidSynth render of a known MIDI checked
against its labels (onset frame, held frames, offs, drum flag) and against the sound itself."""

from __future__ import annotations

import needs
import numpy as np
import pretty_midi
import pytest
from needs import need_soundfont

from openmrt.data.labels import drum_flags, midi_labels, n_frames, note_states
from openmrt.frame import FRAME_SAMPLES
from openmrt.tokens import NOTE_HELD, NOTE_OFF, NOTE_ONSET

FLUID_R3 = str(needs.FLUID_R3)


def test_frame_rule():
    s = note_states([
        (0.10, 0.30, 60),  # frames 2 (onset), 3..7 held: [0.10, 0.30) overlaps frames 2..7
        (0.12, 0.20, 62),  # exactly on a frame edge: onset in frame 3, held 4
        (0.41, 0.42, 64),  # shorter than a frame: its onset frame only
        (1.00, 1.20, 65), (1.10, 1.30, 65),  # re-struck while sounding: onset wins at frame 27
        (2.00, 2.021, 67), (2.02, 2.10, 67),  # two onsets in one frame: one onset, then held
    ], 60)
    assert s.dtype == np.int8 and s.shape == (60, 128)
    assert s[2, 60] == NOTE_ONSET and (s[3:8, 60] == NOTE_HELD).all() and s[8, 60] == NOTE_OFF and s[1, 60] == NOTE_OFF
    assert s[3, 62] == NOTE_ONSET and s[4, 62] == NOTE_HELD and s[5, 62] == NOTE_OFF
    assert s[10, 64] == NOTE_ONSET and s[11, 64] == NOTE_OFF
    assert list(s[25:34, 65]) == [NOTE_ONSET, 1, NOTE_ONSET, 1, 1, 1, 1, 1, NOTE_OFF]
    assert list(s[50:54, 67]) == [NOTE_ONSET, 1, 1, NOTE_OFF]
    assert (np.delete(s, [60, 62, 64, 65, 67], axis=1) == NOTE_OFF).all()


def test_drum_flag_rule():
    f = drum_flags([0.0, 0.5, 1.0, 4.0], 150)
    assert f[:31].all()  # onsets 0.5 s apart: a groove; 1.0 + 0.25 s tail ends in frame 31
    assert not f[32:100].any()  # a 3 s gap is a break
    assert f[100:106].all() and not f[107:].any()


@pytest.fixture(scope="module")
def known_render():
    need_soundfont()  # skip locally, fail in CI
    from openmrt.data.render import Renderer

    pm = pretty_midi.PrettyMIDI(initial_tempo=120)
    piano = pretty_midi.Instrument(0, name="piano")
    piano.notes += [pretty_midi.Note(100, 60, 0.50, 1.00), pretty_midi.Note(100, 64, 1.02, 1.30)]
    kit = pretty_midi.Instrument(0, is_drum=True, name="drums")
    kit.notes += [pretty_midi.Note(110, 36, t, t + 0.1) for t in (0.0, 0.5, 1.0, 1.5)]
    pm.instruments += [piano, kit]
    frames = n_frames(2.4)
    mix, drums = Renderer().render(pm, frames * FRAME_SAMPLES, FLUID_R3)
    return pm, frames, mix, drums


def test_known_midi_labels_match_timing_and_sound(known_render):
    pm, frames, mix, drums = known_render
    assert frames == 60 and mix.shape == drums.shape == (2, 60 * 1920)
    lab = midi_labels(pm, frames)
    c4, e4 = lab.notes[:, 60], lab.notes[:, 64]
    assert np.flatnonzero(c4 == NOTE_ONSET).tolist() == [12]  # 0.50 s -> frame 12
    assert np.flatnonzero(c4 == NOTE_HELD).tolist() == list(range(13, 25))  # until 1.00 s
    assert np.flatnonzero(e4 == NOTE_ONSET).tolist() == [25]  # 1.02 s -> frame 25
    assert np.flatnonzero(e4 == NOTE_HELD).tolist() == list(range(26, 33))  # [1.02, 1.30) ends in frame 32
    assert (np.delete(lab.notes, [60, 64], axis=1) == NOTE_OFF).all()
    assert lab.drums[:44].all() and not lab.drums[44:].any()  # last kick 1.5 s + 0.25 s tail -> frame 43
    assert lab.meta["has_drums"] and lab.meta["tempo"] == 120.0

    # The sound agrees: the piano stem is silent before its onset frame and sounds from it on,
    # at C4's pitch; the kick is in the drum stem at frame 0.
    tonal = (mix - drums).mean(0).reshape(frames, FRAME_SAMPLES)
    rms = np.sqrt((tonal**2).mean(1))
    assert rms[:12].max() < 1e-4 < rms[12] and rms[13:24].min() > 10 * rms[:12].max()
    seg = tonal[14:24].ravel()
    spec = np.abs(np.fft.rfft(seg * np.hanning(len(seg))))
    f0 = np.fft.rfftfreq(len(seg), 1 / 48000)[np.argmax(spec[: len(spec) // 8])]
    assert abs(f0 - 261.6) < 5 or abs(f0 - 523.3) < 8  # the fundamental or its octave
    drum_rms = np.sqrt((drums.mean(0).reshape(frames, -1) ** 2).mean(1))
    assert drum_rms[0] > 1e-3 and drum_rms[50:].max() < drum_rms[0] / 100


def test_render_is_deterministic_and_history_free(known_render):
    from openmrt.data.compose import compose
    from openmrt.data.render import Renderer, draw_augment

    pm, frames, mix, drums = known_render
    r = Renderer()
    other = compose("techno", 3, 8)
    r.render(other.midi, 48000 * 3, FLUID_R3, draw_augment(3))  # leaves nothing behind
    again, again_drums = r.render(pm, frames * FRAME_SAMPLES, FLUID_R3)
    np.testing.assert_array_equal(again, mix)
    np.testing.assert_array_equal(again_drums, drums)
