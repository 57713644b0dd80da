"""Turn examples into (prompt, target) token ids and length-bucketed, right-padded batches."""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from adaptlab.data.loading import TaskData
from adaptlab.prompts import PromptTemplate, verbalize


@dataclass(frozen=True)
class Encoded:
    prompt: list[int]   # starts with BOS
    target: list[int]   # the tokens the loss is computed on

    def __len__(self) -> int:
        return len(self.prompt) + len(self.target)


def fit_length(prompt: list[int], target: list[int], max_length: int) -> list[int]:
    """Cut the prompt from the left (keeping BOS) so prompt + target fits ``max_length``."""
    room = max_length - len(target)
    if room < 2:
        raise ValueError(f"target of {len(target)} tokens does not fit max_length={max_length}")
    if len(prompt) > room:
        prompt = prompt[:1] + prompt[len(prompt) - room + 1:]
    return prompt


def encode(tokenizer, data: TaskData, template: PromptTemplate, max_length: int) -> list[Encoded]:
    """Classification targets are the verbalized label; generation targets end with EOS."""
    labels = data.labels if data.task == "classification" else None
    out = []
    for ex in data.examples:
        prompt = tokenizer(template.render(ex.text, labels))["input_ids"]
        if data.task == "classification":
            target = tokenizer(template.label_prefix + verbalize(ex.label), add_special_tokens=False)["input_ids"]
        else:
            target = tokenizer(template.label_prefix + ex.label, add_special_tokens=False)["input_ids"]
            target = target[: max_length - 2] + [tokenizer.eos_token_id]
        out.append(Encoded(fit_length(prompt, target, max_length), target))
    return out


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
        bucket = sorted(idx[start:start + bucket_size], key=lambda i: len(items[i]))
        batches += [bucket[b:b + batch_size] for b in range(0, len(bucket), batch_size)]
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
        ids[r, :len(seq)] = torch.tensor(seq)
        att[r, :len(seq)] = 1
        tgt[r, len(e.prompt):len(seq)] = True
    return {"input_ids": ids, "attention_mask": att, "target_mask": tgt}
