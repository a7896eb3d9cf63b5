"""Token layout facts (shared/spec/mrt2_lm.md §2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from openmrt import tokens as tk


def test_unique_codes_round_trip():
    codes = torch.randint(0, 1024, (5, 12))
    ids = tk.to_unique(codes)
    assert ids.min() >= 6 and ids.max() < tk.VOCAB_SIZE == 12294
    assert torch.equal(ids[:, 3], codes[:, 3] + 6 + 3 * 1024)
    assert torch.equal(tk.from_unique(ids), codes)


@pytest.mark.parametrize(
    ("scale", "signal", "code"),
    [
        (3.0, "musiccoca", 20), (1.0, "notes", 10), (1.0, "drums", 2),  # official defaults
        (5.0, "musiccoca", 30), (0.0, "notes", 5), (-1.0, "drums", 0),
        (7.0, "musiccoca", 40), (99.0, "notes", 40), (-5.0, "musiccoca", 0), (7.0, "drums", 8),
        (0.5, "drums", 2), (1.5, "drums", 2), (-0.5, "drums", 0), (2.5, "drums", 4),  # half to even
    ],
)
def test_cfg_binning(scale, signal, code):
    assert tk.discretize_cfg(scale, signal) == code


def test_masked_and_offset():
    row = tk.make_conditioning(style=[1, 2, 3], notes=np.zeros(128, int), drums=1)
    assert row[3] == tk.MASKED and row[11] == tk.MASKED  # unspecified finer style levels stay masked
    enc = tk.encode_conditioning(row)
    assert enc[3] == 6 and enc[0] == 8 and enc[tk.DRUMS] == 8
    assert list(row[141:]) == [20, 10, 2]


def test_cfg_overflow_reads_next_channels_rows():
    """Scale 7.0 -> index 47 in a 47-row channel: the flat table's next channel, never clamped."""
    offs = tk.REGULAR_OFFSETS
    notes_cfg, style_cfg, drums_cfg = offs[130], offs[129], offs[131]
    assert (style_cfg, notes_cfg, drums_cfg) == (1417, 1464, 1511)
    assert style_cfg + 40 + tk.COND_OFFSET == 1464  # = the notes-CFG channel's row 0
    assert notes_cfg + 40 + tk.COND_OFFSET == 1511  # = the drums-CFG channel's row 0
    assert drums_cfg + 8 + tk.COND_OFFSET == 1526  # a padding row of the 1536-row table
    assert tk.REGULAR_ROWS == 1536 > 1526
