"""The shared batch that ``openmrt serve`` plays every player with (openmrt/engine/live_players.py), on the CPU: every
seat plays exactly the stream a single `FrameStream` with its own seed and controls would, sequential or pipelined;
resets, leaving, joining and faults touch no other seat; the server gives each WebSocket a seat of its own."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from starlette.testclient import TestClient
from test_server import _freed, keeps_playing, recv_audio, recv_json

from openmrt import tokens as tk
from openmrt.controls import reset_fade
from openmrt.engine.frames import FrameStream
from openmrt.engine.live_players import LivePlayers
from openmrt.engine.session import FrameInput
from openmrt.errors import ControlError
from openmrt.server.app import Server

FRAMES = 10
LSB = 1 / 32768  # the output is int16-quantised: a batched conv may round one step differently
SEATS = [  # seed, temperature, top_k
    (3, 1.3, 40), (4, 0.9, 5), (11, 1.1, 1024)]


@pytest.fixture(scope="module")
def bundle():
    from openmrt.engine.bundle import load_bundle

    return load_bundle("random:tiny", seed=0, device="cpu", dtype="float32")


def cond_of(seat: int, t: int) -> np.ndarray:
    """A different conditioning per seat and frame (style tokens, a note, drums)."""
    g = np.random.default_rng(1000 * seat + t)
    notes = np.full(128, tk.MASKED)
    notes[40 + seat * 7] = 1 if t % 4 == 0 else 2
    return tk.make_conditioning(style=g.integers(0, 1024, 12), notes=notes, drums=seat % 2)


class Script:
    """A seat's frame input: its conditioning per frame and a temperature change at ``change``."""

    def __init__(self, seat: int, change: int | None = None):
        self.seat, self.change, self.t = seat, change, 0

    def __call__(self) -> FrameInput:
        _, temp, k = SEATS[self.seat]
        if self.change is not None and self.t >= self.change:
            temp = 0.0
        inp = FrameInput(cond_of(self.seat, self.t), temp, k)
        self.t += 1
        return inp


def reference(bundle, seat: int, frames: int, change: int | None = None, start: int = 0, seed: int | None = None):
    """What one `FrameStream` plays for the seat: [frames, 1920, 2]."""
    s, temp, k = SEATS[seat]
    stream = FrameStream(bundle, seed=s if seed is None else seed, temperature=temp, top_k=k, pipeline=False)
    out = []
    for t in range(start, start + frames):
        if change is not None and t >= change:
            stream.lm.temperature = 0.0
        out.append(stream.step(cond_of(seat, t))[0])
    return np.stack(out)


def play(bundle, frames: int, churn: bool = False, pipeline: bool = False):
    """Three seats for ``frames`` frames; with ``churn``, seat 1 resets at frame 4 (seed 21) and seat 2 leaves at
    frame 6, a new seat joining in its slot. Returns each seat's audio [frames, 1920, 2] and the seats."""
    batch = LivePlayers(bundle, capacity=3, pipeline=pipeline)
    scripts = [Script(0), Script(1), Script(2, change=3)]
    seats = [batch.join(scripts[i], seed=SEATS[i][0]) for i in range(3)]
    assert [s.slot for s in seats] == [0, 1, 2] and not batch.running
    out = [[] for _ in range(4)]

    def take():
        for i, seat in enumerate(seats):
            while seat.ring.fill() >= 1920:
                out[i].append(seat.read(1920).copy())

    for t in range(frames):
        if churn and t == 4:
            seats[1].set_seed(20, 1)
            seats[1].reset()
        if churn and t == 6:
            seats[2].stop()
            seats.append(batch.join(Script(2), seed=SEATS[2][0]))
            assert seats[3].slot == 2
        batch.produce()
        take()
    batch.flush()
    take()
    batch.stop()
    return [np.stack(o) if o else None for o in out], seats


