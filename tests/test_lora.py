"""LoRA on official-layout weights: one step changes only the adapters; merging keeps the outputs."""

from __future__ import annotations

import torch
from safetensors.numpy import load_file

from openmrt import tokens as tk
from openmrt.config import lm_config
from openmrt.lm.convert import load_official
from openmrt.lm.lora import LoRALinear, apply_lora, lora_state_dict, merge_lora
from openmrt.lm.model import Depthformer


def test_lora_step_and_merge(golden_dir):
    model = Depthformer(lm_config("tiny"))
    load_official(model, load_file(str(golden_dir / "tiny_params.safetensors")))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    cond = tk.encode_conditioning(torch.randint(-1, 4, (2, 6, 144), generator=g).clamp(min=-1))
    toks = tk.to_unique(torch.randint(0, 1024, (2, 6, 12), generator=g))
    with torch.no_grad():
        original = model.eval()(cond, toks)
    model.train()
    apply_lora(model, rank=4, alpha=8.0)
    n_adapted = sum(isinstance(m, LoRALinear) for m in model.modules())
    assert n_adapted == 2 * (4 + 4 + 2) + 2 * (4 + 2)  # temporal: 2 attentions + FFN; depth: 1 attention + FFN
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-2)
    logits = model.training_logits(cond, toks)
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 2), tk.from_unique(toks).flatten())
    loss.backward()
    opt.step()
    after = model.state_dict()
    for k, v in before.items():
        key = k if k in after else k.replace(k.rsplit(".", 1)[0], k.rsplit(".", 1)[0] + ".base")
        assert torch.equal(after[key], v), f"frozen weight {k} changed"
    adapters = lora_state_dict(model)
    assert adapters and any(v.abs().max() > 0 for k, v in adapters.items() if "lora_b" in k)  # they moved
    model.eval()
    with torch.no_grad():
        unmerged = model(cond, toks)
        merge_lora(model)
        merged = model(cond, toks)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    assert set(model.state_dict()) == set(before)  # the official layout again
    assert (merged - unmerged).abs().max() < 1e-4
    assert (merged - original).abs().max() > 1e-3  # the step did change the model
