"""Quality metrics. Classification: accuracy and macro-F1 over the declared label set."""

from __future__ import annotations


def accuracy(gold: list[str], pred: list[str]) -> float:
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold labels but {len(pred)} predictions")
    if not gold:
        raise ValueError("accuracy of an empty set is undefined")
    return sum(g == p for g, p in zip(gold, pred)) / len(gold)


def macro_f1(gold: list[str], pred: list[str], labels: list[str] | None = None) -> float:
    """Unweighted mean of per-class F1 over ``labels`` (default: classes present in gold).

    A class that is never predicted and never gold is skipped; one that is gold but never
    predicted scores 0, which is what makes macro-F1 honest under imbalance.
    """
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold labels but {len(pred)} predictions")
    labels = labels if labels is not None else sorted(set(gold))
    f1s = []
    for c in labels:
        tp = sum(g == c and p == c for g, p in zip(gold, pred))
        fp = sum(g != c and p == c for g, p in zip(gold, pred))
        fn = sum(g == c and p != c for g, p in zip(gold, pred))
        if tp + fp + fn == 0:
            continue
        f1s.append(2 * tp / (2 * tp + fp + fn))
    return sum(f1s) / len(f1s) if f1s else 0.0


def classification_metrics(gold: list[str], pred: list[str], labels: list[str] | None = None) -> dict[str, float]:
    return {"accuracy": accuracy(gold, pred), "macro_f1": macro_f1(gold, pred, labels), "n": len(gold)}
