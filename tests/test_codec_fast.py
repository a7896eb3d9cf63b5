"""The fast CPU decode step (openmrt/codec/fast.py) and the host-sync-free codec step.

f32 must equal the reference step to float rounding (and the full-size seeded golden); bf16 must
stay above 25 dB SNR; the state keeps its shapes and storage; batch rows are independent; and
neither decode step reads a value back to the host.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from openmrt.codec import FRAME_SAMPLES, SpectroStream
from openmrt.codec.fast import bf16_supported, prepare_decoder
from openmrt.config import codec_config
from openmrt.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def narrow() -> SpectroStream:
    torch.manual_seed(0)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    return SpectroStream(codec_config("narrow")).eval()


def _steps(codec, codes: torch.Tensor, state=None) -> torch.Tensor:
    state = state if state is not None else codec.init_decode_state(codes.shape[0])
    with torch.inference_mode():
        return torch.cat([codec.decode_step(codes[:, t], state) for t in range(codes.shape[1])], 1)


def _snr_db(ref: torch.Tensor, x: torch.Tensor) -> float:
    return 10 * torch.log10(ref.pow(2).sum() / (ref - x).pow(2).sum()).item()


def test_f32_equals_reference_step(narrow):
    codes = torch.randint(0, 1024, (2, 7, 12), generator=torch.Generator().manual_seed(1))
    fast = prepare_decoder(narrow, "f32", batch=2)
    ref, out = _steps(narrow, codes), _steps(fast, codes)
    assert torch.equal(out[:, :FRAME_SAMPLES], torch.zeros(2, FRAME_SAMPLES, 2))  # the lookahead's silence
    assert ref[:, FRAME_SAMPLES:].abs().max() > 0
    scale = ref.abs().max().item()
    assert (out - ref).abs().max().item() <= 1e-5 * scale
    # And the whole-sequence decode, shifted by the one-frame latency.
    whole = narrow.decode(codes)
    assert (out[:, FRAME_SAMPLES:] - whole).abs().max().item() <= 1e-5 * scale


def test_state_in_place_reset_and_batch_rows(narrow):
    codes = torch.randint(0, 1024, (3, 5, 12), generator=torch.Generator().manual_seed(2))
    fast = prepare_decoder(narrow, "f32")  # packed for batch 1, stepped at batch 3: still exact
    state = fast.init_decode_state(3)
    before = {k: (t.shape, t.dtype, t.data_ptr()) for k, t in state.tensors().items()}
    first = _steps(fast, codes, state)
    assert {k: (t.shape, t.dtype, t.data_ptr()) for k, t in state.tensors().items()} == before
    state.reset_()
    assert torch.equal(_steps(fast, codes, state), first)
    for row in range(3):  # each row as if it were alone
        alone = _steps(fast, codes[row : row + 1])
        assert (alone[0] - first[row]).abs().max().item() <= 1e-5 * first.abs().max().item()  # batch changes kernels


@pytest.mark.skipif(not bf16_supported(), reason="this CPU has no fast bfloat16 convolutions")
def test_bf16_snr(narrow):
    codes = torch.randint(0, 1024, (1, 12, 12), generator=torch.Generator().manual_seed(3))
    ref = _steps(narrow, codes)[:, FRAME_SAMPLES:]
    out = _steps(prepare_decoder(narrow, "bf16"), codes)[:, FRAME_SAMPLES:]
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert 25.0 <= _snr_db(ref, out) < 80.0  # lossy, but well above the goal


def test_int8_snr(narrow, monkeypatch):
    # Full size quantizes layers of ≥ 1 M weights; the narrow codec's are smaller, so lower the bar.
    import openmrt.codec.fast as fast_mod

    monkeypatch.setattr(fast_mod, "INT8_MIN_WEIGHTS", 100_000)
    fast = prepare_decoder(narrow, "int8")
    assert all(isinstance(u.second, fast_mod._Conv8) for u in fast.fast.merged)
    assert isinstance(fast.fast.merged[1].first, fast_mod._ConvT8)
    codes = torch.randint(0, 1024, (2, 10, 12), generator=torch.Generator().manual_seed(4))
    ref = _steps(narrow, codes)[:, FRAME_SAMPLES:]
    out = _steps(fast, codes)[:, FRAME_SAMPLES:]
    assert torch.isfinite(out).all()
    assert 25.0 <= _snr_db(ref, out) < 80.0


def test_bad_precision_is_a_clear_error(narrow):
    with pytest.raises(ConfigError, match="f32, bf16, int8"):
        prepare_decoder(narrow, "int4")
    if not bf16_supported():
        with pytest.raises(ConfigError, match="bfloat16"):
            prepare_decoder(narrow, "bf16")


class _SyncSpy(TorchDispatchMode):
    """Records ops that copy a tensor's value to the host (``.item()``, ``bool(t)``, ``int(t)``)."""

    def __init__(self):
        super().__init__()
        self.syncs: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.syncs.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("precision", [None, "f32", "int8"], ids=["reference", "f32", "int8"])
def test_decode_step_never_syncs_to_host(narrow, precision):
    codec = prepare_decoder(narrow, precision) if precision else narrow
    state = codec.init_decode_state(2)
    codes = torch.randint(0, 1024, (2, 12))
    with torch.inference_mode():
        codec.decode_step(codes, state)
        with _SyncSpy() as spy:
            codec.decode_step(codes, state)
    assert spy.syncs == []
    with _SyncSpy() as spy:  # the spy does see a sync when there is one
        narrow.quantizer.check_codes(codes)
    assert spy.syncs


def test_codes_are_checked_where_they_enter(narrow):
    q = narrow.quantizer
    q.check_codes(torch.tensor([[0, 1023]]))
    for bad, what in [
        (torch.tensor([[0, 1024]]), "0..1023"),
        (torch.tensor([[-1, 3]]), "0..1023"),
        (torch.tensor([[0.5, 3.0]]), "integers"),
        (torch.zeros(1, q.num_quantizers + 1, dtype=torch.long), f"at most {q.num_quantizers} levels"),
    ]:
        with pytest.raises(DataError, match=what):
            q.check_codes(bad)
    with pytest.raises(DataError, match="0..1023"):
        narrow.decode(torch.full((1, 3, 12), 2000))


@pytest.mark.slow
def test_full_size_seeded_golden_in_f32(golden_dir):
    """The fast f32 step reproduces the official JAX streaming decode (README §6.3 tolerance)."""
    import numpy as np
    from seeded import CODEC_SEED, rebuild

    from openmrt.codec import load_official_state

    seeded = golden_dir / "seeded"
    with np.load(seeded / "codec_golden.npz") as z:
        codes, gold = torch.from_numpy(z["codes12"]).long()[None], z["dec_step_wav"]
    codec = SpectroStream().eval()
    weights = rebuild(seeded / "codec_param_keys.txt", CODEC_SEED, only="params/soundstream")
    load_official_state(codec, weights, parts=("decoder", "quantizer"))
    wav = _steps(prepare_decoder(codec, "f32"), codes)[0]
    assert wav.shape == gold.shape
    assert (wav.double() - torch.from_numpy(gold).double()).abs().max().item() < 1e-4
