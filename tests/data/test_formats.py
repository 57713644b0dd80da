"""The data formats users bring: Alpaca and ShareGPT (JSON arrays and JSONL), Parquet written by pyarrow
and by pandas, ``datasets`` folders written by ``save_to_disk``, and a column mapping; each with the same
file:line:field errors as JSONL."""

import json

import pytest

from adaptlab.data.formats import parse_columns, read_rows
from adaptlab.data.loading import DataError, load_file
from adaptlab.data.named import list_named, load_task
from adaptlab.privacy import redact_file, scan_file
from tests.conftest import write

ALPACA = [
    {"instruction": "Summarise the ticket.", "input": "My parcel is late.", "output": "Late parcel."},
    {"instruction": "Say hello.", "input": "", "output": "Hello!", "system": "Be brief."},
    {"instruction": "And now?", "input": "", "output": "Done.", "history": [["First?", "Yes."]]},
]
SHAREGPT = [
    {"conversations": [{"from": "human", "value": "Where is my order?"}, {"from": "gpt", "value": "On its way."}]},
    {
        "system": "You are Fern.",
        "conversations": [
            {"from": "human", "value": "Hi"},
            {"from": "gpt", "value": "Hello"},
            {"from": "human", "value": "Refund?"},
            {"from": "gpt", "value": "Within 30 days."},
        ],
    },
]
CLASSES = [{"text": f"row {i} is {'good' if i % 2 else 'bad'}", "label": "pos" if i % 2 else "neg"} for i in range(40)]


def test_an_alpaca_json_array_as_llama_factory_ships_it_is_read_as_conversations(tmp_path):
    f = write(tmp_path / "alpaca.json", json.dumps(ALPACA, indent=2))
    d = load_file(f)
    assert d.task == "chat" and len(d) == 3
    first = json.loads(d.examples[0].text)
    assert first == [{"role": "user", "content": "Summarise the ticket.\n\nMy parcel is late."}]
    assert d.examples[0].label == "Late parcel."
    assert json.loads(d.examples[1].text)[0] == {"role": "system", "content": "Be brief."}
    assert [m["content"] for m in json.loads(d.examples[2].text)] == ["First?", "Yes.", "And now?"]
    # each row keeps the line its object starts on
    assert [e.line for e in d.examples] == [2, 7, 13]


def test_alpaca_as_a_pair_task_when_the_task_is_named(tmp_path):
    f = write(tmp_path / "alpaca.jsonl", "".join(json.dumps(r) + "\n" for r in ALPACA[:1]))
    d = load_file(f, task="generation")
    assert d.task == "generation"
    assert (d.examples[0].text, d.examples[0].label) == ("Summarise the ticket.\n\nMy parcel is late.", "Late parcel.")
    with pytest.raises(DataError, match=r"alpaca2\.jsonl:1: field 'system' needs the chat task"):
        load_file(write(tmp_path / "alpaca2.jsonl", json.dumps(ALPACA[1]) + "\n"), task="generation")


def test_sharegpt_jsonl_and_its_errors(tmp_path):
    f = write(tmp_path / "sg.jsonl", "".join(json.dumps(r) + "\n" for r in SHAREGPT))
    d = load_file(f)
    assert d.task == "chat" and d.examples[1].label == "Within 30 days."
    assert json.loads(d.examples[1].text)[0] == {"role": "system", "content": "You are Fern."}
    bad = [SHAREGPT[0], {"conversations": [{"from": "robot", "value": "beep"}]}]
    with pytest.raises(DataError, match=r"bad\.jsonl:2: conversations\[0\]: unsupported speaker 'robot'"):
        load_file(write(tmp_path / "bad.jsonl", "".join(json.dumps(r) + "\n" for r in bad)))
    missing = [{"conversations": [{"from": "human", "value": 3}]}]
    with pytest.raises(DataError, match=r"m\.json:2: conversations\[0\]: field 'value' must be a string"):
        load_file(write(tmp_path / "m.json", json.dumps(missing, indent=1)))


def test_json_array_errors_name_the_line(tmp_path):
    with pytest.raises(DataError, match=r"a\.json:3: item 1 of the array: expected a JSON object, got int"):
        load_file(write(tmp_path / "a.json", '[\n  {"text": "x", "label": "y"},\n  5\n]'))
    with pytest.raises(DataError, match=r"b\.json:2: malformed JSON"):
        load_file(write(tmp_path / "b.json", '[\n  {"text": "x" "label": "y"}\n]'))
    with pytest.raises(DataError, match=r"c\.json: file is empty"):
        load_file(write(tmp_path / "c.json", "[]"))
    with pytest.raises(DataError, match=r"d\.json:3: missing field 'output'"):
        load_file(
            write(tmp_path / "d.json", '[{"instruction": "a", "output": "b"},\n\n {"instruction": "a"}]'), task="chat"
        )


