"""A chat template that refuses a conversation: one clear error in rendering, data check and serving."""

import json
from types import SimpleNamespace

import pytest
from jinja2 import TemplateError

from adaptlab.data.loading import DataError, TaskData
from adaptlab.models.runtime import ChatTemplateError, render_chat
from adaptlab.serving.routes.openai import chat_prompt
from adaptlab.serving.service import ServingError


class NoSystem:
    """A tokenizer whose template raises on a system turn, as some models' templates do."""

    chat_template = "{% if messages[0].role == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    bos_token = None

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        if messages[0]["role"] == "system":
            raise TemplateError("System role not supported")
        return "".join(f"<{m['role']}>{m['content']}" for m in messages)


def test_a_refused_conversation_is_one_clear_error_everywhere(tmp_path):
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    with pytest.raises(
        ChatTemplateError, match=r"refuses this conversation \(system/user\): System role not supported"
    ):
        render_chat(NoSystem(), msgs)
    assert render_chat(NoSystem(), msgs[1:]) == "<user>hi"
    with pytest.raises(ServingError) as e:
        chat_prompt(NoSystem(), [SimpleNamespace(**m) for m in msgs])
    assert e.value.status == 400 and e.value.message.startswith("messages: the model's chat template refuses")
    from adaptlab.data.loading import Example

    data = TaskData("chat", [Example(json.dumps(msgs), "hello", line=7)], str(tmp_path / "talk.jsonl"))
    with pytest.raises(DataError, match=r"talk.jsonl:7: messages: the model's chat template refuses"):
        data.spec.input_lengths(data, len, NoSystem())  # the chat task type's lengths (data check)
