"""Task types are one registry: each built-in reads, writes and validates its own records, and a new
type is one TaskSpec subclass that every layer (loading, validation, splits, training encoding,
evaluation, serving) picks up without naming it."""

import json

import pytest

from adaptlab.data.loading import DataError, Example, TaskData, load_file, write_jsonl
from adaptlab.data.validation import validate
from adaptlab.prompts import PromptTemplate, default_template, instruction_paraphrases
from adaptlab.tasks import base as task_base
from adaptlab.tasks import get_task, list_tasks, register_task
from adaptlab.tasks.classification import ClassificationTask
from adaptlab.tasks.pairs import InputAnswerTask

ROWS = {
    "classification": [{"text": "great film", "label": "pos"}, {"text": "dull plot", "label": "neg"}],
    "generation": [{"input": "name=Aromi", "target": "Aromi is a pub."}, {"input": "name=Zizzi", "target": "Zizzi."}],
    "chat": [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
        {
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "2+2?"},
                {"role": "assistant", "content": "4"},
            ]
        },
    ],
}


@pytest.fixture
def registry(monkeypatch):
    """The task registry, restored after the test (a test type must not leak into others)."""
    monkeypatch.setattr(task_base, "_REGISTRY", dict(task_base._REGISTRY))
    return task_base._REGISTRY


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("task", ["classification", "generation", "chat"])
def test_each_built_in_type_detects_reads_and_writes_back_its_own_rows(tmp_path, task):
    data = load_file(_jsonl(tmp_path / "in.jsonl", ROWS[task]))
    assert data.task == task and data.spec is get_task(task) and len(data) == 2
    write_jsonl(tmp_path / "out.jsonl", data)
    assert [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()] == ROWS[task]
    assert (data.label_set == ["pos", "neg"]) if task == "classification" else data.label_set is None


def test_the_registry_refuses_what_other_layers_could_not_use(registry):
    class NoRead(ClassificationTask):
        name = "noread"
        read = task_base.TaskSpec.read

    with pytest.raises(ValueError, match="already registered"):
        register_task(ClassificationTask())
    with pytest.raises(TypeError, match="does not implement read"):
        register_task(NoRead())
    with pytest.raises(TypeError, match="expected a TaskSpec"):
        register_task(object())
    with pytest.raises(ValueError, match="no built-in prompt template"):
        register_task(type("NoTemplates", (ClassificationTask,), {"name": "notemplates", "templates": ()})())
    for bad in ("Tagging", "2x", ""):
        spec = type("Bad", (ClassificationTask,), {"name": bad})()
        with pytest.raises(ValueError, match="must be lowercase"):
            register_task(spec)
    with pytest.raises(ValueError, match="unknown task 'nope'; use one of classification, generation, chat"):
        get_task("nope")
    with pytest.raises(DataError, match="unknown task 'nope'; use one of classification, generation, chat"):
        load_file("x.jsonl", task="nope")


class Rewrite(InputAnswerTask):
    """A test task type: a sentence and its rewrite, free text, under its own column names."""

    name = "rewrite"
    fields = ("sentence", "rewrite")
    metric = "exact_match"
    ends_with_eos = True
    templates = (PromptTemplate("rewrite", "{examples}S: {text}\nR:", example_format="S: {text}\nR: {label}\n\n"),)
    train_frame = "S: {text}\nR:"

    def evaluate(self, artifact, data):
        pred = artifact.predict([ex.text for ex in data.examples])
        hits = [float(p.strip() == ex.label) for p, ex in zip(pred, data.examples)]
        return (
            {"exact_match": sum(hits) / len(hits), "n": len(hits)},
            [{"id": i, "output": p, "metric": h} for i, (p, h) in enumerate(zip(pred, hits))],
            [ex.text for ex in data.examples],
        )


def test_a_new_task_type_is_one_module(tmp_path, registry, tiny):
    register_task(Rewrite())
    assert list_tasks()[-1] == "rewrite"
    path = _jsonl(
        tmp_path / "rw.jsonl",
        [{"sentence": "u r late", "rewrite": "You are late."}, {"sentence": "thx", "rewrite": "Thank you."}],
    )
    data = load_file(path)  # detected from its columns
    assert (
        data.task == "rewrite"
        and data.label_set is None
        and data.examples[0] == Example("u r late", "You are late.", 1)
    )
    with pytest.raises(DataError, match=r"rw2.jsonl:2: missing field 'rewrite' \(fields present: 'sentence'\)"):
        load_file(_jsonl(tmp_path / "rw2.jsonl", [{"sentence": "a", "rewrite": "A."}, {"sentence": "b"}]))
    report = validate(data)  # whole-file checks read the type: no class counts for free text
    assert report.task == "rewrite" and report.splits[0].class_counts == {}
    # Its prompt library: the default template and (no) paraphrases are the type's own.
    assert default_template("rewrite") == "rewrite" and instruction_paraphrases("rewrite") == []
    # Training encoding: the answer ends with EOS, as the type says.
    from adaptlab.training.batching import encode

    (item, _) = encode(tiny.tokenizer, data, PromptTemplate("t", "S: {text}\nR:"), 64)
    assert item.target[-1] == tiny.tokenizer.eos_token_id
    # A served request becomes its input by the type's rule (the last user message).
    assert (
        get_task("rewrite").request_input([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]) == "b"
    )
    with pytest.raises(ValueError, match="no user message"):
        get_task("rewrite").request_input([{"role": "system", "content": "x"}])


def test_whether_a_task_type_has_a_label_set_with_none_for_the_plain_base():
    from adaptlab.tasks.base import has_label_set

    assert has_label_set("classification") and not has_label_set("chat") and not has_label_set(None)


def test_chat_requests_keep_the_whole_conversation():
    turns = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert json.loads(get_task("chat").request_input(turns)) == turns
    assert get_task("classification").request_input(turns) == "hi"


def test_a_strategy_is_planned_only_on_task_types_it_supports(monkeypatch):
    import dataclasses

    from adaptlab.compare.config import CompareConfig
    from adaptlab.compare.grid import plan
    from adaptlab.strategies import registry as strategy_registry

    only_clf = dataclasses.replace(strategy_registry.get_strategy("zero_shot"), tasks=("classification",))
    monkeypatch.setitem(strategy_registry._REGISTRY, "zero_shot", only_clf)
    cfg = CompareConfig(data="demo", strategies=["zero_shot", "lora"], train_sizes=["16"])
    assert {s.strategy for s in plan(cfg, 100, "classification")} == {"zero_shot", "lora"}
    assert {s.strategy for s in plan(cfg, 100, "generation")} == {"lora"}
    with pytest.raises(ValueError, match="tasks must be a tuple"):
        strategy_registry.register_strategy(
            "zz_test", *[getattr(only_clf, f) for f in ("config_cls", "strategy_cls", "kind", "summary")], tasks="chat"
        )


def test_task_data_made_by_hand_keeps_its_label_set_through_a_split():
    data = TaskData("classification", [Example("a", "x"), Example("b", "y"), Example("c", "x")], "hand")
    part = data.with_examples(data.examples[1:2])
    assert part.labels == ["x", "y"] and part.label_set == ["x", "y"]
