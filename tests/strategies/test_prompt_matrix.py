"""One matrix over every registered hard-prompt strategy, plus their specific guarantees (tiny model)."""

import pytest
import torch

from adaptlab.backends import LocalBackend
from adaptlab.data.loading import Example, TaskData
from adaptlab.models.base import FingerprintMismatch
from adaptlab.models.tiny import build_tiny
from adaptlab.strategies import Artifact, get_strategy, list_strategies, make_config
from adaptlab.strategies.prompting import PromptArtifact

WORDS = ["apple", "pear", "plum", "fig", "kiwi", "lime", "kale", "leek", "okra", "corn", "bean", "pea"]
LABELS = ["fruit"] * 6 + ["veg"] * 6
TRAIN = TaskData(
    "classification",
    [Example(f"item {w}", lab, i + 1) for i, (w, lab) in enumerate(zip(WORDS, LABELS))],
    "train",
    label_names=["fruit", "veg"],
)
DEV = TaskData(
    "classification",
    [Example(f"a {w}", lab, i + 1) for i, (w, lab) in enumerate(zip(WORDS, LABELS))],
    "dev",
    label_names=["fruit", "veg"],
)
TEXTS = [ex.text for ex in DEV.examples]
PROMPT = list_strategies("prompt")
SMALL = {
    "prompt_search": {"budget_calls": 60, "first_round": 4, "exemplar_sets": 1, "bootstrap": 6},
    "few_shot": {"k": 2},
    "gepa": {"budget_calls": 40, "val_examples": 4, "minibatch": 2, "k": 2, "proposer_max_tokens": 16},
}


@pytest.fixture(scope="module")
def base():
    return build_tiny()


def fit(name, base, **cfg):
    strat = get_strategy(name).strategy_cls(make_config(name, **{**SMALL.get(name, {}), **cfg}))
    return strat.fit(base, TRAIN, DEV)


def test_registry_has_the_prompt_strategies():
    assert {"zero_shot", "few_shot", "prompt_search"} <= set(PROMPT)


@pytest.mark.parametrize("name", PROMPT)
def test_fit_save_load_identical_predictions_and_fingerprint_refusal(name, base, tmp_path):
    art = fit(name, base)
    assert isinstance(art, PromptArtifact)
    assert set(art.predict(TEXTS)) <= {"fruit", "veg"}
    assert "dev" in art.metrics
    before = art.scores(TEXTS)
    # predict() takes the backend's top-1 search; it must answer what every label's score says.
    assert art.predict(TEXTS) == [art.labels[i] for i in before.argmax(1).tolist()]
    folder = art.save(tmp_path / name)
    again = Artifact.load(folder, base)
    assert torch.allclose(again.scores(TEXTS), before, atol=1e-6)
    assert again.predict(TEXTS) == art.predict(TEXTS)
    with pytest.raises(FingerprintMismatch, match="was made for base model"):
        Artifact.load(folder, build_tiny(seed=1))


@pytest.mark.parametrize("name", PROMPT)
def test_calibrated_round_trip(name, base, tmp_path):
    art = fit(name, base, calibrate=True)
    assert art.calibration is not None and len(art.calibration) == 2
    again = Artifact.load(art.save(tmp_path / name), base)
    assert again.calibration == art.calibration
    assert torch.allclose(again.scores(TEXTS), art.scores(TEXTS), atol=1e-6)
    assert art.predict(TEXTS) == [art.labels[i] for i in art.scores(TEXTS).argmax(1).tolist()]


def test_calibration_makes_the_content_free_input_uniform(base):
    art = fit("zero_shot", base, calibrate=True, content_free=["N/A"])
    raw = art.raw_scores(["N/A"])
    p_raw = torch.softmax(raw, -1)
    assert torch.allclose(torch.tensor(art.calibration, dtype=p_raw.dtype), p_raw[0], atol=1e-6)
    cal = torch.softmax(art.scores(["N/A"]), -1)
    assert torch.allclose(cal, torch.full_like(cal, 0.5), atol=1e-5)
    # and on other inputs it divides by p_cf exactly: calibrated = log_softmax(raw) - log p_cf
    raw2 = art.raw_scores(TEXTS)
    expect = torch.log_softmax(raw2, -1) - torch.log(torch.tensor(art.calibration, dtype=raw2.dtype))
    assert torch.allclose(art.scores(TEXTS), expect, atol=1e-6)


@pytest.mark.parametrize("selection", ["random", "balanced", "nearest"])
def test_few_shot_selection_and_no_leak(selection, base):
    art = fit("few_shot", base, k=3, selection=selection)
    train_texts = [ex.text for ex in TRAIN.examples]
    shown = art.exemplars_for(train_texts)  # evaluate on the very examples exemplars come from
    for t, ex in zip(train_texts, shown):
        assert len(ex) == 3
        assert t not in [x for x, _ in ex], f"{t!r} is its own exemplar"
        assert all(x in train_texts for x, _ in ex)
    for t, p in zip(train_texts, art.prompts(train_texts)):
        assert p.count(f"Text: {t}\n") == 1  # only as the query
    if selection == "balanced":
        assert {lab for _, lab in art.exemplars} == {"fruit", "veg"}


def test_few_shot_order_is_fixed_by_seed(base):
    a = fit("few_shot", base, k=4, selection="random", seed=3).exemplars
    b = fit("few_shot", base, k=4, selection="random", seed=3).exemplars
    c = fit("few_shot", base, k=4, selection="random", seed=4).exemplars
    assert a == b and a != c