def close(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and float(np.abs(a - b).max()) <= 2 * LSB


@pytest.mark.parametrize("pipeline", [False, True])
def test_each_seat_plays_its_own_single_stream(bundle, pipeline):
    (a, b, c, _), seats = play(bundle, FRAMES, pipeline=pipeline)
    assert close(a, reference(bundle, 0, FRAMES))
    assert close(b, reference(bundle, 1, FRAMES))
    assert close(c, reference(bundle, 2, FRAMES, change=3))  # its temperature change, and only its own
    assert np.abs(a[0]).max() == 0 and np.abs(a[1:]).max() > 0  # the codec's lookahead frame, then sound
    assert not close(a, b) and seats[2].stats().frames == FRAMES and seats[0].stats().dropped_frames == 0


@pytest.mark.parametrize("pipeline", [False, True])
def test_reset_and_a_new_player_leave_the_others_untouched(bundle, pipeline):
    (a0, b0, c0, _), _ = play(bundle, FRAMES, pipeline=pipeline)
    (a, b, c, d), seats = play(bundle, FRAMES, churn=True, pipeline=pipeline)
    assert np.array_equal(a, a0)  # bit-identical: nothing of the churn reached seat 0
    assert np.array_equal(b[:4], b0[:4])
    assert len(c) >= 5 and np.array_equal(c, c0[: len(c)])  # until it left (pipelined: its last frame was lost)
    # Seat 1 after its reset: a fresh stream from seed 20 + rotation 1, the lookahead frame silent, then faded in.
    fresh = reference(bundle, 1, FRAMES - 4, start=4, seed=21)
    assert len(b) == FRAMES and np.abs(b[4]).max() == 0
    assert close(b[5], fresh[1] * reset_fade()[:, None]) and close(b[6:], fresh[2:])
    # The seat that joined slot 2 at frame 6: a fresh stream (the codec rows were cleared), no fade.
    assert close(d, reference(bundle, 2, FRAMES - 6))
    assert seats[2].left and not seats[3].left


def test_controls_errors_keep_the_seat_playing(bundle):
    batch = LivePlayers(bundle, capacity=2, pipeline=False)
    calls = {"n": 0}

    def flaky() -> FrameInput:
        calls["n"] += 1
        if calls["n"] == 3:
            raise ValueError("a broken control")
        if calls["n"] == 4:
            return FrameInput(tk.make_conditioning(), temperature=-1.0)  # refused where it enters
        if calls["n"] == 5:
            return FrameInput(np.full(144, 5000))  # conditioning no table has: refused for this seat alone
        return FrameInput(tk.make_conditioning())

    seat = batch.join(flaky)
    other = batch.join(Script(0), seed=3)
    for _ in range(6):
        batch.produce()
    assert seat.stats().extra["control_errors"] == 3 and other.stats().extra["control_errors"] == 0
    assert seat.stats().frames == 6 and seat.ring.fill() == 6 * 1920
    assert batch.silent_frames == 0 and not batch.faults  # nobody's step failed
    with pytest.raises(ControlError, match="taken"):
        batch.join(flaky)


def test_a_failing_model_step_plays_silence_then_fades_back_in(bundle, monkeypatch):
    batch = LivePlayers(bundle, capacity=2, pipeline=True)
    seats = [batch.join(Script(0), seed=3), batch.join(Script(1), seed=4)]
    step = batch.players.step
    calls = {"n": 0}

    def failing(cond):
        calls["n"] += 1
        if 3 <= calls["n"] <= 4:
            raise RuntimeError("device lost")
        return step(cond)

    monkeypatch.setattr(batch.players, "step", failing)
    for _ in range(8):
        batch.produce()
    batch.flush()
    batch.stop()
    audio = seats[0].ring.read(8 * 1920).reshape(8, 1920, 2)  # the ring itself: a first read() would skip to the lead
    assert batch.silent_frames == 2 and len(batch.faults) == 2 and "device lost" in batch.faults[0]
    assert np.abs(audio[2:4]).max() == 0 and np.abs(audio[4]).max() > 0
    assert np.abs(audio[4, :20]).max() < np.abs(audio[4, -20:]).max() + 1e-6  # faded back in, not a step
    assert seats[1].stats().frames == 8


def test_a_reader_starts_at_its_lead_and_skips_back_to_it_after_giving_up(bundle):
    batch = LivePlayers(bundle, capacity=1, pipeline=False, buffer_samples=4096)
    seat = batch.join(Script(0), seed=3)
    for _ in range(6):
        batch.produce()
    seat.read(1920)  # the first read starts at the lead (2 frames at 4096): 4 frames that piled up go
    assert seat.lead == 2 * 1920 and seat.ring.fill() == 1920 and seat.skipped == 0
    for _ in range(4):
        batch.produce()
    assert seat.skip_to_lead() == 3 and seat.ring.fill() == seat.lead and seat.stats().extra["skipped_frames"] == 3


@pytest.mark.parametrize("pipeline", [False, True])
def test_the_loop_plays_on_its_clock_and_an_empty_room_rests(bundle, pipeline):
    batch = LivePlayers(bundle, capacity=2, pipeline=pipeline).start()
    try:
        seat = batch.join(Script(0), seed=3)
        assert seat.ring.fill() >= seat.lead  # join returns once the lead is queued
        deadline = time.monotonic() + 30
        while batch.frames < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert batch.frames >= 5
        seat.stop()
        for _ in range(50):  # let a frame in flight finish (bounded: an endless stepper never settles)
            idle = batch.frames
            time.sleep(0.2)
            if batch.frames == idle:
                break
        assert batch.frames == idle and batch.running  # nobody left to play for: no more frames
    finally:
        batch.stop()
    assert not batch.running


# -- the server ----------------------------------------------------------------------------------------------------

def test_server_gives_each_page_a_seat_of_the_batch(bundle):
    server = Server(bundle, max_players=3)
    try:
        with TestClient(server.app) as client, client.websocket_connect("/ws") as a, \
                client.websocket_connect("/ws") as b, client.websocket_connect("/ws") as c:
            hellos = [recv_json(ws, "hello")[0] for ws in (a, b, c)]
            pa, pb, pc = (server.players[h["player"]] for h in hellos)
            assert sorted(s.slot for s in (pa.session, pb.session, pc.session)) == [0, 1, 2]
            assert len(server.batch.seats) == 3
            a.send_text('{"type": "note_on", "pitch": 60}')
            b.send_text('{"type": "set", "name": "top_k", "value": 3}')
            c.send_text('{"type": "set", "name": "seed", "value": 77}')
            recv_json(a, "ok"), recv_json(b, "ok"), recv_json(c, "ok")
            c.send_text('{"type": "reset"}')
            recv_json(c, "ok")
            assert pa.live.tracker.peek()[60] > 0 and pb.live.tracker.peek()[60] <= 0
            assert pb.live.snapshot().top_k == 3 and pa.live.snapshot().top_k != 3
            assert pc.session.seed == 77 and pa.session.seed != 77
            for ws, p in ((a, pa), (b, pb), (c, pc)):
                assert keeps_playing(ws, p)
            frames = [recv_audio(ws, 5) for ws in (a, b, c)]
            assert all(np.abs(f).max() > 0 for f in frames)
            assert pb.session._sent[1] == 3  # its top-k reached its slot of the batch
            status, _ = recv_json(a, "status")
            assert status["frames"] > 0 and "skipped_frames" in status
        assert _freed(server) and not server.batch.seats
    finally:
        server.close()
    assert not server.batch.running


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (the GPU path of the batch)")
def test_seats_on_cuda_with_graphs():
    """The GPU path: CUDA graphs of the batch (captured up front), the codec's batch on the device; each seat plays
    audible, finite audio of its own, and a reset of one leaves the others playing."""
    from openmrt.engine.bundle import load_bundle

    cuda = load_bundle("random:tiny", seed=0, device="cuda", dtype="auto")
    assert cuda.speed.lm == "graphs"
    batch = LivePlayers(cuda, capacity=3)
    assert batch.players.cuda_graph and batch.players.graphs and batch.capacity == 8
    seats = [batch.join(Script(i), seed=SEATS[i][0]) for i in range(3)]
    out = [[] for _ in seats]
    for t in range(12):
        if t == 6:
            seats[1].reset()
        batch.produce()
        for i, seat in enumerate(seats):
            while seat.ring.fill() >= 1920:
                out[i].append(seat.read(1920).copy())
    batch.stop()
    a, b, c = (np.stack(o) for o in out)
    assert all(np.isfinite(x).all() and np.abs(x[2:]).max() > 0 for x in (a, b, c))
    assert not np.array_equal(a, c) and np.abs(a[6:]).max() > 0 and np.abs(b[6]).max() == 0  # b's lookahead
    assert batch.silent_frames == 0 and not batch.faults
