"""The v1 engine mode (openmrt.engine.chunks / engine.v1): the official equal-power crossfade, the chunk stream
behind FrameStream's interface (lengths, latency, prefetch, context), bundles in the official layout and
`openmrt generate --model mrt_v1_base` end to end on a seeded tiny checkpoint written in that layout."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from needs import need
from v1_layout import ARCHIVE, tiny_codec, write_layout

from openmrt import tokens as tk
from openmrt.cli import main
from openmrt.engine.chunks import (
    CHUNK_FRAMES,
    CHUNK_SAMPLES,
    ChunkStream,
    crossfade_ramp,
    join_chunk,
    open_stream,
    v1_encoder_ids,
)
from openmrt.engine.offline import render
from openmrt.errors import CheckpointError, ConfigError
from openmrt.frame import FRAME_SAMPLES
from openmrt.lm_v1.tokens import MASK, STYLE_OFFSET

try:
    import tensorstore
except ImportError:
    tensorstore = None

STYLE = [660, 597, 668, 315, 857, 217, -1, -1, -1, -1, -1, -1]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    need(tensorstore is not None, "the tensorstore package (pip install 'openmrt[v1]')")
    return write_layout(tmp_path_factory.mktemp("v1home"))


@pytest.fixture
def home(root, monkeypatch):
    monkeypatch.setenv("OPENMRT_HOME", str(root))
    monkeypatch.setenv("MAGENTA_HOME", str(root / "elsewhere"))
    return root


@pytest.fixture(scope="module")
def bundle(root):
    from openmrt.engine.v1 import v1_bundle_from_path

    torch.set_num_threads(1)
    return v1_bundle_from_path(root / "checkpoints" / ARCHIVE)


def cond(style=STYLE) -> np.ndarray:
    c = tk.make_conditioning()
    c[tk.STYLE] = style
    return c


def test_v1_crossfade_is_the_official_equal_power_one():
    n = np.arange(FRAME_SAMPLES)
    r = crossfade_ramp()
    assert r.dtype == np.float32 and r.shape == (FRAME_SAMPLES,)
    np.testing.assert_allclose(r, np.sin(np.pi / 2 * n / FRAME_SAMPLES), atol=1e-6)  # endpoint excluded: r[0] = 0
    assert r[0] == 0 and r[-1] < 1
    rng = np.random.default_rng(0)
    decoded = rng.standard_normal((51 * FRAME_SAMPLES, 2)).astype(np.float32)
    tail = rng.standard_normal((FRAME_SAMPLES, 2)).astype(np.float32)
    chunk, new_tail = join_chunk(decoded, tail)
    assert chunk.shape == (CHUNK_SAMPLES, 2) and new_tail.shape == (FRAME_SAMPLES, 2)
    want = decoded[:FRAME_SAMPLES] * r[:, None] + tail * r[::-1, None]  # spec §8, per channel
    np.testing.assert_allclose(chunk[:FRAME_SAMPLES], want, atol=1e-6)
    assert np.array_equal(chunk[FRAME_SAMPLES:], decoded[FRAME_SAMPLES:CHUNK_SAMPLES])
    assert np.array_equal(new_tail, decoded[CHUNK_SAMPLES:])


def test_v1_style_tokens_reach_the_encoder_masked_per_token():
    ctx = torch.full((250, 16), -1, dtype=torch.long)
    ids = v1_encoder_ids(ctx, np.array([5, -1, 7, 8, 9, 10]))
    assert ids[0, 1000:].tolist() == [STYLE_OFFSET + 5, MASK, STYLE_OFFSET + 2048 + 7, STYLE_OFFSET + 3072 + 8,
                                      STYLE_OFFSET + 4096 + 9, STYLE_OFFSET + 5120 + 10]
    assert ids[1, 1000:].tolist() == [MASK] * 6 and (ids[:, :1000] == MASK).all()
    assert torch.equal(v1_encoder_ids(ctx, np.full(6, -1)), v1_encoder_ids(ctx, np.full(6, -1)))


def test_v1_chunk_stream_frames_latency_and_prefetch(bundle):
    """Frame by frame, 40 ms each, with each frame's audio at its own step; the audio is the chunks' codes decoded
    and crossfaded as spec §8 says; the style is read once per chunk (prefetch: at the previous chunk's start);
    prefetch changes nothing else; reset replays the same seed."""
    live = open_stream(bundle, seed=3)
    assert isinstance(live, ChunkStream) and live.latency_frames == 0 and live.control_latency_frames == 100
    styles = []
    gen = live._generate
    live._generate = lambda i, ctx, style, *a: styles.append((i, style.tolist())) or gen(i, ctx, style, *a)
    other = [1, 2, 3, 4, 5, 6] + [-1] * 6
    out = [live.step(cond(STYLE if t < 10 else other)) for t in range(CHUNK_FRAMES + 2)]
    assert all(a.shape == (FRAME_SAMPLES, 2) and a.dtype == np.float32 and c.shape == (16,) for a, c in out)
    # chunk 0 and its prefetched successor read frame 0's style; chunk 2 (started at frame 50) reads the new one
    live._drain()  # chunk 2 is still being generated
    assert styles == [(0, STYLE[:6]), (1, STYLE[:6]), (2, other[:6])]
    audio = np.concatenate([a for a, _ in out])
    codes = np.stack([c for _, c in out])
    assert np.isfinite(audio).all() and np.abs(audio[:CHUNK_SAMPLES]).max() > 0
    # chunk 0 decoded independently: [zeros (no context), 50 frames] -> 51 frames, crossfaded with a silent tail
    first, tail = join_chunk(live.decode(torch.cat([torch.zeros(1, 16, dtype=torch.long),
                                                    torch.as_tensor(codes[:CHUNK_FRAMES])])),
                             np.zeros((FRAME_SAMPLES, 2), np.float32))
    np.testing.assert_allclose(audio[:CHUNK_SAMPLES], first, atol=1e-6)
    # chunk 1's first frame fades chunk 0's tail out: its context ends with chunk 0's codes
    assert torch.equal(live.context[-2 * CHUNK_FRAMES:-CHUNK_FRAMES], torch.as_tensor(codes[:CHUNK_FRAMES]))
    second, _ = join_chunk(live.decode(torch.as_tensor(np.concatenate([codes[CHUNK_FRAMES - 1:CHUNK_FRAMES],
                                                                       live._codes]))), tail)
    np.testing.assert_allclose(audio[CHUNK_SAMPLES:], second[:2 * FRAME_SAMPLES], atol=1e-6)
    live.close()

    offline = ChunkStream(bundle, seed=3, prefetch=False)
    assert offline.control_latency_frames == CHUNK_FRAMES
    again, _ = render(offline, CHUNK_SAMPLES + 2 * FRAME_SAMPLES, lambda t: cond())
    assert np.array_equal(again, audio)  # same style throughout until chunk 2: identical
    offline.reset()
    replay, _ = render(offline, 3 * FRAME_SAMPLES, lambda t: cond())
    assert np.array_equal(replay, audio[: 3 * FRAME_SAMPLES])
    offline.reset(4)
    assert not np.array_equal(render(offline, 3 * FRAME_SAMPLES, lambda t: cond())[0], replay)
    with pytest.raises(ConfigError, match="teacher-force"):
        offline.step(cond(), forced=np.zeros(16))
    offline.close()


def test_v1_audio_context_and_state_round_trip(bundle, tmp_path):
    stream = ChunkStream(bundle, seed=0, prefetch=False)
    rng = np.random.default_rng(1)
    clip = (0.1 * rng.standard_normal((3 * 48000, 2))).astype(np.float32)
    used = stream.set_context_audio(clip)
    with torch.inference_mode():
        want = bundle.codec.encode(torch.as_tensor(clip)[None], 16)[0][:-25]
    assert used == len(want) == 75 - 25
    assert torch.equal(stream.context[-used:], want) and (stream.context[:-used] == -1).all()
    stream.reset()  # a reset keeps the context it continues from
    assert torch.equal(stream.context[-used:], want)
    sd = stream.state_dict()
    fresh = ChunkStream(bundle, seed=9, prefetch=False)
    fresh.load_state_dict(sd)
    assert torch.equal(fresh.context, stream.context) and fresh.lm.seed == 0
    with pytest.raises(Exception, match="codes"):
        stream.set_context(np.full((10, 16), 5000))
    stream.close()
    fresh.close()


def test_v1_guidance_weight_and_ignored_signals(bundle, caplog):
    notes = ChunkStream(bundle, guidance={"notes": 1.0}, prefetch=False)
    assert notes.lm.sampling().guidance == 5.0 and "guidance on notes ignored" in caplog.text  # official default
    notes.close()
    plain = ChunkStream(bundle, guidance={"musiccoca": 0.0}, prefetch=False)
    audio, codes = plain.step(cond())
    assert list(plain._decoders) == [1] and audio.shape == (FRAME_SAMPLES, 2)  # no CFG: one LM row
    plain.close()


def test_v1_generate_cli_end_to_end_on_a_tiny_official_layout(home, tmp_path, capsys):
    """`openmrt generate --model mrt_v1_base` finds the seeded tiny checkpoint in the official layout under
    OPENMRT_HOME, says what a v1 stream cannot do, and writes exactly the asked length; --model PATH to the T5X
    folder loads the same model."""
    out = tmp_path / "v1.wav"
    style = ",".join(map(str, STYLE))
    assert main(["generate", "--model", "mrt_v1_base", "--device", "cpu", "--seconds", "2.5", "--seed", "3",
                 "--style-tokens", style, "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "model mrt_v1_base" in err and "cannot react within a chunk" in err and "notes and drums" in err
    audio, sr = sf.read(out, dtype="float32", always_2d=True)
    assert sr == 48000 and audio.shape == (120_000, 2) and np.isfinite(audio).all() and np.abs(audio).max() > 0
    first = tmp_path / "path.wav"
    assert main(["generate", "--model", str(home / "checkpoints" / ARCHIVE), "--device", "cpu", "--seconds", "0.5",
                 "--seed", "3", "--style-tokens", style, "-o", str(first)]) == 0
    assert np.array_equal(sf.read(first, dtype="float32", always_2d=True)[0], audio[:24_000])


def test_v1_bad_checkpoints_give_clear_errors(home, tmp_path, capsys, monkeypatch):
    from openmrt.engine.bundle import load_bundle
    from openmrt.engine.v1 import load_v1_codec, v1_bundle_from_path

    with pytest.raises(CheckpointError, match="no T5X 'checkpoint' file"):
        v1_bundle_from_path(tmp_path)
    # an archive that unpacks into a folder of its own is found one level further down
    from openmrt.hub import t5x_folder

    (tmp_path / "nested" / "inner").mkdir(parents=True)
    (tmp_path / "nested" / "inner" / "checkpoint_1860000").symlink_to(home / "checkpoints" / ARCHIVE /
                                                                      "checkpoint_1860000")
    assert t5x_folder(tmp_path / "nested") == tmp_path / "nested" / "inner" / "checkpoint_1860000"
    tar = tmp_path / f"{ARCHIVE}.tar"
    tar.write_bytes(b"not extracted")
    with pytest.raises(CheckpointError, match="extract it first"):
        load_bundle(str(tar), device="cpu")
    broken = tmp_path / "broken" / "checkpoint_1"
    broken.mkdir(parents=True)
    (broken / "checkpoint").write_bytes(b"\x93junk")
    assert main(["generate", "--model", str(broken.parent), "--seconds", "1", "-o", str(tmp_path / "x.wav")]) == 1
    assert "not a T5X checkpoint" in capsys.readouterr().err
    # a 12-level codec cannot decode v1's 16 levels: said before anything plays
    from safetensors.torch import save_file

    from openmrt.codec.convert import to_official
    from openmrt.codec.model import SpectroStream
    from openmrt.config import codec_config

    small = SpectroStream(codec_config("demo"))
    save_file(to_official(small, ("quantizer",)), str(tmp_path / "q.safetensors"))
    res = home / "resources" / "spectrostream"
    with pytest.raises(CheckpointError, match=">= 16 levels"):
        load_v1_codec(res / "decoder.safetensors", tmp_path / "q.safetensors")
    # not installed: the bundle names the archive, where to fetch it and how to extract it
    monkeypatch.setenv("OPENMRT_HOME", str(tmp_path / "empty"))
    assert main(["generate", "--model", "mrt_v1_large", "--seconds", "1", "-o", str(tmp_path / "y.wav")]) == 1
    err = capsys.readouterr().err
    assert "llm_large_x3047_c1860k.tar" in err and "huggingface.co/google/magenta-realtime/" in err and "tar -xf" in err
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # tests never download: offline, it says what to fetch
    assert main(["models", "download", "mrt_v1_large"]) == 1
    out = capsys.readouterr()
    assert "cannot download checkpoints/llm_large_x3047_c1860k.tar" in out.err and "tar -xf" in out.err
    assert tiny_codec().config.num_quantizers == 16


def test_v1_download_fetches_and_extracts_the_archive(root, tmp_path, capsys):
    """`models download` of a v1 bundle: the T5X archive fetched (here from a fake source serving a tar of the
    seeded checkpoint), unpacked beside it, renamed when whole, the tar deleted; the codec files as for MRT2.
    A damaged archive is named and removed; a broken folder already there is moved aside, not deleted."""
    import shutil
    import tarfile

    from openmrt import hub
    from openmrt.hub_download import download

    tar = tmp_path / f"{ARCHIVE}.tar"
    with tarfile.open(tar, "w") as t:
        t.add(root / "checkpoints" / ARCHIVE / "checkpoint_1860000", arcname="checkpoint_1860000")
    served = []

    def fake(source):
        def fetch(rel, dest_root):
            served.append(rel)
            out = dest_root / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source(rel), out)
            return out
        return fetch

    spec = hub.registry()["mrt_v1_base"]
    dest = tmp_path / "home"
    (dest / "checkpoints" / ARCHIVE).mkdir(parents=True)  # an earlier extraction that broke off
    (dest / "checkpoints" / ARCHIVE / "partial").write_bytes(b"x")
    paths = download(spec, dest, fake(lambda rel: root / rel), required_only=True, archive_fetch=fake(lambda _: tar))
    assert served[0] == f"checkpoints/{ARCHIVE}.tar" and "resources/spectrostream/decoder.safetensors" in served
    folder = dest / "checkpoints" / ARCHIVE
    assert paths[f"checkpoints/{ARCHIVE}"] == folder and (folder / "checkpoint_1860000" / "checkpoint").is_file()
    assert not (dest / "checkpoints" / f"{ARCHIVE}.tar").exists()
    assert not (dest / "checkpoints" / f"{ARCHIVE}.extracting").exists()
    assert (dest / "checkpoints" / f"{ARCHIVE}.broken" / "partial").is_file()
    assert "moved the incomplete" in capsys.readouterr().out
    assert hub.is_installed(spec, [dest])
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"\x00" * 1000 + b"not a tar")
    with pytest.raises(hub.HubError, match="not a readable tar archive"):
        download(spec, tmp_path / "home2", fake(lambda rel: root / rel), required_only=True,
                 archive_fetch=fake(lambda _: bad))
    assert not (tmp_path / "home2" / "checkpoints" / f"{ARCHIVE}.tar").exists()
    assert not (tmp_path / "home2" / "checkpoints" / ARCHIVE).exists()


def test_v1_models_list_and_verify(home, capsys):
    assert main(["models", "list"]) == 0
    listed = capsys.readouterr().out
    line = next(x for x in listed.splitlines() if x.startswith("mrt_v1_base"))
    assert "plays" in line
    assert next(x for x in listed.splitlines() if x.startswith("mrt_v1_large")).split()[1:3] == ["not", "installed"]
    assert main(["models", "verify", "mrt_v1_base"]) == 0
    assert f"checkpoints/{ARCHIVE}" in capsys.readouterr().out


def test_v1_live_session_plays_continues_and_saves(bundle, tmp_path):
    """The live Session takes a v1 bundle unchanged: frames into the ring buffer, /prefill/audio as the context of
    every reset, save/load of the stream state."""
    from openmrt.engine.session import FrameInput, Session

    session = Session(bundle, lambda: FrameInput(cond(), temperature=1.1))
    assert isinstance(session.stream, ChunkStream)
    gen = session.stream._generate
    fail = [RuntimeError("chunk failed")]
    session.stream._generate = lambda *a: (_ for _ in ()).throw(fail.pop()) if fail else gen(*a)
    for _ in range(3):
        session.produce()  # the first chunk fails once: a silent frame, then the chunk is generated again
    assert session.silent_frames == 1 and "chunk failed" in session.faults[0]
    assert session.ring.fill() == 3 * FRAME_SAMPLES and session.stream.lm.temperature == 1.1
    assert session.stream.chunk_lm_ms > 0 and session.stats().frames == 3
    clip = (0.1 * np.random.default_rng(2).standard_normal((48000, 2))).astype(np.float32)
    used = session.prefill_audio(clip)
    assert used == 25 and (session.stream.context[-used:] >= 0).all()
    session.reset()
    assert (session.stream.context[-used:] >= 0).all() and session.stream.frames_out == 0
    session.prefill_silence(300)  # the codec's silence code, last 250 frames kept
    silence = session.stream.context
    assert (silence >= 0).all() and (silence == silence[0]).all()
    session.prefill_audio(clip)
    session.save_state(tmp_path / "v1.safetensors")
    before = session.stream.context.clone()
    session.stream.set_context(np.zeros((5, 16), np.int64))
    session.load_state(tmp_path / "v1.safetensors")
    assert torch.equal(session.stream.context, before)
    session.stream.close()


def test_v1_play_says_what_a_chunked_stream_cannot_do(home, monkeypatch, capsys):
    """`openmrt play --model mrt_v1_base` (sound card replaced by a reader thread) plays and says up front that it
    cannot react within a chunk, with the 2-4 s a style change takes live."""
    import threading

    import openmrt.io.audio_out as audio_out

    got = []

    class FakeOutput:  # pulls 10 ms blocks as a sound card would, as fast as they come
        def __init__(self, read, **_):
            self.read, self.recorder, self._stop = read, None, threading.Event()
            self._t = threading.Thread(target=self._run, daemon=True)

        def _run(self):
            while not self._stop.wait(0.01):
                got.append(self.read(480).copy())

        def start(self):
            self._t.start()

        def close(self):
            self._stop.set()
            self._t.join()

    monkeypatch.setattr(audio_out, "AudioOutput", FakeOutput)
    assert main(["play", "--model", "mrt_v1_base", "--device", "cpu", "--seconds", "0.3", "--osc-port", "0",
                 "--style-tokens", ",".join(map(str, STYLE))]) == 0
    err = capsys.readouterr().err
    assert "cannot react within a chunk" in err and "2-4 s later live" in err and "playing mrt_v1_base" in err
    assert got and np.abs(np.concatenate(got)).max() > 0  # the primed frames of chunk 0 reached the "card"
