"""Preference data: answers people preferred or rejected, trained with DPO or KTO.

Rows are pairs ``{"prompt", "chosen", "rejected"}`` or unpaired ``{"prompt", "completion",
"label": true|false}`` (TRL's formats); ``chat_preference`` takes ``"messages"`` (the conversation
so far, ending with the user's turn) instead of ``"prompt"``. An example's ``label`` is the wanted
answer ("" when only an unwanted one is known) and ``rejected`` the unwanted one.

Training uses the task's objective (:meth:`PreferenceTask.objective`): DPO when every row is a
pair, KTO otherwise (``TrainConfig.preference_loss`` overrides), against the base model as the
reference (:mod:`adaptlab.training.objectives`). Evaluation is **preference accuracy**: the share
of (wanted, unwanted) answer pairs to which the adaptation gives the wanted one the higher mean
log-probability per token (per token, because a sum favours the shorter answer whatever it says).
Unpaired rows pair up when one input has both kinds; rows with no counterpart are not scored.
An adaptation trained on preferences writes answers as a generation adaptation does.
"""

from __future__ import annotations

import json

from adaptlab.data.records import CHAT_FIELD, DataError, Example, TaskData, check_conversation
from adaptlab.tasks.chat import ChatTask
from adaptlab.tasks.generation import GenerationTask
from adaptlab.training.batching import encode_chat

PAIR_FIELDS = ("chosen", "rejected")
UNPAIRED_FIELDS = ("completion", "label")
MAX_PAIRS_PER_INPUT = 4  # unpaired rows: at most this many (wanted, unwanted) pairs scored per input


def _string(path, lineno: int, rec: dict, name: str) -> str:
    v = rec.get(name)
    if v is None:
        present = ", ".join(repr(k) for k, x in rec.items() if x is not None) or "none"
        raise DataError(f"{path}:{lineno}: missing field '{name}' (fields present: {present})")
    if not isinstance(v, str):
        raise DataError(f"{path}:{lineno}: field '{name}' must be a string, got {type(v).__name__} {v!r}")
    if not v.strip():
        raise DataError(f"{path}:{lineno}: field '{name}' is empty")
    return v


def _flag(path, lineno: int, rec: dict) -> bool:
    v = rec.get("label")
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip().lower() in ("true", "false"):  # CSV cells are text
        return v.strip().lower() == "true"
    raise DataError(f"{path}:{lineno}: field 'label' must be true or false (is the completion wanted?), got {v!r}")


