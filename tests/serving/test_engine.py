"""Mixed batches give the numbers each artifact gives on its own, for every adaptation kind."""

import pytest
import torch

from adaptlab.models.adaptation import Contribution
from adaptlab.models.tiny import build_tiny
from adaptlab.serving.adapters import from_artifact, plain_adapter
from adaptlab.serving.engine import (
    build_lead,
    classify_rows,
    encode_rows,
    generate_rows,
    mixed_lm,
    plan_batches,
    with_leads,
)
from adaptlab.strategies import Artifact

from .kit import KINDS, TEXTS, build_all


@pytest.fixture(scope="module", params=["gemma", "llama"])  # the two base model families
def kit(request, tmp_path_factory):
    base = build_tiny(arch=request.param)
    folders = build_all(base, tmp_path_factory.mktemp("kit"))
    arts = {n: Artifact.load(f, base) for n, f in folders.items()}
    ads = {n: from_artifact(Artifact.load(f, base), n, n) for n, f in folders.items()}
    return base, arts, ads


def test_every_kind_is_in_the_kit():
    from adaptlab.strategies import list_strategies

    assert {s for _, s, _, _ in KINDS} == set(list_strategies())


def _mixed(base, adapters, texts, op, max_new=5, leads=False, hits=None):
    """Run rows through the engine the way the server does: split by weights, (static leads,)
    then plan_batches. ``hits`` collects the names of rows that ran on a lead."""
    out = [None] * len(texts)
    by_weights = {}
    for i, a in enumerate(adapters):
        by_weights.setdefault(a.weights, []).append(i)
    window = getattr(base.model.config, "sliding_window", None)
    for w, idx in by_weights.items():
        ads = [adapters[i] for i in idx]
        ids = encode_rows(base.tokenizer, ads, [texts[i] for i in idx], 1024)
        extra = [8 if op == "classify" else max_new] * len(idx)
        model = base.model if w == "base" else ads[0].model
        if leads:
            for ad in {a.key: a for a in ads}.values():
                ad.lead = build_lead(model, base.tokenizer, ad, window, 1024, min_tokens=1)
                ad.lead_built = True
            full = ads
            ads, ids = with_leads(ads, ids)
            if hits is not None:
                hits.extend(a.name for a, f in zip(ads, full) if a is not f)
        for rows in plan_batches(ads, ids, extra, window, 64):
            lm = mixed_lm(model, [ads[r] for r in rows])
            if op == "classify":
                res = classify_rows(lm, base.tokenizer, [ids[r] for r in rows], [ads[r] for r in rows])
            else:
                res = [
                    d.tokens for d in generate_rows(lm, base.tokenizer, [ids[r] for r in rows], [max_new] * len(rows))
                ]
            for r, v in zip(rows, res):
                out[idx[r]] = v
    return out


@pytest.fixture(params=[False, True], ids=["no-leads", "leads"])
def leads(request, kit):
    yield request.param
    for ad in kit[2].values():
        ad.lead, ad.lead_built = None, False


def test_mixed_classification_batch_equals_one_at_a_time(kit, leads):
    base, arts, ads = kit
    names = [n for n in ads if ads[n].task_type == "classification"]
    reference = {n: arts[n].scores(TEXTS) for n in names}  # each artifact alone, its own code path
    rows = [(n, i) for n in names for i in range(len(TEXTS))]
    rows = rows[::2] + rows[1::2]  # interleave adapters inside the batch
    hits = []
    scores = _mixed(base, [ads[n] for n, _ in rows], [TEXTS[i] for _, i in rows], "classify", leads=leads, hits=hits)
    biggest = max(len(set(n for n, _ in rows)), 1)
    assert biggest >= 10  # the batch really mixes every kind
    for (n, i), s in zip(rows, scores):
        if ads[n].calibrate is not None:
            s = ads[n].calibrate(s.unsqueeze(0))[0]
        assert torch.allclose(s, reference[n][i], atol=1e-4), (n, TEXTS[i], s, reference[n][i])
    if leads:  # every adapter with a lead used it (a lead longer than the 64-slot window is not kept)
        with_lead = {n for n in names if ads[n].lead is not None}
        assert set(hits) == with_lead
        assert {"soft", "prefix", "lora", "full", "hybrid"} <= with_lead, set(names) - with_lead  # hard prompts: below


