"""Each training augmentation on a hand-made example."""

from __future__ import annotations

import numpy as np

from openmrt import tokens as tk
from openmrt.train.conditioning import (
    Augment,
    assemble,
    augment,
    drop_tokens,
    mask_onsets,
    mask_region,
    note_runs,
    sticky,
    unmask_width,
)

M = -1


def roll(rows: dict[int, list[int]], frames: int) -> np.ndarray:
    """A [frames, 128] note roll: all off except the given pitch columns."""
    n = np.zeros((frames, 128), dtype=np.int64)
    for p, col in rows.items():
        n[:, p] = col
    return n


def test_token_dropout():
    x = np.array([[5, 6, 7], [8, 9, 10]])
    drop = np.array([[True, False, False], [False, False, True]])
    assert drop_tokens(x, drop).tolist() == [[M, 6, 7], [8, 9, M]]
    rng = np.random.default_rng(0)
    big = np.zeros((200, 144), dtype=np.int64)
    rate = (drop_tokens(big, rng.random(big.shape) < 0.15) == M).mean()
    assert abs(rate - 0.15) < 0.01


def test_contiguous_region():
    drums = np.array([1, 1, 0, 0, 1, 1])
    assert mask_region(drums, 2, 3).tolist() == [1, 1, M, M, M, 1]
    assert mask_region(drums, 4, 10).tolist() == [1, 1, 0, 0, M, M]  # clipped at the end
    style = np.arange(12)[None].repeat(3, 0)
    assert (mask_region(style, 1, 1)[1] == M).all() and (mask_region(style, 1, 1)[0] == np.arange(12)).all()


def test_note_runs_and_onset_masking():
    notes = roll({60: [2, 1, 1, 0, 2, 1], 64: [0, 2, 2, 1, 0, 0]}, 6)
    runs = note_runs(notes)
    assert sorted(runs) == [(60, 0, 3), (60, 4, 6), (64, 1, 2), (64, 2, 4)]  # a re-strike starts a new note
    out = mask_onsets(notes, [(60, 4, 6), (64, 2, 4)])
    assert out[:, 60].tolist() == [2, 1, 1, 0, 3, 3]
    assert out[:, 64].tolist() == [0, 2, 3, 3, 0, 0]
    assert (out[:, :60] == 0).all()


def test_unmask_width():
    notes = roll({60: [2, 1, 0], 62: [0, 0, 3]}, 3)
    w0 = unmask_width(notes, 0)
    assert w0[0, 60] == 2 and w0[1, 60] == 1 and w0[2, 62] == 3
    assert (np.delete(w0[0], 60) == M).all()  # only the played pitch is constrained
    assert (w0[2, :62] == M).all() and (w0[2, 63:] == M).all()
    w1 = unmask_width(notes, 1)
    assert w1[0, 59:62].tolist() == [0, 2, 0] and w1[0, 58] == M and w1[0, 62] == M
    assert w1[2, 61:64].tolist() == [0, 3, 0]
    assert (unmask_width(notes, 127) == notes).all()  # Solo: everything as given
    assert (unmask_width(np.zeros((2, 128), np.int64), 3) == M).all()  # nothing played: all masked


def test_sticky_style_copies_previous_output():
    style = np.array([[1, 1], [2, 2], [3, 3], [4, 4]])
    keep = np.array([False, True, True, False])
    assert sticky(style, keep).tolist() == [[1, 1], [1, 1], [1, 1], [4, 4]]


def test_assemble_layout():
    style = np.full((2, 12), 7)
    notes = roll({60: [2, 1]}, 2)
    cond = assemble(style, notes, np.array([1, M]), {"musiccoca": 5.0, "notes": 0.0, "drums": -1.0})
    assert cond.shape == (2, 144)
    assert (cond[:, :12] == 7).all() and cond[0, 12 + 60] == 2 and cond[1, 12 + 60] == 1
    assert cond[:, 140].tolist() == [1, M]
    assert cond[0, 141:].tolist() == [30, 5, 0]


