"""Shard builds: real compose -> FluidSynth -> labels -> shards; an interrupted build resumes
without losing or changing anything; crops from the PyTorch dataset stay aligned."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from needs import FLUID_R3, need_soundfont

from openmrt.data import pipeline
from openmrt.data.shards import build_shards, load_shard, read_index
from openmrt.errors import DataError


@pytest.fixture(scope="module", autouse=True)
def soundfont():
    need_soundfont()  # skip locally, fail in CI


HOURS, PIECES = 0.007, (6.0, 8.0)  # three short pieces (one per shard): ~40 s of audio


@pytest.fixture(autouse=True)
def only_fluid_r3(monkeypatch):
    # The same SoundFont on every machine, whatever else is installed: the test is exact.
    monkeypatch.setattr(pipeline, "available_soundfonts", lambda: [str(FLUID_R3)])
    monkeypatch.setattr(pipeline, "choose_soundfont", lambda seed, fonts=None: str(FLUID_R3))


def _digest(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.glob("shard_*.npz"))}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pipeline, "available_soundfonts", lambda: [str(FLUID_R3)])
        mp.setattr(pipeline, "choose_soundfont", lambda seed, fonts=None: str(FLUID_R3))
        stats = pipeline.compose_dataset(out, HOURS, seed=3, pieces_per_shard=1, piece_seconds=PIECES)
    return out, stats


def test_compose_build_writes_aligned_shards(reference):
    out, stats = reference
    index = read_index(out)
    assert stats["built"] == 3 and len(index["shards"]) == 3 and index["examples"] == 3
    assert stats["seconds"] > 20 and stats["cpu_s"] > 0
    shard = load_shard(out / "shard_00000.npz")
    T = int(shard.offsets[-1])
    assert shard.audio.dtype == np.int16 and shard.audio.shape == (2, T * 1920)
    assert shard.drum_audio.shape == shard.audio.shape and shard.notes.shape == (T, 128) and shard.drums.shape == (T,)
    meta = shard.meta[0]
    assert meta["soundfont"] == "FluidR3_GM.sf2" and meta["caption"] and meta["style"] and meta["frames"] == T
    assert np.abs(shard.audio).max() > 1000  # music, not silence
    import io

    import pretty_midi

    from openmrt.data.labels import midi_labels
    src = pretty_midi.PrettyMIDI(io.BytesIO(shard.example(0)["midi"]))  # the source MIDI travels along
    relabelled = midi_labels(src, T)
    assert relabelled.meta["caption"] == meta["caption"]
    assert (relabelled.notes != shard.notes).mean() < 1e-3  # ticks of 0.5 ms may move a note across a frame edge
    if meta["has_drums"]:  # where the labels say drums play, the stem has sound
        stem = np.abs(shard.drum_audio.astype(np.float32)).mean(0).reshape(T, 1920).max(1)
        # (medians: a final crash cymbal rings on for a while after the flag's 0.25 s tail)
        assert np.median(stem[shard.drums == 1]) > 5 * (np.median(stem[shard.drums == 0]) + 1)


def test_interrupted_build_resumes_without_loss(reference, tmp_path, monkeypatch):
    ref, _ = reference
    calls = []

    def dies_on_second(item):
        if len(calls) == 1:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C during the second shard
        calls.append(item[0])
        return pipeline._compose_work(item)

    monkeypatch.setattr(pipeline, "build_shards", _with_work(dies_on_second))
    with pytest.raises(KeyboardInterrupt):
        pipeline.compose_dataset(tmp_path, HOURS, seed=3, pieces_per_shard=1, piece_seconds=PIECES)
    assert [p.name for p in tmp_path.glob("shard_*")] == ["shard_00000.npz"] and not (tmp_path / "index.json").exists()
    first = (tmp_path / "shard_00000.npz").stat().st_mtime_ns
    (tmp_path / "shard_00001.npz.tmp").write_bytes(b"half a shard")  # a crash mid-write leaves this

    monkeypatch.undo()
    monkeypatch.setattr(pipeline, "available_soundfonts", lambda: [str(FLUID_R3)])
    monkeypatch.setattr(pipeline, "choose_soundfont", lambda seed, fonts=None: str(FLUID_R3))
    stats = pipeline.compose_dataset(tmp_path, HOURS, seed=3, pieces_per_shard=1, piece_seconds=PIECES)
    assert stats["skipped_existing"] == 1 and stats["built"] == 2
    assert (tmp_path / "shard_00000.npz").stat().st_mtime_ns == first  # not rebuilt
    assert not list(tmp_path.glob("*.tmp"))
    assert _digest(tmp_path) == _digest(ref)  # the same bytes as an uninterrupted build

    with pytest.raises(DataError, match="other arguments"):
        pipeline.compose_dataset(tmp_path, HOURS, seed=4, pieces_per_shard=1, piece_seconds=PIECES)


def _with_work(work):
    def patched(out_dir, build, jobs, _work, workers=1, unit_seconds=None, desc=""):
        return build_shards(out_dir, build, jobs, work, workers, unit_seconds, desc)
    return patched


def test_crop_dataset_aligns_audio_labels(reference):
    import torch

    from openmrt.data.dataset import CropDataset

    out, _ = reference
    ds = CropDataset(out, crop_frames=50, seed=1)
    items = list(ds)
    assert len(items) >= 3
    again = list(CropDataset(out, crop_frames=50, seed=1))
    def where(xs):
        return [(i["shard"], i["example"], i["start"]) for i in xs]

    assert where(items) == where(again)
    for it in items[:4]:
        shard = load_shard(out / it["shard"]).example(it["example"])
        s = it["start"]
        assert it["audio"].shape == (2, 50 * 1920) and it["notes"].shape == (50, 128) and it["valid"].all()
        np.testing.assert_array_equal(it["notes"].numpy(), shard["notes"][s:s + 50])
        np.testing.assert_array_equal(it["drums"].numpy(), shard["drums"][s:s + 50])
        np.testing.assert_allclose(it["audio"].numpy() * 32768, shard["audio"][:, s * 1920:(s + 50) * 1920])
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=2)))
    assert batch["notes"].shape == (2, 50, 128) and len(batch["caption"]) == 2


def test_tokenize_adds_aligned_tokens(reference, tmp_path):
    """The plumbing with a randomly initialised narrow codec (real weights: the official encoder
    file or our demo codec); only shapes and alignment are checked here."""
    import shutil

    import torch

    from openmrt.cli import main
    from openmrt.codec import SpectroStream
    from openmrt.codec.checkpoint import save_codec
    from openmrt.config import CodecConfig
    from openmrt.data.dataset import CropDataset
    from openmrt.data.tokenize import tokenize_folder

    src, _ = reference
    out = tmp_path / "tok"
    shutil.copytree(src, out)
    (out / "shard_00001.npz").unlink()  # keep the test short: two shards
    (out / "shard_00002.npz").unlink()
    from openmrt.data.shards import write_index
    write_index(out, read_index(src)["build"])
    torch.manual_seed(0)
    ckpt = save_codec(SpectroStream(CodecConfig(width=0.25)), tmp_path / "random_narrow.safetensors")
    assert main(["data", "tokenize", str(out), "--codec", str(ckpt)]) == 0
    assert tokenize_folder(out, None, 12, "random-narrow") == {"tokenized": 0, "already": 1}  # resumable
    shard = load_shard(out / "shard_00000.npz")
    assert shard.tokens.shape == (shard.notes.shape[0], 12) and shard.tokens.min() >= 0 and shard.tokens.max() < 1024
    item = next(iter(CropDataset(out, crop_frames=25, audio=False)))
    assert item["tokens"].shape == (25, 12) and "audio" not in item
    assert main(["data", "tokenize", str(out), "--codec", str(tmp_path / "missing.safetensors")]) == 1
    # --out: another codec's tokens into token-only copies (what an LM needs after the codec changed)
    from openmrt.codec.checkpoint import load_codec_file
    from openmrt.data.shards import float_audio
    from openmrt.data.tokenize import retokenize_folder
    from openmrt.train.lm import TokenData

    torch.manual_seed(1)
    other = save_codec(SpectroStream(CodecConfig(width=0.25)), tmp_path / "other.safetensors")
    again = tmp_path / "retok"
    assert main(["data", "tokenize", str(out), "--codec", str(other), "--out", str(again)]) == 0
    new, old = load_shard(again / "shard_00000.npz"), load_shard(out / "shard_00000.npz")
    assert new.audio.shape == (2, 0) and np.array_equal(new.notes, old.notes) and np.array_equal(new.drums, old.drums)
    first = old.example(0)
    with torch.no_grad():
        want = load_codec_file(other).encode(torch.from_numpy(float_audio(first["audio"]))[None], 12)[0].numpy()
    np.testing.assert_array_equal(new.example(0)["tokens"], want)
    assert not np.array_equal(new.tokens, old.tokens)  # another codec, other tokens
    assert read_index(again)["build"]["tokens"]["codec"] == "other.safetensors"
    assert len(TokenData(again).examples) == len(TokenData(out).examples)
    assert retokenize_folder(out, again, None) == {"tokenized": 0, "already": 1}  # resumable
    with pytest.raises(DataError, match="source folder"):
        retokenize_folder(out, out, None)
    with pytest.raises(DataError, match="no audio"):  # token-only shards cannot be retokenised again
        retokenize_folder(again, tmp_path / "twice", load_codec_file(other))


def test_style_tokens_come_from_the_audio_around_each_hop(reference, tmp_path):
    """A stand-in style model whose 'tokens' are the length (in frames) of the audio it was given:
    each 1 s hop gets the 10 s around its middle, clamped to the example; the LM batches read them."""
    import shutil

    from openmrt.cli import main
    from openmrt.data.shards import write_index
    from openmrt.data.tokenize import style_tokenize_folder
    from openmrt.train.lm import TokenData

    class Lengths:
        def embed_audio(self, audio):
            return np.array([len(audio) / 1920.0])

        def tokenize(self, emb):
            return tuple([int(emb[0])] * 12)

    src, _ = reference
    out = tmp_path / "style"
    shutil.copytree(src, out)
    for extra in sorted(out.glob("shard_*.npz"))[1:]:
        extra.unlink()
    write_index(out, read_index(src)["build"])
    assert style_tokenize_folder(out, Lengths()) == {"tokenized": 1, "already": 0}
    assert style_tokenize_folder(out, None) == {"tokenized": 0, "already": 1}  # resumable: nothing recomputed
    shard = load_shard(out / "shard_00000.npz")
    for i in range(len(shard)):
        got = shard.example(i)["style_tokens"][:, 0]
        frames = len(got)
        for h in range(0, frames, 25):
            mid = min(h + 12, frames - 1)
            want = min(frames, mid + 125) - max(0, mid - 125)
            assert (got[h:h + 25] == want).all(), (i, h)
    pool = [{"tokens": np.zeros((30, 12), np.int16), "style_tokens": np.arange(360).reshape(30, 12) % 1024,
             "notes": np.zeros((30, 128), np.int8), "drums": np.zeros(30, np.int8)}]
    batch = TokenData.batch(pool, np.random.default_rng(0), 1, 30, None)
    assert (batch["cond"][0, :, :12].numpy() - 7 == pool[0]["style_tokens"]).all()
    assert main(["style", "tokens", str(out), "--style", str(tmp_path / "missing.safetensors")]) == 1


def test_per_frame_arrays_are_written_with_the_shard_and_checked_against_the_labels(tmp_path):
    from openmrt.data.labels import Labels
    from openmrt.data.shards import Example, write_shard

    exs = [Example(np.zeros((2, t * 1920), np.float32), Labels(np.zeros((t, 128), np.int8), np.zeros(t, np.int8), {}),
                   {"source": f"ex{t}"}) for t in (3, 5)]
    tokens = [np.full((3, 12), 7, np.int16), np.full((5, 12), 9, np.int16)]
    write_shard(tmp_path / "a.npz", exs, per_frame={"tokens": tokens})
    shard = load_shard(tmp_path / "a.npz")
    assert shard.example(0)["tokens"].tolist() == tokens[0].tolist()
    assert shard.example(1)["tokens"].tolist() == tokens[1].tolist()
    with pytest.raises(DataError, match="tokens: \\[3, 4\\] rows for \\[3, 5\\] label frames"):
        write_shard(tmp_path / "b.npz", exs, per_frame={"tokens": [tokens[0], tokens[1][:4]]})
    assert not (tmp_path / "b.npz").exists()
