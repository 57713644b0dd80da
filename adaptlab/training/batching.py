"""Turn examples into (prompt, target) token ids and length-bucketed, right-padded batches."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from adaptlab.models.runtime import render_chat

if TYPE_CHECKING:  # annotations only: the task types (which import this module) import the data layer
    from adaptlab.data.records import TaskData
    from adaptlab.prompts import PromptTemplate


@dataclass(frozen=True)
class Encoded:
    prompt: list[int]  # starts with BOS
    target: list[int]  # the tokens the loss is computed on
    extra: tuple[tuple[int, int], ...] = ()  # more target spans [start, end) inside the prompt (earlier chat turns)
    negative: bool = False  # the target is an answer *not* to give: penalised (unlikelihood), not imitated

    def __len__(self) -> int:
        return len(self.prompt) + len(self.target)

    @property
    def n_targets(self) -> int:
        return len(self.target) + sum(e - s for s, e in self.extra)


def fit_length(prompt: list[int], target: list[int], max_length: int) -> list[int]:
    """Cut the prompt from the left (keeping BOS) so prompt + target fits ``max_length``."""
    room = max_length - len(target)
    if room < 2:
        raise ValueError(f"target of {len(target)} tokens does not fit max_length={max_length}")
    if len(prompt) > room:
        prompt = prompt[:1] + prompt[len(prompt) - room + 1 :]
    return prompt


def encode_chat(tokenizer, messages: list[dict], max_length: int) -> Encoded:
    """A whole conversation in the model's chat template, every assistant turn a target (with the
    template's end-of-turn, so the model learns where a turn stops); the last turn is ``target``.

    Each assistant span is found by rendering the conversation up to that turn twice, with and
    without it: the tokens in between are the turn. A conversation over ``max_length`` loses its
    earliest tokens (after BOS), and the spans that were cut with them.
    """

    def ids(msgs, gen):
        return tokenizer(render_chat(tokenizer, msgs, add_generation_prompt=gen))["input_ids"]

    full = ids(messages, False)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] == "assistant":
            before, through = ids(messages[:i], True), ids(messages[: i + 1], False)
            if full[: len(through)] != through or through[: len(before)] != before or len(through) <= len(before):
                raise ValueError(f"chat template: turn {i} does not tokenize the same inside the conversation")
            spans.append((len(before), len(through)))
    last_start, last_end = spans[-1]
    full = full[:last_end]  # nothing after the answer's end-of-turn
    cut = max(0, len(full) - max_length)
    if cut and last_start - cut < 2:
        raise ValueError(f"the last answer ({last_end - last_start} tokens) does not fit max_length={max_length}")
    if cut:
        full = full[:1] + full[1 + cut :]
        spans = [(max(1, s - cut), e - cut) for s, e in spans if e - cut > 1]
        last_start, last_end = spans[-1]
    return Encoded(full[:last_start], full[last_start:last_end], tuple(spans[:-1]))


def encode(tokenizer, data: TaskData, template: PromptTemplate, max_length: int) -> list[Encoded]:
    """Each example as prompt and target ids, as its task type encodes it
    (:meth:`adaptlab.tasks.base.TaskSpec.encode`): classification targets are the verbalized label,
    generation targets end with EOS, chat targets are every assistant turn (:func:`encode_chat`)."""
    from adaptlab.tasks.base import get_task  # here, not above: the task types import this module

    return get_task(data.task).encode(tokenizer, data, template, max_length)


def bucketed_batches(items: list[Encoded], batch_size: int, bucket_size: int, seed: int) -> list[list[int]]:
    """Indices grouped into batches of similar length, in a seeded random order.

    Shuffle, cut into buckets of ``bucket_size`` examples, sort each bucket by length, cut into
    batches, shuffle the batches: padding stays small and the order stays random.
    """
    rng = random.Random(seed)
    idx = list(range(len(items)))
    rng.shuffle(idx)
    batches = []
    for start in range(0, len(idx), bucket_size):
        bucket = sorted(idx[start : start + bucket_size], key=lambda i: len(items[i]))
        batches += [bucket[b : b + batch_size] for b in range(0, len(bucket), batch_size)]
    rng.shuffle(batches)
    return batches


def collate(items: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded (B, T) input_ids, attention_mask and target_mask."""
    T = max(len(e) for e in items)
    ids = torch.full((len(items), T), pad_id, dtype=torch.long)
    att = torch.zeros((len(items), T), dtype=torch.long)
    tgt = torch.zeros((len(items), T), dtype=torch.bool)
    for r, e in enumerate(items):
        seq = e.prompt + e.target
        ids[r, : len(seq)] = torch.tensor(seq)
        att[r, : len(seq)] = 1
        tgt[r, len(e.prompt) : len(seq)] = True
        for start, end in e.extra:
            tgt[r, start:end] = True
    return {"input_ids": ids, "attention_mask": att, "target_mask": tgt}
