"""Prompt templates shared by every strategy (hard prompts render them; trained ones reuse them).

A template is a format string over a fixed set of placeholders:

- ``{text}`` / ``{input}``: the example's input;
- ``{labels}``: the label list, verbalized, comma-separated (classification);
- ``{instruction}``: the template's ``instruction`` (itself may use ``{labels}``), so that
  automatic prompt search can swap instructions while keeping the frame;
- ``{examples}``: the few-shot exemplars, each rendered with ``example_format``; empty when there
  are none.

Unknown placeholders are rejected when the template is built, and a record that lacks a value is
rejected when it is rendered, each with a message naming the placeholder.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass, replace
from pathlib import Path

PLACEHOLDERS = {"text", "labels", "input", "instruction", "examples"}
EXAMPLE_PLACEHOLDERS = {"text", "input", "label", "target"}


class TemplateError(ValueError):
    """A template names an unknown placeholder or is rendered without a value it needs."""


def verbalize(label: str) -> str:
    """How a label is written in the prompt and scored: ``order_status`` -> ``order status``."""
    return label.replace("_", " ").replace("-", " ").strip()


def _fields(template: str, what: str = "template") -> set[str]:
    try:
        return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as e:
        raise TemplateError(f"malformed {what} {template!r}: {e}") from None


def _braces(s: str) -> str:
    return "{" + s + "}"


@dataclass(frozen=True)
class PromptTemplate:
    """``template`` renders the prompt; ``label_prefix`` goes before each scored label.

    ``example_format`` renders one exemplar (``{text}``/``{input}`` and ``{label}``/``{target}``)
    and must end the same way the template does before the answer, so that an exemplar's answer
    sits exactly where the model's answer will be scored.

    ``chat_turn``: the rendered prompt goes to the model as one user turn in the base model's chat
    template, and the answer is the assistant's turn (no ``label_prefix``: the turn starts fresh).
    Set from a strategy's ``prompt_format`` (:func:`use_chat_turn`) and saved with the artifact,
    so serving renders exactly what training and scoring saw.
    """

    name: str
    template: str
    label_prefix: str = " "
    instruction: str = ""
    example_format: str = "Text: {text}\nCategory: {label}\n\n"
    chat_turn: bool = False

    def __post_init__(self):
        fields = _fields(self.template)
        unknown = fields - PLACEHOLDERS
        if unknown:
            raise TemplateError(
                f"template '{self.name}': unknown placeholder(s) {', '.join(_braces(u) for u in sorted(unknown))}; "
                f"allowed: {', '.join(_braces(p) for p in sorted(PLACEHOLDERS))}"
            )
        if not ({"text", "input"} & fields):
            raise TemplateError(f"template '{self.name}': must contain {{text}} (or {{input}})")
        if "instruction" in fields and not self.instruction.strip():
            raise TemplateError(f"template '{self.name}': uses {{instruction}} but the instruction is empty")
        bad = _fields(self.instruction, "instruction") - {"labels"}
        if bad:
            raise TemplateError(
                f"template '{self.name}': instruction may only use {{labels}}, "
                f"not {', '.join(_braces(b) for b in sorted(bad))}"
            )
        ex = _fields(self.example_format, "example_format")
        bad = ex - EXAMPLE_PLACEHOLDERS
        if bad:
            raise TemplateError(
                f"template '{self.name}': example_format: unknown placeholder(s) "
                f"{', '.join(_braces(b) for b in sorted(bad))}; allowed: {{text}}, {{label}}"
            )
        if not ({"text", "input"} & ex) or not ({"label", "target"} & ex):
            raise TemplateError(f"template '{self.name}': example_format needs {{text}} and {{label}}")

    @property
    def fields(self) -> set[str]:
        return _fields(self.template)

    def render(self, text: str, labels: list[str] | None = None, examples: list[tuple[str, str]] | None = None) -> str:
        """The prompt for ``text``; ``examples`` are (input, answer) pairs shown before it."""
        fields = self.fields
        label_list = None
        if "labels" in fields or "labels" in _fields(self.instruction, "instruction"):
            if not labels:
                raise TemplateError(f"template '{self.name}': placeholder {{labels}} needs the label list")
            label_list = ", ".join(verbalize(label) for label in labels)
        values = {"text": text, "input": text}
        if "labels" in fields:
            values["labels"] = label_list
        if "instruction" in fields:
            values["instruction"] = self.instruction.format(labels=label_list or "")  # "{{" is a literal brace
        if examples and "examples" not in fields:
            raise TemplateError(f"template '{self.name}': has no {{examples}} placeholder for few-shot exemplars")
        if "examples" in fields:
            values["examples"] = "".join(self.render_example(x, y, labels is not None) for x, y in examples or [])
        return self.template.format(**values)

    def render_example(self, text: str, answer: str, is_label: bool = True) -> str:
        shown = verbalize(answer) if is_label else answer
        return self.example_format.format(text=text, input=text, label=shown, target=shown)

    def label_texts(self, labels: list[str]) -> list[str]:
        return [self.label_prefix + verbalize(label) for label in labels]

    def with_instruction(self, instruction: str, name: str | None = None) -> PromptTemplate:
        return replace(self, instruction=instruction, name=name or self.name)

    def as_chat_turn(self) -> PromptTemplate:
        return replace(self, chat_turn=True, label_prefix="")


def as_instruction(text: str, labels: bool = True) -> str:
    """Free text (an instruction an LM proposed) made safe for a template's instruction slot: every
    brace doubled (a literal brace), except ``{labels}`` when the task has labels to fill in."""
    out = text.replace("{", "{{").replace("}", "}}")
    return out.replace("{{labels}}", "{labels}") if labels else out


# How a single-input task's prompt reaches the model (chat tasks always go through the chat template).
PROMPT_FORMATS = ("auto", "chat", "plain")
PROMPT_FORMAT_HELP = (
    "How a single-input prompt reaches the model: chat (one user turn in the base model's chat "
    "template, the answer its assistant turn), plain (the prompt text as it is), or auto (chat "
    "when the base model has a chat template, as instruction-tuned models do)."
)


def check_prompt_format(value, owner: str) -> None:
    if value not in PROMPT_FORMATS:
        raise ValueError(f"{owner}: prompt_format={value!r}: use one of {', '.join(PROMPT_FORMATS)}")


def use_chat_turn(template: PromptTemplate, prompt_format: str, task: str, has_chat_template: bool) -> PromptTemplate:
    """``template`` as the strategy will use it on this base model: in a chat turn, or as it is."""
    from adaptlab.tasks.base import get_task  # here, not above: the task types import this module

    if get_task(task).conversation or prompt_format == "plain" or (prompt_format == "auto" and not has_chat_template):
        return template  # a conversation is rendered by the chat template already
    if not has_chat_template:
        raise ValueError("prompt_format=chat: the base model has no chat template (use auto or plain)")
    return template.as_chat_turn()


DEFAULT_CLASSIFICATION = PromptTemplate(
    name="instruct-labels",
    template="Classify the text into one of these categories: {labels}.\nText: {text}\nCategory:",
)


# The built-in hard-prompt templates, instruction paraphrases and training frames are each task
# type's own (adaptlab/tasks/<type>.py: ``templates``, ``paraphrases``, ``train_frame``); these read them.
def builtin_templates(task: str) -> dict[str, PromptTemplate]:
    """The task type's built-in templates by name; the first is its default."""
    from adaptlab.tasks.base import get_task  # here, not above: the task types import this module

    return {t.name: t for t in get_task(task).templates}


