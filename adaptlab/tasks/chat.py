"""Chat: ``{"messages": [...]}`` rows in OpenAI's fine-tuning format; the input is the conversation
before its last assistant turn, rendered by the model's chat template, and every assistant turn is
trained on. Evaluated as generation (the last turn against its reference)."""

from __future__ import annotations

import json

from adaptlab.data.records import CHAT_FIELD, DataError, Example, TaskData, chat_messages, check_conversation
from adaptlab.prompts import PromptTemplate
from adaptlab.tasks.generation import GenerationTask
from adaptlab.training.batching import encode_chat


class ChatTask(GenerationTask):
    name = "chat"
    summary = "the assistant's next turn in a conversation (OpenAI's messages format), evaluated as generation"
    fields = (CHAT_FIELD,)
    conversation = True
    specificity = 1  # a conversation column names its task more surely than a pair of fields
    # The conversation is rendered by the model's own chat template first (the artifact does it,
    # since it knows the tokenizer); few-shot exemplars become earlier turns of it.
    templates = (PromptTemplate("conversation", "{examples}{text}", example_format="{text}{label}"),)
    paraphrases = ()
    train_frame = "{text}"  # the model's own chat template is the frame

    def read(self, path, records, text_field, label_field, label_names):
        out = []
        for lineno, rec in records:
            if CHAT_FIELD not in rec:
                present = ", ".join(repr(k) for k in rec) or "none"
                raise DataError(f"{path}:{lineno}: missing field '{CHAT_FIELD}' (fields present: {present})")
            msgs = check_conversation(rec[CHAT_FIELD], f"{path}:{lineno}")
            out.append(Example(text=json.dumps(msgs[:-1], ensure_ascii=False), label=msgs[-1]["content"], line=lineno))
        return TaskData(task=self.name, examples=out, source=str(path), text_field=CHAT_FIELD, label_field=CHAT_FIELD)

    def record(self, example) -> dict:
        return {CHAT_FIELD: chat_messages(example)}

    def input_lengths(self, data, count, tokenizer=None):
        """The whole conversation as the model's chat template renders it."""
        from adaptlab.models.runtime import ChatTemplateError, render_chat

        out = []
        for i, ex in enumerate(data.examples):
            try:
                out.append(count(render_chat(tokenizer, chat_messages(ex), add_generation_prompt=False)))
            except ChatTemplateError as e:
                raise DataError(f"{data.source}:{ex.line or i + 1}: messages: {e}") from None
        return out

    def request_input(self, messages):
        """The whole conversation, as the training rows hold it (the chat template renders it)."""
        return json.dumps([{"role": m["role"], "content": m["content"]} for m in messages], ensure_ascii=False)

    def encode(self, tokenizer, data, template, max_length):
        return [encode_chat(tokenizer, chat_messages(ex), max_length) for ex in data.examples]
