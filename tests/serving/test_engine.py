"""Mixed batches give the numbers each artifact gives on its own, for every adaptation kind."""

import pytest
import torch

from adaptlab.models.tiny import build_tiny
from adaptlab.serving.adapters import from_artifact, plain_adapter
from adaptlab.serving.engine import LoraHooks, MixedLM, classify_rows, encode_rows, generate_rows, plan_batches
from adaptlab.strategies import Artifact
from adaptlab.strategies.gradient import release

from .kit import KINDS, TEXTS, build_all


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    base = build_tiny()
    folders = build_all(base, tmp_path_factory.mktemp("kit"))
    arts = {n: Artifact.load(f, base) for n, f in folders.items()}
    ads = {n: from_artifact(Artifact.load(f, base), base, n, n) for n, f in folders.items()}
    return base, arts, ads


def test_every_kind_is_in_the_kit():
    from adaptlab.strategies import list_strategies

    assert {s for _, s, _, _ in KINDS} == set(list_strategies())


def _mixed(base, hooks, adapters, texts, op, max_new=5):
    """Run rows through the engine the way the server does: split by weights, then plan_batches."""
    out = [None] * len(texts)
    by_weights = {}
    for i, a in enumerate(adapters):
        by_weights.setdefault(a.weights, []).append(i)
    window = base.model.config.sliding_window
    for w, idx in by_weights.items():
        ads = [adapters[i] for i in idx]
        ids = encode_rows(base.tokenizer, ads, [texts[i] for i in idx], 1024)
        extra = [8 if op == "classify" else max_new] * len(idx)
        for rows in plan_batches(ads, ids, extra, window, 64):
            model = base.model if w == "base" else ads[rows[0]].model
            lm = MixedLM(model, hooks if w == "base" else None, [ads[r] for r in rows])
            if op == "classify":
                res = classify_rows(lm, base.tokenizer, [ids[r] for r in rows])
            else:
                res = generate_rows(lm, base.tokenizer, [ids[r] for r in rows], [max_new] * len(rows))
            for r, v in zip(rows, res):
                out[idx[r]] = v
    return out


def test_mixed_classification_batch_equals_one_at_a_time(kit):
    base, arts, ads = kit
    names = [n for n in ads if ads[n].task_type == "classification"]
    reference = {n: arts[n].scores(TEXTS) for n in names}  # each artifact alone, its own code path
    release(base)
    rows = [(n, i) for n in names for i in range(len(TEXTS))]
    rows = rows[::2] + rows[1::2]  # interleave adapters inside the batch
    hooks = LoraHooks(base.model)
    scores = _mixed(base, hooks, [ads[n] for n, _ in rows], [TEXTS[i] for _, i in rows], "classify")
    biggest = max(len(set(n for n, _ in rows)), 1)
    assert biggest >= 10  # the batch really mixes every kind
    for (n, i), s in zip(rows, scores):
        if ads[n].calibrate is not None:
            s = ads[n].calibrate(s.unsqueeze(0))[0]
        assert torch.allclose(s, reference[n][i], atol=1e-4), (n, TEXTS[i], s, reference[n][i])


def test_mixed_generation_batch_equals_one_at_a_time(kit):
    base, arts, ads = kit
    gen = [n for n in ads if ads[n].task_type == "generation"]
    reference = {n: arts[n].generate(TEXTS, max_new_tokens=5) for n in gen}
    release(base)
    plain = plain_adapter(base)
    plain_ref = [base.tokenizer.decode(s, skip_special_tokens=True).strip() for s in
                 _mixed(base, None, [plain] * len(TEXTS), TEXTS, "generate")]
    rows = [(n, i) for n in gen + ["plain"] for i in range(len(TEXTS))][::-1]
    adapters = [ads[n] if n != "plain" else plain for n, _ in rows]
    hooks = LoraHooks(base.model)
    seqs = _mixed(base, hooks, adapters, [TEXTS[i] for _, i in rows], "generate")
    for (n, i), seq in zip(rows, seqs):
        text = base.tokenizer.decode(seq, skip_special_tokens=True).strip()
        assert text == (reference[n][i] if n != "plain" else plain_ref[i]), (n, TEXTS[i])


def test_plan_batches_keeps_each_batch_inside_the_window():
    import dataclasses

    a = plain_adapter(build_tiny())
    ids = [[1] * 10, [1] * 12, [1] * 70, [1] * 70, [1] * 71]
    plans = plan_batches([a] * 5, ids, [4] * 5, window=64, max_batch=8)
    assert sorted(map(sorted, plans)) == [[0, 1], [2, 3], [4]]
    assert plan_batches([a] * 5, ids, [4] * 5, window=None, max_batch=2) == [[0, 1], [2, 3], [4]]
    # each row fits alone, but a 20-slot prefix row next to a 40-token row would make the batch 64+ wide
    p = dataclasses.replace(a, prefix=torch.zeros(2, 1, 20, 4))
    plans = plan_batches([p, a], [[1] * 5, [1] * 40], [8, 8], window=64, max_batch=8)
    assert sorted(map(sorted, plans)) == [[0], [1]]
    assert plan_batches([p, a], [[1] * 5, [1] * 30], [8, 8], window=64, max_batch=8) == [[0, 1]]
