"""Style sources: prompt blending and the token bypass, RVQ, our style model's file round trip, the MusicCoCa glue
(with stand-in interpreters; the real files only when installed), `openmrt style embed`, the engine wiring."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf
import torch

from openmrt.cli import main
from openmrt.controls import Controls, blend_embeddings, blend_weights
from openmrt.errors import CheckpointError, ConfigError, ControlError
from openmrt.style import StyleSource
from openmrt.style.live import LivePromptStyle
from openmrt.style.model import StyleModel
from openmrt.style.nets import StyleConfig, fit_tokenizer
from openmrt.style.rvq import fit_rvq, rvq_decode, rvq_encode


@pytest.fixture(autouse=True)
def one_thread():
    """Small ops on a shared 2-core machine: a second torch thread only waits for the busy core (10x slower)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class FakeSource(StyleSource):
    """Deterministic 4-d embeddings per text; tokens = rounded embedding * 100 (so blends are visible)."""

    name, dim = "fake", 4
    TABLE = {"a": [1.0, 0.0, 0.0, 0.0], "b": [0.0, 1.0, 0.0, 0.0], "c": [0.0, 0.0, 1.0, 0.0]}

    def __init__(self):
        self.embedded: list[str] = []

    def embed_text(self, text):
        self.embedded.append(text)
        return np.array(self.TABLE[text], dtype=np.float32)

    def embed_audio(self, audio):
        return np.full(4, float(np.mean(audio)), dtype=np.float32)

    def tokenize(self, emb):
        return tuple(int(round(100 * x)) for x in emb) + (0,) * 8


# ---------------------------------------------------------------------------------------------------------------------
# Blending (live_engine_and_controls.md §3.6)


def test_weights_normalised_and_zero_left_out():
    np.testing.assert_allclose(blend_weights([1.0, 3.0]), [0.25, 0.75])
    np.testing.assert_allclose(blend_weights([2.0, 0.0, 2.0]), [0.5, 0.0, 0.5])
    np.testing.assert_allclose(blend_weights([0.0, 0.0]), [1.0, 0.0])  # none positive: the first slot


@pytest.mark.parametrize("bad", [-0.5, math.nan, math.inf])
def test_bad_weights_rejected(bad):
    with pytest.raises(ControlError, match="prompt 1 weight"):
        blend_weights([1.0, bad])
    with pytest.raises(ControlError, match="weight"):
        FakeSource().tokens_for([("a", 1.0), ("b", bad)])
    with pytest.raises(ControlError):
        Controls(prompts=(("a", bad),))


def test_one_prompt_blend_equals_the_prompt():
    e = np.random.default_rng(0).standard_normal(768).astype(np.float32)
    out = blend_embeddings([e], [0.3])
    assert out.dtype == np.float32 and np.array_equal(out, e)
    src = FakeSource()
    assert src.tokens_for([("b", 0.7)]) == src.tokenize(src.embed_text("b"))


def test_blend_then_tokenize_once_skipping_zero_slots():
    src = FakeSource()
    toks = src.tokens_for([("a", 1.0), ("b", 3.0), ("c", 0.0)])
    assert toks[:4] == (25, 75, 0, 0)
    assert src.embedded == ["a", "b"]  # the zero-weight slot is never embedded


def test_literal_tokens_bypass_and_cannot_be_blended():
    lit = "musiccoca:" + ",".join(str(i) for i in range(12))
    src = FakeSource()
    assert src.tokens_for([(lit, 1.0)]) == tuple(range(12))
    assert src.tokens_for([(lit, 1.0), ("a", 0.0)]) == tuple(range(12))
    assert src.embedded == []
    with pytest.raises(ControlError, match="can't be blended"):
        src.tokens_for([(lit, 1.0), ("a", 1.0)])
    with pytest.raises(ControlError, match="no prompts"):
        src.tokens_for([])


def test_audio_prompt_is_read_from_file(tmp_path):
    path = tmp_path / "ref.wav"
    sf.write(path, np.full((4800, 2), 0.25, dtype=np.float32), 48000)
    assert FakeSource().tokens_for([(str(path), 1.0)])[:4] == (25, 25, 25, 25)


def test_live_prompt_style_reencodes_off_the_loop():
    src = FakeSource()
    live = LivePromptStyle(src, (("a", 1.0),))
    c = Controls(prompts=(("a", 1.0),))
    assert live.tokens(c)[:4] == (100, 0, 0, 0)
    c2 = c.apply("prompt", (0, "b", 1.0))
    assert live.tokens(c2, wait=True)[:4] == (0, 100, 0, 0)
    bad = c2.apply("prompt", (0, "zzz", 1.0))  # unknown to the fake: the encode fails, the style holds
    assert live.tokens(bad, wait=True)[:4] == (0, 100, 0, 0) and live.errors == 1
    explicit = c.replace(style_tokens=tuple(range(12)))
    assert live.tokens(explicit) == tuple(range(12))
    live.close()


# ---------------------------------------------------------------------------------------------------------------------
# RVQ


def test_rvq_fits_and_each_level_helps():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((20, 8))[rng.integers(0, 20, 600)] + 0.1 * rng.standard_normal((600, 8)))
    books = fit_rvq(x, levels=4, codes=32, batch_size=256)
    assert books.shape == (4, 32, 8)
    codes = rvq_encode(x, books)
    assert codes.shape == (600, 4) and codes.max() < 32
    errs = [np.mean((x - rvq_decode(codes, books, lv)) ** 2) for lv in range(1, 5)]
    assert all(b < a for a, b in zip(errs, errs[1:], strict=False)), errs
    assert errs[-1] < 0.01 * np.mean(x**2)
    with pytest.raises(ConfigError, match="width"):
        rvq_encode(np.zeros(7), books)
    with pytest.raises(ConfigError, match="N >= 32"):
        fit_rvq(x[:10], levels=2, codes=32)


