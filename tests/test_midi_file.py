"""MIDI files as a per-frame control timeline, MIDI message handling, and (with JACK) a live virtual port."""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pretty_midi
import pytest

from openmrt.controls import LiveControls
from openmrt.errors import DataError
from openmrt.io.midi import MidiTimeline, frame_of, handle_message

M = -1


def _write_song(path) -> None:
    """Hand-timed events (seconds -> frame = nearest 40 ms frame start), none near a half-frame edge."""
    pm = pretty_midi.PrettyMIDI(initial_tempo=90.0)  # not 120: the file's tempo must be honoured
    piano = pretty_midi.Instrument(program=0)
    piano.notes += [
        pretty_midi.Note(velocity=100, pitch=60, start=0.0, end=0.2),  # frames 0..4, off at 5
        pretty_midi.Note(velocity=90, pitch=64, start=0.12, end=0.13),  # on and off inside frame 3: latched
        pretty_midi.Note(velocity=80, pitch=67, start=0.32, end=0.4),  # on at 8, key up at 10 under the pedal
    ]
    piano.control_changes += [
        pretty_midi.ControlChange(number=64, value=127, time=0.28),  # pedal down at frame 7
        pretty_midi.ControlChange(number=64, value=0, time=0.6),  # pedal up at frame 15
    ]
    drums = pretty_midi.Instrument(program=0, is_drum=True)  # channel 10: not pitches, skipped
    drums.notes.append(pretty_midi.Note(velocity=100, pitch=36, start=0.0, end=0.1))
    pm.instruments += [piano, drums]
    pm.write(str(path))


def test_file_to_frame_states(tmp_path):
    path = tmp_path / "song.mid"
    _write_song(path)
    tl = MidiTimeline.from_file(path)
    assert tl.num_frames == 16 and tl.source == str(path)

    expected = np.full((16, 128), M)
    expected[0, 60] = 2
    expected[1:5, 60] = 1  # off at frame 5
    expected[3, 64] = 2  # the short note still sounds as an onset for one frame
    expected[8, 67] = 2
    expected[9:15, 67] = 1  # held by the pedal until frame 15
    states = tl.note_states(auto_strum=False, unmask_width=0)
    assert np.array_equal(states, expected)

    strum = tl.note_states(num_frames=18)  # Auto-Strum on; extra frames past the end stay empty
    assert strum.shape == (18, 128) and np.array_equal(strum[:16], np.where(expected > 0, 3, M))
    assert np.all(strum[16:] == M)


def test_drum_channel_on_request(tmp_path):
    path = tmp_path / "song.mid"
    _write_song(path)
    with_drums = MidiTimeline.from_file(path, include_drums=True)
    assert with_drums.note_states(auto_strum=False)[0, 36] == 2


def test_timeline_feeds_a_live_target(tmp_path):
    path = tmp_path / "song.mid"
    _write_song(path)
    tl, live = MidiTimeline.from_file(path), LiveControls()
    assert [(e.kind, e.a, e.b) for e in tl.events_at(3)] == [("note_on", 64, 90), ("note_on", 64, 0)]  # 0 = off
    assert tl.events_at(99) == ()
    for k in range(4):
        tl.feed(k, live)
        _, notes, row = live.frame()
    assert notes[64] == 3 and row[12 + 64] == 3


def test_frame_rounding():
    assert [frame_of(t) for t in (0.0, 0.019, 0.021, 0.04, 0.059, 1.0)] == [0, 0, 1, 1, 1, 25]


@pytest.mark.parametrize(
    "content",
    [b"", b"not a midi file at all", b"MThd\x00\x00\x00\x06\x00\x01\x00\x02\x01\xe0MTrk\x00\x00\x01\x00\x90"],
    ids=["empty", "text", "truncated"],
)
def test_malformed_file_raises_data_error_naming_it(tmp_path, content):
    path = tmp_path / "broken.mid"
    path.write_bytes(content)
    with pytest.raises(DataError, match="broken.mid"):
        MidiTimeline.from_file(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="nope.mid"):
        MidiTimeline.from_file(tmp_path / "nope.mid")


def test_handle_message():
    live = LiveControls()
    msg = SimpleNamespace
    assert handle_message(live, msg(type="note_on", note=60, velocity=100))
    assert handle_message(live, msg(type="control_change", control=64, value=127))
    assert handle_message(live, msg(type="note_off", note=60, velocity=0))
    assert not handle_message(live, msg(type="pitchwheel", pitch=100))
    assert live.frame()[1][60] == 3  # released under the pedal: still sounding
    handle_message(live, msg(type="control_change", control=123, value=0))  # all notes off
    assert live.frame()[1][60] == M


# ---------------------------------------------------------------------------------------------------------------------
# A live virtual port. Needs a MIDI system: JACK here (no ALSA sequencer on these machines); skipped without one.


def test_virtual_port_loopback(jack_server):
    import mido

    from openmrt.io.midi import MidiInput

    backend = "mido.backends.rtmidi/UNIX_JACK"
    be = mido.Backend(backend, load=True)
    live = LiveControls()
    midi_in = None
    deadline = time.monotonic() + 10
    while midi_in is None and time.monotonic() < deadline:  # jackd needs a moment to come up
        try:
            midi_in = MidiInput(live, virtual_name="openmrt", backend=backend)
        except Exception:
            time.sleep(0.1)
    if midi_in is None:
        pytest.skip("JACK did not come up: no backend can make MIDI ports")
    with midi_in:
        targets = [n for n in be.get_output_names() if "openmrt" in n]  # our virtual input, seen from outside
        if len(targets) != 1:
            pytest.skip(f"the virtual input is not visible as one connectable port: {targets}")
        with be.open_output(targets[0]) as sender:
            time.sleep(1.0)  # a new connection joins JACK's graph a cycle or more later: events before it are lost
            sender.send(mido.Message("note_on", note=60, velocity=100))
            sender.send(mido.Message("note_on", note=72, velocity=100))
            deadline = time.monotonic() + 5
            while midi_in.received < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
    assert midi_in.received == 2 and midi_in.rejected == 0
    assert live.frame()[1][[60, 72]].tolist() == [3, 3]
