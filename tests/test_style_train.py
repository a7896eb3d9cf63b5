"""Training the style model and the mapper: CLIP loss, pMF on a toy conditional problem, resumable `openmrt train
style` / `train mapper` on two synthetic "styles" (exact resume, model file written, figures computed)."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from openmrt.cli import main
from openmrt.data.labels import Labels
from openmrt.data.shards import Example, write_index, write_shard
from openmrt.style.mapper import Mapper, MapperConfig, pmf_loss
from openmrt.style.model import StyleModel
from openmrt.train.style import clip_loss


@pytest.fixture(autouse=True)
def one_thread():
    """Small ops on a shared 2-core machine: a second torch thread only waits for the busy core (10x slower)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_clip_loss_prefers_aligned_pairs_and_respects_shared_positives():
    torch.manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1)
    scale = torch.tensor(math.log(10.0))
    eye = torch.eye(6, dtype=torch.bool)
    aligned = clip_loss(a, a, eye, scale)
    shuffled = clip_loss(a, a[torch.randperm(6)], eye, scale)
    assert aligned < shuffled
    # Two crops of one example (a0, a1 near each other, each with its own text): with both pairs marked
    # positive, pulling the crops together lowers the loss; with one-hot targets it raises it (pushes
    # them apart). Exact duplicates give the same value either way, so they cannot test this.
    pos = eye.clone()
    pos[0, 1] = pos[1, 0] = True
    for seed in range(4):
        torch.manual_seed(seed)
        a = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1)
        a[1] = torch.nn.functional.normalize(a[0] + 0.5 * torch.randn(8), dim=0)
        merged = a.clone()
        merged[1] = torch.nn.functional.normalize(a[0] + a[1], dim=0)
        assert clip_loss(merged, a, pos, scale) < clip_loss(a, a, pos, scale)
        assert clip_loss(merged, a, eye, scale) > clip_loss(a, a, eye, scale)


def test_pmf_one_step_lands_on_the_conditioned_mode():
    """Two text conditions, each with its own audio-embedding mode: one-step samples must land near their mode."""
    torch.manual_seed(0)
    d = 8
    modes = torch.nn.functional.normalize(torch.randn(2, d), dim=-1)
    conds = torch.nn.functional.normalize(torch.randn(2, d), dim=-1)
    net = Mapper(MapperConfig(dim=d, width=64, layers=2))
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    for _ in range(250):
        k = torch.randint(0, 2, (64,))
        x = torch.nn.functional.normalize(modes[k] + 0.05 * torch.randn(64, d), dim=-1)
        loss, _ = pmf_loss(net, x, conds[k])
        opt.zero_grad()
        loss.backward()
        opt.step()
    k = torch.arange(2).repeat(32)
    out = net.sample(conds[k], torch.randn(64, d))
    sims = out @ modes.T
    assert (sims.argmax(1) == k).float().mean() == 1.0
    assert sims[torch.arange(64), k].mean() > 0.9


def _shards(root, seed):
    """Two 'styles' a small conv net can tell apart: low sine tones vs bright noise bursts."""
    rng = np.random.default_rng(seed)
    exs = []
    for i in range(6):
        t = np.arange(48000 * 12) / 48000
        if i % 2 == 0:
            x = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 200) * t)
            meta = {"style": "ambient", "caption": "slow ambient, string pads, no drums. A slow ambient piece."}
        else:
            x = 0.3 * rng.standard_normal(t.size) * (np.sin(2 * np.pi * 4 * t) > 0)
            meta = {"style": "techno", "caption": "fast techno, drum machine, 130 bpm. A fast techno piece."}
        audio = np.stack([x, x]).astype(np.float32)
        frames = audio.shape[1] // 1920
        exs.append(Example(audio, Labels(np.zeros((frames, 128), np.int8), np.zeros(frames, np.int8)), meta))
    root.mkdir()
    write_shard(root / "shard_00000.npz", exs)
    write_index(root, {"kind": "test"})
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return _shards(tmp_path_factory.mktemp("d") / "train", 0)


SMALL = ["--batch", "4", "--crop-seconds", "2", "--rvq-codes", "16", "--rvq-hop", "0.2", "--dim", "16",
         "--vocab", "40", "--log-every", "1", "--warmup", "2"]


