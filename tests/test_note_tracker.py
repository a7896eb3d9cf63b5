"""The MIDI note tracker against hand-worked expectations (live_engine_and_controls.md §3.1-3.3)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from openmrt.controls import NoteTracker
from openmrt.errors import ControlError

M, OFF, HELD, ONSET, EITHER = -1, 0, 1, 2, 3


def roll(fill: int, **pitches: int | tuple[int, int]) -> list[int]:
    """A 128-vector of `fill` with single pitches (p60=2) or ranges (r58=(62, 0) sets 58..62) overridden."""
    out = [fill] * 128
    for key, v in pitches.items():
        if key[0] == "r":
            hi, val = v  # type: ignore[misc]
            out[int(key[1:]) : hi + 1] = [val] * (hi + 1 - int(key[1:]))
    for key, v in pitches.items():
        if key[0] == "p":
            out[int(key[1:])] = v  # type: ignore[assignment]
    return out


def frames(t: NoteTracker, n: int, **kw) -> list[list[int]]:
    return [t.frame_states(**kw).tolist() for _ in range(n)]


def test_nothing_held():
    t = NoteTracker()
    assert t.frame_states().tolist() == [M] * 128  # w < 127: all masked
    assert t.frame_states(unmask_width=127).tolist() == [OFF] * 128  # Solo: all off


def test_onset_latch():
    t = NoteTracker()
    t.note_on(60, 100)
    t.note_off(60)  # pressed and released between two frames
    assert frames(t, 2, auto_strum=False) == [roll(M, p60=ONSET), [M] * 128]
    t.note_on(61)
    t.note_off(61)
    assert frames(t, 2, auto_strum=True) == [roll(M, p61=EITHER), [M] * 128]


def test_auto_strum_off_onset_then_held():
    t = NoteTracker()
    t.note_on(60)
    assert frames(t, 3, auto_strum=False) == [roll(M, p60=ONSET), roll(M, p60=HELD), roll(M, p60=HELD)]
    t.note_off(60)
    assert frames(t, 1, auto_strum=False) == [[M] * 128]


def test_auto_strum_on_held_is_either():
    t = NoteTracker()
    t.note_on(60)
    t.note_on(67)
    assert frames(t, 3) == [roll(M, p60=EITHER, p67=EITHER)] * 3


def test_switching_auto_strum_mid_note():
    t = NoteTracker()
    t.note_on(60)
    assert t.frame_states(auto_strum=True).tolist() == roll(M, p60=EITHER)  # the onset frame is consumed here
    assert t.frame_states(auto_strum=False).tolist() == roll(M, p60=HELD)


def test_unmask_width():
    t = NoteTracker()
    t.note_on(60)
    t.note_on(64)
    expected = roll(M, r58=(66, OFF), p60=ONSET, p64=ONSET)  # ±2 around 60 and 64: 58..66 off
    assert t.frame_states(auto_strum=False, unmask_width=2).tolist() == expected
    assert t.frame_states(auto_strum=False, unmask_width=0).tolist() == roll(M, p60=HELD, p64=HELD)


def test_unmask_width_clips_at_the_edges():
    t = NoteTracker()
    t.note_on(1)
    t.note_on(127)
    assert t.frame_states(unmask_width=3).tolist() == roll(M, r0=(4, OFF), r124=(127, OFF), p1=EITHER, p127=EITHER)


def test_width_126_is_not_solo():
    t = NoteTracker()
    t.note_on(0)
    assert t.frame_states(auto_strum=False, unmask_width=126).tolist() == roll(OFF, p0=ONSET, p127=M)


def test_solo():
    t = NoteTracker()
    t.note_on(60)
    t.note_on(72)
    assert frames(t, 2, auto_strum=False, unmask_width=127) == [
        roll(OFF, p60=ONSET, p72=ONSET),
        roll(OFF, p60=HELD, p72=HELD),
    ]


def test_sustain_pedal_holds_released_keys():
    t = NoteTracker()
    t.control_change(64, 127)
    t.note_on(60)
    assert frames(t, 1, auto_strum=False) == [roll(M, p60=ONSET)]
    t.note_off(60)  # key up, pedal down: still sounding
    assert frames(t, 2, auto_strum=False) == [roll(M, p60=HELD)] * 2
    t.note_on(62)  # a key still down when the pedal lifts keeps sounding
    t.control_change(64, 0)
    assert frames(t, 2, auto_strum=False) == [roll(M, p62=ONSET), roll(M, p62=HELD)]


def test_sustain_pedal_keeps_a_tap_and_lifting_it_keeps_the_latch():
    t = NoteTracker()
    t.control_change(64, 64)  # 64 counts as down
    t.note_on(60)
    t.note_off(60)
    assert frames(t, 2, auto_strum=False) == [roll(M, p60=ONSET), roll(M, p60=HELD)]
    t.control_change(64, 63)
    assert frames(t, 1, auto_strum=False) == [[M] * 128]
    t.control_change(64, 100)
    t.note_on(50)
    t.note_off(50)
    t.control_change(64, 0)  # all before a frame: the onset is still delivered once
    assert frames(t, 2, auto_strum=False) == [roll(M, p50=ONSET), [M] * 128]


def test_restrike_under_the_pedal():
    t = NoteTracker()
    t.sustain(True)
    t.note_on(60)
    t.note_off(60)
    frames(t, 2)
    t.note_on(60)
    assert frames(t, 2, auto_strum=False) == [roll(M, p60=ONSET), roll(M, p60=HELD)]


def test_velocity_zero_is_note_off():
    t = NoteTracker()
    t.note_on(60, 100)
    frames(t, 1)
    t.note_on(60, 0)
    assert frames(t, 1) == [[M] * 128]


def test_note_on_again_restrikes():
    t = NoteTracker()
    t.note_on(60)
    frames(t, 2)
    t.note_on(60)
    assert frames(t, 2, auto_strum=False) == [roll(M, p60=ONSET), roll(M, p60=HELD)]


def test_stray_note_off_is_ignored():
    t = NoteTracker()
    t.note_off(60)
    t.note_on(61)
    t.note_off(61)
    t.note_off(61)  # a duplicate must not cut the latched onset
    assert frames(t, 1, auto_strum=False) == [roll(M, p61=ONSET)]


def test_all_notes_off_and_reset():
    t = NoteTracker()
    t.sustain(True)
    t.note_on(60)
    t.note_on(64)
    t.note_off(64)
    t.control_change(123, 0)  # all notes off: latched onsets too
    assert frames(t, 1) == [[M] * 128]
    t.note_on(60)
    t.reset()
    assert frames(t, 1) == [[M] * 128]
    t.note_on(62)
    frames(t, 1)
    t.note_off(62)  # the reset lifted the pedal: the note ends at once
    assert frames(t, 1) == [[M] * 128]


@pytest.mark.parametrize(
    ("call", "args", "words"),
    [
        ("note_on", (128, 100), "note pitch"),
        ("note_on", (-1, 100), "note pitch"),
        ("note_on", ("60", 100), "note pitch"),
        ("note_on", (60, 128), "note velocity"),
        ("note_on", (60.0, 100), "note pitch"),
        ("note_off", (200,), "note pitch"),
        ("control_change", (64, 128), "control 64 value"),
        ("control_change", (130, 0), "control number"),
    ],
)
def test_bad_midi_values(call, args, words):
    t = NoteTracker()
    with pytest.raises(ControlError, match=words):
        getattr(t, call)(*args)
    assert t.peek().tolist() == [0] * 128


def test_bad_frame_settings():
    t = NoteTracker()
    t.note_on(60)
    with pytest.raises(ControlError, match="unmask_width"):
        t.frame_states(unmask_width=-1)
    assert t.frame_states(auto_strum=False).tolist() == roll(M, p60=ONSET)  # the rejected call consumed nothing


def test_threads_write_while_frames_read():
    t = NoteTracker()
    seen = []

    def player(base: int) -> None:
        for i in range(2000):
            p = base + i % 12
            t.note_on(p, 90)
            t.note_off(p)

    threads = [threading.Thread(target=player, args=(b,)) for b in (36, 60)]
    for th in threads:
        th.start()
    while any(th.is_alive() for th in threads):
        s = t.frame_states(auto_strum=False)
        seen.append(s)
    for th in threads:
        th.join()
    assert all(set(np.unique(s)) <= {M, ONSET, HELD} for s in seen)
    for prev, cur in zip(seen, seen[1:], strict=False):  # held only ever follows an onset or held frame
        assert np.all(np.isin(prev[cur == HELD], [ONSET, HELD]))
    frames(t, 1)
    assert frames(t, 1) == [[M] * 128]  # every tap released
