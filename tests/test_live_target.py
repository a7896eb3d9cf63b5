"""``openmrt play``'s control target: state save/load, prefill (audio, tokens, silence) and batched-CFG guidance
reach the session from OSC and typed keys; bad requests are reported, never fatal, and nothing is overwritten."""

from __future__ import annotations

import time

import numpy as np
import pytest
import soundfile as sf

from openmrt import tokens as tk
from openmrt.controls import Controls, LiveControls
from openmrt.engine.bundle import random_bundle
from openmrt.engine.live import LiveTarget, parse_guidance, parse_line, read_tokens
from openmrt.engine.session import FrameInput, Session
from openmrt.engine.sink import ClockSink
from openmrt.errors import ControlError
from openmrt.io.osc import OscServer


@pytest.fixture(scope="module")
def bundle():
    return random_bundle("tiny", "demo", seed=0)


@pytest.fixture
def rig(bundle, tmp_path):
    live = LiveControls(Controls(style_tokens=tuple(range(12))))
    session = Session(bundle, lambda: FrameInput.from_live(live), buffer_samples=8192)
    live.on_reset = session.reset
    lines: list[str] = []
    target = LiveTarget(session, live, echo=lines.append, state_dir=tmp_path)
    osc = OscServer(target, port=0, echo=lines.append)  # handle_message is what the server thread runs
    yield session, target, osc, lines
    target.close()
    session.stop()


def _send(osc: OscServer, target: LiveTarget, address: str, *args) -> bool:
    ok = osc.handle_message(address, list(args))
    target.wait()
    return ok


def test_session_operations_over_osc_while_playing(rig, tmp_path):
    session, target, osc, lines = rig
    codes = np.random.default_rng(0).integers(0, 1024, (30, 16)).astype(np.int32)  # as `openmrt codec encode` writes
    np.save(tmp_path / "codes.npy", codes)
    np.save(tmp_path / "bad.npy", np.zeros((5, 3), np.int32))
    sf.write(tmp_path / "clip.wav", np.random.default_rng(1).standard_normal((48000 * 3, 2)).astype(np.float32) * 0.1,
             48000)
    (tmp_path / "broken.wav").write_bytes(b"RIFF nonsense")
    state = tmp_path / "state.safetensors"

    session.start()
    sink = ClockSink(session.read, block=480)
    sink.start(30.0)
    try:
        assert _send(osc, target, "/save", str(state)) and state.is_file()
        saved = state.read_bytes()
        assert not _send(osc, target, "/save", str(state))  # never overwritten unless told
        assert "not overwriting" in osc.last_errors[-1] and state.read_bytes() == saved
        assert _send(osc, target, "/save", str(state), 1)  # told
        assert _send(osc, target, "/load", str(state))
        assert not _send(osc, target, "/load", str(tmp_path / "missing.safetensors"))

        assert _send(osc, target, "/prefill/silence", 20)
        assert lines[-1] == "session: prefilled 20 frames of silence; /reset comes back here"
        assert _send(osc, target, "/prefill/tokens", str(tmp_path / "codes.npy"))
        assert lines[-1] == "session: prefilled 30 frames of tokens; /reset comes back here"
        assert not _send(osc, target, "/prefill/tokens", str(tmp_path / "bad.npy"))
        assert _send(osc, target, "/prefill/audio", str(tmp_path / "clip.wav"))
        assert lines[-1].startswith("session: prefilled 25 frames from")  # 3 s, 1 s trimmed at each end

        frames = session.stats().frames
        errors = target.errors
        assert _send(osc, target, "/prefill/audio", str(tmp_path / "broken.wav"))  # accepted, fails on the worker
        assert target.errors == errors + 1 and lines[-1].startswith("session: error:")
        deadline = time.monotonic() + 20
        while session.stats().frames < frames + 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert session.running and session.stats().frames >= frames + 5  # the stream goes on
    finally:
        sink._stop.set()
        sink.join()
    assert any(line.startswith("session: saved the state to") for line in lines)
    assert "osc: /prefill/silence 20 -> prefilling 20 frames of silence" in lines


