"""``openmrt data ingest`` on a folder with good and bad files: MIDI is rendered with exact labels,
audio is transcribed by basic-pitch (the one test that runs it: ~25 s of numba JIT the first
time), and empty, corrupt and malformed files are skipped, named and counted."""

from __future__ import annotations

import numpy as np
import pretty_midi
import pytest
import soundfile as sf
from needs import FLUID_R3, need_soundfont

from openmrt.cli import main
from openmrt.data.shards import load_shard, read_index


def _song() -> pretty_midi.PrettyMIDI:
    pm = pretty_midi.PrettyMIDI(initial_tempo=100)
    piano = pretty_midi.Instrument(0)
    for k, pitch in enumerate([60, 64, 67, 72, 67, 64]):
        piano.notes.append(pretty_midi.Note(96, pitch, 0.3 + 0.5 * k, 0.75 + 0.5 * k))
    kit = pretty_midi.Instrument(0, is_drum=True)
    kit.notes += [pretty_midi.Note(100, 36 if k % 2 == 0 else 38, 0.3 + 0.25 * k, 0.4 + 0.25 * k) for k in range(12)]
    pm.instruments += [piano, kit]
    return pm


@pytest.mark.slow
def test_ingest_skips_bad_files_and_labels_good_ones(tmp_path, monkeypatch, capsys):
    need_soundfont()  # skip locally, fail in CI
    from openmrt.data import pipeline
    from openmrt.data.render import Renderer

    monkeypatch.setattr(pipeline, "available_soundfonts", lambda: [str(FLUID_R3)])
    monkeypatch.setattr(pipeline, "choose_soundfont", lambda seed, fonts=None: str(FLUID_R3))
    src = tmp_path / "music"
    (src / "sub").mkdir(parents=True)
    pm = _song()
    pm.write(str(src / "song.mid"))
    mix, _ = Renderer().render(pm, 48000 * 4, str(FLUID_R3))
    sf.write(src / "sub" / "song.wav", mix.T[::2] * 0.9, 24000)  # another rate: ingest resamples
    (src / "empty.wav").write_bytes(b"")
    (src / "corrupt.flac").write_bytes(np.random.default_rng(0).bytes(5000))
    (src / "bad.mid").write_bytes(b"MThd\x00\x00\x00\x06garbage")
    (src / "notes.txt").write_text("not music: ignored, not counted")
    good = (src / "song.mid").read_bytes()
    (src / "truncated.mid").write_bytes(good[: len(good) // 2])

    out = tmp_path / "shards"
    assert main(["data", "ingest", str(src), "--out", str(out), "--files-per-shard", "3"]) == 0
    captured = capsys.readouterr()
    assert "summary: 2 file(s) ingested, 4 skipped" in captured.out
    for name in ("empty.wav", "corrupt.flac", "bad.mid", "truncated.mid"):
        assert f"skipped {name}:" in captured.err
    index = read_index(out)
    assert index["examples"] == 2 and len(index["shards"]) == 2

    examples = [load_shard(out / s["file"]).example(i) for s in index["shards"] for i in range(s["examples"])]
    by_file = {e["meta"]["file"]: e for e in examples}
    midi, audio = by_file["song.mid"], by_file["sub/song.wav"]
    assert midi["meta"]["source"] == "midi" and midi["notes"][7, 60] == 2 and midi["notes"][8, 60] == 1
    assert midi["midi"] == good and audio["midi"] == b""  # the source file is kept with its example
    assert audio["meta"]["source"] == "audio" and audio["audio"].shape == (2, 100 * 1920)
    # basic-pitch finds the arpeggio: onsets of C4, E4, G4, C5 within two frames of the truth.
    for k, pitch in enumerate([60, 64, 67, 72]):
        f = round((0.3 + 0.5 * k) * 25)
        assert (audio["notes"][f - 2:f + 3, pitch] == 2).any(), pitch
    assert audio["drums"].shape == (100,)

    # Resume: nothing is rebuilt, the summary is the same.
    assert main(["data", "ingest", str(src), "--out", str(out), "--files-per-shard", "3"]) == 0
    assert "summary: 2 file(s) ingested, 4 skipped" in capsys.readouterr().out


def test_cli_show_and_clear_errors(tmp_path, capsys):
    assert main(["data", "ingest", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 1
    assert "is not a folder" in capsys.readouterr().err
    assert main(["data", "tokenize", str(tmp_path)]) == 1  # checked before the (default demo) codec loads
    assert "has no index.json" in capsys.readouterr().err
    assert main(["data", "show", str(tmp_path / "missing.npz"), "-o", str(tmp_path / "x.png")]) == 1
