"""MusicCoCa glue (shared/spec/musiccoca_assets_api.md §1) with stand-in interpreters that record what they are fed;
the golden tokens of §1.7 when the real files are installed ($OPENMRT_HOME or $MAGENTA_HOME), skipped otherwise."""

from __future__ import annotations

import numpy as np
import pytest

from openmrt.errors import CheckpointError, ConfigError
from openmrt.style import musiccoca as mc


class FakeInterpreter:
    """The ai-edge-litert Interpreter calls the code uses; `fn(inputs) -> output` defines the model."""

    def __init__(self, inputs: list[tuple[tuple[int, ...], type]], fn):
        self.inputs = [{"index": i, "shape": np.array(s), "dtype": d} for i, (s, d) in enumerate(inputs)]
        self.fn, self.fed, self.calls = fn, {}, []

    def get_input_details(self):
        return self.inputs

    def get_output_details(self):
        return [{"index": 99}]

    def set_tensor(self, i, x):
        assert x.shape == tuple(self.inputs[i]["shape"]) and x.dtype == self.inputs[i]["dtype"]
        self.fed[i] = x.copy()

    def invoke(self):
        self.calls.append({k: v.copy() for k, v in self.fed.items()})
        self.out = self.fn([self.fed[i] for i in range(len(self.inputs))])

    def get_tensor(self, i):
        assert i == 99
        return self.out


class FakeSpm:
    def encode(self, text):
        return [ord(c) for c in text]