def test_nearest_neighbours_pick_similar_inputs(base):
    art = fit("few_shot", base, k=2, selection="nearest")
    emb = art.pool_embeddings
    assert emb.shape[0] == len(TRAIN) and torch.allclose(emb.norm(dim=1), torch.ones(len(TRAIN)), atol=1e-5)
    q = art.backend.embed(["item apple"])
    best = (q @ emb.T).argsort(descending=True)[0].tolist()
    expected = [art.pool[j] for j in best if art.pool[j][0] != "item apple"][:2][::-1]
    assert art.exemplars_for(["item apple"])[0] == expected


@pytest.mark.parametrize("budget", [7, 23, 60, 151])
def test_prompt_search_respects_its_call_budget_exactly(budget, base):
    backend = LocalBackend(base)
    strat = get_strategy("prompt_search").strategy_cls(
        make_config(
            "prompt_search",
            budget_calls=budget,
            first_round=2,
            exemplar_sets=2,
            k=2,
            bootstrap=4,
            calibrate=True,
            content_free=["N/A"],
            dev_limit=50,
        )
    )
    art = strat.fit(backend, TRAIN, DEV)
    used = art.metrics["search"]["calls_used"]
    assert used == backend.calls <= budget
    assert budget - used < 30  # it spends what it was given
    assert art.trace and art.trace[-1]["calls_used"] <= budget
    # The compare's cost model counts the search's prompt starts (one per candidate and slice it
    # scores) and its rows scored against every label (bootstrap, calibration) as the search made them.
    slices = sum(1 for t in art.trace if t["step"].startswith("round-"))
    boot = sum(t["train_scored"] for t in art.trace if t["step"] == "bootstrap")
    calibrated = {t["candidate"] for t in art.trace if t["step"] == "round-0"}
    full = boot + len(calibrated) * len(strat.config.content_free)
    planned = strat.planned_extra_work(strat.config, "classification", train_rows=len(TRAIN), dev_rows=len(DEV))
    assert planned == (slices, full), art.trace


def test_prompt_search_budget_too_small_is_a_clear_error(base):
    strat = get_strategy("prompt_search").strategy_cls(
        make_config("prompt_search", budget_calls=1, bootstrap=0, calibrate=True, content_free=["N/A", "x"])
    )
    with pytest.raises(ValueError, match="budget_calls=1 cannot score a single candidate"):
        strat.fit(base, TRAIN, DEV)


def test_prompt_search_trace_and_user_instructions(base, tmp_path):
    f = tmp_path / "instr.txt"
    f.write_text("Is it a fruit or a veg? Options: {labels}.\n\n")
    art = fit(
        "prompt_search",
        base,
        builtin_instructions=False,
        instructions=["Label it: {labels}."],
        instructions_file=str(f),
        budget_calls=200,
    )
    s = art.metrics["search"]
    assert s["instructions"] == 2
    assert {r["instruction"] for r in art.trace if "instruction" in r} <= {
        "Label it: {labels}.",
        "Is it a fruit or a veg? Options: {labels}.",
    }
    assert art.template.instruction == s["best"]["instruction"]


@pytest.mark.parametrize(
    "kw,msg",
    [
        ({"k": 0}, "k=0: must be a positive integer"),
        ({"selection": "best"}, "selection='best'"),
        ({"calibrate": True, "content_free": []}, "needs at least one content_free"),
    ],
)
def test_few_shot_bad_config(kw, msg):
    with pytest.raises(ValueError, match=msg):
        make_config("few_shot", **kw)


def test_prompt_search_bad_config():
    with pytest.raises(ValueError, match="budget_calls=0"):
        make_config("prompt_search", budget_calls=0)
    with pytest.raises(ValueError, match="no instruction candidates"):
        make_config("prompt_search", builtin_instructions=False)


def test_few_shot_on_generation(base):
    gen = TaskData("generation", [Example(f"say {w}", w.upper(), i + 1) for i, w in enumerate(WORDS)], "gen")
    art = get_strategy("few_shot").strategy_cls(make_config("few_shot", k=2)).fit(base, gen, gen)
    out = art.predict(["say fig"])
    assert isinstance(out[0], str)
    assert "rouge_l" in art.metrics["dev"]
    with pytest.raises(ValueError, match="classification tasks only"):
        get_strategy("few_shot").strategy_cls(make_config("few_shot", calibrate=True)).fit(base, gen, gen)


def test_a_hard_prompt_answer_ends_where_the_next_exemplar_would_start():
    """Found by the ViGGO gallery: few-shot answers ran on into 'Input: ... Output: ...'."""
    from adaptlab.data.loading import Example, TaskData
    from adaptlab.models.tiny import build_tiny
    from adaptlab.prompts import builtin_template
    from adaptlab.strategies import get_strategy, make_config
    from adaptlab.strategies.prompting import answer_stops

    assert answer_stops(builtin_template("generation", "input-output")) == ["\nInput:"]
    assert answer_stops(builtin_template("chat", "conversation")) == []
    gen = TaskData("generation", [Example(f"say {w}", w, i + 1) for i, w in enumerate(["ab", "cd", "ef"])], "g")
    art = get_strategy("few_shot").strategy_cls(make_config("few_shot", k=2)).fit(build_tiny(), gen)
    assert art.decoding["stop"] == ["\nInput:"]
    free = art.backend.generate(art.prompts(["say ab"]), max_new_tokens=40, stop=[])[0]
    cut = art.generate(["say ab"], max_new_tokens=40)[0]
    assert "\nInput:" not in cut and free.startswith(cut)
