"""``openmrt generate`` with a random-weight tiny bundle: exact length, 48 kHz stereo, seeded."""

from __future__ import annotations

import numpy as np
import pretty_midi
import pytest
import soundfile as sf

from openmrt.cli import main

STYLE = "660,597,668,315,857,217,930,175,655,343,534,137"


def generate(tmp_path, name: str, *extra: str) -> np.ndarray:
    out = tmp_path / name
    assert main(["generate", "--model", "random:tiny", "--seconds", "1.37", "--style-tokens", STYLE, "-o", str(out),
                 *extra]) == 0
    audio, sr = sf.read(out, dtype="float32", always_2d=True)
    assert sr == 48000
    return audio


def test_exact_length_and_bit_exact_with_seed(tmp_path):
    a = generate(tmp_path, "a.wav", "--seed", "3")
    b = generate(tmp_path, "b.wav", "--seed", "3")
    c = generate(tmp_path, "c.wav", "--seed", "4")
    assert a.shape == (round(1.37 * 48000), 2)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_notes_from_a_midi_file_and_plot(tmp_path):
    pm = pretty_midi.PrettyMIDI()
    piano = pretty_midi.Instrument(program=0)
    for i, pitch in enumerate((60, 64, 67)):
        piano.notes.append(pretty_midi.Note(velocity=100, pitch=pitch, start=0.2 * i, end=1.0))
    pm.instruments.append(piano)
    pm.write(str(tmp_path / "chord.mid"))
    audio = generate(tmp_path, "n.flac", "--notes", str(tmp_path / "chord.mid"), "--plot", str(tmp_path / "n.png"),
                     "--no-auto-strum", "--drums", "off")
    assert audio.shape == (round(1.37 * 48000), 2)
    assert (tmp_path / "n.png").stat().st_size > 10_000


@pytest.mark.parametrize(("args", "message"), [
    (["--temperature", "nan"], "temperature"),
    (["--top-k", "0"], "top_k"),
    (["--cfg-notes", "9"], "cfg_notes"),
    (["--prompt", "disco funk"], "no style model"),
    (["--seconds", "0"], "--seconds"),
    (["--notes", "missing.mid"], "missing.mid"),
])
def test_bad_arguments_say_what_is_wrong(tmp_path, capsys, args, message):
    assert main(["generate", "--model", "random:tiny", "-o", str(tmp_path / "x.wav"), *args]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.wav").exists()


def test_a_bundle_folder_with_a_style_model_embeds_prompts(tmp_path):
    """Our bundle folder (lm + codec + style): ``--prompt`` works without ``--style``; different prompts differ."""
    import shutil

    from openmrt.codec.checkpoint import save_codec
    from openmrt.engine.bundle import random_bundle
    from openmrt.hub import DEMO_DIR
    from openmrt.lm.checkpoint import save_lm

    b = random_bundle("tiny", "demo", seed=0)
    folder = tmp_path / "bundle"
    folder.mkdir()
    save_lm(b.lm, folder / "lm.safetensors")
    save_codec(b.codec, folder / "codec.safetensors")
    shutil.copy(DEMO_DIR / "style.safetensors", folder / "style.safetensors")
    outs = []
    for prompt in ("disco funk", "ambient pads"):
        out = tmp_path / f"{prompt}.wav"
        assert main(["generate", "--model", str(folder), "--seconds", "0.5", "--prompt", prompt, "--seed", "1",
                     "-o", str(out)]) == 0
        outs.append(sf.read(out, dtype="float32")[0])
    assert outs[0].shape == (24000, 2) and not np.array_equal(outs[0], outs[1])


def test_python_dash_m_openmrt_is_the_command():
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "openmrt", "models", "--help"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "usage: openmrt models" in r.stdout
