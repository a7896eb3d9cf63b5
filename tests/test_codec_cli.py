"""Codec files, the one codec resolver (``load_codec``) and the ``openmrt codec encode|decode`` commands."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from openmrt.audio import read_audio, write_audio
from openmrt.cli import main
from openmrt.codec import SpectroStream
from openmrt.codec.checkpoint import DEMO_PATH, load_codec, load_codec_file, save_codec
from openmrt.config import codec_config
from openmrt.errors import CheckpointError
from openmrt.frame import FRAME_SAMPLES


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = SpectroStream(codec_config("narrow"))
    return model, save_codec(model, tmp_path_factory.mktemp("ckpt") / "narrow.safetensors")


def _same(a: SpectroStream, b: SpectroStream) -> None:
    assert a.config == b.config
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name


def test_checkpoint_round_trip_and_refusals(ckpt, tmp_path):
    model, path = ckpt
    _same(model, load_codec(path))
    save_codec(model, tmp_path / "bundle" / "codec.safetensors")
    _same(model, load_codec(str(tmp_path / "bundle")))  # a folder of ours: its codec.safetensors
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(CheckpointError, match="not an MRT2 checkpoint"):
        load_codec(tmp_path / "plain.safetensors")  # neither ours nor official
    with pytest.raises(CheckpointError, match="no 'config' metadata"):
        load_codec_file(tmp_path / "plain.safetensors")
    (tmp_path / "cut.safetensors").write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated"):
        load_codec(tmp_path / "cut.safetensors")
    with pytest.raises(CheckpointError, match="no codec 'nowhere'"):
        load_codec("nowhere")
    from openmrt.weights import save_tensors

    save_tensors(tmp_path / "lm.safetensors", {"x": torch.zeros(1)}, kind="openmrt-lm", config="{}")
    with pytest.raises(CheckpointError, match="openmrt-lm file, not a codec"):
        load_codec(tmp_path / "lm.safetensors")


def test_files_from_before_the_one_config_key_still_load(tmp_path):
    """Files written before the one config key kept it under "codec_config", with fields nothing reads any more
    (the first demo codec shipped so): they load; an unknown field (not a retired one) is still refused."""
    from safetensors.torch import save_file

    cfg = codec_config("demo")
    old = json.loads(cfg.to_json()) | {"hop": FRAME_SAMPLES, "sample_rate": 48000, "channels": 2}
    torch.manual_seed(0)
    model = SpectroStream(cfg)
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata={"codec_config": json.dumps(old)})
    _same(load_codec(tmp_path / "old.safetensors"), model)
    bad = json.dumps(old | {"colour": "red"})
    save_file(tensors, str(tmp_path / "new.safetensors"), metadata={"codec_config": bad})
    with pytest.raises(Exception, match="unknown codec config fields \\['colour'\\]"):
        load_codec(tmp_path / "new.safetensors")


def test_the_shipped_demo_codec_is_the_codec_v2():
    from openmrt.codec.v2 import CodecV2

    demo = load_codec("demo")
    assert isinstance(demo, CodecV2) and DEMO_PATH.stat().st_size < 16_000_000
    codes = torch.randint(0, 1024, (1, 6, 12))
    assert demo.decode(codes).shape == (1, 5 * FRAME_SAMPLES, 2)


def test_official_bundle_folder_resolves_to_checkpoint_and_encoder(tmp_path, capsys):
    """An official-layout folder: the decoder + codebook from checkpoints/*.safetensors, the encoder from
    resources/spectrostream/encoder.safetensors (random full-size weights, written in the official layout)."""
    from safetensors.torch import save_file

    from openmrt.codec.convert import to_official

    torch.manual_seed(1)
    model = SpectroStream()
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "resources/spectrostream").mkdir(parents=True)
    ckpt = tmp_path / "checkpoints/mrt2_small.safetensors"
    save_file(to_official(model, ("decoder", "quantizer")), str(ckpt))
    save_file(to_official(model, ("encoder",)), str(tmp_path / "resources/spectrostream/encoder.safetensors"))
    _same(model, load_codec(tmp_path, need_encoder=True))
    # the checkpoint alone decodes; encoding needs the encoder, and says where to put it
    alone = tmp_path / "alone.safetensors"
    alone.write_bytes(ckpt.read_bytes())
    dec = load_codec(alone)
    assert torch.equal(dec.quantizer.embedding, model.quantizer.embedding)
    assert "only decoding" in capsys.readouterr().err
    with pytest.raises(CheckpointError, match="--encoder"):
        load_codec(alone, need_encoder=True)


def test_cli_encode_decode(ckpt, tmp_path):
    _, path = ckpt
    t = np.arange(48000 * 3 // 4) / 48000
    write_audio(tmp_path / "in.wav", np.stack([np.sin(2 * np.pi * 220 * t)] * 2, 1) * 0.3)
    assert main(["codec", "encode", str(tmp_path / "in.wav"), "--codec", str(path), "--levels", "4"]) == 0
    codes = np.load(tmp_path / "in.codes.npy")
    assert codes.shape == (19, 4) and codes.dtype == np.int32  # ceil(36000 / 1920) frames
    assert main(["codec", "decode", str(tmp_path / "in.codes.npy"), "--codec", str(path), "--official-gain"]) == 0
    out = read_audio(tmp_path / "in.decoded.wav")
    assert out.shape == (18 * FRAME_SAMPLES, 2) and np.abs(out).max() <= 1.0  # K frames decode to K - 1
    np.save(tmp_path / "bad.npy", codes + 1024)
    assert main(["codec", "decode", str(tmp_path / "bad.npy"), "--codec", str(path)]) == 1


def test_cli_defaults_to_the_shipped_demo_codec(tmp_path, capsys):
    """The acceptance commands: ``codec encode x.wav -o c.npy`` and ``codec decode c.npy -o y.wav``, no other flags."""
    t = np.arange(48000 // 2) / 48000
    write_audio(tmp_path / "x.wav", np.stack([np.sin(2 * np.pi * 330 * t)] * 2, 1) * 0.3)
    assert main(["codec", "encode", str(tmp_path / "x.wav"), "-o", str(tmp_path / "c.npy")]) == 0
    assert "codec demo" in capsys.readouterr().err  # says what it picked
    codes = np.load(tmp_path / "c.npy")
    assert codes.shape == (13, 12) and codes.min() >= 0 and codes.max() < 1024
    assert main(["codec", "decode", str(tmp_path / "c.npy"), "-o", str(tmp_path / "y.wav")]) == 0
    y = read_audio(tmp_path / "y.wav")
    assert y.shape == (12 * FRAME_SAMPLES, 2) and 0 < np.abs(y).max()
