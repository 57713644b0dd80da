"""The backend interface prompt strategies use, and label parsing for backends without logprobs."""

from __future__ import annotations

import re

import torch

from adaptlab.prompts import verbalize


class BackendError(RuntimeError):
    """A backend failed in a way retrying will not fix (bad response, refused request, no capability)."""


class Backend:
    """What a prompt strategy needs from a model.

    ``calls`` counts model calls: one per prompt scored, parsed, generated or embedded (a
    prompt_search budget is a number of these). ``prompt_tokens`` sums the prompt tokens sent.
    """

    name: str = "backend"
    fingerprint: str = ""
    supports_scores: bool = True  # label log-probabilities available (else: generate and parse)

    def __init__(self):
        self.calls = 0
        self.prompt_tokens = 0

    def score(self, prompts: list[str], label_texts: list[str]) -> torch.Tensor:
        """(N, L) log p(label_text | prompt)."""
        raise NotImplementedError

    def best(self, prompts: list[str], label_texts: list[str]) -> list[int]:
        """Index of the highest-scoring label per prompt (backends may find it without every score)."""
        return self.score(prompts, label_texts).argmax(dim=1).tolist()

    def choose(self, prompts: list[str], labels: list[str]) -> list[int]:
        """Index of the label each prompt's greedy answer names (-1: no label recognised)."""
        return [parse_label(text, labels) for text in self.generate(prompts, max_new_tokens=16, stop=["\n"])]

    def continuation_logprobs(self, prompts: list[str], continuations: list[str]) -> list[tuple[float, int]]:
        """(summed log-probability, tokens) of each continuation after its prompt."""
        raise BackendError(f"{type(self).__name__}: scoring a given answer needs a local model")

    def generate(
        self, prompts: list[str], max_new_tokens: int = 64, num_beams: int = 1, stop: list[str] | None = None
    ) -> list[str]:
        raise NotImplementedError

    def embed(self, texts: list[str]) -> torch.Tensor:
        """(N, D) text embeddings for nearest-neighbour exemplar selection."""
        raise NotImplementedError

    def count_tokens(self, text: str) -> int:
        raise NotImplementedError

    @property
    def has_chat_template(self) -> bool:
        """Whether :meth:`render_chat` uses the model's own chat template (not a plain transcript)."""
        return False

    def render_chat(self, messages: list[dict]) -> str:
        """A conversation as prompt text: a plain transcript unless the backend knows a chat template."""
        from adaptlab.models.runtime import render_chat

        return render_chat(None, messages)

    def describe(self) -> dict:
        return {"name": self.name, "fingerprint": self.fingerprint}


_NORM = re.compile(r"[^a-z0-9]+")


def _norm(s: str) -> str:
    return _NORM.sub(" ", s.lower()).strip()


def parse_label(answer: str, labels: list[str]) -> int:
    """Constrained parsing of a free-form answer: exact label, then the label the answer starts
    with, then the longest label it mentions; -1 when none is found."""
    a = _norm(answer)
    forms = [(_norm(verbalize(label)), i) for i, label in enumerate(labels)] + [
        (_norm(label), i) for i, label in enumerate(labels)
    ]
    for form, i in forms:
        if a == form:
            return i
    for form, i in sorted(forms, key=lambda f: -len(f[0])):
        if form and (a.startswith(form + " ") or a == form):
            return i
    for form, i in sorted(forms, key=lambda f: -len(f[0])):
        if form and f" {form} " in f" {a} ":
            return i
    return -1
