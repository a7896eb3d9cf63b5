"""Fuzzed MIDI: byte streams (running status, sysex, garbage) through mido's parser into the live input's callback,
and random or mutated Standard MIDI Files through the file reader. Nothing escapes; a bad file is a DataError."""

from __future__ import annotations

import io
import logging

import mido
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openmrt import tokens as tk
from openmrt.controls import Controls, LiveControls
from openmrt.errors import DataError
from openmrt.io import midi

FUZZ = settings(max_examples=2000, deadline=None, database=None, derandomize=True,
                suppress_health_check=list(HealthCheck))

STATUS = st.integers(0x80, 0xFF)
DATA = st.integers(0, 0x7F)
# Plausible MIDI: status bytes, data bytes, sysex start/end, realtime bytes in between, and any byte at all.
PIECE = (st.tuples(STATUS, DATA, DATA).map(bytes) | st.tuples(DATA, DATA).map(bytes)  # running status
         | st.lists(DATA, max_size=8).map(lambda d: bytes([0xF0, *d, 0xF7]))  # sysex
         | st.sampled_from([b"\xf8", b"\xfa", b"\xfc", b"\xfe", b"\xff", b"\xf7", b"\xf0"]) | st.binary(max_size=4))


class FakeBackend:
    def get_input_names(self):
        return ["Keys:0"]

    def open_input(self, name, callback=None, **kw):
        return type("Port", (), {"close": lambda self: None})()


@pytest.fixture(scope="module")
def live_input():
    mp = pytest.MonkeyPatch()
    mp.setattr(midi, "find_backend", lambda name=None: "fake")
    mp.setattr(midi, "_backend", lambda name: FakeBackend())
    live = LiveControls(Controls())
    m = midi.MidiInput(live, port=None)  # virtual: no watch thread
    yield m, live
    m.close()
    mp.undo()


@FUZZ
@given(st.lists(PIECE, max_size=30))
def test_byte_streams_reach_the_controls_safely(live_input, pieces):
    m, live = live_input
    before = m.received
    parser = mido.Parser()
    parser.feed(b"".join(pieces))  # running status and sysex are the parser's job
    msgs = list(parser)
    for msg in msgs:
        m._on_message(msg)
    for raw in pieces:  # the live port's path: one message's bytes at a time from rtmidi
        m._on_raw((raw, 0.0))
    assert m.received == before + len(msgs) + len(pieces)
    _, _, cond = live.frame(None)  # the controls still make a valid conditioning vector
    assert cond.shape == (tk.NUM_COND,) and np.isfinite(cond).all()


def test_rejections_are_control_errors_not_bugs(live_input, caplog):
    m, _ = live_input
    rejected = m.rejected
    with caplog.at_level(logging.WARNING, logger="openmrt.io.midi"):
        for raw in (b"\x90\x3c\x00", b"\xb0\x40\x7f", b"\xb0\x78\x00", b"\xb0\x7b\x00", b"\xb0\x79\x00",
                    b"\xe0\x00\x40", b"\xf0\x01\xf7", b"\xe0", b"", b"\x3c\x40", b"\x90\x3c"):
            m._on_raw((raw, 0.0))
    assert m.rejected == rejected + 4  # the last four are not messages
    assert not any("error handling" in r.getMessage() for r in caplog.records)
    assert sum("not a MIDI message: [e0]" in r.getMessage() for r in caplog.records) == 1


def test_raw_bytes_reach_the_target_from_a_real_rtmidi_port_object():
    class Rt:
        def cancel_callback(self):
            self.cb = None

        def set_callback(self, cb):
            self.cb = cb

    port = type("Port", (), {"_rt": Rt()})()
    live = LiveControls(Controls())
    m = midi.MidiInput.__new__(midi.MidiInput)
    m.target, m.received, m.rejected = live, 0, 0
    m._take_raw(port)
    port._rt.cb(([0x90, 60, 100], 0.0))
    port._rt.cb(([0xE0], 0.0))
    assert (m.received, m.rejected) == (2, 1)


def _valid_file() -> bytes:
    f = mido.MidiFile(type=1)
    for ch in (0, 9):
        t = mido.MidiTrack()
        f.tracks.append(t)
        t.append(mido.MetaMessage("set_tempo", tempo=400000))
        for k, n in enumerate((60, 64, 67, 72)):
            t.append(mido.Message("note_on", channel=ch, note=n, velocity=90, time=120 * k))
            t.append(mido.Message("control_change", channel=ch, control=64, value=127 * (k % 2), time=10))
            t.append(mido.Message("note_off", channel=ch, note=n, time=240))
    buf = io.BytesIO()
    f.save(file=buf)
    return buf.getvalue()


VALID = _valid_file()


def _read(tmp_path, data: bytes):
    p = tmp_path / "fuzz.mid"
    p.write_bytes(data)
    try:
        tl = midi.MidiTimeline.from_file(p)
    except DataError as e:
        assert "fuzz.mid" in str(e) and "MIDI" in str(e)
        return
    states = tl.note_states(num_frames=min(tl.num_frames, 500))
    assert states.shape == (min(tl.num_frames, 500), 128) and np.isin(states, (-1, 0, 1, 2, 3)).all()


@settings(FUZZ, max_examples=700)
@given(st.binary(max_size=300))
def test_random_bytes_as_midi_files(tmp_path_factory, data):
    _read(tmp_path_factory.mktemp("m"), b"MThd" + data if data[:1] == b"\x00" else data)


@settings(FUZZ, max_examples=1000)
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), min_size=1, max_size=6),
       st.integers(0, len(VALID)))
def test_mutated_midi_files(tmp_path_factory, flips, cut):
    raw = bytearray(VALID)
    for i, v in flips:
        raw[i] = v
    _read(tmp_path_factory.mktemp("m"), bytes(raw[:cut] if cut > 14 else raw))
