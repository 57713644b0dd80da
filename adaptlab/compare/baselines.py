"""Reading results against their floor: the ranking metric turns to macro-F1 on imbalanced data.

A strategy at 0.56 accuracy looks like a result until one sees that 55% of the test rows are one
class. Each run records the baselines of its test set (the task type's own:
:meth:`adaptlab.tasks.base.TaskSpec.baselines`; for a label set, the majority class and chance), the
report and the recommendation carry them next to zero-shot, and :func:`ranking_metric` ranks by
macro-F1 where accuracy rewards answering the big class.
"""

from __future__ import annotations

from adaptlab.compare.record import records_of

# Imbalanced: the largest class holds at least this share of the test rows (binary), or at least
# IMBALANCE_RATIO times its uniform share 1/K (three or more classes).
IMBALANCE_SHARE = 0.55
IMBALANCE_RATIO = 1.5


def imbalanced(b: dict) -> bool:
    if not b:
        return False
    k, share = b["n_labels"], b["largest_share"]
    return share >= IMBALANCE_SHARE if k <= 2 else share >= IMBALANCE_RATIO / k


def ranking_metric(records: list) -> tuple[str, str | None]:
    """The metric the recommendation ranks by, and why when it is not the task's default.

    Classification: accuracy, or macro-F1 when the test set is imbalanced; generation: ROUGE-L."""
    if not records:
        return "accuracy", None
    records = records_of(records)
    metric = records[0].metric
    if metric != "accuracy":
        return metric, None
    b = records[0].baselines
    if imbalanced(b) and all(r.test.get("macro_f1") is not None for r in records):
        why = (
            f"ranked by macro-F1, not accuracy: {100 * b['largest_share']:.0f}% of the test rows are "
            f"'{b['largest_class']}', so answering that class alone scores {b['largest_share']:.3f} accuracy"
        )
        return "macro_f1", why
    return "accuracy", None
