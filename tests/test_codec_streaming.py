"""What the codec's streaming adds to the contract (tests/test_streaming_contract.py checks step == whole, prefixes,
reset and fixed state for the encoder and decoder): a saved decoder state resumes bit for bit; the encoder's
block size and codes."""

from __future__ import annotations

import pytest
import torch

from openmrt.codec import FRAME_SAMPLES, SpectroStream
from openmrt.config import codec_config

WIDTHS = {"narrow": 8, "spectrostream": 5}  # preset -> code frames to step (full width is slow on CPU)


@pytest.fixture(scope="module", params=list(WIDTHS), ids=list(WIDTHS))
def case(request) -> tuple[SpectroStream, int]:
    torch.manual_seed(0)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    return SpectroStream(codec_config(request.param)).eval(), WIDTHS[request.param]


@torch.no_grad()
def test_decode_state_round_trips(case):
    codec, n = case
    codes = torch.randint(0, 1024, (1, n, 12))
    state = codec.init_decode_state(1)
    for t in range(3):
        codec.decode_step(codes[:, t], state)
    saved = state.state_dict()
    later = [codec.decode_step(codes[:, t], state) for t in range(3, n)]
    state.reset_()
    state.load_state_dict(saved)
    resumed = [codec.decode_step(codes[:, t], state) for t in range(3, n)]
    for a, b in zip(later, resumed, strict=True):
        assert torch.equal(a, b)


@torch.no_grad()
def test_encode_step_codes_and_block_size(case):
    codec, _ = case
    state = codec.init_encode_state(1)
    codes = codec.encode_step(torch.zeros(1, FRAME_SAMPLES, 2), state, num_levels=12)
    assert codes.shape == (1, 12) and codes.dtype == torch.long
    with pytest.raises(ValueError, match="1920"):
        codec.encode_step(torch.zeros(1, 960, 2), state)
