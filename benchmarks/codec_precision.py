"""Fidelity of the fast codec decode step against the float32 reference, as JSON.

    python3 benchmarks/codec_precision.py [--frames 100] [--out benchmarks/results/codec_precision.json]

For each precision of ``openmrt.codec.fast.prepare_decoder`` (f32, int8 for the big
low-resolution layers, and bf16 where the CPU has fast bfloat16 convolutions) it streams codes
through ``decode_step`` and compares the audio with the reference ``SpectroStream.decode_step`` in
float32: SNR in dB (signal = reference audio, noise =
difference; goal ≥ 25 dB) and mel L1 (openmrt.eval.codec.mel_l1, natural-log mel magnitudes;
0 = identical), raw decoder audio and after the official int16 output stage. Weights: the seeded
full-size golden codec (shared/golden/seeded, as tests/test_codec_golden.py); codes: the golden's
12-level codes of its test signal, and uniformly random codes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402
from seeded import CODEC_SEED, rebuild  # noqa: E402

from openmrt.codec import SpectroStream, load_official_state, official_output  # noqa: E402
from openmrt.codec.fast import bf16_supported, prepare_decoder  # noqa: E402
from openmrt.eval.codec import mel_l1  # noqa: E402


def _stream(codec, codes: torch.Tensor) -> torch.Tensor:
    state = codec.init_decode_state(codes.shape[0])
    with torch.inference_mode():
        return torch.cat([codec.decode_step(codes[:, t], state) for t in range(codes.shape[1])], 1)


def _compare(ref: torch.Tensor, est: torch.Tensor) -> dict:
    ref, est = ref[:, 1920:], est[:, 1920:]  # the first frame is the lookahead's silence in both
    snr = 10 * torch.log10(ref.pow(2).sum() / (ref - est).pow(2).sum().clamp(min=1e-30)).item()
    r16, e16 = official_output(ref), official_output(est)
    snr16 = 10 * torch.log10(r16.pow(2).sum() / (r16 - e16).pow(2).sum().clamp(min=1e-30)).item()
    return {
        "snr_db": round(snr, 2),
        "mel_l1": round(float(mel_l1(ref, est)), 5),
        "max_abs_err": float((ref - est).abs().max()),
        "ref_rms": round(float(ref.pow(2).mean().sqrt()), 5),
        "int16_snr_db": round(snr16, 2),
        "int16_lsb_differences": int((r16 != e16).sum()),
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=100, help="frames of random codes")
    ap.add_argument("--golden", type=Path, default=ROOT.parent.parent / "shared" / "golden",
                    help="shared/golden (for the seeded weights and codes)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "codec_precision.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    seeded = args.golden / "seeded"
    codec = SpectroStream().eval()
    weights = rebuild(seeded / "codec_param_keys.txt", CODEC_SEED, only="params/soundstream")
    load_official_state(codec, weights, parts=("decoder", "quantizer"))
    with np.load(seeded / "codec_golden.npz") as z:
        golden_codes = torch.from_numpy(z["codes12"]).long()[None]
    inputs = {
        "golden_codes12": golden_codes,
        "random_codes": torch.randint(0, 1024, (1, args.frames, 12), generator=torch.Generator().manual_seed(0)),
    }
    precisions = ["f32", "int8"] + (["bf16"] if bf16_supported() else [])
    result = {"machine": machine(), "weights": "seeded full-size golden codec (shared/golden/seeded)",
              "reference": "SpectroStream.decode_step, float32", "goal_snr_db": 25.0,
              "bf16_supported": bf16_supported(), "rows": []}
    for name, codes in inputs.items():
        ref = _stream(codec, codes)
        for precision in precisions:
            est = _stream(prepare_decoder(codec, precision), codes)
            row = {"codes": name, "frames": codes.shape[1], "precision": precision, **_compare(ref, est)}
            result["rows"].append(row)
            print(json.dumps(row), file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
