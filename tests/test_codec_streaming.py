"""Streaming contract of the codec on random weights and random input, full and narrow widths.

Step mode must equal whole-sequence mode after the declared latency (one frame each way),
keep its state's shapes and storage, and replay identically after a reset.
"""

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


def _close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-5) -> None:
    assert a.shape == b.shape
    scale = max(1.0, b.abs().max().item())
    err = (a - b).abs().max().item()
    assert err <= rel * scale, f"max |step - whole| = {err:.3g} (scale {scale:.3g})"


def _snapshot(state) -> dict[str, tuple]:
    return {k: (t.shape, t.dtype, t.data_ptr()) for k, t in state.tensors().items()}


@torch.no_grad()
def test_decode_step_equals_whole_after_one_frame(case):
    codec, n = case
    codes = torch.randint(0, 1024, (2, n, 12))
    whole = codec.decode(codes)  # [2, (n-1)·1920, 2]
    assert whole.shape == (2, (n - 1) * FRAME_SAMPLES, 2)
    state = codec.init_decode_state(2)
    before = _snapshot(state)
    steps = torch.cat([codec.decode_step(codes[:, t], state) for t in range(n)], 1)
    assert _snapshot(state) == before  # fixed shapes, same storage: updated in place
    assert torch.equal(steps[:, :FRAME_SAMPLES], torch.zeros(2, FRAME_SAMPLES, 2))
    assert steps[:, FRAME_SAMPLES:].abs().max() > 0
    _close(steps[:, FRAME_SAMPLES:], whole)
    # Causality: a prefix of the codes decodes to a prefix of the audio.
    _close(codec.decode(codes[:, : n - 2]), whole[:, : (n - 3) * FRAME_SAMPLES])


@torch.no_grad()
def test_decode_reset_replays_and_state_round_trips(case):
    codec, n = case
    codes = torch.randint(0, 1024, (1, n, 12))
    state = codec.init_decode_state(1)
    first = [codec.decode_step(codes[:, t], state) for t in range(3)]
    saved = state.state_dict()
    later = [codec.decode_step(codes[:, t], state) for t in range(3, n)]
    state.reset_()
    again = [codec.decode_step(codes[:, t], state) for t in range(3)]
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a, b)
    state.load_state_dict(saved)
    resumed = [codec.decode_step(codes[:, t], state) for t in range(3, n)]
    for a, b in zip(later, resumed, strict=True):
        assert torch.equal(a, b)


@torch.no_grad()
def test_encode_step_equals_whole_after_one_frame(case):
    codec, n = case
    audio = 0.3 * torch.randn(2, n * FRAME_SAMPLES, 2)
    whole = codec.encode_latents(audio)  # [2, n, D]
    # Feed the input latency (2399 samples) of padding, rounded up to whole blocks.
    pad = codec.encoder_input_latency + (-(audio.shape[1] + codec.encoder_input_latency)) % FRAME_SAMPLES
    padded = torch.nn.functional.pad(audio, (0, 0, 0, pad))
    state = codec.init_encode_state(2)
    before = _snapshot(state)
    steps = []
    for k in range(padded.shape[1] // FRAME_SAMPLES):
        steps.append(codec.encode_latents_step(padded[:, k * FRAME_SAMPLES : (k + 1) * FRAME_SAMPLES], state))
    steps = torch.stack(steps, 1)
    assert _snapshot(state) == before
    assert steps.shape[1] == n + 2 and torch.equal(steps[:, 0], torch.zeros_like(steps[:, 0]))
    _close(steps[:, 1 : n + 1], whole)
    codes_whole = codec.quantizer.encode(whole, 12)
    assert torch.equal(codec.quantizer.encode(steps[:, 1 : n + 1], 12), codes_whole)
    # A clip cut at a frame boundary encodes to the same frames, except the last one (the STFT
    # window reaches 479 samples past it).
    _close(codec.encode_latents(audio[:, : (n - 1) * FRAME_SAMPLES])[:, : n - 2], whole[:, : n - 2])


@torch.no_grad()
def test_encode_step_codes_and_block_size(case):
    codec, _ = case
    state = codec.init_encode_state(1)
    codes = codec.encode_step(torch.zeros(1, FRAME_SAMPLES, 2), state, num_levels=12)
    assert codes.shape == (1, 12) and codes.dtype == torch.long
    with pytest.raises(ValueError, match="1920"):
        codec.encode_step(torch.zeros(1, 960, 2), state)
