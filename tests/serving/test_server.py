"""The HTTP server on the tiny model: OpenAI routes, classify, auth, limits, live rollback, feedback."""

import json

import pytest
import torch
from fastapi.testclient import TestClient

from adaptlab.models.tiny import build_tiny
from adaptlab.registry import Registry
from adaptlab.serving import ServeConfig, Service
from adaptlab.serving.app import create_app
from adaptlab.strategies import Artifact

from .kit import CHAT, FOOD, KINDS, TEXTS, build

SERVED = ["zs", "lora", "soft", "prefix", "fs", "gen-lora", "full"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("srv")
    base = build_tiny()
    reg = Registry(tmp / "reg")
    folders = {}
    for name, s, d, o in KINDS:
        if name in SERVED:
            folders[name] = build(base, name, s, d, o, tmp / "art")
            reg.register(folders[name], name)
    folders["chat-lora"] = build(base, "chat-lora", "lora", CHAT, {}, tmp / "art")
    reg.register(folders["chat-lora"], "chat-lora")
    # two versions of one task, for promote / rollback
    reg.register(folders["lora"], "food")
    reg.register(folders["soft"], "food")
    reg.promote("food", 1)
    admin = reg.api_keys.add("admin", ["*"])
    food_only = reg.api_keys.add("foodie", ["food"])
    service = Service(base, reg, ServeConfig(max_batch=8, max_wait_ms=20, max_new_tokens=16))
    client = TestClient(create_app(service, max_body_bytes=4096, max_input_chars=500))
    yield dict(base=base, reg=reg, folders=folders, service=service, client=client, admin=admin, food=food_only)
    service.close()


def h(key):
    return {"Authorization": f"Bearer {key}"}


def test_classify_returns_label_and_probabilities(env):
    c = env["client"]
    r = c.post("/v1/classify", json={"model": "zs", "input": ["item apple", "item okra"]}, headers=h(env["admin"]))
    assert r.status_code == 200, r.text
    body = r.json()
    assert [d["label"] in ("fruit", "veg") for d in body["data"]] == [True, True]
    probs = body["data"][0]["probs"]
    assert set(probs) == {"fruit", "veg"} and abs(sum(probs.values()) - 1) < 1e-6
    ref = Artifact.load(env["folders"]["zs"], env["base"]).scores(["item apple"])[0]
    assert abs(probs["fruit"] - torch.softmax(ref.double(), -1)[0].item()) < 1e-4
    assert body["resolved"] == "zs@1"


def test_completions_chat_and_streaming(env):
    c, key = env["client"], env["admin"]
    r = c.post("/v1/completions", json={"model": "gen-lora", "prompt": "say ab", "max_tokens": 4}, headers=h(key))
    assert r.status_code == 200, r.text
    text = r.json()["choices"][0]["text"]
    ref = Artifact.load(env["folders"]["gen-lora"], env["base"]).generate(["say ab"], max_new_tokens=4)[0]
    assert text == ref and r.json()["usage"]["completion_tokens"] <= 4
    art = Artifact.load(env["folders"]["gen-lora"], env["base"])
    assert r.json()["usage"]["prompt_tokens"] == len(env["base"].tokenizer(art.template.render("say ab"))["input_ids"])
    assert r.json()["choices"][0]["finish_reason"] in ("stop", "length")
    r = c.post(
        "/v1/chat/completions",
        headers=h(key),
        json={"model": "gen-lora", "messages": [{"role": "user", "content": "say ab"}], "max_tokens": 4},
    )
    assert r.json()["choices"][0]["message"]["content"] == ref
    with c.stream(
        "POST",
        "/v1/chat/completions",
        headers=h(key),
        json={
            "model": "gen-lora",
            "stream": True,
            "max_tokens": 4,
            "messages": [{"role": "user", "content": "say ab"}],
        },
    ) as s:
        lines = [ln for ln in s.iter_lines() if ln.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    pieces = [json.loads(ln[6:])["choices"][0]["delta"]["content"] for ln in lines[:-1]]
    assert "".join(pieces).strip() == ref
    r = c.post("/v1/completions", json={"model": "zs", "prompt": "item kale"}, headers=h(key))
    assert r.json()["choices"][0]["text"] in ("fruit", "veg") and "label_probs" in r.json()
    r = c.post("/v1/completions", json={"model": "base", "prompt": "hello", "max_tokens": 3}, headers=h(key))
    assert r.status_code == 200 and r.json()["resolved"] == "tiny"


def test_models_lists_what_the_key_may_use(env):
    c = env["client"]
    ids = {m["id"] for m in c.get("/v1/models", headers=h(env["admin"])).json()["data"]}
    assert {"tiny", "zs@1", "food@1", "food@2", "food@prod"} <= ids
    ids = {m["id"] for m in c.get("/v1/models", headers=h(env["food"])).json()["data"]}
    assert {i.split("@")[0] for i in ids} == {"tiny", "food"}


def test_auth_missing_wrong_and_out_of_scope(env):
    c = env["client"]
    body = {"model": "zs", "input": "item pear"}
    r = c.post("/v1/classify", json=body)
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"
    r = c.post("/v1/classify", json=body, headers=h("al-wrong"))
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    r = c.post("/v1/classify", json=body, headers=h(env["food"]))
    assert r.status_code == 403 and r.json()["error"]["code"] == "model_not_allowed"
    assert c.post("/v1/classify", json={"model": "food", "input": "x"}, headers=h(env["food"])).status_code == 200
    assert c.post("/v1/completions", json={"model": "base", "prompt": "x"}, headers=h(env["food"])).status_code == 403


@pytest.mark.parametrize(
    "payload, status, code",
    [
        ({"model": "nope", "input": "x"}, 404, "model_not_found"),
        ({"model": "zs@7", "input": "x"}, 404, "model_not_found"),
        ({"model": "../../etc/passwd", "input": "x"}, 404, "model_not_found"),
        ({"model": "/tmp/art/zs", "input": "x"}, 404, "model_not_found"),
        ({"model": "zs@../../x", "input": "x"}, 404, "model_not_found"),
        ({"model": "zs", "input": "x" * 501}, 413, "input_too_large"),
        ({"model": "zs", "input": ["a"] * 2000}, 413, "request_too_large"),
        ({"model": "zs", "input": ["a"] * 100}, 413, "too_many_inputs"),
        ({"model": "zs", "input": []}, 400, "invalid_request"),
        ({"model": "zs"}, 400, "invalid_request"),
        ({"model": "gen-lora", "input": "x"}, 400, "not_a_classifier"),
    ],
)
def test_bad_classify_requests(env, payload, status, code):
    r = env["client"].post("/v1/classify", json=payload, headers=h(env["admin"]))
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code and r.json()["error"]["message"]


def test_bad_generation_requests(env):
    c, key = env["client"], env["admin"]
    r = c.post("/v1/completions", json={"model": "gen-lora", "prompt": "x", "max_tokens": 999}, headers=h(key))
    assert r.status_code == 400 and r.json()["error"]["code"] == "max_tokens_too_large"
    r = c.post("/v1/chat/completions", json={"model": "gen-lora", "messages": []}, headers=h(key))
    assert r.status_code == 400
    r = c.post("/v1/completions", content=b"{not json", headers={**h(key), "content-type": "application/json"})
    assert r.status_code == 400 and "error" in r.json()


def test_rollback_takes_effect_live(env):
    c, reg = env["client"], env["reg"]

    def served():
        return c.post("/v1/classify", json={"model": "food", "input": "item plum"}, headers=h(env["food"])).json()

    assert served()["resolved"] == "food@1"
    reg.promote("food", 2)
    assert served()["resolved"] == "food@2"
    reg.rollback("food")
    assert served()["resolved"] == "food@1"


def test_mixed_concurrent_requests_equal_single_requests(env):
    import concurrent.futures as cf

    c, key = env["client"], env["admin"]
    jobs = [(m, t) for m in ("zs", "lora", "soft", "prefix", "fs", "full") for t in TEXTS[:3]]
    single = {
        j: c.post("/v1/classify", json={"model": j[0], "input": j[1]}, headers=h(key)).json()["data"][0] for j in jobs
    }
    before = env["service"].batches
    with cf.ThreadPoolExecutor(16) as pool:
        got = dict(
            zip(
                jobs,
                pool.map(
                    lambda j: c.post("/v1/classify", json={"model": j[0], "input": j[1]}, headers=h(key)).json()[
                        "data"
                    ][0],
                    jobs,
                ),
            )
        )
    assert env["service"].batches - before < len(jobs)  # requests shared forward passes
    for j in jobs:
        assert got[j]["label"] == single[j]["label"]
        for lab, p in single[j]["probs"].items():
            assert abs(got[j]["probs"][lab] - p) < 1e-4


def test_feedback_round_trip_and_export(env, tmp_path):
    from adaptlab.serving.feedback import export_feedback

    c, key = env["client"], env["food"]
    r = c.post("/v1/classify", json={"model": "food", "input": ["item pear", "item leek"]}, headers=h(key)).json()
    first, second = r["data"]
    ok = c.post("/v1/feedback", json={"request_id": first["request_id"], "rating": 1}, headers=h(key))
    assert ok.status_code == 200 and ok.json()["status"] == "stored"
    fix = c.post(
        "/v1/feedback", json={"request_id": second["request_id"], "rating": -1, "correction": "veg"}, headers=h(key)
    )
    assert fix.status_code == 200
    bad = c.post(
        "/v1/feedback", json={"request_id": second["request_id"], "rating": -1, "correction": "meat"}, headers=h(key)
    )
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "unknown_label"
    assert c.post("/v1/feedback", json={"request_id": "nope", "rating": 1}, headers=h(key)).status_code == 404
    assert (
        c.post("/v1/feedback", json={"request_id": first["request_id"], "rating": 5}, headers=h(key)).status_code == 400
    )
    out = tmp_path / "fb.jsonl"
    stats = export_feedback(env["reg"], "food", out)
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert {"text": "item leek", "label": "veg"} in rows
    assert {"text": "item pear", "label": first["label"]} in rows
    assert stats["written"] == 2
    from adaptlab.data.loading import load_file

    assert len(load_file(out, label_names=FOOD.label_names)) == 2  # a training set the next round can use


def test_health_and_metrics(env):
    c = env["client"]
    assert c.get("/healthz").json()["status"] == "ok"
    text = c.get("/metrics").text
    for name in (
        "adaptlab_requests_total",
        "adaptlab_request_seconds_bucket",
        "adaptlab_batch_rows_bucket",
        "adaptlab_queue_depth",
        "adaptlab_loaded_adapters",
    ):
        assert name in text


def test_lru_memory_cap_evicts_least_recently_used(env):
    svc, reg = env["service"], env["reg"]
    cap = svc.config.memory_cap_mb
    try:
        svc.lanes[0].cache.clear()
        lora, soft, prefix = (svc.resolve(m)[1] for m in ("lora", "soft", "prefix"))
        svc.lanes[0].cache.clear()
        svc.resolve("lora")
        svc.resolve("soft")
        svc.resolve("lora")  # now soft is the least recently used
        svc.config.memory_cap_mb = (lora.nbytes + prefix.nbytes + 1) / 2**20
        svc.resolve("prefix")
        assert set(svc.cache) == {reg.resolve("lora").digest, reg.resolve("prefix").digest}
        r = env["client"].post("/v1/classify", json={"model": "soft", "input": "item fig"}, headers=h(env["admin"]))
        assert r.status_code == 200  # reloaded on demand
    finally:
        svc.config.memory_cap_mb = cap


def test_fingerprint_mismatch_is_refused(env, tmp_path):
    from adaptlab.serving.service import ServingError

    other = build_tiny(seed=1)
    folder = build(other, "alien", "lora", FOOD, {}, tmp_path)
    env["reg"].register(folder, "alien")
    with pytest.raises(ServingError, match="base model"):
        env["service"].resolve("alien")


def test_no_keys_means_no_server_unless_asked(tmp_path):
    base = build_tiny()
    svc = Service(base, Registry(tmp_path / "r"))
    try:
        with pytest.raises(ValueError, match="no API keys"):
            create_app(svc)
        c = TestClient(create_app(svc, auth=False))
        assert c.post("/v1/completions", json={"model": "base", "prompt": "hi", "max_tokens": 2}).status_code == 200
    finally:
        svc.close()


def test_swap_baseline_gives_the_same_answers(env):
    svc = Service(env["base"], env["reg"], ServeConfig(batching="swap", max_wait_ms=5))
    try:
        for m in ("lora", "prefix", "fs", "full"):
            _, mixed = env["service"].resolve(m)
            _, swapped = svc.resolve(m)
            assert swapped.artifact is not None
            a = env["service"].classify(mixed, TEXTS[:3])
            b = svc.classify(swapped, TEXTS[:3])
            for x, y in zip(a, b):
                assert torch.allclose(x, y, atol=1e-4), m
        _, gen = svc.resolve("gen-lora")
        assert svc.generate(gen, ["say ab"], 4) == env["service"].generate(
            env["service"].resolve("gen-lora")[1], ["say ab"], 4
        )
    finally:
        svc.close()
    with pytest.raises(ValueError, match="batching"):
        ServeConfig(batching="nope")


def test_admin_load_and_unload(env):
    c, reg = env["client"], env["reg"]
    r = c.post("/admin/load", json={"model": "prefix"}, headers=h(env["admin"]))
    assert r.status_code == 200 and reg.resolve("prefix").digest in env["service"].cache
    r = c.post("/admin/unload", json={"model": "prefix"}, headers=h(env["admin"]))
    assert r.status_code == 200 and r.json()["unloaded"] and reg.resolve("prefix").digest not in env["service"].cache
    assert c.post("/admin/unload", json={"model": "food"}, headers=h(env["food"])).status_code == 403
    assert c.post("/admin/load", json={"model": "nope"}, headers=h(env["admin"])).status_code == 404


def test_chunked_body_over_the_limit_is_refused_without_reading_it_all(env):
    sent = {"chunks": 0}

    def body():
        for _ in range(1000):
            sent["chunks"] += 1
            yield b"x" * 1000

    r = env["client"].post(
        "/v1/classify", content=body(), headers={**h(env["admin"]), "content-type": "application/json"}
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    ok = env["client"].post(
        "/v1/classify",
        content=iter([b'{"model": "zs", ', b'"input": "item fig"}']),
        headers={**h(env["admin"]), "content-type": "application/json"},
    )
    assert ok.status_code == 200, ok.text


# ---------------------------------------------------------------------------------- sampling
@pytest.fixture()
def oai(env):
    """The official OpenAI Python client, talking to the app through the test transport."""
    openai = pytest.importorskip("openai")
    return openai.OpenAI(
        base_url="http://testserver/v1", api_key=env["admin"], http_client=env["client"], max_retries=0
    )


def test_openai_client_sampling_is_honoured(oai):
    texts = [
        oai.completions.create(model="base", prompt="hello", max_tokens=10, temperature=1.5, seed=s).choices[0].text
        for s in (1, 2, 3, 1)
    ]
    assert texts[0] == texts[3] and len(set(texts[:3])) > 1  # the seed decides; seeds differ
    r = oai.completions.create(model="base", prompt="hello", max_tokens=10, temperature=1.5, seed=5, n=3)
    assert [c.index for c in r.choices] == [0, 1, 2] and len({c.text for c in r.choices}) > 1
    greedy = oai.completions.create(model="base", prompt="hello", max_tokens=10).choices[0].text
    assert greedy == oai.completions.create(model="base", prompt="hello", max_tokens=10).choices[0].text
    assert len(greedy) > 4
    stop = greedy[2:4]
    cut = oai.completions.create(model="base", prompt="hello", max_tokens=10, stop=[stop]).choices[0]
    assert cut.text == greedy[: greedy.index(stop)].strip() and cut.finish_reason == "stop"
    lp = oai.completions.create(model="base", prompt="hello", max_tokens=3, logprobs=2).choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 3
    assert all(len(t) == 2 for t in lp.top_logprobs) and all(v <= 0 for v in lp.token_logprobs)
    chat = oai.chat.completions.create(
        model="gen-lora",
        messages=[{"role": "user", "content": "say ab"}],
        max_tokens=4,
        logprobs=True,
        top_logprobs=2,
        temperature=0.7,
        seed=3,
    )
    content = chat.choices[0].logprobs.content
    assert content and all(len(t.top_logprobs) == 2 for t in content)


def test_streamed_choices_never_show_a_stop_text(env, oai):
    greedy = oai.completions.create(model="base", prompt="hello", max_tokens=10).choices[0].text
    stop = greedy[3:5]
    pieces: dict[int, str] = {}
    for chunk in oai.completions.create(model="base", prompt="hello", max_tokens=10, stop=[stop], stream=True, n=2):
        for c in chunk.choices:
            pieces[c.index] = pieces.get(c.index, "") + c.text
    assert set(pieces) == {0, 1} and all(stop not in p for p in pieces.values())
    assert pieces[0].strip() == greedy[: greedy.index(stop)].strip()


@pytest.mark.parametrize(
    "body, field",
    [
        ({"temperature": 3}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"n": 9}, "n=9"),
        ({"logprobs": 9}, "logprobs"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ],
)
def test_bad_sampling_parameters_are_refused_by_name(env, body, field):
    r = env["client"].post("/v1/completions", json={"model": "base", "prompt": "hi", **body}, headers=h(env["admin"]))
    assert r.status_code == 400 and field in r.json()["error"]["message"], r.text


def test_a_classifier_samples_labels_and_refuses_token_logprobs(env):
    c, key = env["client"], env["admin"]
    r = c.post(
        "/v1/completions",
        json={"model": "zs", "prompt": "item apple", "n": 4, "temperature": 2, "seed": 1},
        headers=h(key),
    )
    assert r.status_code == 200 and all(ch["text"] in ("fruit", "veg") for ch in r.json()["choices"])
    r = c.post("/v1/completions", json={"model": "zs", "prompt": "item apple", "logprobs": 1}, headers=h(key))
    assert r.status_code == 400 and "label_probs" in r.json()["error"]["message"]


def test_base_model_chat_ends_at_the_assistants_turn(env, oai):
    r = oai.chat.completions.create(
        model="base",
        max_tokens=16,
        messages=[
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "yo"},
            {"role": "user", "content": "and?"},
        ],
    )
    assert "\nuser:" not in r.choices[0].message.content


def test_a_chat_adaptation_sees_the_whole_conversation(env, oai):
    talk = [
        {"role": "user", "content": "order?"},
        {"role": "assistant", "content": "number please"},
        {"role": "user", "content": "A1"},
    ]
    art = Artifact.load(env["folders"]["chat-lora"], env["base"])
    ref = art.generate([json.dumps(talk)], max_new_tokens=6)[0]
    r = oai.chat.completions.create(model="chat-lora", messages=talk, max_tokens=6)
    assert r.choices[0].message.content == ref
    other = oai.chat.completions.create(model="chat-lora", messages=talk[-1:], max_tokens=6).choices[0].message.content
    assert art.generate([json.dumps(talk[-1:])], max_new_tokens=6)[0] == other  # the last turn alone: its own answer
    assert "order?" in art.prompts([json.dumps(talk)])[0]


def test_a_service_worked_on_the_calling_thread_answers_what_other_threads_submit(env):
    """``Service(threads=False)`` starts no worker (nothing is answered until ``run``); ``run`` works
    the queue on the calling thread, answers requests submitted from other threads exactly as a
    worker thread does, and returns when ``until()`` says so."""
    import threading

    svc = Service(env["base"], env["reg"], ServeConfig(max_wait_ms=5), threads=False)
    try:
        assert svc.lanes[0].worker is None
        _, gen = svc.resolve("gen-lora")
        answers, done = {}, threading.Event()

        def client():
            answers["gen"] = svc.generate(gen, ["say ab", "say b"], 4)
            done.set()

        caller = threading.Thread(target=client)
        caller.start()
        caller.join(timeout=0.5)
        assert caller.is_alive()  # nothing works the queue yet
        svc.run(until=done.is_set)
        caller.join(timeout=10)
        assert svc.lanes[0].worker is None  # worked here, not on a thread of its own
        expected = env["service"].generate(env["service"].resolve("gen-lora")[1], ["say ab", "say b"], 4)
        assert answers["gen"] == expected
        from adaptlab.serving.service import ServingError, Work

        late = svc.submit(Work("generate", gen, "say ab", max_new=2))  # after run returned: no one works it
        svc.close()
        with pytest.raises(ServingError, match="stopped"):
            late.result(timeout=5)  # failed by close, not left waiting
    finally:
        svc.close()