class PreferenceTask(GenerationTask):
    name = "preference"
    summary = (
        "answers people preferred or rejected: {prompt, chosen, rejected} pairs or {prompt, completion, "
        "label: true|false} rows; DPO or KTO against the base model; preference accuracy"
    )
    fields = ("prompt",) + PAIR_FIELDS
    conversation = False
    metric = "preference_accuracy"
    report_metrics = ("preference_accuracy", "mean_margin")
    dev_by_metric = True  # scoring two answers per row is cheap: early stopping reads the metric
    prompt_strategies = ("zero_shot",)  # the base model's own preferences; no exemplars or search on them
    specificity = 2
    row_variance = 0.25  # a row is right or wrong

    # ------------------------------------------------------------------ records
    def matches(self, columns):
        return self.fields[0] in columns and (set(PAIR_FIELDS) <= columns or set(UNPAIRED_FIELDS) <= columns)

    def read_input(self, path, lineno: int, rec: dict) -> str:
        return _string(path, lineno, rec, self.fields[0]).strip()

    def read(self, path, records, text_field, label_field, label_names):
        examples = []
        for lineno, rec in records:
            text = self.read_input(path, lineno, rec)
            if "completion" in rec and not any(f in rec for f in PAIR_FIELDS):
                completion = _string(path, lineno, rec, "completion")
                wanted = _flag(path, lineno, rec)
                examples.append(Example(text, completion if wanted else "", lineno, None if wanted else completion))
            else:
                examples.append(
                    Example(text, _string(path, lineno, rec, "chosen"), lineno, _string(path, lineno, rec, "rejected"))
                )
        return TaskData(
            task=self.name, examples=examples, source=str(path), text_field=self.fields[0], label_field="chosen"
        )

    def write_input(self, example):
        return example.text

    def record(self, example) -> dict:
        row = {self.fields[0]: self.write_input(example)}
        if example.label and example.rejected:
            return {**row, "chosen": example.label, "rejected": example.rejected}
        return {**row, "completion": example.label or example.rejected, "label": bool(example.label)}

    def label_set(self, data):
        return None

    # ------------------------------------------------------------------ training
    def encode(self, tokenizer, data, template, max_length):
        from adaptlab.training.objectives import PreferenceEncoded

        out = []
        for ex in data.examples:
            answers = [
                self.encode_answer(tokenizer, ex.text, a, template, None, max_length) if a else None
                for a in (ex.label, ex.rejected)
            ]
            prompt = next(a.prompt for a in answers if a is not None)
            if all(a is not None for a in answers) and answers[0].prompt != answers[1].prompt:
                # The prompt was cut from the left to fit the longer answer: cut both the same way.
                prompt = min((a.prompt for a in answers), key=len)
                answers = [type(a)(prompt, a.target) for a in answers]
            out.append(PreferenceEncoded(prompt, *(a.target if a is not None else None for a in answers)))
        return out

    def objective(self, train_config, items):
        from adaptlab.training.objectives import DPO, KTO

        loss = train_config.preference_loss
        if loss == "auto":
            loss = "dpo" if all(it.paired for it in items) else "kto"
        return DPO(train_config.beta) if loss == "dpo" else KTO(train_config.beta)

    def default_decoding(self, train, count_tokens):
        longest = max(count_tokens(a) for ex in train.examples for a in (ex.label, ex.rejected) if a)
        return {"max_new_tokens": min(256, longest + 8), "num_beams": 1}

    # ------------------------------------------------------------------ evaluation
    def pairs(self, data) -> list[tuple[str, str, str]]:
        """(input, wanted, unwanted) per scored pair, in the rows' order."""
        out, wanted, unwanted = [], {}, {}
        for ex in data.examples:
            if ex.label and ex.rejected:
                out.append((ex.text, ex.label, ex.rejected))
            elif ex.label:
                wanted.setdefault(ex.text, []).append(ex.label)
            else:
                unwanted.setdefault(ex.text, []).append(ex.rejected)
        for text, goods in wanted.items():
            combos = [(g, b) for g in goods for b in unwanted.get(text, [])]
            out += [(text, g, b) for g, b in combos[:MAX_PAIRS_PER_INPUT]]
        return out

    def row_keys(self, data):
        return self.pairs(data)

    def evaluate(self, artifact, data):
        pairs = self.pairs(data)
        if not pairs:
            raise DataError(
                f"{data.source}: no row to score: preference accuracy needs a pair, or an input with "
                f"both a wanted and an unwanted completion"
            )
        texts = [t for t, _, _ in pairs]
        prompts = artifact.prompts(texts)
        prefix = "" if artifact.template.chat_turn or self.conversation else artifact.template.label_prefix
        conts = [prefix + a for _, g, b in pairs for a in (g, b)]
        scores = artifact.backend.continuation_logprobs([p for p in prompts for _ in (0, 1)], conts)
        mean = [s / max(1, n) for s, n in scores]
        detail, margins = [], []
        for i, (t, g, b) in enumerate(pairs):
            margin = mean[2 * i] - mean[2 * i + 1]
            margins.append(margin)
            detail.append(
                {
                    "id": i,
                    "input": t,
                    "reference": g,
                    "rejected": b,
                    "output": g if margin > 0 else b,
                    "metric": float(margin > 0),
                    "margin": margin,
                }
            )
        n = len(pairs)
        scored = set(texts)  # inputs with at least one scored pair
        out = {
            "n": n,
            "preference_accuracy": sum(m > 0 for m in margins) / n,
            "mean_margin": sum(margins) / n,
            "rows_unscored": sum(1 for ex in data.examples if not (ex.label and ex.rejected) and ex.text not in scored),
        }
        return out, detail, texts


class ChatPreferenceTask(PreferenceTask):
    """Preference rows whose input is a conversation (``messages``, ending with the user's turn)."""

    name = "chat_preference"
    summary = (
        "preference rows whose input is a conversation: {messages, chosen, rejected} or {messages, "
        "completion, label}; as preference, in the model's chat template"
    )
    fields = (CHAT_FIELD,) + PAIR_FIELDS
    conversation = True
    templates = ChatTask.templates  # the model's chat template frames the conversation
    paraphrases = ()
    train_frame = "{text}"

    def read_input(self, path, lineno, rec):
        msgs = rec.get(CHAT_FIELD)
        where = f"{path}:{lineno}"
        if not isinstance(msgs, list) or not msgs or not isinstance(msgs[-1], dict) or msgs[-1].get("role") != "user":
            raise DataError(
                f"{where}: field '{CHAT_FIELD}' must be the conversation so far, ending with the user's turn"
            )
        checked = check_conversation(msgs + [{"role": "assistant", "content": "-"}], where)[:-1]
        return json.dumps(checked, ensure_ascii=False)

    def write_input(self, example):
        return json.loads(example.text)

    def request_input(self, messages):
        return json.dumps([{"role": m["role"], "content": m["content"]} for m in messages], ensure_ascii=False)

    def input_lengths(self, data, count, tokenizer=None):
        from adaptlab.models.runtime import render_chat

        return [count(render_chat(tokenizer, json.loads(ex.text))) for ex in data.examples]

    def encode_answer(self, tokenizer, text, answer, template, labels, max_length):
        return encode_chat(tokenizer, json.loads(text) + [{"role": "assistant", "content": answer}], max_length)
