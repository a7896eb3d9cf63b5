"""The conditioning encoder: the official mean over the 132 regular channels, and our demo preset's sum."""

import dataclasses

import numpy as np
import torch

from openmrt import tokens as tk
from openmrt.config import lm_config
from openmrt.lm.encoder import ConditioningEncoder


def _cond(notes: list[int]) -> torch.Tensor:
    roll = np.zeros(128, np.int64)
    roll[notes] = 2  # onset
    return tk.encode_conditioning(np.stack([tk.make_conditioning(tuple(range(12)), roll, 1)]))[0]


def _encoders() -> tuple[ConditioningEncoder, ConditioningEncoder]:
    cfg = lm_config("tiny")
    torch.manual_seed(0)
    mean = ConditioningEncoder(dataclasses.replace(cfg, regular_sum=False))
    with torch.no_grad():
        for p in mean.parameters():
            p.normal_(0.0, 0.1)
    total = ConditioningEncoder(dataclasses.replace(cfg, regular_sum=True))
    total.load_state_dict(mean.state_dict())
    return mean, total


def test_regular_sum_is_the_mean_times_the_channel_count():
    """Same weights: the summed encoder equals the mean encoder whose regular rows are 132 times larger."""
    mean, total = _encoders()
    with torch.no_grad():
        mean.regular_table.weight.mul_(132)
    c = _cond([60, 64, 67])
    torch.testing.assert_close(total(c), mean(c), rtol=1e-5, atol=1e-5)


def test_regular_sum_lets_a_chord_change_move_the_conditioning():
    """With the style branch as large as the notes rows, changing a chord moves the summed encoder's output
    far more than the official mean's (which dilutes each note to 1/132)."""
    mean, total = _encoders()
    a, b = _cond([60, 64, 67]), _cond([62, 65, 69])
    with torch.no_grad():
        moved_mean = float((mean(a) - mean(b)).norm() / mean(a).norm())
        moved_sum = float((total(a) - total(b)).norm() / total(a).norm())
    assert moved_sum > 5 * moved_mean, (moved_sum, moved_mean)
