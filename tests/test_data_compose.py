"""The composer: every style makes a plausible piece, deterministically from its seed."""

from __future__ import annotations

import numpy as np
import pytest

from openmrt.data.compose import compose, style_names
from openmrt.data.labels import midi_labels, n_frames
from openmrt.data.styles import STYLES
from openmrt.data.theory import parse_chord, parse_progression


def _notes(pm):
    return [(i.program, i.is_drum, round(n.start, 6), round(n.end, 6), n.pitch, n.velocity)
            for i in pm.instruments for n in i.notes]


def test_chord_symbols():
    assert parse_chord("V7", 9).pcs == (4, 8, 11, 2)  # E7 in A minor: the leading tone G#
    assert parse_chord("bVII", 0).pcs == (10, 2, 5)
    assert parse_chord("iiø7", 0).pcs == (2, 5, 8, 0)
    assert [len(b) for b in parse_progression("ii7 V7 | Imaj7", 0)] == [2, 1]
    with pytest.raises(ValueError):
        parse_chord("X7", 0)


def test_at_least_eight_styles_each_with_its_own_character():
    assert len(STYLES) >= 8
    tempos = {s.tempo for s in STYLES.values()}
    assert len(tempos) >= 8 and any(s.beats == 3 for s in STYLES.values())
    assert sum(any(p.gen == "drums" for p in s.parts) for s in STYLES.values()) >= 6
    assert any(not any(p.gen == "drums" for p in s.parts) for s in STYLES.values())  # e.g. baroque


@pytest.mark.parametrize("style", style_names())
def test_style_composes_musical_deterministic_pieces(style):
    a, b, c = compose(style, 5, 20), compose(style, 5, 20), compose(style, 6, 20)
    assert _notes(a.midi) == _notes(b.midi)
    assert _notes(a.midi) != _notes(c.midi)
    st = STYLES[style]
    assert st.tempo[0] <= a.tempo <= st.tempo[1] and 10 < a.duration < 90
    tonal = [n for i in a.midi.instruments if not i.is_drum for n in i.notes]
    assert len(tonal) > 20 and all(24 <= n.pitch <= 100 and 1 <= n.velocity <= 127 and n.end > n.start for n in tonal)
    # Velocities vary (dynamics, humanising) and onsets are not all on the grid (humanised timing),
    # except for techno, which is sequenced on purpose.
    assert len({n.velocity for n in tonal}) > 5
    beat = 60 / a.tempo
    off_grid = np.mean([abs(n.start / beat * 4 - round(n.start / beat * 4)) > 0.02 for n in tonal])
    assert off_grid > 0.2 or st.humanize_ms == 0
    lab = midi_labels(a.midi, n_frames(a.duration))
    cap = lab.meta["caption"]
    assert lab.meta["style"] == style and st.label in cap and f"{int(a.tempo)} bpm" in cap
    assert (lab.notes == 2).sum() > 10


def test_some_pieces_have_drums_and_some_do_not():
    has = [any(i.is_drum for i in compose("disco_funk", s, 20).midi.instruments) for s in range(12)]
    assert any(has) and not all(has)
    kit = next(i for s in range(12) for i in compose("rock", s, 30).midi.instruments if i.is_drum)
    keys = {n.pitch for n in kit.notes}
    assert {36, 38}.issubset(keys) and keys & {45, 47, 50, 41}  # kick, snare, and fills on the toms
