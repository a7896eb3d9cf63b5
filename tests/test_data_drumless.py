"""Drumless twins: the mix minus its drum stem, drums flag 0, only for examples whose drums play."""

from __future__ import annotations

import json

import numpy as np
import pytest

from openmrt.data.drumless import drumless_folder, drumless_shard
from openmrt.data.shards import load_shard, read_index, save_arrays, write_index
from openmrt.errors import DataError
from openmrt.frame import FRAME_SAMPLES


def _shard(drum_frames: list[int], frames: int = 5, seed: int = 0) -> dict[str, np.ndarray]:
    """Examples of ``frames`` frames; example i has drums on its first drum_frames[i] frames."""
    rng = np.random.default_rng(seed)
    n = len(drum_frames)
    stem = np.zeros((2, n * frames * FRAME_SAMPLES), np.int16)
    drums = np.zeros(n * frames, np.int8)
    for i, d in enumerate(drum_frames):
        drums[i * frames:i * frames + d] = 1
        span = slice(i * frames * FRAME_SAMPLES, (i * frames + d) * FRAME_SAMPLES)
        stem[:, span] = rng.integers(-3000, 3000, (2, d * FRAME_SAMPLES))
    pitched = rng.integers(-3000, 3000, stem.shape).astype(np.int16)
    notes = rng.integers(0, 3, (n * frames, 128)).astype(np.int8)
    return {"audio": pitched + stem, "drum_audio": stem, "notes": notes, "drums": drums,
            "offsets": np.arange(n + 1, dtype=np.int64) * frames, "tokens": np.zeros((n * frames, 12), np.int16),
            "meta": np.array(json.dumps({"examples": [{"style": f"s{i}"} for i in range(n)]})), "pitched": pitched}


def test_twin_is_the_mix_without_its_drums():
    src = _shard([3, 0, 5])
    twin = drumless_shard(src)
    meta = json.loads(str(twin["meta"]))["examples"]
    assert [m["style"] for m in meta] == ["s0", "s2"] and all(m["variant"] == "drumless" for m in meta)
    keep = np.r_[0:5, 10:15]
    samples = np.concatenate([np.arange(f * FRAME_SAMPLES, (f + 1) * FRAME_SAMPLES) for f in keep])
    np.testing.assert_array_equal(twin["audio"], src["pitched"][:, samples])
    np.testing.assert_array_equal(twin["notes"], src["notes"][keep])
    assert not twin["drums"].any() and not twin["drum_audio"].any()
    assert twin["offsets"].tolist() == [0, 5, 10] and "tokens" not in twin  # tokens of the mix do not carry over
    assert drumless_shard(src, skip=3) is None


def test_folder_skips_held_out_examples_and_resumes(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for k, drums in enumerate(([2, 2], [0, 4], [1, 0])):
        arrays = _shard(drums, seed=k)
        arrays.pop("pitched")
        save_arrays(src / f"shard_{k:05d}.npz", arrays)
    write_index(src, {"kind": "test"})
    stats = drumless_folder(src, tmp_path / "out", skip=3)  # the first shard and one example of the second
    assert stats["twins"] == 2 and stats["index"]["examples"] == 2
    shards = read_index(tmp_path / "out")["shards"]
    assert [load_shard(tmp_path / "out" / s["file"]).meta[0]["style"] for s in shards] == ["s1", "s0"]
    assert drumless_folder(src, tmp_path / "out", skip=3)["shards"] == 0  # resumed: nothing redone


def test_shard_without_a_stem_is_refused():
    src = _shard([2])
    del src["drum_audio"]
    with pytest.raises(DataError, match="drum stem"):
        drumless_shard(src)


def test_lm_trainer_never_masks_a_twins_drums_flag(tmp_path):
    """Twins are read as such by the LM trainer: their flag 0 survives every augmentation, so "auto" (masked)
    is learned from the natural pieces only; the originals' flags are masked as usual."""
    from openmrt import tokens as tk
    from openmrt.train.conditioning import Augment
    from openmrt.train.lm import TokenData

    src = _shard([5, 5], frames=20)
    twin = drumless_shard(src)
    twin["tokens"] = np.zeros((len(twin["notes"]), 12), np.int16)
    src.pop("pitched")
    save_arrays(tmp_path / "shard_00000.npz", src)
    save_arrays(tmp_path / "shard_00001.npz", twin)
    write_index(tmp_path, {"kind": "test"})
    pool = TokenData(tmp_path)
    assert [ex["fixed_drums"] for ex in pool.examples] == [False, False, True, True]
    aug = Augment(drums_auto_prob=1.0)
    drums = lambda exs: (TokenData.batch(exs, np.random.default_rng(0), 8, 20, aug)["cond"][..., tk.DRUMS]  # noqa: E731
                         - tk.COND_OFFSET).numpy()
    assert (drums(pool.examples[2:]) == 0).all()
    assert (drums(pool.examples[:2]) == tk.MASKED).all()
