"""Classification: ``{"text", "label"}`` rows; answers come from the label set and are scored, not
generated; accuracy and macro-F1 over the declared labels."""

from __future__ import annotations

import collections

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
        PromptTemplate(
            "instruct-labels",
            "{instruction}\n\n{examples}Text: {text}\nCategory:",
            instruction="Classify the text into one of these categories: {labels}.",
        ),
        PromptTemplate(
            "question",
            "{instruction}\n\n{examples}Text: {text}\nAnswer:",
            instruction="Which of these categories does the text belong to: {labels}?",
            example_format="Text: {text}\nAnswer: {label}\n\n",
        ),
        PromptTemplate(
            "input-label",
            "Possible labels: {labels}.\n\n{examples}Input: {text}\nLabel:",
            example_format="Input: {text}\nLabel: {label}\n\n",
        ),
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
            raise DataError(
                f"{path}:{lineno}: field '{field}': unknown label {label!r} (known: {', '.join(sorted(known))})"
            )
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
        detail = [
            {"id": i, "input": ex.text, "reference": ex.label, "output": p, "metric": float(p == ex.label)}
            for i, (ex, p) in enumerate(zip(data.examples, pred))
        ]
        return out, detail, texts

    def baselines(self, train, test):
        """The majority class and chance on the test rows (rows without a wanted answer left out)."""
        return majority_and_chance(
            [ex.label for ex in train.examples if ex.label],
            [ex.label for ex in test.examples if ex.label],
            self.label_set(train),
        )


def majority_and_chance(train_labels: list[str], test_labels: list[str], labels: list[str]) -> dict:
    """Majority class, chance (1/K: a uniform random guess), and the test split's largest class share,
    all on the test rows.

    The majority class is the train split's most frequent label, which is what a model that learned
    only the label prior would answer, unless the test rows' largest class is another one (their
    distributions differ): then it is the test rows' largest class, so that the baseline is the
    accuracy of answering the test rows' most common class, and ``majority_note`` says so."""
    if not test_labels:
        return {}
    train_counts = collections.Counter(train_labels or test_labels)
    train_major = max(sorted(train_counts), key=lambda lab: train_counts[lab])
    test_counts = collections.Counter(test_labels)
    top_label, top = test_counts.most_common(1)[0]
    majority, note = train_major, None
    if test_counts[train_major] < top:
        majority = top_label
        note = (
            f"the test rows' largest class '{top_label}' ({top} of {len(test_labels)}), not the train "
            f"split's '{train_major}' ({test_counts[train_major]} test rows): their label distributions differ"
        )
    k = max(1, len(labels))
    return {
        "majority_label": majority,
        "majority_accuracy": test_counts[majority] / len(test_labels),
        "chance_accuracy": 1 / k,
        "n_labels": k,
        "largest_class": top_label,
        "largest_share": top / len(test_labels),
        "test_n": len(test_labels),
        "majority_note": note,
    }
