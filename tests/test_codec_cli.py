"""Our codec checkpoints and the ``openmrt codec encode|decode`` commands, on a random narrow codec."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from openmrt.audio import read_audio, write_audio
from openmrt.cli import main
from openmrt.codec import SpectroStream
from openmrt.codec.checkpoint import load_codec, save_codec
from openmrt.config import codec_config
from openmrt.errors import CheckpointError


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = SpectroStream(codec_config("narrow"))
    return model, save_codec(model, tmp_path_factory.mktemp("ckpt") / "narrow.safetensors")


def test_checkpoint_round_trip(ckpt, tmp_path):
    model, path = ckpt
    back = load_codec(path)
    assert back.config == model.config
    for (name, a), b in zip(model.state_dict().items(), back.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(CheckpointError, match="load_official"):
        load_codec(tmp_path / "plain.safetensors")


def test_cli_encode_decode(ckpt, tmp_path, capsys):
    _, path = ckpt
    t = np.arange(48000 * 3 // 4) / 48000
    write_audio(tmp_path / "in.wav", np.stack([np.sin(2 * np.pi * 220 * t)] * 2, 1) * 0.3)
    assert main(["codec", "encode", str(tmp_path / "in.wav"), "--checkpoint", str(path), "--levels", "4"]) == 0
    codes = np.load(tmp_path / "in.codes.npy")
    assert codes.shape == (19, 4) and codes.dtype == np.int32  # ceil(36000 / 1920) frames
    assert main(["codec", "decode", str(tmp_path / "in.codes.npy"), "--checkpoint", str(path), "--official-gain"]) == 0
    out = read_audio(tmp_path / "in.decoded.wav")
    assert out.shape == (18 * 1920, 2) and np.abs(out).max() <= 1.0  # K frames decode to K - 1
    # Official weights are required without --checkpoint; the error says which flags.
    assert main(["codec", "decode", str(tmp_path / "in.codes.npy")]) == 1
    assert "--lm-checkpoint" in capsys.readouterr().err