W = np.random.default_rng(0).standard_normal((160000 // 1000, 768)).astype(np.float32)


def fakes():
    return {
        # ids in slot 1 (float paddings first, to check inputs are picked by dtype, not position)
        "text_encoder.tflite": FakeInterpreter([((1, 128), np.float32), ((1, 128), np.int32)],
                                               lambda x: np.tile(x[1][:, :1], (1, 768)) + x[0].sum()),
        "audio_preprocessor.tflite": FakeInterpreter([((160000,), np.float32)],
                                                     lambda x: x[0].reshape(160, 1000).mean(1)[None]),
        "music_encoder.tflite": FakeInterpreter([((1, 160), np.float32)], lambda x: x[0] @ W),
        "pretrained_vector_quantizer.tflite": FakeInterpreter([((1, 768), np.float32)],
                                                              lambda x: np.arange(16, dtype=np.int32)[None] * 2),
        "mapper.tflite": FakeInterpreter([((1, 768), np.float32), ((1, 768), np.float32)], lambda x: x[0] + x[1]),
    }


@pytest.fixture
def model(tmp_path):
    for f in mc.FILES.values():
        (tmp_path / f).write_bytes(b"stand-in")
    its = fakes()
    m = mc.MusicCoCa(tmp_path, interpreter_factory=lambda p: its[p.name], tokenizer_factory=lambda p: FakeSpm())
    return m, its


def test_text_ids_sos_padding_truncation(model):
    m, _ = model
    ids, pad = m.text_ids("AbC")
    assert ids[:5].tolist() == [1, ord("a"), ord("b"), ord("c"), 0] and ids.dtype == np.int32
    assert pad[:5].tolist() == [0, 0, 0, 0, 1] and pad.dtype == np.float32
    ids, pad = m.text_ids("x" * 300)
    assert ids[0] == 1 and (ids[1:] == ord("x")).all() and not pad.any()  # 127 ids + SOS fill all 128


def test_text_inputs_by_dtype_and_mapper_noise(model):
    m, its = model
    raw = m.embed_text_raw("a")
    assert raw.shape == (768,) and raw[0] == 1 + 126  # SOS id 1, plus the 126 padding ones
    assert its["text_encoder.tflite"].calls[0][1][0, 1] == ord("a")
    assert m.use_mapper  # mapper.tflite present: applied to text, as in the official live engine
    out = m.embed_text("a")
    want = raw + np.random.RandomState(0).randn(768).astype(np.float32)
    np.testing.assert_allclose(out, want / np.linalg.norm(want), rtol=1e-6)
    np.testing.assert_array_equal(its["mapper.tflite"].calls[-1][1][0], mc.mapper_noise(0))
    assert not np.allclose(m.map_text(raw, seed=1), out)


def test_audio_clips_pooled(model):
    m, its = model
    t = np.arange(int(48000 * 25)) / 48000  # 25 s: three 10 s clips, the last zero-padded
    audio = np.stack([np.sin(2 * np.pi * 220 * t), np.zeros_like(t)], axis=1).astype(np.float32)
    clips = m.clips(audio)
    assert clips.shape == (3, 160000) and np.all(clips[2, 80000:] == 0)
    assert abs(np.abs(clips[0]).max() - 0.5) < 0.02  # channel average, resampled to 16 kHz
    emb = m.embed_audio(audio)
    assert len(its["music_encoder.tflite"].calls) == 3
    want = np.mean([c.reshape(160, 1000).mean(1) @ W for c in clips], axis=0)
    np.testing.assert_allclose(emb, want, rtol=1e-4, atol=1e-6)


def test_tokenize_keeps_first_12(model):
    m, _ = model
    assert m.tokenize(np.zeros(768)) == tuple(range(0, 24, 2))
    with pytest.raises(ConfigError, match="768"):
        m.tokenize(np.zeros(512))


def test_missing_files_named(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENMRT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MAGENTA_HOME", str(tmp_path / "magenta"))
    with pytest.raises(CheckpointError) as e:
        mc.musiccoca_dir()
    msg = str(e.value)
    assert "text_encoder.tflite" in msg and str(tmp_path / "home" / "resources" / "musiccoca") in msg
    assert str(tmp_path / "magenta" / "magenta-rt-v2" / "resources" / "musiccoca") in msg
    (tmp_path / "spm.model").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="music_encoder.tflite"):
        mc.MusicCoCa(tmp_path)


def test_mapper_requested_but_missing(tmp_path):
    for k in mc.REQUIRED:
        (tmp_path / mc.FILES[k]).write_bytes(b"x")
    assert not mc.MusicCoCa(tmp_path).use_mapper
    with pytest.raises(CheckpointError, match="mapper.tflite"):
        mc.MusicCoCa(tmp_path, use_mapper=True)


GOLDEN = {  # spec §1.7
    "a jazz piano trio": ([555, 402, 72, 993, 482, 932, 402, 153, 33, 374, 519, 147],
                          [555, 333, 237, 468, 451, 244, 82, 624, 719, 466, 168, 601]),
    "heavy metal guitar riff": ([322, 825, 598, 131, 826, 656, 592, 759, 89, 410, 778, 642],
                                [270, 797, 578, 144, 653, 254, 942, 760, 89, 390, 437, 303]),
    "ambient electronic": ([796, 540, 12, 691, 843, 202, 225, 516, 324, 836, 41, 574],
                           [369, 867, 202, 38, 413, 255, 213, 905, 340, 893, 300, 725]),
    "disco funk": ([660, 597, 668, 315, 857, 217, 930, 175, 655, 343, 534, 137],
                   [660, 1016, 208, 530, 589, 702, 376, 54, 203, 444, 36, 246]),
}


def test_real_files_golden_tokens():
    try:
        d = mc.musiccoca_dir()
    except CheckpointError:
        pytest.skip("MusicCoCa files not installed ($OPENMRT_HOME or $MAGENTA_HOME/magenta-rt-v2/resources/musiccoca)")
    plain = mc.MusicCoCa(d, use_mapper=False)
    for text, (want, _) in GOLDEN.items():
        assert list(plain.tokenize(plain.embed_text(text))) == want, text
    if (d / mc.FILES["mapper"]).is_file():
        mapped = mc.MusicCoCa(d, use_mapper=True, seed=0)
        for text, (_, want) in GOLDEN.items():
            assert list(mapped.tokenize(mapped.embed_text(text))) == want, text
