"""``openmrt generate`` with a random-weight tiny bundle: exact length, 48 kHz stereo, seeded."""

from __future__ import annotations

import numpy as np
import pretty_midi
import pytest
import soundfile as sf

from openmrt import tokens as tk
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


@pytest.fixture
def fed(monkeypatch):
    """The raw conditioning of every LM step the command runs, in order (what the model was asked for)."""
    from openmrt.engine.frames import FrameStream

    conds, streams = [], []
    step, init = FrameStream.step, FrameStream.__init__

    def recording_step(self, cond_raw, forced=None):
        conds.append(np.array(cond_raw))
        return step(self, cond_raw, forced)

    def recording_init(self, *a, **k):
        init(self, *a, **k)
        streams.append(self)

    monkeypatch.setattr(FrameStream, "step", recording_step)
    monkeypatch.setattr(FrameStream, "__init__", recording_init)
    return {"conds": conds, "streams": streams}


def test_notes_from_a_midi_file_and_plot(tmp_path, fed):
    """The notes fed to the model match the MIDI file frame by frame (Auto-Strum off: onset 2 on the frame nearest
    the note-on, then 1 until the frame nearest the note-off; with width 0 every other pitch is masked)."""
    pm = pretty_midi.PrettyMIDI()
    piano = pretty_midi.Instrument(program=0)
    notes = [(60, 0.0, 1.0), (64, 0.2, 0.6), (67, 0.41, 1.25)]  # (pitch, start s, end s)
    for pitch, start, end in notes:
        piano.notes.append(pretty_midi.Note(velocity=100, pitch=pitch, start=start, end=end))
    pm.instruments.append(piano)
    pm.write(str(tmp_path / "chord.mid"))
    audio = generate(tmp_path, "n.flac", "--notes", str(tmp_path / "chord.mid"), "--plot", str(tmp_path / "n.png"),
                     "--no-auto-strum", "--drums", "off")
    frames = -(-round(1.37 * 48000) // 1920)
    assert audio.shape == (round(1.37 * 48000), 2)
    asked = np.stack(fed["conds"][:frames])[:, tk.NOTES]
    expected = np.full((frames, 128), tk.MASKED)
    for pitch, start, end in notes:  # 25 frames/s; an event drives the nearest frame start
        on, off = int(np.floor(start * 25 + 0.5)), int(np.floor(end * 25 + 0.5))
        expected[on, pitch] = tk.NOTE_ONSET
        expected[on + 1 : off, pitch] = tk.NOTE_HELD
    assert np.array_equal(asked, expected)
    assert (tmp_path / "n.png").stat().st_size > 10_000


def test_prompt_without_a_style_model_uses_the_demo_style(tmp_path, capsys, fed):
    """random:tiny has no style model: the prompt is embedded by the shipped demo style model, and it says so."""
    from openmrt.style import load_style

    out = tmp_path / "p.wav"
    assert main(["generate", "--model", "random:tiny", "--seconds", "0.2", "--prompt", "disco funk", "-o",
                 str(out)]) == 0
    assert "demo style model" in capsys.readouterr().err
    want = load_style("demo").tokens_for([("disco funk", 1.0)])
    assert all(np.array_equal(c[tk.STYLE], want) for c in fed["conds"])


@pytest.mark.parametrize("flag", ["-o", "--out", "--output"])
def test_output_flag_spellings_and_batched_cfg(tmp_path, fed, flag):
    out = tmp_path / "g.wav"
    assert main(["generate", "--model", "random:tiny", "--seconds", "0.1", "--style-tokens", STYLE,
                 "--guidance", "style=3,notes=1.5", flag, str(out)]) == 0
    assert out.is_file()
    lm = fed["streams"][0].lm
    assert lm.guidance_keys == ("musiccoca", "notes") and lm.guidance == [3.0, 1.5]  # extra LM rows, scales


def test_without_an_output_name_it_writes_a_fresh_file_here(tmp_path, monkeypatch, capsys):
    """No ``-o``: generated.wav in the current folder, then generated-2.wav: never over an earlier take."""
    monkeypatch.chdir(tmp_path)
    for name in ("generated.wav", "generated-2.wav"):
        assert main(["generate", "--model", "random:tiny", "--seconds", "0.1", "--style-tokens", STYLE]) == 0
        assert (tmp_path / name).is_file() and f"wrote {name}" in capsys.readouterr().err
    first = sf.read(tmp_path / "generated.wav")[0]
    assert len(first) == round(0.1 * 48000)


def test_sampling_defaults_come_from_one_table():
    from openmrt.cli import build_parser
    from openmrt.controls import DEFAULTS, Controls

    for cmd in (["generate"], ["play"]):
        args = build_parser().parse_args(cmd)
        got = {k: getattr(args, {"unmask_width": "width"}.get(k, k)) for k in DEFAULTS}
        assert got == DEFAULTS
    assert {k: getattr(Controls(), k) for k in DEFAULTS} == DEFAULTS


@pytest.mark.parametrize(("args", "message"), [
    (["--temperature", "nan"], "temperature"),
    (["--top-k", "0"], "top_k"),
    (["--cfg-notes", "9"], "cfg_notes"),
    (["--device", "3"], "--audio-device"),
    (["--guidance", "loud=3"], "--guidance"),
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


def test_the_readme_command_needs_no_other_flags(tmp_path, capsys):
    """`openmrt generate --prompt "solo piano ballad" --seconds 5 -o x.wav` on a fresh install (1 s here): the
    default model, the shipped style model for the prompt, each choice said."""
    out = tmp_path / "x.wav"
    assert main(["generate", "--prompt", "solo piano ballad", "--seconds", "1", "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "openmrt: model " in err and "on cpu" in err  # what auto picked, where, why
    audio, sr = sf.read(out, dtype="float32")
    assert sr == 48000 and audio.shape == (48000, 2) and np.abs(audio).max() < 1.0


def test_play_flags_keep_compute_and_sound_card_apart(capsys):
    from openmrt.cli import build_parser

    for alias in ("--audio-device", "--output-device", "--sound-device"):
        args = build_parser().parse_args(["play", alias, "3"])
        assert args.audio_device == "3" and args.device == "auto"
    assert main(["play", "--device", "system"]) == 1  # a sound card's name where the compute device goes
    assert "--audio-device 'system'" in capsys.readouterr().err


def test_official_bundles_take_musiccoca_for_prompts(monkeypatch, tmp_path, capsys):
    """Demo-style tokens mean nothing to an official LM: without MusicCoCa a prompt is an error naming the
    openmrt command that fetches it, and play starts with prompts off (saying why)."""
    from types import SimpleNamespace

    from openmrt.engine.cli import choose_style
    from openmrt.errors import CheckpointError

    monkeypatch.delenv("OPENMRT_HOME", raising=False)
    monkeypatch.setenv("MAGENTA_HOME", str(tmp_path))  # nothing installed
    lm = SimpleNamespace(cfg=SimpleNamespace(name="mrt2_small"))
    official = SimpleNamespace(name="mrt2_small", style=None, lm=lm)
    with pytest.raises(CheckpointError, match="openmrt models download mrt2_small"):
        choose_style(official, None, needed=True)
    assert choose_style(official, None, needed=False) is None
    assert "prompts are off" in capsys.readouterr().err
