"""The live session: real-time pacing into a virtual sink, dropped-frame accounting, bad
control snapshots, state save/restore, offline rendering."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from openmrt import tokens as tk
from openmrt.engine.bundle import random_bundle
from openmrt.engine.frames import FRAME, FrameStream
from openmrt.engine.offline import render
from openmrt.engine.session import FrameInput, Session
from openmrt.engine.sink import ClockSink, play_virtual
from openmrt.errors import CheckpointError, ControlError

COND = tk.make_conditioning(style=list(range(12)), notes=[0] * 128, drums=1)


@pytest.fixture(scope="module")
def bundle():
    return random_bundle("tiny", "demo", seed=0)  # the ⅛-width codec we play on CPUs


def test_throttled_generator_drops_are_counted_and_recovered(bundle):
    """On a virtual clock: 25 ms frames keep up; 1 s of 100 ms frames drains the lead and drops frames, counted in
    frames and played as silence; once frames take 25 ms again the buffer refills and nothing more is dropped."""
    session = Session(bundle, lambda: FrameInput(COND), buffer_samples=4096)
    audio = play_virtual(session, 1.0, lambda i: 25.0)
    assert session.stats().dropped_frames == 0 and np.abs(audio).max() > 0  # keeps up
    stalled = play_virtual(session, 1.0, lambda i: 100.0, prime=0)
    dropped, samples = session.stats().dropped_frames, session.ring.underrun_samples
    assert dropped > 0
    assert dropped == -(-samples // FRAME)  # frames, rounded up
    assert (np.abs(stalled).max(axis=1) == 0).sum() >= samples  # played as silence
    after = play_virtual(session, 2.0, lambda i: 25.0, prime=0)
    assert session.ring.underrun_samples - samples <= FRAME  # at most the seam while the first frame is made
    assert (np.abs(after[FRAME:]).reshape(-1, 480, 2).max(axis=(1, 2)) > 0).all()  # then every block plays


def test_drop_hint_when_drops_repeat():
    """The status loop's hint, fed dropped-frame counts as a virtual clock would: once, naming a bigger buffer."""
    from openmrt.engine.cli import DropWatch

    watch = DropWatch(2048)
    assert [watch.update(n) for n in (0, 0, 3, 3, 3, 5)] == [None] * 6  # isolated bursts are not a pattern
    assert "--buffer 4096" in watch.update(6)  # drops in two status periods of the last three
    assert watch.update(9) is None  # said once
    top = DropWatch(8192)
    top.update(1)
    hint = top.update(2)
    assert "--buffer" not in hint and "--model" in hint


def test_bad_control_snapshots_never_stop_the_stream(bundle):
    calls = {"n": 0}

    def frame_input():
        calls["n"] += 1
        if calls["n"] % 2:
            raise ControlError("temperature must be >= 0, got nan")
        return FrameInput(COND)

    session = Session(bundle, frame_input)
    session.start()
    ClockSink(session.read).play(0.5)
    session.stop()
    assert session.control_errors >= 5
    assert session.stats().frames >= 10


def test_buffer_presets_validated(bundle):
    with pytest.raises(ControlError, match="2048"):
        Session(bundle, lambda: FrameInput(COND), buffer_samples=1000)


def test_render_exact_length_and_seed_reproducible(bundle):
    n = 48000 + 123
    a, toks = render(FrameStream(bundle, seed=7), n, lambda t: COND)
    b, _ = render(FrameStream(bundle, seed=7), n, lambda t: COND)
    c, _ = render(FrameStream(bundle, seed=8), n, lambda t: COND)
    assert a.shape == (n, 2) and a.dtype == np.float32
    assert toks.shape == (26, 12)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.abs(a[:FRAME]).max() > 0  # the codec's silent first frame was dropped


def test_reset_restores_prefill_target(bundle):
    rng = np.random.default_rng(0)
    toks = tk.to_unique(__import__("torch").as_tensor(rng.integers(0, 1024, (10, 12)))).numpy()
    session = Session(bundle, lambda: FrameInput(COND), seed=3)
    session.prefill_tokens(toks)
    first = [session.stream.step(COND)[1] for _ in range(5)]
    session.reset()
    again = [session.stream.step(COND)[1] for _ in range(5)]
    assert all((x == y).all() for x, y in zip(first, again, strict=True))


