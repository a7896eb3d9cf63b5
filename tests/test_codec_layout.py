"""Codec building blocks: official key layout, weight conversion errors, config, STFT and RVQ."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from openmrt.codec import SpectroStream, load_official, load_official_state
from openmrt.codec.convert import convert_official, official_layout, to_official
from openmrt.codec.quantizer import ResidualVQ
from openmrt.codec.stft import istft, stft
from openmrt.config import CodecConfig, codec_config
from openmrt.errors import CheckpointError, ConfigError, DataError


def _meta_codec(name: str = "spectrostream") -> SpectroStream:
    with torch.device("meta"):
        return SpectroStream(codec_config(name))


def _count(model: torch.nn.Module, prefix: str) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if n.startswith(prefix))


def test_lm_checkpoint_keys_map_to_parameters_of_the_right_shape(golden_dir):
    layout = official_layout(_meta_codec())
    lines = (golden_dir / "param_keys_soundstream_in_lm_checkpoint.txt").read_text().splitlines()
    rows = [line.split("\t") for line in lines if line.strip()]
    assert len(rows) == 49
    for key, shape, dtype in rows:
        assert key in layout, key
        assert layout[key].shape == tuple(json.loads(shape)), key
        assert dtype == "float32"
    soundstream = {k for k in layout if k.startswith("params/soundstream/")}
    assert soundstream == {r[0] for r in rows}  # nothing of ours is left without an official key


def test_encoder_keys_and_parameter_counts(golden_dir):
    model = _meta_codec()
    layout = official_layout(model)
    rows = [line.split("\t") for line in (golden_dir / "seeded" / "codec_param_keys.txt").read_text().splitlines()]
    official = {r[1]: tuple(json.loads(r[2])) for r in rows if not r[0].startswith("#")}
    assert {k: s.shape for k, s in layout.items()} == official
    assert _count(model, "encoder.") == 9_251_904
    assert _count(model, "decoder.") == 35_684_546
    assert _count(model, "quantizer.") == 16_777_216


def test_narrow_codec_shapes():
    model = SpectroStream(codec_config("narrow"))
    assert model.config.width == 0.25 and model.quantizer.num_quantizers == 12
    assert model.decoder.base == 16 and model.encoder.base == 8
    # About 1/16 of the conv weights; the token interface (256-d latents, 1024 codes) is unchanged.
    assert _count(model, "decoder.") < 35_684_546 / 10
    assert model.quantizer.embedding.shape == (12, 1024, 256)


def test_conversion_round_trips_every_layout():
    torch.manual_seed(0)
    model = SpectroStream(codec_config("narrow"))
    flat = to_official(model)
    assert flat["params/soundstream/decoder/decoder_0/conv2dtranspose_4x3/conv/kernel"].shape == (4, 3, 128, 256)
    other = SpectroStream(codec_config("narrow"))
    load_official_state(other, {k: v.numpy() for k, v in flat.items()})
    for (name, a), b in zip(model.state_dict().items(), other.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_transposed_kernel_is_flipped():
    # A one-hot official kernel at tap (0, 0) lands at torch tap (kT-1, kF-1): JAX correlates.
    model = SpectroStream(codec_config("narrow"))
    flat = to_official(model, ("decoder",))
    key = "params/soundstream/decoder/decoder_2/conv2dtranspose_3x4/conv/kernel"
    k = torch.zeros_like(flat[key])
    k[0, 0, 1, 2] = 1.0
    flat[key] = k
    sd = convert_official(model, flat, ("decoder",))
    w = sd["decoder.decoder_2.conv2dtranspose_3x4.weight"]  # [Cin, Cout, kT, kF]
    assert w[1, 2, 2, 3] == 1.0 and w.sum() == 1.0


def test_conversion_errors_name_the_keys():
    model = SpectroStream(codec_config("narrow"))
    flat = to_official(model)
    missing = dict(flat)
    del missing["params/encoder/bottleneck/conv2d_3x3/conv/bias"]
    with pytest.raises(CheckpointError, match="missing 1 keys: params/encoder/bottleneck/conv2d_3x3/conv/bias"):
        load_official_state(model, missing)
    extra = dict(flat, **{"params/soundstream/decoder/decoder_9/conv/kernel": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="unexpected 1 keys: params/soundstream/decoder/decoder_9"):
        load_official_state(model, extra)
    full = _meta_codec()
    shape_msg = r"47 mis-shaped keys: .*decoder_0/conv2d_3x3/conv/bias: file \(256,\), model expects \(1024,\)"
    with pytest.raises(CheckpointError, match=shape_msg):
        convert_official(full, flat, ("decoder",))
    # Keys outside the codec (the LM in the same checkpoint) are ignored; decoder-only loads skip the encoder.
    flat["params/depthformer/x"] = torch.zeros(1)
    load_official_state(model, {k: v for k, v in flat.items() if not k.startswith("params/encoder/")}, ("decoder",))


def test_file_loader(tmp_path):
    torch.manual_seed(1)
    src = SpectroStream(codec_config("narrow"))
    flat = to_official(src)
    lm = {k: v for k, v in flat.items() if k.startswith("params/soundstream/")}
    lm["params/depthformer/decoder/some/kernel"] = torch.ones(3)
    save_file(lm, str(tmp_path / "mrt2_tiny.safetensors"))
    save_file({k: v for k, v in flat.items() if k.startswith("params/encoder/")}, str(tmp_path / "encoder.safetensors"))
    dst = SpectroStream(codec_config("narrow"))
    load_official(dst, tmp_path / "mrt2_tiny.safetensors", tmp_path / "encoder.safetensors")
    for (name, a), b in zip(src.state_dict().items(), dst.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    with pytest.raises(CheckpointError, match="not found"):
        load_official(dst, tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match="no params/encoder/"):
        load_official(dst, encoder_file=tmp_path / "mrt2_tiny.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_official(dst, tmp_path / "bad.safetensors")


def test_codec_config_json_and_presets():
    cfg = codec_config("narrow")
    assert CodecConfig.from_json(cfg.to_json()) == cfg
    assert codec_config("spectrostream") == CodecConfig()
    with pytest.raises(ConfigError, match="narrow"):
        codec_config("wide")
    with pytest.raises(ConfigError, match="unknown codec config fields"):
        CodecConfig.from_json('{"widht": 2}')


def test_stft_shapes_and_perfect_reconstruction():
    # Band-limited test signal: the dropped Nyquist bin holds (almost) nothing of it.
    gen = torch.Generator().manual_seed(0)
    t = torch.arange(4800, dtype=torch.float64)[:, None] / 48000
    f = torch.randint(20, 12000, (40, 1, 2), generator=gen)
    phase = 6.28 * torch.rand(40, 1, 2, generator=gen, dtype=torch.float64)
    x = torch.sin(2 * torch.pi * f * t + phase).sum(0)[None] / 10  # [1, 4800, 2]
    spec = stft(x)
    assert spec.shape == (1, 4, 10, 480)
    y = istft(spec)
    assert y.shape == x.shape
    # Causal overlap-add: every sample after the first half frame sees both of its frames (the
    # last frame runs into the zero padding, where the cut leaks into the dropped Nyquist bin).
    assert (y[:, 480:-480] - x[:, 480:-480]).abs().max() < 1e-6
    assert (y[:, :480] - x[:, :480]).abs().max() > 1e-3  # the first half frame lacks frame -1
    # Mono input is dual mono; DC of a constant signal lands in bin 0, real only.
    mono = stft(torch.ones(1, 1920))
    assert torch.equal(mono[:, :2], mono[:, 2:])
    assert mono[0, 0, 1, 0] == pytest.approx(480.0) and mono[0, 1, 1, 0] == 0.0


def test_rvq_prefix_levels_and_ties():
    torch.manual_seed(0)
    rvq = ResidualVQ(8, 16, 4)
    x = torch.randn(5, 3, 4)
    codes = rvq.encode(x)
    assert codes.shape == (5, 3, 8)
    assert torch.equal(rvq.encode(x, 3), codes[..., :3])  # greedy: a prefix of the levels
    assert rvq.decode(codes[..., :0]).abs().max() == 0
    with pytest.raises(ValueError, match="9 RVQ levels"):
        rvq.encode(x, 9)
    with pytest.raises(DataError, match="0..15"):  # checked where codes enter, not in decode (no host sync)
        rvq.check_codes(torch.full((1, 2), 16))
    with torch.no_grad():
        rvq.embedding[0] = 0.0  # every entry ties: the lowest index wins
    assert (rvq.encode(x, 1) == 0).all()
    assert np.isfinite(rvq.decode(codes).detach().numpy()).all()