def test_mixed_generation_batch_equals_one_at_a_time(kit, leads):
    base, arts, ads = kit
    gen = [n for n in ads if ads[n].task_type == "generation"]
    reference = {n: arts[n].generate(TEXTS, max_new_tokens=5) for n in gen}
    plain = plain_adapter(base)
    plain_ref = [
        base.tokenizer.decode(s, skip_special_tokens=True).strip()
        for s in _mixed(base, [plain] * len(TEXTS), TEXTS, "generate")
    ]
    rows = [(n, i) for n in gen + ["plain"] for i in range(len(TEXTS))][::-1]
    adapters = [ads[n] if n != "plain" else plain for n, _ in rows]
    hits = []
    seqs = _mixed(base, adapters, [TEXTS[i] for _, i in rows], "generate", leads=leads, hits=hits)
    if leads:
        assert hits
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
    p = dataclasses.replace(a, contribution=Contribution(prefix=torch.zeros(2, 1, 20, 4)))
    plans = plan_batches([p, a], [[1] * 5, [1] * 40], [8, 8], window=64, max_batch=8)
    assert sorted(map(sorted, plans)) == [[0], [1]]
    assert plan_batches([p, a], [[1] * 5, [1] * 30], [8, 8], window=64, max_batch=8) == [[0, 1]]


def test_generation_batches_pad_rather_than_repeat_decode_steps():
    """Rows of different lengths: one scored pass splits them past 25% padding; a generation batch
    keeps them together until the padding costs more than another batch's decode steps would."""
    from adaptlab.serving.engine import STEP_POSITIONS

    a = plain_adapter(build_tiny())
    ids = [[1] * n for n in (20, 22, 24, 26, 40, 44)]
    assert len(plan_batches([a] * 6, ids, [2] * 6, window=None, max_batch=8)) == 2
    assert plan_batches([a] * 6, ids, [16] * 6, window=None, max_batch=8, decode=True) == [[0, 1, 2, 3, 4, 5]]
    far = ids[:4] + [[1] * (26 + STEP_POSITIONS * 2 + 10)]  # wastes more than 4 rows' worth of 2 steps
    assert len(plan_batches([a] * 5, far, [2] * 5, window=None, max_batch=8, decode=True)) == 2


def test_hard_prompt_leads_give_the_same_scores_and_are_checked_per_row():
    """Instruction + fixed exemplars run once per adaptation; a row whose tokens do not start with
    the lead (a template that tokenizes differently at the input) falls back to its full prompt."""
    from adaptlab.strategies import get_strategy, make_config

    from .kit import FOOD, MOOD

    base = build_tiny(sliding_window=512)  # the char-level tiny prompts are longer than the default window
    arts = {
        "zs": ("zero_shot", FOOD, {}),
        "fs": ("few_shot", MOOD, {"k": 2, "calibrate": True}),
        "fs-nn": ("few_shot", MOOD, {"k": 2, "selection": "nearest"}),
    }
    ads, refs = {}, {}
    for n, (strategy, data, over) in arts.items():
        art = get_strategy(strategy).strategy_cls(make_config(strategy, **over)).fit(base, data, None)
        refs[n] = art.scores(TEXTS)
        ads[n] = from_artifact(art, n, n)
    rows = [(n, i) for i in range(len(TEXTS)) for n in ads]
    hits = []
    scores = _mixed(base, [ads[n] for n, _ in rows], [TEXTS[i] for _, i in rows], "classify", leads=True, hits=hits)
    for (n, i), s in zip(rows, scores):
        if ads[n].calibrate is not None:
            s = ads[n].calibrate(s.unsqueeze(0))[0]
        assert torch.allclose(s, refs[n][i], atol=1e-4), (n, TEXTS[i])
    assert sorted(set(hits)) == ["fs", "fs-nn", "zs"]
    # the instruction only, for nearest-neighbour exemplars (they change with the input)
    assert len(ads["fs-nn"].lead.ids) < len(ads["fs"].lead.ids)
    # a row whose tokens differ inside the lead keeps its whole prompt
    lead = ads["zs"].lead
    wrong = lead.ids[:-1] + [lead.ids[-1] + 1] + [5, 6]
    (ad,), (x,) = with_leads([ads["zs"]], [wrong])
    assert ad is ads["zs"] and x == wrong
    (ad,), (x,) = with_leads([ads["zs"]], [lead.ids])  # nothing left after the lead: no room for a row
    assert ad is ads["zs"]
    (ad,), (x,) = with_leads([ads["zs"]], [lead.ids + [7]])
    assert ad is lead.view and x == [7] and ad.contribution.prefix.shape[2] == len(lead.ids)


