"""Generation metrics: the reference ROUGE-L, MiniLM similarity, slot errors, JSON fields, the judge."""

import pytest

from adaptlab.evaluation.text_metrics import (
    JUDGE_RUBRIC,
    generation_scores,
    json_metrics,
    rouge_l,
    slot_error_rate,
    slot_errors,
    slots,
)


def test_rouge_l_is_the_reference_implementations():
    from rouge_score import rouge_scorer

    ref = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True).score("the cats were sitting", "the cat sat")
    assert rouge_l("the cat sat", "the cats were sitting") == pytest.approx(ref["rougeL"].fmeasure)
    assert rouge_l("The cats, sitting!", "the cat sits") == 1.0  # stemmed and tokenized like published numbers


def test_slots_and_slot_errors_on_a_viggo_meaning():
    mr = "inform(name[Super Bomberman], rating[average], genres[action, strategy], has_mac_release[no])"
    assert slots(mr) == [
        ("name", "Super Bomberman"),
        ("rating", "average"),
        ("genres", "action"),
        ("genres", "strategy"),
        ("has_mac_release", "no"),
    ]
    good = "Super Bomberman is an average action strategy game, not on Mac."
    assert slot_errors(mr, good) == (0, 4)  # yes/no slots are not checked
    assert slot_errors(mr, "Bomberman is a strategy game.") == (3, 4)
    assert slot_error_rate([mr, mr], [good, "Bomberman is a strategy game."]) == pytest.approx(3 / 8)
    assert slot_error_rate(["no slots here"], ["x"]) is None


def test_json_validity_and_field_accuracy():
    refs = [['{"city": "Paris", "n": 2}'], ['{"city": "Rome", "n": 1}']]
    m = json_metrics(['{"city": "Paris", "n": 3}', "not json"], refs)
    assert m == {"json_valid": 0.5, "json_field_accuracy": pytest.approx(0.25)}
    assert json_metrics(["x"], [["plain text"]]) is None


def test_generation_scores_with_embeddings_rows_and_task_checks():
    preds = ["Super Bomberman is an average game.", "totally unrelated words"]
    refs = [["Super Bomberman is an average action game."], ["Blue Spice is a coffee shop."]]
    inputs = ["inform(name[Super Bomberman], rating[average])", "inform(name[Blue Spice], eatType[coffee shop])"]
    corpus, rows = generation_scores(preds, refs, inputs)
    assert len(rows) == 2 and rows[0]["embed_sim"] > rows[1]["embed_sim"] and rows[0]["embed_sim"] > 0.8
    assert corpus["slot_error_rate"] == pytest.approx(2 / 4) and corpus["n"] == 2
    assert 0 < corpus["rouge_l"] < 1 and corpus["exact_match"] == 0 and 0 < corpus["chrf"] < 1
    assert "json_valid" not in corpus


def test_judge_through_an_openai_compatible_backend():
    from adaptlab.evaluation.text_metrics import judge

    class Echo:  # answers like a judge would: a grade, or words without one
        name = "fake-judge"

        def __init__(self):
            self.prompts = []

        def generate(self, prompts, max_new_tokens=4):
            self.prompts += prompts
            return ["5" if "Paris" in p.split("RESPONSE:")[1] else "no idea" for p in prompts]

    j = Echo()
    out = judge(j, ["capital of France?", "capital of Italy?"], ["Paris", "Milan"], [["Paris"], ["Rome"]])
    assert out["grades"] == [5, None] and out["judge_mean"] == 5 and out["unparsed"] == 1
    assert out["rubric"] == JUDGE_RUBRIC and "{rubric}" in out["prompt_template"] and JUDGE_RUBRIC in j.prompts[0]
