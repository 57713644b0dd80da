import json

import pytest

from adaptlab.data.loading import DataError, load_file
from adaptlab.data.validation import validate
from tests.conftest import write


def load(tmp_path, name, rows):
    return load_file(write(tmp_path / name, "".join(json.dumps(r) + "\n" for r in rows)))


def rows(pairs):
    return [{"text": t, "label": label} for t, label in pairs]


def test_single_class_is_an_error(tmp_path):
    train = load(tmp_path, "train.jsonl", rows([("a", "x"), ("b", "x")]))
    with pytest.raises(DataError, match=r"train\.jsonl: field 'label': only one class \('x'\)"):
        validate(train)


def test_eval_label_unseen_in_train(tmp_path):
    train = load(tmp_path, "train.jsonl", rows([("a", "x"), ("b", "y")]))
    dev = load(tmp_path, "dev.jsonl", rows([("c", "x"), ("d", "z")]))
    with pytest.raises(DataError, match=r"dev\.jsonl:2: field 'label': label 'z' does not occur in the train split"):
        validate(train, {"dev": dev})


def test_warnings_duplicates_leakage_conflicts_imbalance_length(tmp_path):
    train = load(
        tmp_path,
        "train.jsonl",
        rows([("a", "x")] * 2 + [("b", "y"), ("b", "x")] + [(f"t{i}", "x") for i in range(20)] + [("word " * 30, "y")]),
    )
    dev = load(tmp_path, "dev.jsonl", rows([("a", "x"), ("fresh", "y")]))
    report = validate(train, {"dev": dev}, max_tokens=10)
    text = "\n".join(report.warnings)
    assert "1 exact duplicate row(s) (first at line 2, duplicate of line 1)" in text
    assert "appear with different labels (first at line 4, conflicts with line 3)" in text
    assert "heavy class imbalance: 'x' has 23 rows, 'y' has 2" in text
    assert "1 input(s) longer than 10 words (longest 30 at line 25)" in text
    assert "dev.jsonl: 1 text(s) also in the train split (first at line 1" in text


def test_clean_data_has_no_warnings_and_stats(tmp_path, tiny):
    train = load(tmp_path, "train.jsonl", rows([("good", "pos"), ("bad", "neg"), ("great", "pos"), ("awful", "neg")]))
    report = validate(train, tokenizer=tiny.tokenizer)
    assert report.warnings == []
    s = report.splits[0]
    assert s.rows == 4 and s.class_counts == {"pos": 2, "neg": 2} and s.length_unit == "tokens"
    assert s.length_tokens["max"] == 5  # "great"/"awful": 5 bytes each in the byte-level tokenizer


def test_task_mismatch_between_splits(tmp_path):
    train = load(tmp_path, "train.jsonl", rows([("a", "x"), ("b", "y")]))
    gen = load_file(write(tmp_path / "g.jsonl", json.dumps({"input": "i", "target": "t"}) + "\n"))
    with pytest.raises(DataError, match="task is generation but the train split"):
        validate(train, {"dev": gen})