def test_no_lead_when_it_is_too_short_or_too_long():
    base = build_tiny()
    plain = plain_adapter(base)
    assert build_lead(base.model, base.tokenizer, plain, 64, 1024) is None  # prompts pass through as they are
    import dataclasses

    long = dataclasses.replace(plain, render=lambda texts: ["x" * 80 + t for t in texts])
    assert build_lead(base.model, base.tokenizer, long, 64, 1024) is None  # 80 tokens > the 64 window
    assert build_lead(base.model, base.tokenizer, long, None, 1024) is None  # the layers themselves keep 64
    wide = build_tiny(sliding_window=512)
    lead = build_lead(wide.model, wide.tokenizer, long, 512, 1024)
    assert lead.ids == wide.tokenizer("x" * 80)["input_ids"][:-1] and lead.view.contribution.prefix.shape[2] == len(
        lead.ids
    )


def test_a_batch_gathers_while_requests_keep_coming():
    """Requests 40 ms apart, 8 of them (280 ms in all) join one batch when the quiet gap is 200 ms:
    a fixed 200 ms window would have cut them in two. A lone request waits only the gap."""
    import threading
    import time

    from adaptlab.serving import ServeConfig, Service
    from adaptlab.serving.service import Work

    base = build_tiny()
    service = Service(base, None, ServeConfig(max_batch=16, max_wait_ms=200, max_gather_ms=3000))
    try:
        plain = service.lanes[0].plain
        futures = []

        def client():
            for i in range(8):
                futures.append(service.submit(Work("generate", plain, f"row {i}", max_new=1)))
                time.sleep(0.04)

        t = threading.Thread(target=client)
        t.start()
        t.join()
        for f in futures:
            f.result(timeout=60)
        assert service.batches == 1
        time.sleep(3.2)  # longer than max_gather after the answers: nobody is expected back
        t0 = time.monotonic()
        service.submit(Work("generate", plain, "alone", max_new=1)).result(timeout=60)
        assert service.batches == 2 and time.monotonic() - t0 < 2.5
    finally:
        service.close()


def test_the_clients_just_answered_are_awaited_even_when_they_come_back_slower_than_the_gap():
    """A batch of 4 answered; its 4 clients come back 300 ms apart, more than the 100 ms gap: they
    still make one batch (the batch waits for as many rows as it answered, up to max_gather)."""
    import time

    from adaptlab.serving import ServeConfig, Service
    from adaptlab.serving.service import Work

    base = build_tiny()
    service = Service(base, None, ServeConfig(max_batch=16, max_wait_ms=100, max_gather_ms=3000))
    try:
        plain = service.lanes[0].plain
        first = [service.submit(Work("generate", plain, f"row {i}", max_new=1)) for i in range(4)]
        for f in first:
            f.result(timeout=60)
        assert service.batches == 1
        again = []
        for i in range(4):
            again.append(service.submit(Work("generate", plain, f"again {i}", max_new=1)))
            time.sleep(0.3)
        for f in again:
            f.result(timeout=60)
        assert service.batches == 2
    finally:
        service.close()
