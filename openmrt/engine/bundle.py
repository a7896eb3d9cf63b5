"""Model bundles: the LM, the codec its tokens belong to, and (later) the style model.

Tokens from one bundle mean nothing to another, so everything that plays goes through a bundle.
``random:LM[+CODEC]`` builds a seeded random-weight bundle (tests, benchmarks, trying the
engine without trained weights); trained and official bundles come with the hub (issue 9).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from openmrt.codec.model import SpectroStream
from openmrt.config import codec_config, lm_config
from openmrt.errors import ConfigError
from openmrt.lm.model import Depthformer


@dataclass
class Bundle:
    name: str
    lm: Depthformer
    codec: SpectroStream
    style: object | None = None  # a StyleSource (openmrt.style), when the bundle has one

    def to(self, device: torch.device | str, lm_dtype: torch.dtype = torch.float32) -> Bundle:
        self.lm.to(device=device, dtype=lm_dtype)
        self.codec.to(device=device)  # the codec stays f32, as in the official code
        return self


def random_bundle(lm: str = "tiny", codec: str = "narrow", seed: int = 0) -> Bundle:
    """A bundle with seeded random weights (no files needed)."""
    gen = torch.Generator().manual_seed(seed)
    model = Depthformer(lm_config(lm))
    codec_model = SpectroStream(codec_config(codec))
    with torch.no_grad():
        for m in (model, codec_model):
            for name, p in m.named_parameters():
                if name.endswith("per_dim_scale") or ("norm" in name and name.endswith("bias")):
                    continue
                if "norm" in name:
                    p.fill_(1.0)
                else:
                    p.copy_(torch.randn(p.shape, generator=gen) * (0.3 if "sink" in name else 0.02))
        for layer in codec_model.modules():  # codec convs: fan-in scaled so the audio stays bounded
            w = getattr(layer, "weight", None)
            if isinstance(layer, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)) and w is not None:
                fan_in = w[0].numel() if isinstance(layer, torch.nn.Conv2d) else w[:, 0].numel()
                w.copy_(torch.randn(w.shape, generator=gen) / fan_in**0.5)
        codec_model.quantizer.embedding.normal_(0.0, 1.0, generator=gen)
        # The output is linear in the last conv: scale it so random codes give audio of RMS ~0.2.
        probe = codec_model.decode(torch.randint(0, 1024, (1, 8, 12), generator=gen))
        last = codec_model.decoder.output_layer.base_conv_last
        for t in (last.weight, last.bias):
            t.mul_(0.2 / float(probe.std()))
        model.to_logits.weight.mul_(50.0)  # peaky logits, so sampled tokens are not uniform noise
    return Bundle(f"random:{lm}+{codec}", model.eval(), codec_model.eval())


def load_bundle(spec: str, seed: int = 0) -> Bundle:
    """``random:tiny``, ``random:demo+narrow``, ... (trained and official bundles: issue 9)."""
    if spec.startswith("random"):
        _, _, rest = spec.partition(":")
        lm, _, codec = (rest or "tiny").partition("+")
        return random_bundle(lm or "tiny", codec or "narrow", seed)
    raise ConfigError(
        f"no model bundle {spec!r}: this version plays seeded random bundles ('random:tiny', "
        "'random:demo+narrow'); trained and official bundles come with `openmrt models` (issue 9)"
    )
