"""What the server keeps of a loaded artifact: the parts that act per request row.

Read only through the adaptation protocol (:class:`adaptlab.strategies.base.Artifact`): a
prompt renderer, a score calibration, and the artifact's :class:`Contribution` to a forward
pass (virtual tokens, per-layer keys/values, LoRA deltas, or weights of its own). All but own
weights can differ from row to row of one forward pass (see :mod:`adaptlab.serving.engine`);
rows on their own weights are batched only with rows on the same weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from adaptlab.models.adaptation import Contribution
from adaptlab.models.types import BaseModel
from adaptlab.tasks.base import get_task, has_label_set

BASE_WEIGHTS = "base"


@dataclass
class ServingAdapter:
    name: str  # "task@version" or the base model's name
    key: str  # digest of the artifact ("base" for the plain model)
    task_type: str | None  # a registered task type (adaptlab.tasks), None: the plain base
    labels: list[str] | None
    label_texts: list[str] | None
    render: Callable[[list[str]], list[str]]  # inputs -> prompts
    calibrate: Callable[[torch.Tensor], torch.Tensor] | None = None  # (N, L) raw -> calibrated scores
    contribution: Contribution = field(default_factory=Contribution)  # frozen: serving never trains
    decoding: dict = field(default_factory=lambda: {"max_new_tokens": 64})
    kind: str = "base"
    artifact: object = None  # the loaded artifact itself (kept only by the swap baseline)
    lead: object = None  # engine.Lead: the static lead's keys/values, once built
    lead_built: bool = False  # build_lead ran (lead may still be None: nothing to keep)
    base: object = None  # the BaseModel its rows run on (a server may hold several)

    @property
    def closed_labels(self) -> bool:
        """Answers are labels of a set, scored (a classifier), not generated."""
        return has_label_set(self.task_type)

    @property
    def conversation(self) -> bool:
        """Inputs are whole conversations (a chat adaptation)."""
        return self.task_type is not None and get_task(self.task_type).conversation

    def request_input(self, messages: list[dict]) -> str:
        """A request's turns as this adaptation's input (:meth:`adaptlab.tasks.base.TaskSpec.request_input`);
        the server's routes and the workbench's playground share it. Not for the plain base model."""
        return get_task(self.task_type).request_input(messages)

    @property
    def weights(self) -> str:
        """Which weights the rows run on: the base model's, or this artifact's own."""
        return BASE_WEIGHTS if self.contribution.model is None else self.key

    @property
    def model(self) -> torch.nn.Module | None:
        return self.contribution.model

    @property
    def soft_len(self) -> int:
        return self.contribution.soft_len

    @property
    def prefix_len(self) -> int:
        return self.contribution.prefix_len

    @property
    def nbytes(self) -> int:
        return self.contribution.nbytes + (self.lead.nbytes if self.lead is not None else 0)


def plain_adapter(base: BaseModel, name: str | None = None) -> ServingAdapter:
    """The unadapted base model: prompts pass through as they are."""
    return ServingAdapter(
        name=name or base.name,
        key=BASE_WEIGHTS,
        task_type=None,
        labels=None,
        label_texts=None,
        render=lambda texts: list(texts),
        base=base,
    )


def from_artifact(artifact, name: str, key: str, base: BaseModel | None = None) -> ServingAdapter:
    """Reduce a loaded artifact to its per-row parts, through the adaptation protocol only; ``base``
    is the base model its rows run on (the one it was loaded on)."""
    labels = artifact.label_set
    return ServingAdapter(
        name=name,
        key=key,
        task_type=artifact.task,
        labels=labels,
        label_texts=artifact.label_texts(),
        render=artifact.prompts,
        calibrate=artifact.calibrate if artifact.calibrated else None,
        contribution=artifact.contribution().frozen(),
        decoding=dict(artifact.decoding or {"max_new_tokens": 64}),
        kind=artifact.strategy,
        base=base,
    )
