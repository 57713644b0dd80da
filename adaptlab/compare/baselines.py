"""The floor every classification result is read against: the majority class and chance.

A strategy at 0.56 accuracy looks like a result until one sees that 55% of the test rows are one
class. Each run records the baselines of its test set (:func:`baselines`), and the report and the
recommendation carry them next to zero-shot; the ranking metric turns to macro-F1 on imbalanced
data (:func:`ranking_metric`), where accuracy rewards answering the big class.
"""

from __future__ import annotations

import collections

# Imbalanced: the largest class holds at least this share of the test rows (binary), or at least
# IMBALANCE_RATIO times its uniform share 1/K (three or more classes).
IMBALANCE_SHARE = 0.55
IMBALANCE_RATIO = 1.5


def baselines(train_labels: list[str], test_labels: list[str], labels: list[str]) -> dict:
    """Majority class, chance (1/K: a uniform random guess), and the test split's largest class share,
    all on the test rows.

    The majority class is the train split's most frequent label, which is what a model that learned
    only the label prior would answer, unless the test rows' largest class is another one (their
    distributions differ): then it is the test rows' largest class, so that the baseline is the
    accuracy of answering the test rows' most common class, and ``majority_note`` says so."""
    if not test_labels:
        return {}
    train_counts = collections.Counter(train_labels or test_labels)
    train_major = max(sorted(train_counts), key=lambda lab: train_counts[lab])
    test_counts = collections.Counter(test_labels)
    top_label, top = test_counts.most_common(1)[0]
    majority, note = train_major, None
    if test_counts[train_major] < top:
        majority = top_label
        note = (f"the test rows' largest class '{top_label}' ({top} of {len(test_labels)}), not the train "
                f"split's '{train_major}' ({test_counts[train_major]} test rows): their label distributions differ")
    k = max(1, len(labels))
    return {"majority_label": majority, "majority_accuracy": test_counts[majority] / len(test_labels),
            "chance_accuracy": 1 / k, "n_labels": k, "largest_class": top_label,
            "largest_share": top / len(test_labels), "test_n": len(test_labels), "majority_note": note}


def imbalanced(b: dict) -> bool:
    if not b:
        return False
    k, share = b["n_labels"], b["largest_share"]
    return share >= IMBALANCE_SHARE if k <= 2 else share >= IMBALANCE_RATIO / k


def ranking_metric(records: list[dict]) -> tuple[str, str | None]:
    """The metric the recommendation ranks by, and why when it is not the task's default.

    Classification: accuracy, or macro-F1 when the test set is imbalanced; generation: ROUGE-L."""
    if not records:
        return "accuracy", None
    metric = records[0]["eval"]["metric"]
    if metric != "accuracy":
        return metric, None
    b = records[0]["eval"].get("baselines") or {}
    if imbalanced(b) and all(r["eval"]["test"].get("macro_f1") is not None for r in records):
        why = (f"ranked by macro-F1, not accuracy: {100 * b['largest_share']:.0f}% of the test rows are "
               f"'{b['largest_class']}', so answering that class alone scores {b['largest_share']:.3f} accuracy")
        return "macro_f1", why
    return "accuracy", None
