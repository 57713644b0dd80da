"""What the task types whose record is an input and its answer share (classification, generation).

Reading checks each row's two fields with one-line errors naming file, line and field; encoding
turns the template's prompt and the answer into token ids, the answer as its own user/assistant
turn when the template sits in a chat turn (``prompt_format``)."""

from __future__ import annotations

from adaptlab.data.records import DataError, Example, TaskData
from adaptlab.tasks.base import TaskSpec
from adaptlab.training.batching import Encoded, encode_chat, fit_length


class InputAnswerTask(TaskSpec):
    """A record of two string fields, ``fields = (input, answer)`` by default."""

    ends_with_eos = False   # the target ends with the tokenizer's end of sequence (free text stops there)

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
            values = []
            for name in (tf, lf):
                if name not in rec or rec[name] is None:
                    present = ", ".join(repr(k) for k, v in rec.items() if v is not None) or "none"
                    raise DataError(f"{path}:{lineno}: missing field '{name}' (fields present: {present})")
                v = rec[name]
                if not isinstance(v, str):
                    hint = self.type_hint("answer" if name == lf else "input")
                    raise DataError(f"{path}:{lineno}: field '{name}' must be a string, got {type(v).__name__} "
                                    f"{v!r}{hint}")
                if not v.strip():
                    raise DataError(f"{path}:{lineno}: field '{name}' is empty")
                values.append(v)
            text, label = values
            label = self.clean_answer(path, lineno, lf, label, known)
            examples.append(Example(text=text.strip(), label=label, line=lineno))
        names = list(label_names) if (self.closed_labels and label_names is not None) else None
        return TaskData(task=self.name, examples=examples, source=str(path), label_names=names,
                        text_field=tf, label_field=lf)

    def record(self, example) -> dict:
        return {self.fields[0]: example.text, self.fields[1]: example.label}

    def answer_text(self, example) -> str:
        """The answer as the model is trained to write it."""
        return example.label

    def encode(self, tokenizer, data, template, max_length):
        labels = self.label_set(data)
        if template.chat_turn:  # the prompt as a user turn, the answer as the assistant's (with its end-of-turn)
            return [encode_chat(tokenizer, [{"role": "user", "content": template.render(ex.text, labels)},
                                            {"role": "assistant", "content": self.answer_text(ex)}], max_length)
                    for ex in data.examples]
        out = []
        for ex in data.examples:
            prompt = tokenizer(template.render(ex.text, labels))["input_ids"]
            target = tokenizer(template.label_prefix + self.answer_text(ex), add_special_tokens=False)["input_ids"]
            if self.ends_with_eos:
                target = target[: max_length - 2] + [tokenizer.eos_token_id]
            out.append(Encoded(fit_length(prompt, target, max_length), target))
        return out
