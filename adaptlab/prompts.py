"""Prompt templates shared by every strategy (hard prompts render them; trained ones reuse them).

A template is a format string over a fixed set of placeholders. Unknown placeholders are
rejected when the template is built, and a record that lacks a value is rejected when it is
rendered, each with a message naming the placeholder.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

PLACEHOLDERS = {"text", "labels", "input"}


class TemplateError(ValueError):
    """A template names an unknown placeholder or is rendered without a value it needs."""


def verbalize(label: str) -> str:
    """How a label is written in the prompt and scored: ``order_status`` -> ``order status``."""
    return label.replace("_", " ").replace("-", " ").strip()


def _fields(template: str) -> set[str]:
    try:
        return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as e:
        raise TemplateError(f"malformed template {template!r}: {e}") from None


@dataclass(frozen=True)
class PromptTemplate:
    """``template`` renders the prompt; ``label_prefix`` goes before each scored label."""

    name: str
    template: str
    label_prefix: str = " "

    def __post_init__(self):
        unknown = _fields(self.template) - PLACEHOLDERS
        if unknown:
            raise TemplateError(
                f"template '{self.name}': unknown placeholder(s) {', '.join('{' + u + '}' for u in sorted(unknown))}; "
                f"allowed: {', '.join('{' + p + '}' for p in sorted(PLACEHOLDERS))}"
            )
        if not ({"text", "input"} & _fields(self.template)):
            raise TemplateError(f"template '{self.name}': must contain {{text}} (or {{input}})")

    def render(self, text: str, labels: list[str] | None = None) -> str:
        values = {"text": text, "input": text}
        if "labels" in _fields(self.template):
            if not labels:
                raise TemplateError(f"template '{self.name}': placeholder {{labels}} needs the label list")
            values["labels"] = ", ".join(verbalize(label) for label in labels)
        return self.template.format(**values)

    def label_texts(self, labels: list[str]) -> list[str]:
        return [self.label_prefix + verbalize(label) for label in labels]


DEFAULT_CLASSIFICATION = PromptTemplate(
    name="instruct-labels",
    template="Classify the text into one of these categories: {labels}.\nText: {text}\nCategory:",
)