def test_prefill_audio_and_silence(bundle):
    session = Session(bundle, lambda: FrameInput(COND))
    audio = np.random.default_rng(1).standard_normal((48000 * 3, 2)).astype(np.float32) * 0.1
    used = session.prefill_audio(audio)
    assert used == 75 - 50
    assert session.stream.lm.frame == used
    session.prefill_silence(frames=20)
    assert session.stream.lm.frame == 20


SCRIPT = """
import sys, numpy as np
from openmrt import tokens as tk
from openmrt.engine.bundle import random_bundle
from openmrt.engine.session import FrameInput, Session
cond = tk.make_conditioning(style=list(range(12)), notes=[0] * 128)
s = Session(random_bundle(), lambda: FrameInput(cond, temperature=0.0), seed=5)
mode, path = sys.argv[1], sys.argv[2]
if mode == "load":
    s.load_state(path)
for i in range(8):
    audio, toks = s.stream.step(cond)
    if mode == "save" and i == 3:
        s.save_state(path)
    if mode == "load" or i >= 4:
        print(",".join(map(str, toks)))
"""


def test_state_survives_a_process_restart(tmp_path):
    """Save after 4 frames, restart the process, load: the same tokens follow (greedy)."""
    path = str(tmp_path / "state.safetensors")
    run = lambda mode: subprocess.run([sys.executable, "-c", SCRIPT, mode, path], capture_output=True,  # noqa: E731
                                      text=True, check=True).stdout.split()
    saved = run("save")
    loaded = run("load")
    assert saved == loaded[:4] and len(saved) == 4


def test_load_state_errors(bundle, tmp_path):
    session = Session(bundle, lambda: FrameInput(COND))
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match="x.safetensors"):
        session.load_state(bad)
    other = Session(random_bundle("demo", "narrow"), lambda: FrameInput(COND))
    other.save_state(tmp_path / "demo.safetensors")
    with pytest.raises(CheckpointError, match="another model"):
        session.load_state(tmp_path / "demo.safetensors")


def test_malformed_controls_while_playing(bundle):
    """1,000 bad OSC messages and 1,000 bad Python-API calls during a live session: the stream keeps
    producing audio, every bad message gets a counted error, the good ones take effect."""
    from pythonosc.udp_client import SimpleUDPClient

    from openmrt.controls import LiveControls
    from openmrt.io.osc import OscServer

    live = LiveControls()
    session = Session(bundle, lambda: FrameInput.from_live(live))
    live.on_reset = session.reset
    bad_osc = [("/topk", ["ten"]), ("/cfg/notes", [float("nan")]), ("/nope", [1.0]), ("/noteon", [300, 1]),
               ("/cc", [64]), ("/temperature", [-2.0]), ("/style_tokens", [1, 2]), ("/width", [500])]
    bad_api = [("top_k", 0), ("temperature", float("nan")), ("cfg_style", 99.0), ("drums", "loud"),
               ("unknown", 1), ("seed", -1), ("unmask_width", "wide"), ("auto_strum", 3)]
    with OscServer(live, host="127.0.0.1", port=0) as server:
        session.start()
        sink = ClockSink(session.read, block=480)
        sink.start(4.0)
        client = SimpleUDPClient("127.0.0.1", server.port)
        api_errors = 0
        for i in range(1000):
            address, args = bad_osc[i % len(bad_osc)]
            client.send_message(address, args)
            name, value = bad_api[i % len(bad_api)]
            try:
                live.apply(name, value)
            except ControlError:
                api_errors += 1
            if i % 50 == 0:
                time.sleep(0.01)  # let the server drain its socket (bounded, no lost datagrams)
        client.send_message("/topk", [17])
        client.send_message("/noteon", [60, 100])
        deadline = time.monotonic() + 10
        while server.handled < 1002 and time.monotonic() < deadline:
            time.sleep(0.01)
        frames_mid = session.stats().frames
        sink.join()
        session.stop()
    assert api_errors == 1000
    assert server.rejected == 1000
    assert live.snapshot().top_k == 17
    assert session.stats().frames > frames_mid  # still generating after the flood
    assert session.control_errors == 0


