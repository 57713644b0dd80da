from collections import Counter

import pytest

from adaptlab.data.loading import DataError, Example, TaskData
from adaptlab.data.splits import curriculum_order, stratified_split, subsample


def data(n_per_class=(40, 20, 8)):
    ex = [Example(f"{c}-{i}", c, i + 1) for c, n in zip("abc", n_per_class) for i in range(n)]
    return TaskData("classification", ex, "mem", label_names=["a", "b", "c"])


def test_stratified_split_is_deterministic_and_stratified():
    d = data()
    p1 = stratified_split(d, {"train": 0.8, "dev": 0.1, "test": 0.1}, seed=3)
    p2 = stratified_split(d, {"train": 0.8, "dev": 0.1, "test": 0.1}, seed=3)
    assert [e.text for e in p1["train"].examples] == [e.text for e in p2["train"].examples]
    assert p1["train"].labels == ["a", "b", "c"]
    assert Counter(e.label for e in p1["train"].examples) == {"a": 32, "b": 16, "c": 6}
    assert Counter(e.label for e in p1["test"].examples) == {"a": 4, "b": 2, "c": 1}
    all_texts = [e.text for p in p1.values() for e in p.examples]
    assert sorted(all_texts) == sorted(e.text for e in d.examples)  # a partition
    p3 = stratified_split(d, {"train": 0.8, "dev": 0.1, "test": 0.1}, seed=4)
    assert [e.text for e in p3["train"].examples] != [e.text for e in p1["train"].examples]


def test_generation_split_keeps_input_groups_together():
    ex = [Example(f"mr{i // 3}", f"ref{i}", i) for i in range(60)]
    parts = stratified_split(TaskData("generation", ex, "g"), {"train": 0.5, "test": 0.5}, seed=0)
    assert not {e.text for e in parts["train"].examples} & {e.text for e in parts["test"].examples}


def test_bad_fractions():
    with pytest.raises(DataError, match="sum to 1"):
        stratified_split(data(), {"train": 0.5, "dev": 0.1})


def test_subsample_nested_and_stratified():
    d = data()
    small, big = subsample(d, n=8, seed=1), subsample(d, n=34, seed=1)
    assert {e.text for e in small.examples} <= {e.text for e in big.examples}
    assert Counter(e.label for e in big.examples) == {"a": 20, "b": 10, "c": 4}
    assert len(curriculum_order(d, seed=1)) == len(d)
    pc = subsample(d, per_class=5, seed=1)
    assert Counter(e.label for e in pc.examples) == {"a": 5, "b": 5, "c": 5}
    assert {e.text for e in pc.examples} <= {e.text for e in subsample(d, per_class=7, seed=1).examples}
    assert len(subsample(d, per_class=100, seed=1)) == len(d)


def test_subsample_argument_errors():
    with pytest.raises(DataError):
        subsample(data(), n=5, per_class=2)
    with pytest.raises(DataError, match="positive"):
        subsample(data(), n=0)
