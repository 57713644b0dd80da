"""Inference copies of the base weights: the base stays as it was, each kind runs with LoRA hooks,
bf16-head keeps every row independent of its batch, and bad names fail with the allowed ones."""

import pytest
import torch

from adaptlab.models import fastweights
from adaptlab.models.adaptation import AdaptedLM, Contribution, LoraDelta
from adaptlab.models.runtime import PlainLM
from adaptlab.models.tiny import build_tiny

IDS = torch.tensor([[2, 70, 71, 72, 73], [2, 74, 75, 76, 77], [2, 78, 79, 80, 81]])
MASK = torch.ones_like(IDS)


def _logits(model, ids=IDS, mask=None):
    lm = PlainLM(model)
    with torch.no_grad():
        return lm.project(lm.hidden(ids, MASK[: len(ids)] if mask is None else mask)[:, -1])


@pytest.mark.parametrize("kind", ["fp32-packed", "bf16-head", "bf16", "int8"])
def test_an_inference_copy_leaves_the_base_alone_and_stays_close_to_fp32(kind):
    base = build_tiny()
    before = {n: p.clone() for n, p in base.model.named_parameters()}
    fast = fastweights.inference_model(base.model, kind)
    ref, got = _logits(base.model), _logits(fast)
    assert isinstance(base.model.get_output_embeddings(), torch.nn.Linear)
    assert all(torch.equal(p, before[n]) for n, p in base.model.named_parameters())
    assert torch.equal(_logits(base.model), ref)
    tol = {"fp32-packed": 1e-5, "bf16-head": 0.02, "bf16": 0.05, "int8": 0.25}[kind]
    assert (got - ref).abs().max() <= tol * ref.abs().max()
    if kind == "bf16-head":  # the head's product is per row: a row's logits do not depend on its batch
        alone = torch.cat([_logits(fast, IDS[r : r + 1]) for r in range(len(IDS))])
        assert torch.equal(alone, got)


@pytest.mark.parametrize("kind", ["fp32-packed", "bf16-head", "bf16", "int8"])
def test_lora_hooks_reach_the_layers_of_an_inference_copy(kind):
    base = build_tiny()
    fast = fastweights.inference_model(base.model, kind)
    name = "model.layers.0.self_attn.q_proj"
    lin = base.model.get_submodule(name)
    g = torch.Generator().manual_seed(0)
    delta = LoraDelta(torch.randn(2, lin.in_features, generator=g), torch.randn(lin.out_features, 2, generator=g), 1.0)
    with torch.no_grad():
        plain = AdaptedLM(fast, [Contribution(), Contribution()]).hidden(IDS[:2], MASK[:2])
        mixed = AdaptedLM(fast, [Contribution(lora={name: delta}), Contribution()]).hidden(IDS[:2], MASK[:2])
    assert not torch.allclose(plain[0], mixed[0], atol=1e-3)  # the adapted row changed
    if kind != "int8":  # int8 quantizes activations over the whole batch: the other row may move a little
        assert torch.equal(plain[1], mixed[1])


def test_weight_kinds_are_checked_and_auto_keeps_fp32_for_a_small_head():
    base = build_tiny()
    assert fastweights.resolve("auto", base.model) == "fp32"  # 2**24 weights or fewer: nothing to gain
    assert fastweights.inference_model(base.model, "fp32") is base.model
    with pytest.raises(ValueError, match="weights='fp16': use one of auto, fp32, fp32-packed, bf16-head, bf16, int8"):
        fastweights.resolve("fp16", base.model)
    from adaptlab.serving import ServeConfig

    with pytest.raises(ValueError, match="weights='x'"):
        ServeConfig(weights="x")
    assert fastweights.choose(base.model, {"fp32": 100.0, "bf16": 400.0}) == "fp32"


def test_auto_takes_packed_fp32_where_onednn_packs_and_else_the_bf16_head_only_where_bf16_is_fast(monkeypatch):
    base = build_tiny()
    monkeypatch.setattr(fastweights, "MIN_HEAD_PARAMS", 0)  # as if the head were Gemma's
    if fastweights.packing_available(torch.device("cpu")):
        assert fastweights.choose(base.model, {"fp32": 100.0, "bf16": 400.0}) == "fp32-packed"
    monkeypatch.setattr(fastweights, "packing_available", lambda device: False)
    assert fastweights.choose(base.model, {"fp32": 100.0, "bf16": 400.0}) == "bf16-head"
    assert fastweights.choose(base.model, {"fp32": 100.0, "bf16": 120.0}) == "fp32"
    assert fastweights.choose(base.model, {"fp32": 100.0}) == "fp32"  # no bf16 product at all


@pytest.mark.skipif(not fastweights.packing_available(torch.device("cpu")), reason="no oneDNN in this torch build")
def test_packed_kinds_pack_every_linear_in_its_type_and_fall_back_to_pytorchs_layers_without_onednn(monkeypatch):
    base = build_tiny()
    head = "lm_head"
    for kind, layer_type, head_type in [
        ("fp32-packed", torch.float32, torch.float32),
        ("bf16-head", torch.float32, torch.bfloat16),
        ("bf16", torch.bfloat16, torch.bfloat16),
    ]:
        fast = fastweights.inference_model(base.model, kind)
        mods = {n: m for n, m in fast.named_modules() if isinstance(m, fastweights.PackedLinear)}
        assert not any(isinstance(m, torch.nn.Linear) for m in fast.modules()), kind
        assert mods[head].dtype == head_type and mods["model.layers.0.mlp.down_proj"].dtype == layer_type
        assert fastweights.packed(fast)
    monkeypatch.setattr(fastweights, "packing_available", lambda device: False)
    assert fastweights.inference_model(base.model, "fp32-packed") is base.model  # the same math unpacked
    assert not fastweights.packed(fastweights.inference_model(base.model, "bf16-head"))