@pytest.mark.parametrize("pipeline", [False, True])
def test_latency_breakdown_adds_up(bundle, pipeline):
    import dataclasses

    from openmrt.engine.latency import STAGES, measure

    speed = bundle.speed
    bundle.speed = dataclasses.replace(speed, pipeline=pipeline)
    try:
        result = measure(bundle, trials=5, buffer_samples=2048)
    finally:
        bundle.speed = speed
    assert result["trials"] >= 4 and result["latency_frames"] == 1 + pipeline
    med = {s: result["stages"][s][50] for s in STAGES}
    parts = sum(med[s] for s in STAGES if s != "total_ms")
    assert med["total_ms"] > med["lookahead_ms"] > 0  # the codec's one-frame lookahead is always paid
    assert (med["pipeline_ms"] > 0) == pipeline  # the pipelined stream's extra frame shows as its own stage
    assert abs(parts - med["total_ms"]) < 0.5 * med["total_ms"]  # medians of parts ~ median of the whole


def _tokens(session, n=5, cond=COND):
    return [session.stream.step(cond)[1] for _ in range(n)]


def test_seed_and_rotation_apply_at_the_next_reset(bundle):
    s = Session(bundle, lambda: FrameInput(COND), seed=0)
    plain = Session(bundle, lambda: FrameInput(COND), seed=0)
    s.set_seed(seed=5)
    assert all((a == b).all() for a, b in zip(_tokens(s), _tokens(plain), strict=True))  # not before a reset
    s.reset()
    fresh5 = _tokens(Session(bundle, lambda: FrameInput(COND), seed=5))
    assert all((a == b).all() for a, b in zip(_tokens(s), fresh5, strict=True))
    s.set_seed(seed_rotation=3)
    s.reset()
    fresh8 = _tokens(Session(bundle, lambda: FrameInput(COND), seed=8))
    assert all((a == b).all() for a, b in zip(_tokens(s), fresh8, strict=True))  # seed + rotation


def test_rotation_after_a_prefill_gives_a_new_variation_of_it(bundle):
    toks = tk.to_unique(__import__("torch").as_tensor(np.random.default_rng(0).integers(0, 1024, (10, 12)))).numpy()
    s = Session(bundle, lambda: FrameInput(COND), seed=5)
    s.prefill_tokens(toks)
    first = _tokens(s)
    s.reset()
    assert all((a == b).all() for a, b in zip(_tokens(s), first, strict=True))  # unchanged seeds: the prefill's RNG
    s.set_seed(seed_rotation=2)
    s.reset()
    rotated = _tokens(s)
    s.reset()
    assert all((a == b).all() for a, b in zip(_tokens(s), rotated, strict=True))  # reproducible
    assert any((a != b).any() for a, b in zip(rotated, first, strict=True))
    assert s.stream.lm.frame == 10 + 5  # still continuing the prefill


def test_guidance_changes_now_or_at_reset(bundle):
    s = Session(bundle, lambda: FrameInput(COND), guidance={"musiccoca": 3.0})
    assert s.stream.lm.arity == 2
    assert s.set_guidance({"musiccoca": 2.0}) is True and s.stream.lm.guidance == [2.0]
    assert s.set_guidance({"musiccoca": 2.0, "notes": 1.0}) is False and s.stream.lm.arity == 2  # needs a new row
    s.stream.step(COND)
    s.reset()
    assert s.stream.lm.arity == 3 and s.stream.lm.guidance == [2.0, 1.0] and s.stream.lm.frame == 0
    _tokens(s, 2)


def test_save_never_overwrites_unless_told(bundle, tmp_path):
    s = Session(bundle, lambda: FrameInput(COND))
    path = tmp_path / "state.safetensors"
    path.write_bytes(b"precious")
    with pytest.raises(CheckpointError, match="not overwriting"):
        s.save_state(path)
    assert path.read_bytes() == b"precious"
    s.save_state(path, overwrite=True)
    s.load_state(path)


def test_reset_fades_in_the_first_frame_with_sound(bundle):
    """After a reset the codec's first frame is its lookahead silence; the 1920-sample fade goes on the next one."""
    from openmrt.controls import reset_fade

    s = Session(bundle, lambda: FrameInput(COND), seed=3)
    s.produce()
    s.reset()
    s.read(FRAME)  # the frame from before the reset
    s.produce()
    s.produce()
    out = s.read(2 * FRAME)
    ref = FrameStream(bundle, seed=3)
    first, second = ref.step(COND)[0], ref.step(COND)[0]
    assert np.array_equal(out[:FRAME], first) and not first.any()  # silence, as from a fresh stream
    assert np.abs(second).max() > 0
    assert np.allclose(out[FRAME:], second * reset_fade()[:, None], atol=1e-6)
