"""Deterministic stratified splits and nested subsamples for learning curves.

Hand-written rather than sklearn's ``train_test_split`` for two properties we need and it lacks:
subsamples are *nested* (the 64-example subset contains the 16-example one, so a learning curve
measures more data, not different data), and generation data is split by *input group* so that
an input with several references never lands in two splits.
"""

from __future__ import annotations

import random
from collections import defaultdict

from adaptlab.data.loading import DataError, Example, TaskData


def _groups(data: TaskData) -> dict[str, list[Example]]:
    """Classification: one group per label. Generation: one group (inputs are kept together)."""
    groups: dict[str, list[Example]] = defaultdict(list)
    closed = data.spec.closed_labels
    for ex in data.examples:
        groups[ex.label if closed else ""].append(ex)
    return dict(groups)


def _allocate(n: int, fractions: dict[str, float]) -> dict[str, int]:
    """Largest-remainder allocation of ``n`` items to named fractions (sum of result == n)."""
    raw = {k: n * f for k, f in fractions.items()}
    out = {k: int(v) for k, v in raw.items()}
    rest = n - sum(out.values())
    for k in sorted(raw, key=lambda k: (raw[k] - out[k], -list(raw).index(k)), reverse=True)[:rest]:
        out[k] += 1
    return out


def stratified_split(data: TaskData, fractions: dict[str, float], seed: int = 0) -> dict[str, TaskData]:
    """Split into named parts (e.g. ``{"train": .8, "dev": .1, "test": .1}``), stratified by label.

    Deterministic for a given seed and input order. Every class with at least as many rows as
    there are parts gets at least one row in each part.
    """
    if not fractions or any(f < 0 for f in fractions.values()):
        raise DataError(f"split fractions must be non-negative, got {fractions}")
    total = sum(fractions.values())
    if abs(total - 1.0) > 1e-6:
        raise DataError(f"split fractions must sum to 1, got {total:g}")
    rng = random.Random(seed)
    parts: dict[str, list[Example]] = {k: [] for k in fractions}
    groups = _groups(data)
    for key in sorted(groups):
        members = groups[key]
        if not data.spec.closed_labels:
            # Keep every reference of one input in the same part.
            by_input: dict[str, list[Example]] = defaultdict(list)
            for ex in members:
                by_input[ex.text].append(ex)
            units = [by_input[t] for t in sorted(by_input)]
        else:
            units = [[ex] for ex in members]
        rng.shuffle(units)
        counts = _allocate(len(units), fractions)
        if len(units) >= len(fractions):
            # Give an empty non-zero part one unit from the largest part.
            for k in fractions:
                if fractions[k] > 0 and counts[k] == 0:
                    donor = max(counts, key=counts.get)
                    counts[donor] -= 1
                    counts[k] += 1
        start = 0
        for k in fractions:
            for unit in units[start : start + counts[k]]:
                parts[k].extend(unit)
            start += counts[k]
    # Stable order inside each part: original file order.
    order = {id(ex): i for i, ex in enumerate(data.examples)}
    return {
        k: data.with_examples(sorted(v, key=lambda ex: order[id(ex)]), source=f"{data.source}[{k}]")
        for k, v in parts.items()
    }


def curriculum_order(data: TaskData, seed: int = 0) -> list[Example]:
    """All examples in a seeded order whose every prefix is (nearly) stratified by label.

    Each class is shuffled, each member gets the key ``(rank + 0.5) / class_size``, and the
    examples are sorted by that key: prefixes interleave classes in proportion to their size.
    """
    rng = random.Random(seed)
    keyed = []
    groups = _groups(data)
    for ci, key in enumerate(sorted(groups)):
        members = list(groups[key])
        rng.shuffle(members)
        for rank, ex in enumerate(members):
            keyed.append(((rank + 0.5) / len(members), ci, ex))
    keyed.sort(key=lambda t: (t[0], t[1]))
    return [ex for _, _, ex in keyed]


def subsample(data: TaskData, n: int | None = None, per_class: int | None = None, seed: int = 0) -> TaskData:
    """``n`` examples in total or ``per_class`` examples of each class, nested across sizes."""
    if (n is None) == (per_class is None):
        raise DataError("subsample needs exactly one of n or per_class")
    if n is not None:
        if n <= 0:
            raise DataError(f"subsample size must be positive, got {n}")
        if n >= len(data):
            return data.with_examples(data.examples)
        chosen = curriculum_order(data, seed)[:n]
        tag = f"n={n}"
    else:
        if not data.spec.closed_labels:
            raise DataError("per_class subsampling needs a classification task")
        if per_class <= 0:
            raise DataError(f"per_class must be positive, got {per_class}")
        rng = random.Random(seed)
        chosen = []
        groups = _groups(data)
        for key in sorted(groups):
            members = list(groups[key])
            rng.shuffle(members)
            chosen.extend(members[:per_class])
        tag = f"per_class={per_class}"
    order = {id(ex): i for i, ex in enumerate(data.examples)}
    chosen.sort(key=lambda ex: order[id(ex)])
    return data.with_examples(chosen, source=f"{data.source}[{tag},seed={seed}]")


def dev_part(dev: TaskData | None, limit: int, seed: int) -> TaskData | None:
    """At most ``limit`` dev examples (stratified sample), or None when there is no dev data."""
    if dev is None or not len(dev) or limit <= 0:
        return None
    return subsample(dev, n=limit, seed=seed) if len(dev) > limit else dev