def default_template(task: str) -> str:
    return next(iter(builtin_templates(task)))


def instruction_paraphrases(task: str) -> list[str]:
    """Instructions prompt search and the fragility check start from ({labels} is filled in)."""
    from adaptlab.tasks.base import get_task

    return list(get_task(task).paraphrases)


def builtin_template(task: str, name: str) -> PromptTemplate:
    known = builtin_templates(task)
    if name not in known:
        raise TemplateError(f"no built-in {task} template {name!r}; built-in: {', '.join(known)}")
    return known[name]


def load_template(spec: str, task: str) -> PromptTemplate:
    """A template by built-in name, from a file (.json with the fields, or text = the template), or inline."""
    builtins = builtin_templates(task)
    if spec in builtins:
        return builtins[spec]
    path = Path(spec)
    if "{" not in spec and path.suffix in (".json", ".txt", ".tmpl"):
        if not path.exists():
            raise TemplateError(f"{path}: template file not found")
        raw = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            try:
                fields = json.loads(raw)
            except json.JSONDecodeError as e:
                raise TemplateError(f"{path}:{e.lineno}: malformed JSON: {e.msg}") from None
            if not isinstance(fields, dict) or "template" not in fields:
                raise TemplateError(f"{path}: expected an object with a 'template' field")
            known = {"name", "template", "label_prefix", "instruction", "example_format"}
            extra = sorted(set(fields) - known)
            if extra:
                raise TemplateError(f"{path}: unknown field(s) {', '.join(extra)}; known: {', '.join(sorted(known))}")
            return PromptTemplate(**{"name": path.stem, **fields})
        return PromptTemplate(path.stem, raw.rstrip("\n"))
    if "{" in spec:
        return PromptTemplate("inline", spec)
    raise TemplateError(
        f"unknown template {spec!r}: not a built-in {task} template "
        f"({', '.join(builtins)}), a file, or a string with {{text}}"
    )
