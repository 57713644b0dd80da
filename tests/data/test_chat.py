"""Chat data: OpenAI's fine-tuning format, line-numbered errors, every assistant turn a target."""

import json

import pytest

from adaptlab.data.loading import DataError, chat_messages, load_file, write_jsonl
from adaptlab.data.validation import validate
from adaptlab.models.tiny import build_tiny_tokenizer
from adaptlab.training.batching import collate, encode

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TALK = [
    {"role": "system", "content": "You are the shop's assistant."},
    {"role": "user", "content": "Where is my parcel?"},
    {"role": "assistant", "content": "Could you give me your order number?"},
    {"role": "user", "content": "A-1234"},
    {"role": "assistant", "content": "It left the warehouse today."},
]


def _write(tmp_path, rows, name="chat.jsonl"):
    p = tmp_path / name
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def test_chat_file_loads_and_round_trips(tmp_path):
    data = load_file(_write(tmp_path, [{"messages": TALK}, {"messages": TALK[1:3]}]))
    assert data.task == "chat" and len(data) == 2
    assert data.examples[0].label == "It left the warehouse today." and chat_messages(data.examples[0]) == TALK
    write_jsonl(tmp_path / "out.jsonl", data)
    assert load_file(tmp_path / "out.jsonl").examples == data.examples


@pytest.mark.parametrize(
    "messages, message",
    [
        ("hello", "field 'messages' must be a non-empty list"),
        ([{"role": "robot", "content": "x"}], "messages\\[0\\]: unknown role 'robot'"),
        ([{"role": "user", "content": "  "}, {"role": "assistant", "content": "x"}], "messages\\[0\\]: empty content"),
        ([{"role": "user", "content": "hi"}], "no assistant turn"),
        (
            [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "yo"},
                {"role": "user", "content": "?"},
            ],
            "ends with a user turn",
        ),
        (
            [
                {"role": "user", "content": "hi"},
                {"role": "system", "content": "s"},
                {"role": "assistant", "content": "x"},
            ],
            "messages\\[1\\]: a system message may only come first",
        ),
        ([{"role": "user", "content": 3}, {"role": "assistant", "content": "x"}], "field 'content' must be a string"),
    ],
)
def test_malformed_conversations_name_file_line_and_turn(tmp_path, messages, message):
    p = _write(tmp_path, [{"messages": TALK}, {"messages": messages}])
    with pytest.raises(DataError, match=f"{p}:2: .*{message}"):
        load_file(p)


def test_every_assistant_turn_is_a_target_in_the_chat_template():
    tok = build_tiny_tokenizer()
    tok.chat_template = CHATML
    data = load_file_rows([{"messages": TALK}])
    (item,) = encode(tok, data, None, max_length=512)
    batch = collate([item], 0)
    ids, tgt = batch["input_ids"][0], batch["target_mask"][0]
    spans, cur = [], []
    for i, t in zip(ids.tolist(), tgt.tolist()):
        if t:
            cur.append(i)
        elif cur:
            spans.append(tok.decode(cur))
            cur = []
    spans.append(tok.decode(cur)) if cur else None
    assert spans == ["Could you give me your order number?<|im_end|>\n", "It left the warehouse today.<|im_end|>\n"]
    assert item.n_targets == int(tgt.sum())
    # too long: the earliest tokens go, the answer stays whole
    (short,) = encode(tok, data, None, max_length=60)
    assert len(short) <= 60 and tok.decode(short.target) == "It left the warehouse today.<|im_end|>\n"


def load_file_rows(rows, tmp=None):
    import tempfile
    from pathlib import Path

    d = Path(tempfile.mkdtemp())
    return load_file(_write(d, rows))


def test_data_check_reports_conversations_too_long_for_the_context(tmp_path):
    tok = build_tiny_tokenizer()
    long = [{"role": "user", "content": "word " * 200}, {"role": "assistant", "content": "ok"}]
    data = load_file(_write(tmp_path, [{"messages": TALK}, {"messages": long}, {"messages": long}]))
    report = validate(data, tokenizer=tok, max_tokens=300)
    (w,) = [w for w in report.warnings if "conversation(s) longer" in w]
    assert "2 conversation(s) longer than 300 tokens" in w and "lines 2, 3" in w
