"""The two-stage FrameStream (LM and codec on two threads) against the sequential one.

Same seed and conditioning: the same tokens step for step, and the same audio one step later,
exactly its declared extra latency; offline rendering absorbs the difference.
"""

from __future__ import annotations

import numpy as np
import pytest

from openmrt import tokens as tk
from openmrt.codec.fast import prepare_decoder
from openmrt.engine.bundle import random_bundle
from openmrt.engine.frames import FRAME, FrameStream
from openmrt.engine.offline import render

COND = tk.make_conditioning(style=list(range(12)), notes=[0] * 128, drums=1)


@pytest.fixture(scope="module")
def bundle():
    return random_bundle("tiny", "demo", seed=0)


def _run(stream: FrameStream, n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    out = [stream.step(COND) for _ in range(n)]
    return [a for a, _ in out], [t for _, t in out]


def test_pipelined_equals_sequential_shifted_by_its_latency(bundle):
    seq = FrameStream(bundle, seed=3, pipeline=False, threads=1)
    pipe = FrameStream(bundle, seed=3, pipeline=True, threads=1)
    assert (seq.latency_frames, pipe.latency_frames) == (1, 2)
    n = 8
    a_seq, t_seq = _run(seq, n)
    a_pipe, t_pipe = _run(pipe, n)
    for t in range(n):
        assert np.array_equal(t_pipe[t], t_seq[t])  # tokens are not delayed
    extra = pipe.latency_frames - seq.latency_frames
    for t in range(extra):
        assert not a_pipe[t].any()
    for t in range(extra, n):
        assert np.array_equal(a_pipe[t], a_seq[t - extra])
    assert np.abs(a_seq[1]).max() > 0  # past the codec's silent frame there is sound
    # A reset drains the frame in flight and replays from the start.
    pipe.reset(3)
    a_again, t_again = _run(pipe, 4)
    assert all(np.array_equal(x, y) for x, y in zip(a_again, a_pipe[:4], strict=True))
    assert all(np.array_equal(x, y) for x, y in zip(t_again, t_pipe[:4], strict=True))
    # Saved mid-frame (after the decode in flight), a stream continues exactly: the same tokens, and the
    # same audio from its second step on (the audio that was in flight is not part of the state).
    sd = pipe.state_dict()
    a_on, t_on = _run(pipe, 3)
    other = FrameStream(bundle, seed=99, pipeline=True, threads=1)
    other.load_state_dict(sd)
    a_loaded, t_loaded = _run(other, 3)
    assert all(np.array_equal(x, y) for x, y in zip(t_loaded, t_on, strict=True))
    assert not a_loaded[0].any()
    assert all(np.array_equal(x, y) for x, y in zip(a_loaded[1:], a_on[1:], strict=True))
    pipe.close()
    other.close()


def test_render_is_the_same_pipelined_or_not(bundle):
    n = 5 * FRAME + 77
    a, toks = render(FrameStream(bundle, seed=5, pipeline=False), n, lambda t: COND)
    stream = FrameStream(bundle, seed=5, pipeline=True)
    b, toks_b = render(stream, n, lambda t: COND)
    stream.close()
    assert a.shape == b.shape == (n, 2)
    assert np.array_equal(a, b) and np.array_equal(toks, toks_b)
    assert np.abs(b[:FRAME]).max() > 0  # both latency frames were dropped


def test_fast_decoder_as_the_codec_stage(bundle):
    n = 4 * FRAME
    a, _ = render(FrameStream(bundle, seed=2), n, lambda t: COND)
    fast = FrameStream(bundle, seed=2, pipeline=True, decoder=prepare_decoder(bundle.codec, "f32"))
    b, _ = render(fast, n, lambda t: COND)
    fast.close()
    # Float rounding of the packed kernels can move an int16 step at a rounding boundary.
    assert np.abs(a - b).max() <= 2 / 32768


@pytest.mark.parametrize("pipeline", [False, True])
def test_warm_up_leaves_the_stream_exactly_where_it_was(bundle, pipeline):
    """The engine warms a stream up before the live clock starts: the frames after it are the same as without."""
    n = 6 * FRAME
    a, toks_a = render(FrameStream(bundle, seed=4, pipeline=pipeline), n, lambda t: COND)
    warm = FrameStream(bundle, seed=4, pipeline=pipeline)
    warm.warm_up()
    b, toks_b = render(warm, n, lambda t: COND)
    np.testing.assert_array_equal(toks_a, toks_b)
    np.testing.assert_array_equal(a, b)