# ---------------------------------------------------------------------------------------------------------------------
# Our style model: file round trip, audio clips, tokens


TEXTS = ["disco funk, slap bass", "baroque, oboe, viola", "ambient, string pads", "rock, distorted guitar"]


def tiny_model(mapper: bool = False) -> StyleModel:
    torch.manual_seed(0)
    cfg = StyleConfig(dim=16, audio_channels=16, audio_blocks=2, vocab=48, text_width=16, text_layers=1,
                      text_heads=2, rvq_codes=8)
    from openmrt.style.mapper import Mapper, MapperConfig

    m = StyleModel(cfg, fit_tokenizer(TEXTS * 5, cfg.vocab, cfg.max_text_len),
                   np.random.default_rng(0).standard_normal((12, 8, 16)).astype(np.float32) * 0.1,
                   Mapper(MapperConfig(dim=16, width=32, layers=1)) if mapper else None)
    return m


def test_style_model_file_round_trip(tmp_path):
    m = tiny_model(mapper=True)
    m.info = {"note": "test"}
    path = m.save(tmp_path / "style.safetensors")
    m2 = StyleModel.load(path)
    assert m2.info == {"note": "test"} and m2.use_mapper and m2.dim == 16
    for txt in ("disco funk", "ROCK"):  # float16 on disk: close to the in-memory model, exact across loads
        np.testing.assert_allclose(m.embed_text(txt), m2.embed_text(txt), atol=2e-2)
        np.testing.assert_array_equal(StyleModel.load(path).embed_text(txt), m2.embed_text(txt))
    e = m2.embed_text("disco funk")
    assert e.shape == (16,) and abs(np.linalg.norm(e) - 1) < 1e-5
    assert not np.allclose(m2.embed_text("disco funk"), StyleModel.load(path, seed=1).embed_text("disco funk"))
    plain = StyleModel.load(path, use_mapper=False)
    np.testing.assert_allclose(plain.embed_text("rock"), m2.text_embeddings(["rock"])[0], atol=1e-6)
    toks = m2.tokenize(e)
    assert len(toks) == 12 and all(0 <= t < 8 for t in toks)
    with pytest.raises(ConfigError, match="16-d"):
        m2.tokenize(np.zeros(15))


def test_style_model_audio_clips():
    m = tiny_model()
    rng = np.random.default_rng(0)
    short = 0.1 * rng.standard_normal((48000 * 3, 2)).astype(np.float32)
    long = np.concatenate([short] * 9)  # 27 s: three 10 s clips, the last padded
    for a in (short, long):
        e = m.embed_audio(a)
        assert e.shape == (16,) and abs(np.linalg.norm(e) - 1) < 1e-5
    with pytest.raises(ConfigError, match="empty"):
        m.embed_audio(np.zeros((0, 2), np.float32))


def test_missing_style_file_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="nope.safetensors"):
        StyleModel.load(tmp_path / "nope.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"not a file")
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        StyleModel.load(tmp_path / "bad.safetensors")


def test_style_embed_cli(tmp_path, capsys):
    path = tiny_model().save(tmp_path / "s.safetensors")
    assert main(["style", "embed", "--style", str(path), "--text", "disco funk"]) == 0
    toks = [int(x) for x in capsys.readouterr().out.strip().split(",")]
    assert len(toks) == 12 and all(0 <= t < 8 for t in toks)
    wav = tmp_path / "a.wav"
    sf.write(wav, 0.1 * np.random.default_rng(1).standard_normal((24000, 2)), 48000)
    assert main(["style", "embed", "--style", str(path), "--audio", str(wav)]) == 0
    assert len(capsys.readouterr().out.strip().split(",")) == 12
    assert main(["style", "embed", "--style", str(path)]) == 1  # neither --text nor --audio
    # no --style: the shipped demo style model, and it says so; the text tokens match the library call's
    assert main(["style", "embed", "--text", "disco funk", "--device", "cpu"]) == 0
    out = capsys.readouterr()
    assert "style model demo" in out.err
    assert out.out.strip() == ",".join(map(str, StyleModel.load().tokens_for([("disco funk", 1.0)])))


def test_generate_embeds_prompts_through_the_style_source(tmp_path, monkeypatch):
    path = tiny_model().save(tmp_path / "s.safetensors")
    seen = []
    orig = StyleModel.tokens_for

    def spy(self, prompts):
        seen.append(prompts)
        return orig(self, prompts)

    monkeypatch.setattr(StyleModel, "tokens_for", spy)
    out = tmp_path / "g.wav"
    assert main(["generate", "--model", "random:tiny", "--style", str(path), "--prompt", "disco funk:2",
                 "--prompt", "rock:1", "--seconds", "0.2", "-o", str(out)]) == 0
    assert seen == [(("disco funk", 2.0), ("rock", 1.0))] and out.stat().st_size > 0


def test_shipped_demo_model_tells_styles_apart():
    from openmrt.style.model import DEMO_PATH

    if not DEMO_PATH.is_file():
        pytest.skip("demo style model not shipped in this checkout")
    m = StyleModel.load(use_mapper=False)
    e = m.text_embeddings(["disco funk", "disco funk, slap bass, four-on-the-floor drums", "baroque, oboe, viola"])
    assert e[0] @ e[1] > e[0] @ e[2]
    assert len(m.tokenize(m.embed_text("disco funk"))) == 12
    assert m.mapper is not None
