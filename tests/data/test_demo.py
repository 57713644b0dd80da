import json
from collections import Counter

from adaptlab.data import demo
from adaptlab.data.named import DEMO_DIR, load_task


def test_committed_demo_files_are_what_the_generator_writes(tmp_path):
    demo.write(tmp_path)
    for name in ("train.jsonl", "dev.jsonl", "test.jsonl", "labels.json", "descriptions.json"):
        assert (tmp_path / name).read_text() == (DEMO_DIR / name).read_text(), name


def test_demo_shape_and_no_leakage():
    s = load_task("demo")
    assert (len(s.train), len(s.dev), len(s.test)) == (360, 120, 120)
    assert len(s.train.labels) == 12
    assert set(Counter(e.label for e in s.test.examples).values()) == {10}
    texts = [e.text.lower() for part in (s.train, s.dev, s.test) for e in part.examples]
    assert len(texts) == len(set(texts))
    labels = json.loads((DEMO_DIR / "labels.json").read_text())
    assert labels == list(demo.LABEL_DESCRIPTIONS)


def test_demo_generation_is_deterministic_and_seed_dependent():
    a, b, c = demo.generate(), demo.generate(), demo.generate(seed=1)
    assert a == b and a != c


def test_committed_demo_chat_files_are_what_the_generator_writes_and_load_as_chats(tmp_path):
    from adaptlab.data import demo_chat
    from adaptlab.data.loading import chat_messages
    from adaptlab.data.named import DEMO_CHAT_DIR, load_task

    demo_chat.write(tmp_path)
    for name in ("train", "dev", "test"):
        assert (tmp_path / f"{name}.jsonl").read_bytes() == (DEMO_CHAT_DIR / f"{name}.jsonl").read_bytes(), name
    splits = load_task("demo-chat")
    assert splits.task == "chat" and (len(splits.train), len(splits.dev), len(splits.test)) == (180, 60, 60)
    talks = [chat_messages(ex) for ex in splits.train.examples]
    assert all(t[0]["role"] == "system" and t[-1]["content"].endswith(demo_chat.SIGN) for t in talks)
    asked = [t for t in talks if len(t) >= 5 and "order number" in t[2]["content"]]
    assert asked and all(t[3]["role"] == "user" for t in asked)  # the number comes before the action
    firsts = {t[1]["content"] for t in talks}
    assert not firsts & {chat_messages(ex)[1]["content"] for ex in splits.test.examples}  # no leak
