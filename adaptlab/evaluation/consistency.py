"""Consistency under sampling: does the same input get the same answer when the model samples?

Whether fine-tuned models answer more consistently than prompted ones is a claim to measure, not
repeat. For ``n`` samples per input at a stated temperature (each sample its own seed):

- classification: labels are drawn from the artifact's label distribution at that temperature;
  ``agreement`` is the mean share of an input's samples that give its most frequent label, and
  ``unanimous`` the share of inputs whose samples all agree;
- generation and chat: ``metric_spread`` is the mean over inputs of the standard deviation of the
  samples' ROUGE-L against the references, and ``pairwise_similarity`` the mean ROUGE-L between
  two samples of one input (1: the same text every time).
"""

from __future__ import annotations

import itertools
import statistics
from collections import Counter

import torch

from adaptlab.data.loading import TaskData


def consistency(artifact, data: TaskData, n: int = 4, temperature: float = 0.7, seed: int = 0) -> dict:
    if n < 2:
        raise ValueError(f"consistency: n={n}: needs at least 2 samples per input")
    if not 0 < temperature <= 2:
        raise ValueError(f"consistency: temperature={temperature}: must be in (0, 2]")
    head = {"samples": n, "temperature": temperature, "inputs": 0}
    if artifact.spec.closed_labels:
        return {**head, **_labels(artifact, data, n, temperature, seed)}
    return {**head, **_texts(artifact, data, n, temperature, seed)}


def _labels(artifact, data: TaskData, n: int, temperature: float, seed: int) -> dict:
    texts = [ex.text for ex in data.examples]
    probs = torch.softmax(artifact.scores(texts).double() / temperature, dim=-1)  # (N, L)
    g = torch.Generator().manual_seed(seed)
    draws = torch.multinomial(probs, n, replacement=True, generator=g)  # (N, n)
    agree = [Counter(row.tolist()).most_common(1)[0][1] / n for row in draws]
    return {
        "inputs": len(texts),
        "agreement": sum(agree) / len(agree),
        "unanimous": sum(a == 1.0 for a in agree) / len(agree),
    }


def _texts(artifact, data: TaskData, n: int, temperature: float, seed: int) -> dict:
    from adaptlab.evaluation.generation import references_by_input
    from adaptlab.evaluation.text_metrics import rouge_l, rouge_l_multi
    from adaptlab.models.decoding import Sampling

    texts, refs = references_by_input(data.examples)
    samples = [
        artifact.generate(texts, sampling=Sampling(temperature=temperature, seed=seed + 1000 * k)) for k in range(n)
    ]  # n x N
    spread, pairwise = [], []
    for i, r in enumerate(refs):
        outs = [s[i] for s in samples]
        spread.append(statistics.pstdev(rouge_l_multi(o, r) for o in outs))
        pairwise.append(statistics.mean(rouge_l(a, b) if a or b else 1.0 for a, b in itertools.combinations(outs, 2)))
    return {
        "inputs": len(texts),
        "metric_spread": sum(spread) / len(spread),
        "pairwise_similarity": sum(pairwise) / len(pairwise),
        "distinct_outputs": sum(len(set(s[i] for s in samples)) for i in range(len(texts))) / len(texts),
    }