@pytest.mark.skipif(not fastweights.packing_available(torch.device("cpu")), reason="no oneDNN in this torch build")
def test_a_base_packed_when_inferring_scores_as_fp32_trains_as_before_and_repacks_after_a_change():
    import copy

    ref_base, base = build_tiny(), build_tiny()
    fastweights.pack_when_inferring(base.model)
    mods = [m for m in base.model.modules() if isinstance(m, torch.nn.Linear)]
    assert mods and all(type(m) is fastweights.PackingLinear for m in mods)
    assert base.model.state_dict().keys() == ref_base.model.state_dict().keys()
    ref, got = _logits(ref_base.model), _logits(base.model)
    assert torch.allclose(got, ref, atol=1e-5 * float(ref.abs().max()))
    assert all(m._pack is not None for m in mods)  # the no-gradient products ran packed
    assert torch.equal(_logits(fastweights.inference_model(base.model, "fp32")), ref)  # PyTorch's layers
    int8 = fastweights.inference_model(base.model, "int8")  # quantized, not left packed in fp32
    assert not any(isinstance(m, torch.nn.Linear) for m in int8.modules())

    # a product that needs a gradient runs as nn.Linear does: the same numbers and gradients
    lin, plain = base.model.get_submodule("lm_head"), ref_base.model.get_submodule("lm_head")
    x = torch.randn(3, lin.in_features, generator=torch.Generator().manual_seed(0), requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    lin(x).square().sum().backward()
    plain(x2).square().sum().backward()
    assert torch.equal(x.grad, x2.grad)

    # a changed weight is packed again before its next product; a copy carries no packed weight
    with torch.no_grad():
        before = lin(x.detach())
        lin.weight.mul_(2.0)
        after = lin(x.detach())
    assert torch.allclose(after, 2 * before, atol=1e-5 * float(before.abs().max()))
    twin = copy.deepcopy(base.model)
    assert all(m._pack is None for m in twin.modules() if isinstance(m, fastweights.PackingLinear))
    assert torch.allclose(_logits(twin), _logits(base.model), atol=1e-6)


needs_bf16 = pytest.mark.skipif(
    not fastweights.screen_allowed(torch.device("cpu")), reason="no native bf16 products in oneDNN here"
)


@needs_bf16
def test_the_greedy_screen_picks_the_fp32_argmax_and_hands_undecided_rows_to_the_full_head():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(4096, 64, generator=g) * 0.1
    screen = fastweights.GreedyScreen(w)

    def full(x):
        return x @ w.T

    peaked = w[torch.tensor([5, 900, 4095, 17])] * 40 + torch.randn(4, 64, generator=g) * 0.05
    assert torch.equal(screen.argmax(peaked, full), full(peaked).argmax(-1))
    assert screen.fallbacks == 0  # a clear best token: the bf16 top candidates decide it
    alike = 0.1 + torch.randn(4096, 64, generator=g) * 1e-4  # every token nearly the same logit:
    close = fastweights.GreedyScreen(alike)  # bf16 rounding cannot tell them apart
    x = torch.randn(3, 64, generator=g)
    assert torch.equal(close.argmax(x, lambda x: x @ alike.T), (x @ alike.T).argmax(-1))
    assert close.fallbacks == 3
    tie = torch.zeros(4096, 64)
    tie[[7, 3]] = 1.0  # two equal best logits: the lowest id, as torch.argmax picks
    assert fastweights.GreedyScreen(tie).argmax(torch.ones(1, 64), lambda x: x @ tie.T).tolist() == [3]


@needs_bf16
def test_a_greedy_screen_serves_fp32_heads_only_and_follows_a_changed_weight():
    base = build_tiny()
    head = base.model.get_output_embeddings()
    assert fastweights.greedy_screen(head) is None  # a small head: the full product is as cheap
    assert fastweights.greedy_screen(head, min_params=0) is None  # PyTorch's own layer: the fp32 reference
    packed = fastweights.inference_model(base.model, "fp32-packed").get_output_embeddings()
    assert fastweights.greedy_screen(packed, min_params=0) is fastweights.greedy_screen(packed, min_params=0)
    bf16 = fastweights.inference_model(base.model, "bf16-head").get_output_embeddings()
    assert fastweights.greedy_screen(bf16, min_params=0) is None  # already screened by its own rounding
    fastweights.pack_when_inferring(base.model)  # the base's own head, outside autograd
    assert fastweights.greedy_screen(head, min_params=0) is None  # gradients on: training's product
    with torch.no_grad():
        first = fastweights.greedy_screen(head, min_params=0)
        assert first is not None
        head.weight.mul_(2.0)
        assert fastweights.greedy_screen(head, min_params=0) is not first


@needs_bf16
def test_greedy_decoding_through_the_screen_gives_the_full_heads_tokens(monkeypatch):
    from adaptlab.models.decoding import decode

    base = build_tiny()
    fast = fastweights.inference_model(base.model, "fp32-packed")
    prompts = [[2, 70, 71, 72], [2, 74, 75, 76, 77, 78, 79, 80], [2, 81]]
    ref = [d.tokens for d in decode(PlainLM(fast), base.tokenizer, prompts, 8, "cpu")]
    calls = []
    real = fastweights.GreedyScreen.argmax
    monkeypatch.setattr(fastweights, "MIN_HEAD_PARAMS", 0)
    monkeypatch.setattr(fastweights.GreedyScreen, "argmax", lambda s, x, f: calls.append(1) or real(s, x, f))
    got = [d.tokens for d in decode(PlainLM(fast), base.tokenizer, prompts, 8, "cpu")]
    assert calls and got == ref
