"""Prompt sensitivity: quality across instruction / frame paraphrases and perturbed inputs.

Users fear that a prompt works only in its exact wording. Two measurements, for any artifact
(hard prompt or trained): swap the template's instruction for K paraphrases (or, for a trained
strategy's short frame, its field names: ``Category:`` -> ``Label:``), and perturb the inputs
(case, typos, whitespace, punctuation) with a seeded RNG.
"""

from __future__ import annotations

import dataclasses
import random
import statistics

from adaptlab.data.loading import TaskData
from adaptlab.prompts import PromptTemplate, instruction_paraphrases

# Field-name swaps for frames without an instruction (trained strategies' "Text: {text}\nCategory:").
FRAME_SWAPS = [
    [("Category:", "Label:")],
    [("Text:", "Input:"), ("Category:", "Class:")],
    [("Text:", "Message:"), ("Category:", "Answer:")],
    [("Input:", "Text:"), ("Output:", "Answer:")],
    [("Input:", "Source:"), ("Output:", "Result:")],
]


def template_variants(template: PromptTemplate, task: str, k: int) -> list[PromptTemplate]:
    """Up to ``k`` paraphrased versions of ``template`` (never the template itself)."""
    out: list[PromptTemplate] = []
    if "instruction" in template.fields:
        for i, instr in enumerate(p for p in instruction_paraphrases(task) if p != template.instruction):
            out.append(template.with_instruction(instr, f"{template.name}~instr{i}"))
    else:
        for i, swaps in enumerate(FRAME_SWAPS):
            t, ex = template.template, template.example_format
            for a, b in swaps:
                t, ex = t.replace(a, b), ex.replace(a, b)
            if t != template.template:
                out.append(
                    dataclasses.replace(template, template=t, example_format=ex, name=f"{template.name}~frame{i}")
                )
    return out[:k]


def _typo(text: str, rng: random.Random) -> str:
    words = text.split(" ")
    idx = [i for i, w in enumerate(words) if len(w) > 3]
    for i in rng.sample(idx, max(1, len(idx) // 8)) if idx else []:
        w = words[i]
        j = rng.randrange(1, len(w) - 2)
        words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2 :]  # swap two neighbouring letters
    return " ".join(words)


PERTURBATIONS = {
    "lowercase": lambda t, rng: t.lower(),
    "uppercase": lambda t, rng: t.upper(),
    "typos": _typo,
    "whitespace": lambda t, rng: "  " + "  ".join(t.split()) + " \n",
    "punctuation": lambda t, rng: "".join(c for c in t if c.isalnum() or c.isspace()) + "!!",
}


def perturb(data: TaskData, kind: str, seed: int = 0) -> TaskData:
    rng = random.Random(seed)
    fn = PERTURBATIONS[kind]
    return data.with_examples([dataclasses.replace(ex, text=fn(ex.text, rng) or ex.text) for ex in data.examples])


def _quality(result: dict, data: TaskData) -> float:
    return result[data.spec.metric]


def fragility(artifact, data: TaskData, k: int = 3, seed: int = 0) -> dict:
    """Quality on ``data`` under K template paraphrases and each input perturbation."""
    base_q = _quality(artifact.evaluate(data), data)
    original = artifact.template
    para = []
    try:
        for t in template_variants(original, data.task, k):
            artifact.template = t
            para.append({"template": t.name, "quality": _quality(artifact.evaluate(data), data)})
    finally:
        artifact.template = original
    qs = [base_q] + [p["quality"] for p in para]
    pert = {kind: _quality(artifact.evaluate(perturb(data, kind, seed)), data) for kind in PERTURBATIONS}
    return {
        "examples": len(data),
        "clean": base_q,
        "paraphrases": para,
        "paraphrase_spread": max(qs) - min(qs),
        "paraphrase_std": statistics.pstdev(qs),
        "perturbations": pert,
        "perturbation_drop": base_q - min(pert.values()),
        "mean_perturbation_drop": base_q - statistics.fmean(pert.values()),
    }
