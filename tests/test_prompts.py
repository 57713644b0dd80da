import json

import pytest

from adaptlab.prompts import PromptTemplate, TemplateError, builtin_template, load_template


def test_unknown_placeholder_and_missing_text():
    with pytest.raises(TemplateError, match=r"unknown placeholder\(s\) \{question\}"):
        PromptTemplate("t", "{question} {text}")
    with pytest.raises(TemplateError, match=r"must contain \{text\}"):
        PromptTemplate("t", "Label: {labels}")
    with pytest.raises(TemplateError, match="malformed template"):
        PromptTemplate("t", "{text")


def test_missing_values_at_render():
    t = PromptTemplate("t", "{labels}: {text}")
    with pytest.raises(TemplateError, match=r"placeholder \{labels\} needs the label list"):
        t.render("x")
    with pytest.raises(TemplateError, match=r"has no \{examples\} placeholder"):
        t.render("x", ["a"], [("y", "a")])
    with pytest.raises(TemplateError, match=r"uses \{instruction\} but the instruction is empty"):
        PromptTemplate("t", "{instruction} {text}")
    with pytest.raises(TemplateError, match=r"example_format: unknown placeholder\(s\) \{answer\}"):
        PromptTemplate("t", "{text}", example_format="{text} {answer}")


def test_exemplars_render_where_the_answer_is_scored():
    t = builtin_template("classification", "instruct-labels")
    p = t.render("q", ["card_lost", "refund"], [("x {braces}", "refund")])
    assert p == (
        "Classify the text into one of these categories: card lost, refund.\n\n"
        "Text: x {braces}\nCategory: refund\n\nText: q\nCategory:"
    )
    assert t.label_texts(["refund"]) == [" refund"]


def test_load_template_forms(tmp_path):
    assert load_template("question", "classification").name == "question"
    f = tmp_path / "mine.json"
    f.write_text(json.dumps({"template": "{examples}Q: {text}\nA:", "example_format": "Q: {text}\nA: {label}\n"}))
    assert load_template(str(f), "classification").render("z", ["a"], [("y", "a")]) == "Q: y\nA: a\nQ: z\nA:"
    f2 = tmp_path / "bad.json"
    f2.write_text('{"template": "{text}", "colour": 1}')
    with pytest.raises(TemplateError, match="unknown field\\(s\\) colour"):
        load_template(str(f2), "classification")
    with pytest.raises(TemplateError, match="template file not found"):
        load_template(str(tmp_path / "none.txt"), "classification")
    assert load_template("Say {text}", "classification").name == "inline"
    with pytest.raises(TemplateError, match="unknown template 'nosuch'"):
        load_template("nosuch", "classification")
