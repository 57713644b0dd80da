"""What the task types whose record is an input and its answer share (classification, generation).

Reading checks each row's two fields with one-line errors naming file, line and field; encoding
turns the template's prompt and the answer into token ids, the answer as its own user/assistant
turn when the template sits in a chat turn (``prompt_format``)."""

from __future__ import annotations

import dataclasses

from adaptlab.data.records import DataError, Example, TaskData
from adaptlab.tasks.base import TaskSpec

REJECTED_FIELD = "rejected"  # an answer not to give for the input (optional; the answer may then be absent)
from adaptlab.training.batching import Encoded, encode_chat, fit_length


class InputAnswerTask(TaskSpec):
    """A record of two string fields, ``fields = (input, answer)`` by default."""

    ends_with_eos = False  # the target ends with the tokenizer's end of sequence (free text stops there)

    def clean_answer(self, path, lineno: int, field: str, label: str, known: set[str] | None) -> str:
        return label

    def type_hint(self, field: str) -> str:
        """Added to the error for a field that is not a string."""
        return ""

    def read(self, path, records, text_field, label_field, label_names):
        tf = text_field or self.fields[0]
        lf = label_field or self.fields[1]
        known = set(label_names) if label_names is not None and self.closed_labels else None
        examples: list[Example] = []
        for lineno, rec in records:
            rejected = self._rejected(path, lineno, rec, known)
            values = []
            for name in (tf, lf):
                if rejected is not None and name == lf and rec.get(name) in (None, ""):
                    values.append("")  # only an unwanted answer is known for this input
                    continue
                if name not in rec or rec[name] is None:
                    present = ", ".join(repr(k) for k, v in rec.items() if v is not None) or "none"
                    raise DataError(f"{path}:{lineno}: missing field '{name}' (fields present: {present})")
                v = rec[name]
                if not isinstance(v, str):
                    hint = self.type_hint("answer" if name == lf else "input")
                    raise DataError(
                        f"{path}:{lineno}: field '{name}' must be a string, got {type(v).__name__} {v!r}{hint}"
                    )
                if not v.strip():
                    raise DataError(f"{path}:{lineno}: field '{name}' is empty")
                values.append(v)
            text, label = values
            if label:
                label = self.clean_answer(path, lineno, lf, label, known)
            examples.append(Example(text=text.strip(), label=label, line=lineno, rejected=rejected))
        names = list(label_names) if (self.closed_labels and label_names is not None) else None
        return TaskData(
            task=self.name, examples=examples, source=str(path), label_names=names, text_field=tf, label_field=lf
        )

    def _rejected(self, path, lineno: int, rec: dict, known: set[str] | None) -> str | None:
        """The row's optional ``rejected`` answer (one not to give: feedback rated down)."""
        v = rec.get(REJECTED_FIELD)
        if v is None or v == "":
            return None
        if not isinstance(v, str):
            raise DataError(f"{path}:{lineno}: field '{REJECTED_FIELD}' must be a string, got {type(v).__name__}")
        return self.clean_answer(path, lineno, REJECTED_FIELD, v, known)

    def record(self, example) -> dict:
        row = {self.fields[0]: example.text, self.fields[1]: example.label or None}
        if example.rejected:
            row[REJECTED_FIELD] = example.rejected
        return row

    def answer_text(self, example) -> str:
        """The answer as the model is trained to write it."""
        return example.label

    def encode(self, tokenizer, data, template, max_length):
        labels = self.label_set(data)
        out = []
        for ex in data.examples:
            if ex.label:
                out.append(self.encode_answer(tokenizer, ex.text, self.answer_text(ex), template, labels, max_length))
            if ex.rejected:  # an answer rated down without a correction: penalised, not imitated
                bad = self.answer_text(Example(ex.text, ex.rejected))
                out.append(
                    dataclasses.replace(
                        self.encode_answer(tokenizer, ex.text, bad, template, labels, max_length), negative=True
                    )
                )
        return out

    def encode_answer(self, tokenizer, text: str, answer: str, template, labels, max_length: int) -> Encoded:
        """One input with one answer as (prompt ids, target ids)."""
        if template.chat_turn:  # the prompt as a user turn, the answer as the assistant's (with its end-of-turn)
            return encode_chat(
                tokenizer,
                [{"role": "user", "content": template.render(text, labels)}, {"role": "assistant", "content": answer}],
                max_length,
            )
        prompt = tokenizer(template.render(text, labels))["input_ids"]
        target = tokenizer(template.label_prefix + answer, add_special_tokens=False)["input_ids"]
        if self.ends_with_eos:
            target = target[: max_length - 2] + [tokenizer.eos_token_id]
        return Encoded(fit_length(prompt, target, max_length), target)
