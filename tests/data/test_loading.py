import json

import pytest

from adaptlab.data.loading import DataError, load_file
from tests.conftest import write


def jsonl(rows):
    return "".join(json.dumps(r) + "\n" for r in rows)


GOOD = [{"text": "good film", "label": "pos"}, {"text": "bad film", "label": "neg"}]


def test_jsonl_classification_detected(tmp_path):
    d = load_file(write(tmp_path / "t.jsonl", jsonl(GOOD)))
    assert d.task == "classification"
    assert [(e.text, e.label, e.line) for e in d.examples] == [("good film", "pos", 1), ("bad film", "neg", 2)]


def test_generation_detected(tmp_path):
    d = load_file(write(tmp_path / "g.jsonl", jsonl([{"input": "a[b]", "target": "A is b."}])))
    assert d.task == "generation" and d.examples[0].label == "A is b."


def test_csv_and_tsv_with_mapped_columns(tmp_path):
    d = load_file(write(tmp_path / "t.csv", 'sentence,sentiment\n"hi, there",pos\nugh,neg\n'),
                  text_field="sentence", label_field="sentiment")
    assert d.task == "classification" and d.examples[0].text == "hi, there" and d.examples[1].line == 3
    d = load_file(write(tmp_path / "t.tsv", "text\tlabel\nfine\tpos\nawful\tneg\n"))
    assert [e.label for e in d.examples] == ["pos", "neg"]


def test_csv_multiline_field_keeps_line_numbers(tmp_path):
    p = write(tmp_path / "t.csv", 'text,label\n"two\nlines",pos\nok,\n')
    with pytest.raises(DataError, match=r"t\.csv:4: field 'label' is empty"):
        load_file(p)


@pytest.mark.parametrize("content, message", [
    ('{"text": "a", "label": "x"}\n{"text": "b", "label": \n', r":2: malformed JSON"),
    ('{"text": "a", "label": "x"}\n["a", "b"]\n', r":2: expected a JSON object, got list"),
    ('{"text": "a"}\n', r":1: missing field 'label' \(fields present: 'text'\)"),
    ('{"text": "", "label": "x"}\n', r":1: field 'text' is empty"),
    ('{"text": "a", "label": "  "}\n', r":1: field 'label' is empty"),
    ('{"text": "a", "label": 3}\n', r":1: field 'label' must be a string, got int 3; write class names"),
    ('{"text": ["a"], "label": "x"}\n', r":1: field 'text' must be a string, got list"),
    ('\n\n  \n', r"file is empty"),
])
def test_jsonl_errors_name_file_line_field(tmp_path, content, message):
    p = write(tmp_path / "bad.jsonl", content)
    with pytest.raises(DataError, match=message) as e:
        load_file(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("name, content, message", [
    ("e.csv", "", r"e\.csv: file is empty"),
    ("h.csv", "text,label\n", r"header but no examples"),
    ("m.csv", "text,category\nhello,a\n", r"m\.csv:2: missing field 'label' \(fields present: 'text', 'category'\)"),
    ("x.csv", "text,label\na,b,c\n", r"x\.csv:2: 3 cells but the header has 2 columns"),
    ("d.csv", "text,text,label\na,b,c\n", r"duplicate column"),
    ("u.txt", "whatever", r"unsupported file type '\.txt'"),
])
def test_delimited_errors(tmp_path, name, content, message):
    p = tmp_path / name
    p.write_text(content)
    with pytest.raises(DataError, match=message):
        load_file(p)


def test_missing_file_and_bad_encoding(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_file(tmp_path / "nope.jsonl")
    p = tmp_path / "latin.jsonl"
    p.write_bytes(b'{"text": "ok", "label": "a"}\n{"text": "caf\xe9", "label": "b"}\n')
    with pytest.raises(DataError, match=r"latin\.jsonl:2: not valid UTF-8"):
        load_file(p)


def test_unknown_label_against_declared_set(tmp_path):
    p = write(tmp_path / "t.jsonl", jsonl(GOOD + [{"text": "meh", "label": "neutral"}]))
    with pytest.raises(DataError, match=r"t\.jsonl:3: field 'label': unknown label 'neutral' \(known: neg, pos\)"):
        load_file(p, label_names=["pos", "neg"])


def test_undetectable_task(tmp_path):
    with pytest.raises(DataError, match="cannot tell the task from the columns"):
        load_file(write(tmp_path / "t.jsonl", jsonl([{"a": "x", "b": "y"}])))
