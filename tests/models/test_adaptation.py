"""Adaptations applied around a forward pass: hooks never outlive it, one row or many give the same
numbers, and gradients reach the adapter's parameters through the hooks."""

import pytest
import torch

from adaptlab.models.adaptation import AdaptedLM, Contribution, LoraDelta, lora_applied
from adaptlab.models.tiny import build_tiny

IDS = torch.tensor([[2, 70, 71, 72, 73], [2, 74, 75, 0, 0]])
MASK = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])


def _lora(model, seed=0, r=2):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name in ("model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.v_proj"):
        lin = model.get_submodule(name)
        out[name] = LoraDelta(
            torch.randn(r, lin.in_features, generator=g), torch.randn(lin.out_features, r, generator=g), 0.5
        )
    return out


def _hooks(model) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def test_hooks_are_removed_on_exit_even_after_an_error():
    base = build_tiny()
    with pytest.raises(RuntimeError, match="boom"), lora_applied(base.model, [(None, _lora(base.model))]):
        assert _hooks(base.model) == 2
        raise RuntimeError("boom")
    assert _hooks(base.model) == 0
    with (
        pytest.raises(ValueError, match="LoRA target model.nope not found"),
        lora_applied(base.model, [(None, {"model.nope": next(iter(_lora(base.model).values()))})]),
    ):
        pass
    assert _hooks(base.model) == 0


def test_lora_changes_the_output_only_while_applied():
    base = build_tiny()
    with torch.no_grad():
        plain = AdaptedLM(base.model, Contribution()).hidden(IDS, MASK)
        adapted = AdaptedLM(base.model, Contribution(lora=_lora(base.model))).hidden(IDS, MASK)
        again = AdaptedLM(base.model, Contribution()).hidden(IDS, MASK)
    assert not torch.allclose(plain, adapted, atol=1e-4)
    assert torch.equal(plain, again) and _hooks(base.model) == 0


@pytest.mark.parametrize("part", ["lora", "soft", "prefix"])
def test_one_contribution_for_all_rows_equals_one_per_row(part):
    base = build_tiny()
    g = torch.Generator().manual_seed(1)
    if part == "lora":
        c = Contribution(lora=_lora(base.model))
    elif part == "soft":
        c = Contribution(soft=torch.randn(3, 64, generator=g))
    else:
        c = Contribution(prefix=torch.randn(4, 1, 3, 32, generator=g))  # (layers * 2, kv, P, hd)
    other = Contribution(lora=_lora(base.model, seed=5))
    with torch.no_grad():
        uniform = AdaptedLM(base.model, c).hidden(IDS, MASK)
        rows = AdaptedLM(base.model, [c, c]).hidden(IDS, MASK)
        mixed = AdaptedLM(base.model, [c, other]).hidden(IDS, MASK)  # row 0 must not see row 1's LoRA
    for r in range(2):
        n = int(MASK[r].sum())
        assert torch.allclose(uniform[r, :n], rows[r, :n], atol=1e-5)
    assert torch.allclose(uniform[0], mixed[0], atol=1e-5)


def test_gradients_reach_lora_parameters_through_the_hooks():
    base = build_tiny()
    lin = base.model.get_submodule("model.layers.0.self_attn.q_proj")
    a = torch.nn.Parameter(torch.randn(2, lin.in_features) * 0.1)
    b = torch.nn.Parameter(torch.zeros(lin.out_features, 2))
    lm = AdaptedLM(base.model, Contribution(lora={"model.layers.0.self_attn.q_proj": LoraDelta(a, b, 2.0)}))
    lm.hidden(IDS, MASK).sum().backward()
    assert b.grad is not None and b.grad.abs().sum() > 0  # B starts at zero: its gradient is not
    assert a.grad is not None and a.grad.abs().sum() == 0  # and A's is, through B = 0
    assert all(p.grad is None for p in base.model.parameters())


def test_a_mixed_batch_of_many_loras_runs_one_hook_per_layer_and_gives_each_row_its_own_delta():
    """Rows of different adapters (different ranks, layers and scales, and a row with none) share one
    packed hook per layer; each row gets what its adapter alone gives."""
    base = build_tiny()
    ids = IDS[[0, 1, 0, 1]]
    mask = MASK[[0, 1, 0, 1]]
    loras = [_lora(base.model, seed=1, r=2), _lora(base.model, seed=2, r=4), {}, _lora(base.model, seed=1, r=2)]
    loras[1] = {k: LoraDelta(d.a, d.b, 2.0) for k, d in loras[1].items()}
    loras[1]["model.layers.1.mlp.down_proj"] = LoraDelta(torch.ones(3, 128) * 0.01, torch.ones(64, 3) * 0.01, 1.0)
    rows = [Contribution(lora=d) for d in loras]
    rows[3] = rows[0]  # the same adapter on two rows
    lm = AdaptedLM(base.model, rows)
    seen = []
    with torch.no_grad():
        with lm._lora():
            seen.append(_hooks(base.model))
        mixed = lm.hidden(ids, mask)
        for r, c in enumerate(rows):
            alone = AdaptedLM(base.model, c).hidden(ids[r : r + 1], mask[r : r + 1])[0]
            n = int(mask[r].sum())
            assert torch.allclose(mixed[r, :n], alone[:n], atol=1e-5), r
    assert seen == [3]  # one hook per adapted layer, however many adapters
    assert _hooks(base.model) == 0