def test_guidance_over_osc(rig):
    session, target, osc, lines = rig
    assert _send(osc, target, "/guidance", "style", 2.5)
    assert lines[-1].endswith("applied at the next reset: /reset)") and session.stream.lm.arity == 1
    assert _send(osc, target, "/reset")
    assert session.stream.lm.guidance_keys == ("musiccoca",) and session.stream.lm.guidance == [2.5]
    assert _send(osc, target, "/guidance", "style", 1.0)
    assert lines[-1] == "osc: /guidance style 1.0 -> guidance musiccoca 1" and session.stream.lm.guidance == [1.0]
    assert not _send(osc, target, "/guidance", "bass", 1.0)
    assert _send(osc, target, "/guidance/clear") and _send(osc, target, "/reset")
    assert session.stream.lm.arity == 1


def test_seed_over_osc_reaches_the_session_at_reset(rig):
    session, target, osc, lines = rig
    assert _send(osc, target, "/seed", 11) and _send(osc, target, "/seed_rotation", 4)
    assert (session.seed, session.seed_rotation) == (11, 4)
    assert lines[-1] == "osc: /seed_rotation 4 -> seed_rotation 4 (from the next reset: /reset)"


def test_prompts_without_a_style_model_are_refused_with_a_hint(bundle):
    live = LiveControls()
    target = LiveTarget(Session(bundle, lambda: FrameInput.from_live(live)), live, has_style=False)
    osc = OscServer(target, port=0)
    assert not osc.handle_message("/prompt", [0, "disco", 1.0])
    assert "--style demo" in osc.last_errors[-1] and live.snapshot().prompts == ()
    target.close()


def test_keys_save_to_new_files_and_load_the_last(rig, tmp_path):
    session, target, osc, lines = rig
    keys = OscServer(target, port=0, echo=lines.append, name="keys")
    for _ in range(2):
        assert target.key("s", keys.handle_message)
        target.wait()
    assert sorted(p.name for p in tmp_path.glob("openmrt-state-*")) == ["openmrt-state-1.safetensors",
                                                                       "openmrt-state-2.safetensors"]
    assert target.key("l", keys.handle_message)
    target.wait()
    assert lines[-1] == f"session: loaded the state from {tmp_path / 'openmrt-state-2.safetensors'}"
    assert target.key("r", keys.handle_message) and lines[-1] == "keys: /reset -> reset"
    assert target.key("q", keys.handle_message) is False
    target.key("h", keys.handle_message)
    assert lines[-1].startswith("keys: s save")


def test_typed_lines_and_guidance_flags():
    assert parse_line("/temperature 1.1") == ("/temperature", [1.1])
    assert parse_line("topk 20") == ("/topk", [20])
    assert parse_line('prompt 0 "solo piano" 1') == ("/prompt", [0, "solo piano", 1])
    with pytest.raises(ControlError):
        parse_line('"unclosed')
    assert parse_guidance("style=3,notes=1.5") == {"musiccoca": 3.0, "notes": 1.5}
    for bad in ("style", "bass=1", "notes=x", "style=nan"):
        with pytest.raises(ControlError, match="--guidance"):
            parse_guidance(bad)


def test_tokens_files(tmp_path):
    codes = np.arange(24).reshape(2, 12)
    np.save(tmp_path / "c.npy", codes)
    uniq = read_tokens(tmp_path / "c.npy")
    assert np.array_equal(uniq, tk.to_unique(__import__("torch").as_tensor(codes)).numpy())
    np.save(tmp_path / "u.npy", uniq)
    assert np.array_equal(read_tokens(tmp_path / "u.npy"), uniq)  # already LM token ids
    np.save(tmp_path / "f.npy", codes.astype(np.float32))
    with pytest.raises(ControlError, match="integer codes"):
        read_tokens(tmp_path / "f.npy")
