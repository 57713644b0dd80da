"""The task-type protocol and its validating registry (registered like strategies).

A task type says what a row of the user's data is and everything that follows from that, so
that no other layer branches on the type's name:

- its **record fields** (``fields``), how a file's rows become examples with one-line errors
  naming file, line and field (:meth:`TaskSpec.read`), and how an example is written back
  (:meth:`TaskSpec.record`);
- whether answers come from a **closed label set** (scored against each label) or are text the
  model writes (:attr:`TaskSpec.closed_labels`), and whether an input is a **conversation**
  rendered by the model's chat template (:attr:`TaskSpec.conversation`);
- the **encoding** for training (:meth:`TaskSpec.encode`: prompt ids, target ids);
- **evaluation** and the default **ranking metric** (:meth:`TaskSpec.evaluate`, ``metric``);
- the **decoding** defaults of the adaptations trained on it (:meth:`TaskSpec.default_decoding`).

This module imports nothing of the project: the data layer looks task types up here, and the
types themselves (:mod:`adaptlab.tasks.classification`, ``generation``, ``chat``) register when
``adaptlab.tasks`` is imported, which Python does before this module. Adding a task type is one
module with one :class:`TaskSpec` subclass and a ``register_task`` call in ``adaptlab/tasks/__init__.py``
(``docs/architecture.md``).
"""

from __future__ import annotations

import re
from typing import ClassVar

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class TaskSpec:
    """One task type. Subclasses set the class attributes and implement the methods."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    fields: ClassVar[tuple[str, ...]] = ()  # the record's default columns: (input, answer) or (conversation,)
    closed_labels: ClassVar[bool] = False  # answers come from a label set and are scored, not generated
    conversation: ClassVar[bool] = False  # an input is a list of turns the model's chat template renders
    metric: ClassVar[str] = ""  # the default ranking metric of its evaluations
    report_metrics: ClassVar[tuple[str, ...]] = ()  # what a one-run summary shows (the metric first)
    # Its prompt library: built-in hard-prompt templates (prompts.PromptTemplate; the first is the
    # default, all have {examples} so few-shot can use any), the instruction paraphrases prompt
    # search and the fragility check start from, and the frame gradient strategies train in.
    templates: ClassVar[tuple] = ()
    paraphrases: ClassVar[tuple[str, ...]] = ()
    train_frame: ClassVar[str] = "{text}"
    # The largest variance of one row's metric, which sizes the screening subsample (compare.costs):
    # 0.25 for a right/wrong row (p(1-p) at p = 0.5).
    row_variance: ClassVar[float] = 0.25
    # Whether training's early stopping reads the task's metric on dev (cheap: answers are scored, not
    # decoded), or the dev target tokens' NLL.
    dev_by_metric: ClassVar[bool] = False
    # The prompt strategies that fit it (None: all); gradient strategies fit every task type.
    prompt_strategies: ClassVar[tuple[str, ...] | None] = None
    # Detection tries the more specific types first (more columns that name them surely).
    specificity: ClassVar[int] = 0

    # ------------------------------------------------------------------ records
    def matches(self, columns: set[str]) -> bool:
        """Whether a file with these columns holds this task's records under the default names."""
        return all(f in columns for f in self.fields)

    def read(
        self,
        path,
        records: list[tuple[int, dict]],
        text_field: str | None,
        label_field: str | None,
        label_names: list[str] | None,
    ):
        """A file's ``(line, record)`` pairs as :class:`adaptlab.data.records.TaskData`, or a
        one-line :class:`adaptlab.data.records.DataError` naming file, line and field."""
        raise NotImplementedError

    def record(self, example) -> dict:
        """An example as a row of this task's file, under the default field names."""
        raise NotImplementedError

    def label_set(self, data) -> list[str] | None:
        """The labels answers are chosen from (None: the answer is free text)."""
        return data.labels if self.closed_labels else None

    def input_lengths(self, data, count, tokenizer=None) -> list[int]:
        """Each example's input length as ``count`` measures it (tokens or words)."""
        return [count(ex.text) for ex in data.examples]

    # ------------------------------------------------------------------ training and evaluation
    def encode(self, tokenizer, data, template, max_length: int) -> list:
        """Each example as :class:`adaptlab.training.batching.Encoded` (prompt ids, target ids)."""
        raise NotImplementedError

    def objective(self, train_config, items):
        """The loss the training loop calls on ``items`` (an :mod:`adaptlab.training.objectives`
        objective); None: the loop's default, the target tokens' NLL with an unlikelihood penalty on
        answers rated down."""
        return None

    def baselines(self, train, test) -> dict | None:
        """What a result on ``test`` is read against (None: nothing to read it against). A label set:
        the majority class and chance (``adaptlab.tasks.classification``)."""
        return None

    def evaluate(self, artifact, data) -> tuple[dict, list[dict], list[str]]:
        """``artifact`` on ``data``: (metrics with ``n``, one row per input, the inputs predicted)."""
        raise NotImplementedError

    def request_input(self, messages: list[dict]) -> str:
        """A served request's turns (``{"role", "content"}``; a completion's prompt is one user turn)
        as this task's input: a single-input task answers the last user message through its own
        template. A ``ValueError`` says what the request lacks."""
        users = [m["content"] for m in messages if m["role"] == "user"]
        if not users:
            raise ValueError("messages: no user message")
        return users[-1]

    def row_keys(self, data) -> list:
        """A key per row that :meth:`evaluate` reports, in its order (a row per example by default),
        so that rows scored on a subsample pair with the same rows of the whole set."""
        return [id(ex) for ex in data.examples]

    def default_decoding(self, train, count_tokens) -> dict | None:
        """Decoding settings for adaptations trained on ``train`` (None: nothing is decoded)."""
        return None


_REGISTRY: dict[str, TaskSpec] = {}


def register_task(spec: TaskSpec) -> TaskSpec:
    """Add a task type; reject bad or duplicate names and specs missing what every layer reads."""
    name = getattr(spec, "name", "")
    if not isinstance(spec, TaskSpec):
        raise TypeError(f"task {name!r}: expected a TaskSpec instance, got {type(spec).__name__}")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"task name {name!r} must be lowercase letters, digits and '_', starting with a letter")
    if name in _REGISTRY:
        raise ValueError(f"task {name!r} is already registered")
    if not spec.fields or not all(isinstance(f, str) and f for f in spec.fields):
        raise ValueError(f"task {name!r}: fields must name the record's columns")
    if not spec.metric:
        raise ValueError(f"task {name!r}: no ranking metric")
    if not spec.templates:
        raise ValueError(f"task {name!r}: no built-in prompt template")
    for method in ("read", "record", "encode", "evaluate"):
        if getattr(type(spec), method) is getattr(TaskSpec, method):
            raise TypeError(f"task {name!r}: {type(spec).__name__} does not implement {method}()")
    _REGISTRY[name] = spec
    return spec


def get_task(name: str) -> TaskSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; use one of {', '.join(_REGISTRY)}") from None


def has_label_set(task_type: str | None) -> bool:
    """Whether answers of this task type (None: the plain base model, or a request logged without
    one) come from a label set: a classifier's, whose corrections must be one of its labels."""
    return task_type is not None and get_task(task_type).closed_labels


def list_tasks() -> list[str]:
    """Registered task types in registration order (the order auto-detection tries them)."""
    return list(_REGISTRY)