def test_parquet_written_by_pyarrow_and_by_pandas(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pd = pytest.importorskip("pandas")
    pq.write_table(pa.Table.from_pylist(CLASSES), tmp_path / "a.parquet")
    pd.DataFrame(CLASSES).to_parquet(tmp_path / "b.parquet")
    for name in ("a.parquet", "b.parquet"):
        d = load_file(tmp_path / name)
        assert d.task == "classification" and len(d) == 40 and d.labels == ["neg", "pos"]
        assert (d.examples[3].text, d.examples[3].label, d.examples[3].line) == ("row 3 is good", "pos", 4)
    rows = [dict(r) for r in CLASSES]
    rows[6]["label"] = None
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "c.parquet")
    with pytest.raises(DataError, match=r"c\.parquet:7: .*'label'"):
        load_file(tmp_path / "c.parquet")
    write(tmp_path / "broken.parquet", "not parquet at all")
    with pytest.raises(DataError, match=r"broken\.parquet: not a readable Parquet file"):
        load_file(tmp_path / "broken.parquet")


def test_a_datasets_folder_and_a_dataset_dict_written_by_save_to_disk(tmp_path):
    datasets = pytest.importorskip("datasets")
    one = datasets.Dataset.from_list(CLASSES)
    one.save_to_disk(str(tmp_path / "one"))
    d = load_file(tmp_path / "one")
    assert d.task == "classification" and len(d) == 40
    splits = load_task(str(tmp_path / "one"), seed=0)
    assert len(splits.train) + len(splits.dev) + len(splits.test) == 40
    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list(CLASSES[:30]),
            "validation": datasets.Dataset.from_list(CLASSES[30:35]),
            "test": datasets.Dataset.from_list(CLASSES[35:]),
        }
    )
    dd.save_to_disk(str(tmp_path / "dd"))
    splits = load_task(str(tmp_path / "dd"), seed=0)
    assert (len(splits.train), len(splits.dev), len(splits.test)) == (30, 5, 5)
    with pytest.raises(DataError, match=r"dd: a DatasetDict with splits train, validation, test"):
        load_file(tmp_path / "dd")
    # a data directory's datasets folders are named datasets
    assert "dd" in list_named(tmp_path)


def test_a_folder_of_split_files_in_any_format(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.Table.from_pylist(CLASSES[:30]), tmp_path / "train.parquet")
    write(tmp_path / "validation.json", json.dumps(CLASSES[30:35]))
    write(tmp_path / "test.csv", "text,label\n" + "".join(f"{r['text']},{r['label']}\n" for r in CLASSES[35:]))
    splits = load_task(str(tmp_path), seed=0)
    assert (len(splits.train), len(splits.dev), len(splits.test)) == (30, 5, 5)
    assert splits.test.examples[0].line == 2


def test_column_mapping_for_csv_and_parquet(tmp_path):
    f = write(tmp_path / "qa.csv", "question,answer,id\nwhere is it?,shipping,1\nrefund?,refunds,2\n")
    d = load_file(f, columns={"question": "text", "answer": "label"})
    assert d.task == "classification" and d.examples[1].label == "refunds" and d.examples[1].line == 3
    with pytest.raises(DataError, match=r"qa\.csv: column mapping names 'questoin', not in the file"):
        load_file(f, columns={"questoin": "text"})
    splits = load_task(str(f), seed=0, columns={"question": "input", "answer": "target"}, task="generation")
    assert splits.task == "generation"
    assert parse_columns("question=text, answer=label") == {"question": "text", "answer": "label"}
    for bad in ("question", "a=text,b=text", "a=x,a=y", "=text"):
        with pytest.raises(DataError, match="--columns"):
            parse_columns(bad)


def test_personal_data_in_parquet_and_datasets_folders_is_scanned_and_redacted_in_their_own_format(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    datasets = pytest.importorskip("datasets")
    rows = [{"text": "mail me at ann@example.com", "label": "contact"}, {"text": "fine", "label": "other"}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "p.parquet")
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    for src, dst in (
        (tmp_path / "p.parquet", tmp_path / "out" / "p.parquet"),
        (tmp_path / "ds", tmp_path / "out" / "ds"),
    ):
        assert scan_file(src).total == 1
        assert redact_file(src, dst) == 2
        got, _ = read_rows(dst)
        assert got[0][1]["text"] == "mail me at [EMAIL]" and scan_file(dst).total == 0
    write(tmp_path / "a.json", json.dumps(rows))
    redact_file(tmp_path / "a.json", tmp_path / "out" / "a.json")
    assert json.loads((tmp_path / "out" / "a.json").read_text())[0]["text"] == "mail me at [EMAIL]"
