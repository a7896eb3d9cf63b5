"""Controls validation, control messages, the conditioning builder, prompt blending and the output envelopes."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from openmrt import tokens as tk
from openmrt.controls import (
    Controls,
    Envelope,
    LiveControls,
    MidiGate,
    blend_embeddings,
    blend_weights,
    build_conditioning,
    parse_token_prompt,
    reset_fade,
)
from openmrt.errors import ControlError

JAZZ = [555, 402, 72, 993, 482, 932, 402, 153, 33, 374, 519, 147]  # "a jazz piano trio" (musiccoca_assets_api §1.7)


def test_defaults_are_the_python_api_surface():
    c = Controls()
    assert (c.temperature, c.top_k, c.cfg_style, c.cfg_notes, c.cfg_drums) == (1.3, 40, 3.0, 1.0, 1.0)
    assert c.drums == "auto" and c.auto_strum and c.unmask_width == 0 and not c.solo and not c.midi_gate


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("cfg_style", 7.2, ["cfg_style", "[-1.0, 7.0]"]),
        ("cfg_style", -1.01, ["cfg_style", "out of range"]),
        ("cfg_notes", float("nan"), ["cfg_notes", "finite"]),
        ("cfg_drums", "3", ["cfg_drums", "str"]),
        ("cfg_drums", None, ["cfg_drums", "NoneType"]),
        ("temperature", -0.1, ["temperature", "[0.0, inf]"]),
        ("temperature", math.inf, ["temperature", "finite"]),
        ("top_k", 0, ["top_k", "[1, 1024]"]),
        ("top_k", 1025, ["top_k", "[1, 1024]"]),
        ("top_k", 40.0, ["top_k", "integer"]),
        ("top_k", True, ["top_k", "bool"]),
        ("seed", -1, ["seed", "out of range"]),
        ("seed", 2**63, ["seed", "out of range"]),
        ("seed_rotation", 1001, ["seed_rotation", "[0, 1000]"]),
        ("unmask_width", 128, ["unmask_width", "[0, 127]"]),
        ("auto_strum", 2, ["auto_strum", "0 or 1"]),
        ("midi_gate", "yes", ["midi_gate", "0 or 1"]),
        ("drums", "maybe", ["drums", "'auto'"]),
        ("style_tokens", JAZZ[:11], ["style_tokens", "12 integers", "11 values"]),
        ("style_tokens", [*JAZZ[:11], 1024], ["style_tokens[11]", "[-1, 1023]"]),
        ("style_tokens", [-2, *JAZZ[1:]], ["style_tokens[0]", "out of range"]),
        ("style_tokens", "jazz", ["style_tokens", "str"]),
        ("prompts", [("a", 1.0)] * 7, ["prompts", "at most 6"]),
        ("prompts", [("a", float("nan"))], ["prompt 0 weight", "finite"]),
        ("prompts", [("a", 1.0), ("b", -1.0)], ["prompt 1 weight", "out of range"]),
        ("prompts", [(5, 1.0)], ["prompt 0", "int"]),
        ("prompts", "jazz", ["prompts"]),
    ],
)
def test_bad_values_name_the_control_and_range(field, value, words):
    with pytest.raises(ControlError) as e:
        Controls(**{field: value})
    for w in words:
        assert w in str(e.value)
    assert isinstance(e.value, ValueError)


def test_normalised_and_frozen():
    c = Controls(style_tokens=np.array(JAZZ), prompts=[["piano", 2]], cfg_style=np.float32(5.0), top_k=np.int64(7))
    assert c.style_tokens == tuple(JAZZ) and c.prompts == (("piano", 2.0),)
    assert type(c.cfg_style) is float and type(c.top_k) is int
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.top_k = 3  # type: ignore[misc]
    hash(c)  # usable as a dict key / compared by value
    assert c == Controls(style_tokens=JAZZ, prompts=[("piano", 2.0)], cfg_style=5.0, top_k=7)


def test_replace_validates():
    c = Controls()
    assert c.replace(top_k=10).top_k == 10 and c.top_k == 40
    with pytest.raises(ControlError, match="temperature"):
        c.replace(temperature=float("nan"))
    with pytest.raises(ControlError, match="unknown control.*volume"):
        c.replace(volume=1.0)


def test_apply_messages():
    c = Controls(style_tokens=JAZZ)
    assert c.apply("topk", 50.0).top_k == 50  # OSC controllers send integral floats
    assert c.apply("cfg_musiccoca", 5).cfg_style == 5.0
    assert c.apply("solo", 1).unmask_width == 127 and c.apply("solo", 1).solo
    assert c.apply("solo", 0).unmask_width == 4  # the MRT2 app's Solo toggle off (§3.3)
    assert [c.apply("drums", v).drums for v in (0, 1, "auto", "off", 1.0)] == ["off", "on", "auto", "off", "on"]
    p = c.apply("prompt", (2, "disco funk", 0.5))
    assert p.prompts == (("", 0.0), ("", 0.0), ("disco funk", 0.5)) and p.style_tokens is None  # latest style wins
    assert p.apply("weight", (2, 3)).prompts[2] == ("disco funk", 3.0)
    assert c.apply("autostrum", 0).auto_strum is False and c.apply("width", 12).unmask_width == 12
    assert c.top_k == 40 and c.style_tokens == tuple(JAZZ)  # the original is untouched


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("topk", 50.5, ["top_k", "integer"]),
        ("topk", "50", ["top_k", "str"]),
        ("seed", float("nan"), ["seed", "integer"]),
        ("volume", 1.0, ["unknown control", "'volume'"]),
        ("prompt", (6, "x", 1.0), ["prompt slot", "[0, 5]"]),
        ("prompt", (0, "x"), ["prompt", "3 values"]),
        ("prompt", (0, "x", -2.0), ["prompt 0 weight"]),
        ("weight", (0, 1.0), ["no prompt slots"]),
        ("drums", 2, ["drums", "'auto'"]),
        ("solo", 0.5, ["solo", "0 or 1"]),
        ("cfg_drums", 8, ["cfg_drums", "[-1.0, 7.0]"]),
    ],
)
def test_bad_messages(name, value, words):
    with pytest.raises(ControlError) as e:
        Controls().apply(name, value)
    for w in words:
        assert w in str(e.value)


def test_conditioning_row_by_hand():
    c = Controls(style_tokens=JAZZ, drums="off", cfg_style=5.0, cfg_notes=0.0, cfg_drums=2.0)
    notes = np.full(128, -1)
    notes[58:63] = 0
    notes[60] = 2
    row = build_conditioning(c, notes)
    expected = [555, 402, 72, 993, 482, 932] + [-1] * 6 + list(notes) + [0, 30, 5, 3]  # live: coarsest 6 levels
    assert row.shape == (144,) and row.tolist() == expected
    assert build_conditioning(c, notes, style_levels=12)[:12].tolist() == JAZZ
    assert build_conditioning(c.replace(drums="on"), notes)[tk.DRUMS] == 1
    assert build_conditioning(c.replace(drums="auto"), notes)[tk.DRUMS] == -1


def test_conditioning_style_sources():
    c = Controls()
    assert build_conditioning(c, None).tolist() == [-1] * 140 + [-1, 20, 10, 2]  # nothing: masked; default CFGs
    resolved = build_conditioning(c, None, style_tokens=JAZZ, style_levels=12)
    assert resolved[:12].tolist() == JAZZ  # tokens from the prompt blend
    explicit = build_conditioning(Controls(style_tokens=[7] * 12), None, style_tokens=JAZZ, style_levels=12)
    assert explicit[:12].tolist() == [7] * 12  # explicit tokens win
    with pytest.raises(ControlError, match="notes"):
        build_conditioning(c, np.full(128, 4))
    with pytest.raises(ControlError, match="notes"):
        build_conditioning(c, np.zeros(127, int))


def test_token_prompt():
    assert parse_token_prompt("musiccoca:" + ",".join(map(str, JAZZ))) == tuple(JAZZ)
    assert parse_token_prompt("disco funk") is None
    with pytest.raises(ControlError, match="12"):
        parse_token_prompt("musiccoca:1,2,3")
    with pytest.raises(ControlError, match="musiccoca"):
        parse_token_prompt("musiccoca:a,b")


def test_blend_weights():
    assert blend_weights([1, 3]).tolist() == [0.25, 0.75]
    assert blend_weights([0, 2]).tolist() == [0.0, 1.0]  # weight 0: slot left out
    assert blend_weights([0, 0]).tolist() == [1.0, 0.0]  # none positive: the first slot
    assert blend_weights([5]).tolist() == [1.0]
    for bad, words in [([1, -1], "prompt 1 weight"), ([float("nan")], "finite"), ([math.inf], "finite"), ([], "no")]:
        with pytest.raises(ControlError, match=words):
            blend_weights(bad)


def test_blend_embeddings():
    rng = np.random.default_rng(0)
    e = rng.standard_normal(768).astype(np.float32)
    one = blend_embeddings([e], [0.7])
    assert one.dtype == np.float32 and np.array_equal(one, e)  # a one-prompt blend is the prompt, bit for bit
    two = blend_embeddings([np.array([1.0, 0.0]), np.array([0.0, 1.0])], [1, 3])
    assert two.tolist() == [0.25, 0.75]
    with pytest.raises(ControlError, match="shape"):
        blend_embeddings([np.zeros(3), np.zeros(4)], [1, 1])
    with pytest.raises(ControlError, match="2 embeddings but 1"):
        blend_embeddings([e, e], [1])


def test_live_controls_keep_the_old_value_on_error():
    calls = []
    live = LiveControls(Controls(style_tokens=JAZZ), on_reset=lambda: calls.append("reset"))
    live.apply("temperature", 0.5)
    with pytest.raises(ControlError):
        live.apply("temperature", -1)
    assert live.snapshot().temperature == 0.5
    live.note_on(60, 90)
    c, notes, row = live.frame()
    assert notes[60] == 3 and row[12 + 60] == 3 and row[:6].tolist() == JAZZ[:6]
    live.reset()
    assert calls == ["reset"] and live.frame()[1].tolist() == [-1] * 128


def test_envelope_matches_the_per_sample_recursion():
    env, ref, v = Envelope(100, 1000, value=0.2), [], 0.2
    a = 1 - math.exp(-4.60517 / 100)
    for _ in range(50):
        v += (1.0 - v) * a
        ref.append(v)
    assert np.allclose(env.gains(1.0, 50), ref, atol=1e-6) and env.value == pytest.approx(v)
    fade = reset_fade()
    assert fade.shape == (1920,) and fade[0] == pytest.approx(1 - math.exp(-4.60517 / 1920))
    assert fade[-1] == pytest.approx(0.99, abs=1e-5)  # 99 % of the way after N samples


def test_midi_gate():
    gate, held, silent = MidiGate(), np.full(128, -1), np.full(128, -1)
    held[60] = 3
    assert np.all(gate.gains(silent, enabled=False) == 1.0)  # gate off: transparent
    gate = MidiGate()
    assert np.all(gate.gains(silent, enabled=True) == 0.0)  # starts closed
    assert gate.gains(held, enabled=True)[-1] == pytest.approx(0.99, abs=1e-5)  # opens in 1920 samples
    for _ in range(25):  # 25 frames = 48,000 samples of release
        g = gate.gains(silent, enabled=True)
    assert g[-1] == pytest.approx(0.0099, abs=1e-4)  # 99 % closed after 1 s (from 0.99)
