"""Zero-shot evaluation of an unadapted base model: the baseline every strategy must beat."""

from __future__ import annotations

from adaptlab.data.loading import DataError, TaskData
from adaptlab.evaluation.metrics import classification_metrics
from adaptlab.evaluation.scoring import predict_labels
from adaptlab.models.base import BaseModel
from adaptlab.models.runtime import has_chat_template, render_chat
from adaptlab.prompts import DEFAULT_CLASSIFICATION, PromptTemplate, use_chat_turn


def evaluate_zero_shot(
    base: BaseModel,
    data: TaskData,
    template: PromptTemplate = DEFAULT_CLASSIFICATION,
    batch_size: int = 32,
    prompt_format: str = "auto",
) -> dict:
    """Accuracy, macro-F1, speed and prompt length of the base model with an instruction prompt (as a
    user turn in its chat template where it has one, unless ``prompt_format`` says plain)."""
    if not data.spec.closed_labels:
        raise DataError(f"{data.source}: zero-shot label scoring needs a classification task, got {data.task}")
    labels = data.labels
    template = use_chat_turn(template, prompt_format, data.task, has_chat_template(base.tokenizer))
    prompts = [template.render(ex.text, labels) for ex in data.examples]
    if template.chat_turn:
        prompts = [render_chat(base.tokenizer, [{"role": "user", "content": p}]) for p in prompts]
    scored = predict_labels(
        base.model, base.tokenizer, prompts, labels, template.label_texts(labels), batch_size=batch_size
    )
    gold = [ex.label for ex in data.examples]
    return {
        **classification_metrics(gold, scored.predictions, labels),
        "examples_per_s": scored.examples_per_s,
        "prompt_tokens": scored.prompt_tokens,
        "seconds": scored.seconds,
        "template": template.name,
        "model": base.name,
        "fingerprint": base.fingerprint,
        "predictions": scored.predictions,
    }
