"""Paired statistics on stored per-row predictions: bootstrap intervals, exact McNemar, baselines."""

import numpy as np

from adaptlab.compare.baselines import imbalanced, ranking_metric
from adaptlab.compare.stats import Statistic, above_baseline, binom_two_sided, compare_runs, mcnemar_exact, row_key
from adaptlab.evaluation.metrics import classification_metrics
from adaptlab.tasks.classification import majority_and_chance as baselines

from .synthetic import rec, rows_of


def _right(n, wrong):
    return [0 if i in wrong else 1 for i in range(n)]


def test_exact_mcnemar_matches_the_binomial_tail():
    # 10 rows only a got right, 2 only b: p = 2 * P(X <= 2 | n=12, 1/2) = 2 * 79 / 4096.
    a = np.array([True] * 10 + [False] * 2 + [True] * 5)
    b = np.array([False] * 10 + [True] * 2 + [True] * 5)
    p, only_a, only_b = mcnemar_exact(a, b)
    assert (only_a, only_b) == (10, 2) and abs(p - 2 * 79 / 4096) < 1e-12
    assert binom_two_sided(3, 6) == 1.0 and binom_two_sided(0, 0) == 1.0


def test_identical_runs_differ_by_nothing_and_a_clear_gap_is_significant():
    right = _right(200, {1, 5, 9, 30})
    same = compare_runs([rec("lora", 64, 0.98, right=right)], [rec("full", 64, 0.98, right=right)])
    assert same.diff == 0 and same.lo == 0 and same.hi == 0 and not same.significant
    assert same.p_mcnemar == 1.0 and same.discordant == (0, 0)
    worse = _right(200, set(range(0, 200, 5)))  # 40 more mistakes, all on rows lora gets right
    d = compare_runs([rec("lora", 64, 0.98, right=right)], [rec("full", 64, 0.8, right=worse)])
    assert abs(d.diff - (196 - 160) / 200) < 1e-12 and d.lo > 0 and d.significant
    assert d.p_mcnemar < 1e-6 and d.n == 200


def test_a_small_difference_on_few_rows_is_not_significant():
    a = rec("lora", 64, 0.0, right=_right(60, {1, 2, 3, 4}))
    b = rec("full", 64, 0.0, right=_right(60, {1, 2, 3, 4, 5, 6}))
    d = compare_runs([a], [b])
    assert d.lo <= 0 <= d.hi and not d.significant and d.p_mcnemar == 0.5


def test_rows_are_paired_by_id_and_input_not_position():
    a = rec("lora", 64, 0.0, right=_right(50, {3}))
    b = rec("full", 64, 0.0, right=_right(50, {3}))
    b["predictions"] = list(reversed(b["predictions"]))  # same rows, another order
    d = compare_runs([a], [b])
    assert d.diff == 0 and d.discordant == (0, 0)
    b["predictions"] = b["predictions"][:20]  # only the shared rows count
    assert compare_runs([a], [b]).n == 20
    assert compare_runs([rec("lora", 64, 0.5)], [b]) is None  # no stored rows: nothing to pair
    assert row_key({"input": "x"}, 4) == (4, "x")


def test_seeds_widen_the_interval():
    one = compare_runs(
        [rec("lora", 64, 0, right=_right(300, set(range(0, 300, 10))))],
        [rec("full", 64, 0, right=_right(300, set(range(0, 300, 8))))],
    )
    noisy_b = [rec("full", 64, 0, seed=s, right=_right(300, set(range(s, 300, 4 + 6 * s)))) for s in range(2)]
    two = compare_runs([rec("lora", 64, 0, right=_right(300, set(range(0, 300, 10))))], noisy_b)
    assert (two.hi - two.lo) > (one.hi - one.lo)


def test_macro_f1_statistic_matches_the_metric_on_all_rows():
    rng = np.random.default_rng(1)
    labels = ["a", "b", "c"]
    rows = [{"reference": labels[int(rng.integers(3))], "output": labels[int(rng.integers(3))]} for _ in range(90)]
    st = Statistic("macro_f1", [rows], labels)
    expected = classification_metrics([r["reference"] for r in rows], [r["output"] for r in rows], labels)["macro_f1"]
    assert abs(st.full() - expected) < 1e-9


def test_baselines_and_the_ranking_metric():
    b = baselines(["pos"] * 70 + ["neg"] * 30, ["pos"] * 60 + ["neg"] * 40, ["neg", "pos"])
    assert b["majority_label"] == "pos" and b["majority_accuracy"] == 0.6 and b["chance_accuracy"] == 0.5
    assert imbalanced(b)
    balanced = baselines(["a", "b"] * 10, ["a", "b"] * 10, ["a", "b"])
    assert not imbalanced(balanced)
    # Three or more classes: imbalanced at 1.5x the uniform share.
    assert imbalanced(baselines(["a"], ["a"] * 5 + ["b"] * 3 + ["c"] * 2, ["a", "b", "c"]))
    assert not imbalanced(baselines(["a"], ["a"] * 4 + ["b"] * 3 + ["c"] * 3, ["a", "b", "c"]))
    recs = [rec("lora", 64, 0.7, baselines=b)]
    metric, why = ranking_metric(recs)
    assert metric == "macro_f1" and "60% of the test rows are 'pos'" in why
    assert ranking_metric([rec("lora", 64, 0.7, baselines=balanced)]) == ("accuracy", None)
    assert ranking_metric([rec("lora", 64, 0.7, generation=True)]) == ("rouge_l", None)


def test_a_run_that_answers_the_majority_class_is_not_above_it():
    # rows_of: references alternate a, b; answering 'a' everywhere is right on every even row.
    r = rec("lora", 64, 0.5, right=[i % 2 == 0 for i in range(100)])
    d = above_baseline([r], "a")
    assert d.diff == 0 and not d.significant
    good = rec("lora", 64, 0.9, right=_right(100, set(range(0, 100, 10))))
    assert above_baseline([good], "a").lo > 0
    assert rows_of([1, 0])[1]["output"] == "a"