def test_train_style_resumes_exactly_and_writes_a_model(data, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["train", "style", "--data", str(data), "--out", str(a), "--steps", "6", *SMALL]) == 0
    assert main(["train", "style", "--data", str(data), "--out", str(b), "--steps", "6", "--stop-after", "3",
                 *SMALL]) == 0
    assert not (b / "style.safetensors").exists()
    assert main(["train", "style", "--data", str(data), "--out", str(b), "--steps", "6", *SMALL]) == 0
    ma, mb = StyleModel.load(a / "style.safetensors"), StyleModel.load(b / "style.safetensors")
    for k, v in ma.audio_net.state_dict().items():
        assert torch.equal(v, mb.audio_net.state_dict()[k]), k
    toks = ma.tokenize(ma.embed_text("techno"))
    assert len(toks) == 12 and max(toks) < 16
    # the mapper on top, and the held-out figures
    m = tmp_path / "m"
    assert main(["train", "mapper", "--style", str(a / "style.safetensors"), "--data", str(data), "--out", str(m),
                 "--steps", "4", "--batch", "8", "--texts-per-example", "4", "--log-every", "1"]) == 0
    full = StyleModel.load(m / "style.safetensors")
    assert full.mapper is not None and full.use_mapper
    from openmrt.style.data import load_examples
    from openmrt.style.evaluate import evaluate

    res = evaluate(full, load_examples([data]))
    for k in ("style_top1_text", "style_top1_mapper", "caption_recall@5", "rvq_cos_mean", "decoded_p10_mapper"):
        assert 0.0 <= res[k] <= 1.0, k
    assert res["styles_present"] == 2


def test_train_mapper_rebuilds_pairs_made_from_other_inputs(data, tmp_path, capsys):
    from test_style import tiny_model

    from openmrt.train.mapper import load_pairs, pairs_source

    style = tiny_model().save(tmp_path / "style.safetensors")
    out = tmp_path / "m"
    cmd = ["train", "mapper", "--style", str(style), "--data", str(data), "--out", str(out), "--batch", "8",
           "--texts-per-example", "4", "--log-every", "1", "--width", "32", "--layers", "1"]
    assert main([*cmd, "--steps", "2"]) == 0
    pairs = out / "pairs.npz"
    first = pairs.read_bytes()
    assert "rebuilding" not in capsys.readouterr().out
    assert main([*cmd, "--steps", "3"]) == 0  # same inputs: the cached pairs are reused as they are
    assert "rebuilding" not in capsys.readouterr().out and pairs.read_bytes() == first

    source = pairs_source(style, [data], 4, 0)
    audio, owner, text = load_pairs(pairs, source)
    assert text.shape[:2] == (6, 4) and len(audio) == len(owner)
    other = _shards(tmp_path / "other", 1)
    tweaked = tiny_model()
    tweaked.info = {"note": "another file"}
    another_style = tweaked.save(tmp_path / "style2.safetensors")
    for changed, src in [("style_sha256", pairs_source(another_style, [data], 4, 0)),
                         ("data", pairs_source(style, [data, other], 4, 0)),
                         ("texts_per_example", pairs_source(style, [data], 5, 0)),
                         ("seed", pairs_source(style, [data], 4, 1))]:
        assert load_pairs(pairs, src) is None
        assert f"its {changed} differ" in capsys.readouterr().out
    assert pairs_source(style, [os.path.relpath(data)], 4, 0) == source  # a folder is known by its real path

    # through the command: another seed rebuilds (and says so); a pairs.npz from before sources were kept too
    assert main([*cmd, "--steps", "3", "--seed", "1"]) == 0
    said = capsys.readouterr().out
    assert "its seed differ from this run's" in said and "last.pt was trained on the previous pairs" in said
    assert pairs.read_bytes() != first and load_pairs(pairs, pairs_source(style, [data], 4, 1)) is not None
    np.savez(pairs, audio=audio, owner=owner, text=text)
    assert load_pairs(pairs, source) is None
    assert "does not record what it was built from" in capsys.readouterr().out
    pairs.write_bytes(first[: len(first) // 2])  # a truncated file (killed mid-write before writes were atomic)
    assert load_pairs(pairs, source) is None
    assert "cannot read it" in capsys.readouterr().out
