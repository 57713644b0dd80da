"""``adaptlab rebase`` between the two tiny architectures (Gemma-like and Llama-like, different
fingerprints): a LoRA retrained and distilled, a few-shot prompt moved as it is; and one server
process holding both bases, routing each version to its own."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from adaptlab.maintenance.rebase import RebaseOptions, rebase
from adaptlab.models.tiny import build_tiny
from adaptlab.registry import Registry, RegistryError
from adaptlab.strategies.base import read_artifact_meta
from tests.maintenance.kit import train_cli

runner = CliRunner()
WORDS = {
    "fruit": ["apple", "pear", "plum", "fig", "kiwi", "lime"],
    "veg": ["leek", "kale", "bean", "corn", "okra", "pea"],
}


@pytest.fixture
def champion(tmp_path, monkeypatch):
    monkeypatch.setenv("ADAPTLAB_REGISTRY", str(tmp_path / "reg"))
    rows = [{"text": f"I had a {w} at {h}", "label": lab} for lab, ws in WORDS.items() for w in ws for h in range(4)]
    data = tmp_path / "food.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def train(strategy, name, *extra):
        return train_cli(data, tmp_path / name, strategy, *extra)

    return Registry(tmp_path / "reg"), train


def _to_llama(reg, out, **opts):
    """Rebase food onto the tiny Llama; (evidence, the Gemma-like base, the Llama one)."""
    tiny, llama = build_tiny(), build_tiny(arch="llama")
    ev = rebase(
        reg,
        "food",
        "tiny-llama",
        out,
        RebaseOptions(progress=False, **opts),
        base=tiny,
        new_base=llama,
        log=lambda *a: None,
    )
    return ev, tiny, llama


def test_rebase_retrains_distils_and_registers_on_the_new_base(champion, tmp_path):
    reg, train = champion
    reg.register(train("lora", "lora", "--max-steps", "3"), "food", alias="prod")
    ev, tiny, llama = _to_llama(reg, tmp_path / "r1")
    assert tiny.fingerprint != llama.fingerprint
    assert ev["how"] == "retrained" and ev["rebased"] == "food@2" and ev["to_base"] == llama.name
    q, c = ev["quality"], ev["cost"]
    assert q["paired"]["diff"] == pytest.approx(q["rebased"] - q["champion"])
    assert c["rebased"]["fit_seconds"] > 0 and c["rebased"]["artifact_bytes"] > 0 and c["champion"]["prompt_tokens"] > 0
    e = reg.get("food", 2)
    assert e.fingerprint == llama.fingerprint and reg.aliases("food")["food"] == {"prod": 1, "staging": 2}
    assert reg.lineage("food")[2] == {
        "parent": 1,
        "kind": "rebase",
        "base_model": llama.name,
        "from_base": tiny.name,
        "how": "retrained",
        "data_fingerprint": read_artifact_meta(e.path)["recipe"]["fingerprint"],
    }
    ev, _, _ = _to_llama(reg, tmp_path / "r2", labels="distill")
    assert ev["how"] == "distilled" and (tmp_path / "r2" / "rebase.md").read_text().startswith("# rebase food")
    with pytest.raises(RegistryError, match="already on"):
        rebase(reg, "food", "tiny", tmp_path / "r3", base=tiny, new_base=tiny, log=lambda *a: None)


def test_a_hard_prompt_moves_as_it_is(champion, tmp_path):
    reg, train = champion
    reg.register(train("few_shot", "fs", "--set", "k=2"), "food", alias="prod")
    ev, tiny, llama = _to_llama(reg, tmp_path / "m")
    assert ev["how"] == "moved" and ev["cost"]["rebased"]["fit_seconds"] is None
    old, new = read_artifact_meta(reg.get("food", 1).path), read_artifact_meta(reg.get("food", 2).path)
    assert new["prompt"]["exemplars"] == old["prompt"]["exemplars"] and new["template"] == old["template"]
    assert new["base_model"]["fingerprint"] == llama.fingerprint and "test" in new["metrics"]


def test_one_server_process_serves_both_bases(champion, tmp_path):
    from fastapi.testclient import TestClient

    from adaptlab.serving import Service
    from adaptlab.serving.app import create_app

    reg, train = champion
    reg.register(train("lora", "lora", "--max-steps", "2"), "food", alias="prod")
    _, tiny, llama = _to_llama(reg, tmp_path / "r")
    service = Service([tiny, llama], reg)
    try:
        client = TestClient(create_app(service, auth=False))
        health = client.get("/healthz").json()
        assert [b["name"] for b in health["base_models"]] == [tiny.name, llama.name]
        for ref in ("food@1", "food@2", "food"):
            r = client.post("/v1/classify", json={"model": ref, "input": "I had a kiwi"})
            assert r.status_code == 200, r.text
            assert r.json()["data"][0]["label"] in ("fruit", "veg")
        assert r.json()["resolved"] == "food@1"
        reg.promote("food", 2)
        r = client.post(
            "/v1/chat/completions", json={"model": "food", "messages": [{"role": "user", "content": "kiwi"}]}
        )
        assert r.status_code == 200 and r.json()["resolved"] == "food@2"
        r = client.post("/v1/completions", json={"model": llama.name, "prompt": "hi", "max_tokens": 2})
        assert r.status_code == 200 and r.json()["resolved"] == llama.name
        assert {a.base.fingerprint for a in service.cache.values()} == {tiny.fingerprint, llama.fingerprint}
        only = Service(tiny, reg)
        try:
            with pytest.raises(Exception, match="base_model_mismatch|made for base model"):
                only.resolve("food@2")
        finally:
            only.close()
    finally:
        service.close()
