"""Forgetting: what adaptation costs the base model's general abilities.

Two measurements, before vs after adaptation, on material this project wrote itself (so no
download and no overlap with any benchmark): the perplexity of a short general-English sample,
and zero-shot accuracy on a small second task (sentiment of everyday sentences). A hard prompt
changes no weight, so its forgetting is zero by construction and is reported as such.
"""

from __future__ import annotations

import math

import torch

from adaptlab.data.loading import Example, TaskData
from adaptlab.models.adaptation import AdaptedLM
from adaptlab.models.runtime import module_device, pad_id, right_pad, target_token_logprobs

GENERAL_TEXT = [
    "The kettle clicked off just as the rain began to tap against the kitchen window.",
    "Most bridges are built to move slightly, because steel expands on hot days and shrinks in the cold.",
    "She folded the map twice, tucked it into her coat pocket and set off along the river path.",
    "A good loaf of bread needs flour, water, salt, yeast and, above all, patience.",
    "The library stays open late on Thursdays, when the reading room fills with students.",
    "Bees visit thousands of flowers in a single day and carry pollen from one to the next.",
    "After the match, the two teams shook hands and walked off the muddy field together.",
    "The old clock in the town square has not shown the right time for years.",
    "To plant a tree, dig a hole twice as wide as its roots and water it well afterwards.",
    "Trains to the coast leave every hour, and the journey takes a little under two hours.",
    "He wrote the shopping list on the back of an envelope: eggs, milk, apples and rice.",
    "Mountains look close on clear mornings, but the walk to the first ridge takes all day.",
    "The museum's new exhibition tells the story of the city through ordinary household objects.",
    "When the power went out, the neighbours gathered on the steps and shared a pot of soup.",
    "A light breeze carried the smell of cut grass across the park.",
    "The recipe says to stir the sauce slowly until it thickens and turns a deep golden colour.",
]

SECOND_TASK = [
    (t, "positive")
    for t in [
        "What a lovely afternoon, I enjoyed every minute of it.",
        "The staff were friendly and the food was delicious.",
        "This is the best book I have read all year.",
        "I am so happy with how the garden turned out.",
        "The concert was wonderful and the crowd was joyful.",
        "Thank you, the gift was perfect and made my day.",
        "Our holiday was relaxing, sunny and full of laughter.",
        "The new bike rides smoothly and I love it.",
    ]
] + [
    (t, "negative")
    for t in [
        "The train was late again and nobody told us why.",
        "The soup was cold and the waiter was rude.",
        "I regret buying this phone, it breaks every week.",
        "The film was dull and far too long.",
        "My package arrived damaged and the shop ignored my emails.",
        "It rained all weekend and the tent leaked.",
        "The hotel room was dirty and noisy all night.",
        "This update made everything slower and more confusing.",
    ]
]


def second_task() -> TaskData:
    return TaskData(
        "classification",
        [Example(t, lab, i + 1) for i, (t, lab) in enumerate(SECOND_TASK)],
        "adaptlab:second-task",
        label_names=["negative", "positive"],
    )


@torch.no_grad()
def perplexity(module, tokenizer, texts: list[str] = GENERAL_TEXT, batch_size: int = 8) -> float:
    """exp(mean token NLL) of ``texts`` under ``module`` (any adapted module or plain model)."""
    device = module_device(module)
    if hasattr(module, "eval"):
        module.eval()
    total, n = 0.0, 0
    for s in range(0, len(texts), batch_size):
        seqs = [tokenizer(t)["input_ids"] for t in texts[s : s + batch_size]]
        ids, att = right_pad(seqs, pad_id(tokenizer), device)
        tgt = att.bool().clone()
        tgt[:, 0] = False  # the first token has no prediction
        _, logp = target_token_logprobs(module, ids, att, tgt)
        total -= logp.sum().item()
        n += logp.numel()
    return math.exp(total / max(1, n))


def second_task_accuracy(module, tokenizer) -> float:
    from adaptlab.evaluation.scoring import score_labels
    from adaptlab.prompts import DEFAULT_CLASSIFICATION

    data = second_task()
    prompts = [DEFAULT_CLASSIFICATION.render(ex.text, data.labels) for ex in data.examples]
    scores = score_labels(module, tokenizer, prompts, DEFAULT_CLASSIFICATION.label_texts(data.labels), top1=True)
    pred = [data.labels[i] for i in scores.argmax(1).tolist()]
    return sum(p == ex.label for p, ex in zip(pred, data.examples)) / len(data)


def forgetting(artifact, base, before: dict | None = None) -> dict:
    """Perplexity and second-task accuracy of the adapted model vs the base model.

    Read through the adaptation protocol: an artifact whose contribution is empty (a hard prompt)
    changed nothing in the model."""
    before = before or base_reference(base)
    c = artifact.contribution()
    if c.empty:  # a hard prompt: no weight changed
        return {
            **before,
            "ppl_after": before["ppl_before"],
            "second_task_after": before["second_task_before"],
            "ppl_change": 0.0,
            "second_task_change": 0.0,
            "weights_changed": False,
        }
    module = AdaptedLM(c.model if c.model is not None else base.model, c)
    ppl = perplexity(module, base.tokenizer)
    acc = second_task_accuracy(module, base.tokenizer)
    return {
        **before,
        "ppl_after": ppl,
        "second_task_after": acc,
        "ppl_change": ppl / before["ppl_before"] - 1.0,
        "second_task_change": acc - before["second_task_before"],
        "weights_changed": True,
    }


def base_reference(base) -> dict:
    return {
        "ppl_before": perplexity(base.model, base.tokenizer),
        "second_task_before": second_task_accuracy(base.model, base.tokenizer),
    }
