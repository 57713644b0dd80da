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
    d = load_file(
        write(tmp_path / "t.csv", 'sentence,sentiment\n"hi, there",pos\nugh,neg\n'),
        text_field="sentence",
        label_field="sentiment",
    )
    assert d.task == "classification" and d.examples[0].text == "hi, there" and d.examples[1].line == 3
    d = load_file(write(tmp_path / "t.tsv", "text\tlabel\nfine\tpos\nawful\tneg\n"))
    assert [e.label for e in d.examples] == ["pos", "neg"]


def test_csv_multiline_field_keeps_line_numbers(tmp_path):
    p = write(tmp_path / "t.csv", 'text,label\n"two\nlines",pos\nok,\n')
    with pytest.raises(DataError, match=r"t\.csv:4: field 'label' is empty"):
        load_file(p)


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"text": "a", "label": "x"}\n{"text": "b", "label": \n', r":2: malformed JSON"),
        ('{"text": "a", "label": "x"}\n["a", "b"]\n', r":2: expected a JSON object, got list"),
        ('{"text": "a"}\n', r":1: missing field 'label' \(fields present: 'text'\)"),
        ('{"text": "", "label": "x"}\n', r":1: field 'text' is empty"),
        ('{"text": "a", "label": "  "}\n', r":1: field 'label' is empty"),
        ('{"text": "a", "label": 3}\n', r":1: field 'label' must be a string, got int 3; write class names"),
        ('{"text": ["a"], "label": "x"}\n', r":1: field 'text' must be a string, got list"),
        ("\n\n  \n", r"file is empty"),
    ],
)
def test_jsonl_errors_name_file_line_field(tmp_path, content, message):
    p = write(tmp_path / "bad.jsonl", content)
    with pytest.raises(DataError, match=message) as e:
        load_file(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("e.csv", "", r"e\.csv: file is empty"),
        ("h.csv", "text,label\n", r"header but no examples"),
        (
            "m.csv",
            "text,category\nhello,a\n",
            r"m\.csv:2: missing field 'label' \(fields present: 'text', 'category'\)",
        ),
        ("x.csv", "text,label\na,b,c\n", r"x\.csv:2: 3 cells but the header has 2 columns"),
        ("d.csv", "text,text,label\na,b,c\n", r"duplicate column"),
        ("u.txt", "whatever", r"unsupported file type '\.txt'"),
    ],
)
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


# Every character str.splitlines() breaks at besides "\n" and "\r". JSON allows U+2028, U+2029 and
# U+0085 raw inside a string; the C0 controls must be escaped there, so raw they are an error, and it
# names the line an editor shows.
RAW_OK = ["\u2028", "\u2029", "\x85"]
RAW_BAD = ["\x0b", "\x0c", "\x1c", "\x1d", "\x1e"]


@pytest.mark.parametrize("brk", RAW_OK + RAW_BAD, ids=[f"U+{ord(c):04X}" for c in RAW_OK + RAW_BAD])
def test_a_unicode_line_break_inside_a_string_is_part_of_the_row(tmp_path, brk):
    rows = [
        {"text": "bad film", "label": "neg"},
        {"text": "first<BRK>paragraph", "label": "pos"},
        {"text": "x", "label": 3},
    ]
    text = "".join(json.dumps(r) + "\n" for r in rows).replace("<BRK>", brk)
    path = write(tmp_path / "t.jsonl", text)
    if brk in RAW_BAD:
        with pytest.raises(DataError, match=r"t\.jsonl:2: malformed JSON"):
            load_file(path)
        return
    with pytest.raises(DataError, match=r"t\.jsonl:3: "):  # the editor's line number of the bad row
        load_file(path)
    write(path, text.rsplit("\n", 2)[0] + "\n")
    d = load_file(path)
    assert [e.text for e in d.examples] == ["bad film", f"first{brk}paragraph"]
    assert [e.line for e in d.examples] == [1, 2]


def test_crlf_jsonl_loads_with_editor_line_numbers(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_bytes(b'{"text": "a", "label": "pos"}\r\n\r\n{"text": "b"}\r\n')
    with pytest.raises(DataError, match=r"t\.jsonl:3: "):
        load_file(path)
    path.write_bytes(b'{"text": "a", "label": "pos"}\r\n\r\n{"text": "b", "label": "neg"}\r\n')
    assert [(e.text, e.line) for e in load_file(path).examples] == [("a", 1), ("b", 3)]
