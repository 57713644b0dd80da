"""Classification: ``{"text", "label"}`` rows; answers come from the label set and are scored, not
generated; accuracy and macro-F1 over the declared labels."""

from __future__ import annotations

from adaptlab.data.records import DataError
from adaptlab.evaluation.metrics import classification_metrics
from adaptlab.prompts import PromptTemplate, verbalize
from adaptlab.tasks.pairs import InputAnswerTask


class ClassificationTask(InputAnswerTask):
    name = "classification"
    summary = "one label from a fixed set per input, scored over the labels (accuracy, macro-F1)"
    fields = ("text", "label")
    closed_labels = True
    metric = "accuracy"
    report_metrics = ("accuracy", "macro_f1")
    dev_by_metric = True
    templates = (
        PromptTemplate("instruct-labels", "{instruction}\n\n{examples}Text: {text}\nCategory:",
                       instruction="Classify the text into one of these categories: {labels}."),
        PromptTemplate("question", "{instruction}\n\n{examples}Text: {text}\nAnswer:",
                       instruction="Which of these categories does the text belong to: {labels}?",
                       example_format="Text: {text}\nAnswer: {label}\n\n"),
        PromptTemplate("input-label", "Possible labels: {labels}.\n\n{examples}Input: {text}\nLabel:",
                       example_format="Input: {text}\nLabel: {label}\n\n"),
        PromptTemplate("plain", "{examples}Text: {text}\nCategory:"),
    )
    paraphrases = (
        "Classify the text into one of these categories: {labels}.",
        "Which of these categories does the text belong to: {labels}?",
        "Read the text and choose the best label from: {labels}.",
        "Assign exactly one category to the text. Categories: {labels}.",
        "You are an expert annotator. Label the text with one of: {labels}.",
        "Decide which category fits the text best. Options: {labels}.",
    )
    train_frame = "Text: {text}\nCategory:"

    def clean_answer(self, path, lineno, field, label, known):
        label = label.strip()
        if known is not None and label not in known:
            raise DataError(f"{path}:{lineno}: field '{field}': unknown label {label!r} (known: {', '.join(sorted(known))})")
        return label

    def type_hint(self, field: str) -> str:
        return "; write class names, not ids" if field == "answer" else ""

    def answer_text(self, example) -> str:
        return verbalize(example.label)

    def evaluate(self, artifact, data):
        texts = [ex.text for ex in data.examples]
        pred = artifact.predict(texts)
        out = classification_metrics([ex.label for ex in data.examples], pred, artifact.labels)
        out["unparsed"] = artifact.last_unparsed
        detail = [{"id": i, "input": ex.text, "reference": ex.label, "output": p, "metric": float(p == ex.label)}
                  for i, (ex, p) in enumerate(zip(data.examples, pred))]
        return out, detail, texts
