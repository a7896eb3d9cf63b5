"""The v1 LM on its own (no golden needed): step decode == teacher-forced whole chunk, the fixed-size state,
EOS handling, the relative buckets, the token layout and clear errors on bad input."""

from __future__ import annotations

import pytest
import torch
from test_v1_golden import one_thread  # noqa: F401 (autouse fixture)

from openmrt.errors import CheckpointError, ConfigError
from openmrt.lm_v1.config import v1_config
from openmrt.lm_v1.convert import convert_state_dict, key_map, load_official
from openmrt.lm_v1.generate import ChunkDecoder, V1Sampling, generate_chunk
from openmrt.lm_v1.layers import relative_buckets
from openmrt.lm_v1.model import V1LM
from openmrt.lm_v1.tokens import encoder_ids, tokens_to_codes


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    m = V1LM(v1_config("tiny")).eval()
    with torch.no_grad():  # defaults leave the biases at 0 and the norms at 1: make every weight matter
        for name, p in m.named_parameters():
            if name.endswith("rel_bias.weight"):
                p.normal_(0.0, 0.5)
            elif "norm" in name:
                p.normal_(1.0, 0.1)
    return m


def context_ids(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ctx = torch.randint(0, 1024, (250, 16), generator=g)
    ctx[:100] = -1
    return encoder_ids(ctx, torch.randint(0, 1024, (12,), generator=g))


def test_v1_step_decode_matches_whole_chunk(tiny):
    """All 800 steps, fed the whole-chunk path's tokens, give its logits; the state keeps its buffers."""
    ids = torch.cat([context_ids(1), context_ids(2)])  # two streams, so rows must not mix
    targets = torch.randint(2, 16386, (4, 800), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        whole = tiny(ids, targets)
    state = tiny.init_state(4)
    before = {k: (t.data_ptr(), t.shape) for k, t in state.tensors().items()}
    err = [0.0]

    def check(s, raw):
        err[0] = max(err[0], (raw - whole[:, s]).abs().max().item())

    generate_chunk(tiny, ids, V1Sampling(0.0, 1.0, 40), state=state, forced=targets, on_logits=check,
                   generator=torch.Generator().manual_seed(0))
    assert err[0] <= 1e-4, err[0]
    assert {k: (t.data_ptr(), t.shape) for k, t in state.tensors().items()} == before
    assert int(state.step) == 800
    with pytest.raises(ConfigError, match="complete"):
        tiny.step(state, targets[:, 0])


def test_v1_state_is_reused_across_chunks(tiny):
    """begin() resets everything: a second chunk on the same state equals a fresh one."""
    a, b = context_ids(4), context_ids(5)
    state = tiny.init_state(2)
    g = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    generate_chunk(tiny, a, steps=48, state=state, generator=g())
    again = generate_chunk(tiny, b, steps=48, state=state, generator=g())
    assert torch.equal(again, generate_chunk(tiny, b, steps=48, generator=g()))
    assert torch.equal(again[0], again[1])  # guidance: both rows of the pair feed and return row 0's samples


def test_v1_chunk_decoder_is_reused_across_chunks(tiny):
    """One ChunkDecoder (the engine keeps one per row count) decodes chunk after chunk as fresh calls do, and
    its buffers keep their storage."""
    dec = ChunkDecoder(tiny, 2)
    before = {k: t.data_ptr() for k, t in {**dec.state.tensors(), **dec.buf.tensors()}.items()}
    g = lambda: torch.Generator().manual_seed(11)  # noqa: E731
    for seed in (4, 5, 6):
        ids = context_ids(seed)
        forced = torch.randint(2, 16386, (2, 800), generator=torch.Generator().manual_seed(seed))
        assert torch.equal(dec.run(ids, steps=40, generator=g()), generate_chunk(tiny, ids, steps=40, generator=g()))
        assert torch.equal(dec.run(ids, V1Sampling(0.0, 1.1, 40), steps=20, forced=forced, generator=g()),
                           generate_chunk(tiny, ids, V1Sampling(0.0, 1.1, 40), steps=20, forced=forced, generator=g()))
    assert {k: t.data_ptr() for k, t in {**dec.state.tensors(), **dec.buf.tensors()}.items()} == before
    with pytest.raises(ConfigError, match="rows"):
        dec.run(torch.cat([ids, ids]), steps=16)


@pytest.mark.parametrize("frame_start,greedy,guided", [(True, False, True), (False, False, True),
                                                       (True, True, False), (False, False, False)])
def test_v1_decode_step_reads_no_host_value(tiny, frame_start, greedy, guided):
    """What a CUDA graph captures (ChunkDecoder._step) traces as one graph: positions, guidance weight,
    temperature, sampling, EOS and forcing all stay on the device (a host read such as .item() or bool() would
    break the trace). The GPU replay itself is tested on CUDA below."""
    dec = ChunkDecoder(tiny, 2)
    tiny.begin(dec.state, context_ids(3))
    dec.buf.token.fill_(0)
    if not frame_start:
        dec.buf.step.fill_(5)
    torch._dynamo.reset()
    step = torch.compile(dec._step, backend="eager", fullgraph=True)
    with torch.no_grad():
        step((frame_start, 40, greedy, guided))
    assert int(dec.buf.step) == (1 if frame_start else 6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (CUDA graphs)")
@pytest.mark.parametrize("sampling", [V1Sampling(), V1Sampling(0.0, 1.1, 40), V1Sampling(5.0, 0.0, 40)])
def test_v1_chunk_graphs_match_eager_on_cuda(tiny, sampling):
    """The captured steps give the eager decode's tokens with the same noise, chunk after chunk."""
    model = tiny.cuda()
    try:
        graphed, eager = ChunkDecoder(model, 2, cuda_graph=True), ChunkDecoder(model, 2)
        for seed in (4, 5):
            ids = context_ids(seed).cuda()
            noise = torch.randn(800, 2, model.cfg.num_embeddings, generator=torch.Generator().manual_seed(seed))
            def at(s, noise=noise):
                return noise[s].cuda()
            assert torch.equal(graphed.run(ids, sampling, noise=at), eager.run(ids, sampling, noise=at))
        captured = len(graphed._graphs)
        other = V1Sampling(sampling.guidance * 0.5 + (sampling.guidance != 0), sampling.temperature * 0.9, 40)
        assert torch.equal(graphed.run(ids, other, noise=at), eager.run(ids, other, noise=at))
        assert len(graphed._graphs) == captured  # a new weight or temperature reuses the captured steps
    finally:
        tiny.cpu()


def test_v1_streams_in_one_batch_do_not_mix(tiny):
    """Two guided streams batched as [cond_a, uncond_a, cond_b, uncond_b] decode as each does alone."""
    a, b = context_ids(8), context_ids(9)
    greedy = V1Sampling(5.0, 0.0, 40)
    both = generate_chunk(tiny, torch.cat([a, b]), greedy, steps=48)
    assert torch.equal(both, torch.cat([generate_chunk(tiny, a, greedy, steps=48),
                                        generate_chunk(tiny, b, greedy, steps=48)]))
    assert not torch.equal(both[0], both[2])


def eos_at(step: int, rows: list[int]):
    """Noise that makes the given rows sample EOS (id 1) at ``step``."""
    def noise(s):
        g = torch.zeros(2, v1_config("tiny").num_embeddings)
        if s == step:
            g[rows, 1] = 1e9
        return g
    return noise


@pytest.mark.parametrize("guidance", [5.0, 0.0])
def test_v1_eos_ends_a_row(tiny, guidance):
    calls = []
    out = generate_chunk(tiny, context_ids(6), V1Sampling(guidance, 1.1, 40), noise=eos_at(5, [0]),
                         on_logits=lambda s, _: calls.append(s))
    assert out[0, 5] == 1 and (out[0, 6:] == 0).all()
    if guidance:  # row 1 follows row 0: both end, and decoding stops right after the EOS step
        assert torch.equal(out[0], out[1]) and calls == list(range(6))
    else:  # rows are independent: row 1 goes on to the last step
        assert (out[1, 6:] > 1).all() and len(calls) == 800


def test_v1_relative_buckets():
    n = torch.arange(0, 200)
    depth = relative_buckets(-n[:16], 16, 16)
    assert torch.equal(depth, n[:16])  # every reachable depth distance has its own bucket
    temporal = relative_buckets(-n, 128, 128)
    assert torch.equal(temporal[:64], n[:64])  # exact below num_buckets / 2
    assert temporal[64] == 64 and temporal[127] == 127 and (temporal[127:] == 127).all()
    assert (temporal.diff() >= 0).all()
    assert (relative_buckets(n, 128, 128) == 0).all()  # keys after the query (masked anyway): bucket 0


def test_v1_token_layout():
    ctx = torch.full((250, 16), -1)
    ctx[249, :4] = torch.tensor([0, 5, 1023, 7])
    ids = encoder_ids(ctx, torch.arange(12))
    assert ids.shape == (2, 1006)
    assert ids[0, 996:1000].tolist() == [2, 2 + 1024 + 5, 2 + 2048 + 1023, 2 + 3072 + 7]
    assert (ids[:, :996] == 1).all()
    assert ids[0, 1000:].tolist() == [17410 + 1024 * k + k for k in range(6)]
    assert (ids[1, 1000:] == 1).all() and torch.equal(ids[0, :1000], ids[1, :1000])
    assert (encoder_ids(ctx, None)[0, 1000:] == 1).all()
    codes = tokens_to_codes(torch.tensor([0, 1, 2, 1025, 2 + 1024 * 15 + 9] + [2] * 795))
    assert codes.shape == (50, 16) and codes[0, :5].tolist() == [0, 0, 0, 1023, 9]


def test_v1_bad_input_is_a_clear_error(tiny):
    with pytest.raises(ConfigError, match="context"):
        encoder_ids(torch.zeros(100, 16), None)
    with pytest.raises(ConfigError, match="0..1023"):
        encoder_ids(torch.zeros(250, 16), torch.full((12,), 1024))
    with pytest.raises(ConfigError, match="pairs"):
        generate_chunk(tiny, context_ids(1)[:1], V1Sampling(5.0, 1.1, 40))
    with pytest.raises(ConfigError, match="forced tokens"):
        generate_chunk(tiny, context_ids(1), steps=32, forced=torch.zeros(2, 16, dtype=torch.long))
    with pytest.raises(ConfigError, match="whole frames"):
        tiny(context_ids(1), torch.zeros(2, 20, dtype=torch.long))
    with pytest.raises(ConfigError, match="unknown v1 LM preset"):
        v1_config("huge")


def test_v1_key_map_covers_the_model_and_names_bad_keys(tiny):
    cfg = tiny.cfg
    kmap = key_map(cfg)
    assert len(kmap) == 70 and {n for n, _ in kmap.values()} == set(tiny.state_dict())
    shapes = {k: v.shape for k, v in tiny.state_dict().items()}
    flat = {f"target/{k}": (tiny.state_dict()[n].T if t else tiny.state_dict()[n]).numpy().copy()
            for k, (n, t) in kmap.items()}
    other = V1LM(cfg)
    load_official(other, flat)  # the t5x "target/" prefix is accepted
    ours, theirs = other.state_dict(), tiny.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    flat.pop("target/decoder/decoder_norm/scale")
    flat["target/decoder/extra/kernel"] = flat["target/token_embedder/embedding"]
    flat["target/decoder/logits_dense/kernel"] = flat["target/decoder/logits_dense/kernel"].T
    with pytest.raises(CheckpointError) as e:
        convert_state_dict(flat, cfg, shapes)
    msg = str(e.value)
    assert "missing keys: decoder/decoder_norm/scale" in msg and "decoder/extra/kernel" in msg
    assert "decoder/logits_dense/kernel: shape [29824, 32]" in msg
