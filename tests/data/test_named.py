import json

import pytest

from adaptlab.data.loading import DataError
from adaptlab.data.named import data_dir, list_named, load_named, load_task
from tests.conftest import SHARED_DATASETS


@pytest.fixture
def ddir(tmp_path, monkeypatch):
    d = tmp_path / "datasets" / "toy"
    d.mkdir(parents=True)
    rows = [{"text": f"t{i}", "label": "ab"[i % 2]} for i in range(40)]
    (d / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "validation.jsonl").write_text(
        json.dumps({"text": "v", "label": "a"}) + "\n" + json.dumps({"text": "w", "label": "b"}) + "\n"
    )
    (d / "labels.json").write_text('["a", "b"]')
    monkeypatch.setenv("ADAPTLAB_DATA_DIR", str(tmp_path / "datasets"))
    return tmp_path / "datasets"


def test_env_var_data_dir_and_named_loading(ddir):
    assert data_dir() == ddir
    assert list_named() == ["demo", "demo-chat", "toy"]
    dev = load_named("toy", "dev")  # "dev" resolves to validation.jsonl
    assert dev.label_names == ["a", "b"] and len(dev) == 2


def test_unknown_dataset_and_split(ddir):
    with pytest.raises(DataError, match="unknown dataset 'nope'.*known: demo, demo-chat, toy"):
        load_named("nope")
    with pytest.raises(DataError, match="no split 'test' \\(have: train, validation\\)"):
        load_named("toy", "test")
    with pytest.raises(DataError, match="unknown dataset"):
        load_named("../toy")


def test_load_task_uses_validation_as_test_and_carves_dev(ddir):
    s = load_task("toy")
    assert len(s.test) == 2 and len(s.train) + len(s.dev) == 40
    assert not {e.text for e in s.dev.examples} & {e.text for e in s.train.examples}


def test_an_evaluation_only_release_trains_on_validation(tmp_path, monkeypatch):
    # E2E ships validation and test only: validation trains (dev carved from it, each input's
    # references in one part), test stays held out; with neither, the error says what is missing.
    d = tmp_path / "datasets" / "e2e"
    d.mkdir(parents=True)
    rows = [{"input": f"name[P{i // 3}]", "target": f"P{i // 3} is a place ({i % 3})."} for i in range(60)]
    (d / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "test.jsonl").write_text(json.dumps({"input": "name[Q]", "target": "Q is a place."}) + "\n")
    monkeypatch.setenv("ADAPTLAB_DATA_DIR", str(tmp_path / "datasets"))
    s = load_task("e2e")
    assert s.task == "generation" and len(s.test) == 1 and len(s.train) + len(s.dev) == 60
    assert not {e.text for e in s.dev.examples} & {e.text for e in s.train.examples}
    (d / "test.jsonl").unlink()
    with pytest.raises(
        DataError, match="no train split \\(train.jsonl, train.parquet, .*nor a validation and a test split"
    ):
        load_task("e2e")


def test_load_task_single_file(tmp_path):
    p = tmp_path / "mine.jsonl"
    p.write_text("".join(json.dumps({"text": f"x{i}", "label": "pq"[i % 2]}) + "\n" for i in range(50)))
    s = load_task(str(p))
    assert len(s.train) == 40 and len(s.dev) + len(s.test) == 10 and min(len(s.dev), len(s.test)) >= 4


def test_missing_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("ADAPTLAB_DATA_DIR", str(tmp_path / "missing"))
    with pytest.raises(DataError, match="does not exist"):
        data_dir()


@pytest.mark.skipif(not SHARED_DATASETS.is_dir(), reason="../shared/datasets not present")
def test_real_shared_datasets_load_in_place(monkeypatch):
    monkeypatch.delenv("ADAPTLAB_DATA_DIR", raising=False)
    sst = load_named("sst2", "validation")
    assert len(sst) == 872 and sst.label_names == ["negative", "positive"]
    bank = load_task("banking77")
    assert len(bank.labels if hasattr(bank, "labels") else bank.train.labels) == 77
    assert len(bank.test) == 3080