def test_augment_statistics():
    rng = np.random.default_rng(1)
    t = 250
    style = np.tile(np.arange(12), (t, 1))
    notes = roll({60: ([2] + [1] * 9) * 25, 67: ([0, 0, 2] + [1] * 7) * 25}, t)
    drums = np.ones(t, dtype=np.int64)
    conds = np.stack([augment(style, notes, drums, rng) for _ in range(200)])
    assert conds.shape == (200, t, 144)
    masked = conds == M
    assert 0.3 < masked[:, :, tk.DRUMS].mean() < 0.5  # dropout 0.15, regions, whole crops ("auto") 0.2
    whole = masked[:, :, tk.DRUMS].all(axis=1).mean()
    assert 0.12 < whole < 0.3  # live play's default, drums masked throughout, is seen in training
    assert masked[:, :, 6:12].mean() > 0.5  # live-style 6 levels in about half the examples
    assert (conds[:, :, tk.NOTES] == tk.NOTE_ON_EITHER).any()  # onset masking happened
    assert (conds[:, :, tk.CFG_STYLE:] == [20, 10, 2]).all()  # default CFG codes untouched by dropout
    assert set(np.unique(conds[:, :, tk.NOTES])) <= {M, 0, 1, 2, 3}
    none = augment(style, notes, drums, rng, Augment(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, sticky=0.0, style_levels=(12,),
                                                      drums_auto_prob=0.0, notes_free_prob=0.0, style_free_prob=0.0))
    assert (none[:, tk.NOTES] == notes).all() and (none[:, :12] == style).all() and (none[:, tk.DRUMS] == 1).all()


def test_augment_masks_whole_notes_and_style_as_a_prompt_alone_and_cfg_send_them():
    """With no MIDI held live play masks every pitch on every frame, and CFG's unconditioned row masks the style:
    examples with each whole signal masked occur at their rates, and with the rates at 0 never."""
    rng = np.random.default_rng(3)
    t = 125
    style = np.tile(np.arange(12), (t, 1))
    notes = roll({60: ([2] + [1] * 9) * 12 + [0] * 5}, t)
    drums = np.ones(t, dtype=np.int64)

    def whole(aug: Augment, n: int = 400) -> tuple[float, float]:
        conds = np.stack([augment(style, notes, drums, rng, aug) for _ in range(n)])
        masked = conds == M
        return masked[:, :, tk.STYLE].all(axis=(1, 2)).mean(), masked[:, :, tk.NOTES].all(axis=(1, 2)).mean()

    style_free, notes_free = whole(Augment(notes_free_prob=0.3, style_free_prob=0.1))
    assert 0.06 < style_free < 0.15 and 0.24 < notes_free < 0.37
    assert whole(Augment(notes_free_prob=0.0, style_free_prob=0.0)) == (0.0, 0.0)  # regions: at most half a crop


def test_augment_never_masks_a_twins_drums_flag():
    """A drumless twin's flag 0 stays on every frame under every augmentation; the other signals are still masked."""
    rng = np.random.default_rng(2)
    t = 125
    style = np.tile(np.arange(12), (t, 1))
    notes = roll({60: ([2] + [1] * 9) * 12 + [0] * 5}, t)
    drums = np.zeros(t, dtype=np.int64)
    aug = Augment(token_dropout=0.5, region_prob=1.0, drums_auto_prob=1.0)
    conds = np.stack([augment(style, notes, drums, rng, aug, fixed_drums=True) for _ in range(20)])
    assert (conds[:, :, tk.DRUMS] == 0).all()
    assert (conds[:, :, tk.NOTES] == M).mean() > 0.3
    free = np.stack([augment(style, notes, drums, rng, aug) for _ in range(20)])
    assert (free[:, :, tk.DRUMS] == M).all()
