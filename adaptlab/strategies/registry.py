"""The validating strategy registry (after PEFT's ``register_peft_method``).

The CLI, the comparison grid and the test matrix all enumerate this registry; nothing else keeps
a list of strategies.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Literal

Kind = Literal["gradient", "prompt"]
# What a strategy changes, the families a compare keeps one candidate of each of when a budget cannot fit
# a first look at every candidate: prompt text only, learned prompt vectors, an adapter beside frozen
# weights, or the weights themselves.
FAMILIES = ("prompt", "learned_prompt", "adapter", "weights")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class StrategySpec:
    """A registered strategy and what other layers may know of it without naming it."""

    name: str
    config_cls: type
    strategy_cls: type
    kind: Kind
    summary: str
    default_epochs: float | None = None  # epochs a compare gives it unless told (None: the compare's own)
    uses_train_data: bool = True  # False: one run per seed, whatever the train size (zero-shot)
    # In a compare's default set ("--strategies all"). False: run when named (gepa, whose proposer LM is
    # the user's choice; a compare given --proposer adds it).
    by_default: bool = True
    stacks: bool = False  # combines a fine-tune with a prompt (suggested when none was measured)
    # Variants a compare tries besides the defaults (--tune), each a dict of config overrides; "lr"
    # is the training learning rate. Small on purpose: a few values that decide whether a strategy
    # loses by its defaults (full fine-tuning at an adapter's step size), not a hyperparameter search.
    search: tuple = ()
    # The task types (adaptlab.tasks) it can adapt to; empty: every registered one. A compare plans a
    # strategy only on data of a task type it supports.
    tasks: tuple = ()
    # What it changes (one of FAMILIES; default: "prompt" for a prompt strategy, else "adapter").
    family: str | None = None
    # Cost facts the compare's cost model reads instead of naming strategies (compare/costs.py):
    # extra forward-units of work per trained token for gradients and optimizer state over every weight
    # (full fine-tuning: 2), and whether its prompt shows the config's k exemplars.
    weight_grad_cost: float = 0.0
    exemplars: bool = True

    @property
    def changes(self) -> str:
        """The family: what the strategy changes (:data:`FAMILIES`)."""
        return self.family or ("prompt" if self.kind == "prompt" else "adapter")

    def supports(self, task: str) -> bool:
        """Its own list if it has one; else every task type, except those that name the prompt
        strategies fitting them (:attr:`adaptlab.tasks.base.TaskSpec.prompt_strategies`)."""
        if self.tasks:
            return task in self.tasks
        from adaptlab.tasks.base import get_task  # here: the task types import the strategy layer's peers

        allowed = get_task(task).prompt_strategies
        return self.kind != "prompt" or allowed is None or self.name in allowed


_REGISTRY: dict[str, StrategySpec] = {}


def register_strategy(
    name: str, config_cls: type, strategy_cls: type, kind: Kind, summary: str, **facts
) -> StrategySpec:
    """Add a strategy; reject bad or duplicate names and classes that do not fit the protocol.
    ``facts`` are :class:`StrategySpec`'s optional fields (cost prior, default epochs, ...)."""
    if not _NAME.match(name):
        raise ValueError(f"strategy name {name!r} must be lowercase letters, digits and '_', starting with a letter")
    if name in _REGISTRY:
        raise ValueError(f"strategy {name!r} is already registered")
    if kind not in ("gradient", "prompt"):
        raise ValueError(f"strategy {name!r}: kind must be 'gradient' or 'prompt', got {kind!r}")
    if not dataclasses.is_dataclass(config_cls):
        raise TypeError(f"strategy {name!r}: config_cls must be a dataclass")
    for method in ("fit", "planned_calls"):
        if not callable(getattr(strategy_cls, method, None)):
            raise TypeError(f"strategy {name!r}: strategy_cls has no {method}()")
    if getattr(strategy_cls, "artifact_cls", None) is None:
        raise TypeError(f"strategy {name!r}: strategy_cls has no artifact_cls")
    known = {f.name for f in dataclasses.fields(StrategySpec)} - {
        "name",
        "config_cls",
        "strategy_cls",
        "kind",
        "summary",
    }
    unknown = sorted(set(facts) - known)
    if unknown:
        raise ValueError(
            f"strategy {name!r}: unknown spec field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    fields = {f.name for f in dataclasses.fields(config_cls)} | ({"lr"} if kind == "gradient" else set())
    for variant in facts.get("search", ()):
        bad = sorted(set(variant) - fields)
        if not isinstance(variant, dict) or not variant or bad:
            raise ValueError(
                f"strategy {name!r}: search variant {variant!r}: not a non-empty dict of config keys"
                + (f" (unknown: {', '.join(bad)})" if bad else "")
            )
    tasks = facts.get("tasks", ())
    if not isinstance(tasks, tuple) or not all(isinstance(t, str) and t for t in tasks):
        raise ValueError(f"strategy {name!r}: tasks must be a tuple of task type names, got {tasks!r}")
    family = facts.get("family")
    if family is not None and (family not in FAMILIES or (family == "prompt") != (kind == "prompt")):
        raise ValueError(
            f"strategy {name!r}: family {family!r}: one of {', '.join(FAMILIES)}, and 'prompt' "
            f"exactly for prompt strategies"
        )
    spec = StrategySpec(name, config_cls, strategy_cls, kind, summary, **facts)
    _REGISTRY[name] = spec
    return spec


def split_candidate(name: str) -> tuple[str, str | None]:
    """A compare candidate ``STRATEGY@ENDPOINT`` (a prompt strategy run on a named endpoint) as
    (strategy, endpoint); a plain strategy name as (name, None)."""
    strategy, sep, where = name.partition("@")
    return strategy, (where if sep else None)


def get_strategy(name: str) -> StrategySpec:
    """The registered strategy ``name``; a candidate ``STRATEGY@ENDPOINT`` is its strategy's."""
    try:
        return _REGISTRY[split_candidate(name)[0]]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; registered: {', '.join(sorted(_REGISTRY))}") from None


def list_strategies(kind: Kind | None = None, default: bool = False) -> list[str]:
    """Registered strategy names (of ``kind``); ``default``: only those a compare runs unless told."""
    return sorted(n for n, s in _REGISTRY.items() if (kind is None or s.kind == kind) and (s.by_default or not default))


def make_config(name: str, **overrides):
    """Build a strategy's config from keyword overrides; unknown keys are errors."""
    spec = get_strategy(name)
    fields = {f.name for f in dataclasses.fields(spec.config_cls)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(
            f"strategy {name!r}: unknown config key(s) {', '.join(unknown)}; known: {', '.join(sorted(fields))}"
        )
    return spec.config_cls(**overrides)


def split_lr(strategy: str, settings: dict) -> tuple[dict, float | None]:
    """A gradient strategy's settings without "lr", and the learning rate ("lr" goes to the training
    config, the rest to the strategy's)."""
    if get_strategy(strategy).kind != "gradient" or "lr" not in settings:
        return settings, None
    rest = {k: v for k, v in settings.items() if k != "lr"}
    return rest, float(settings["lr"])


def fitting_strategies(task: str) -> list[str]:
    """The registered strategies that fit data of task type ``task``."""
    return [name for name, spec in _REGISTRY.items() if spec.supports(task)]
