"""The OpenAI-compatible backend against a local fake server started by the test (loopback only)."""

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from adaptlab.backends import BackendError, OpenAIBackend
from adaptlab.backends.base import parse_label
from adaptlab.data.loading import Example, TaskData
from adaptlab.strategies import Artifact, get_strategy, make_config
from adaptlab.strategies.base import NO_LABEL

FRUIT = {"apple", "pear", "plum", "fig", "kiwi", "lime"}
WORDS = ["apple", "pear", "plum", "fig", "kiwi", "lime", "kale", "leek", "okra", "corn", "bean", "pea"]
DATA = TaskData(
    "classification",
    [Example(f"item {w}", "fruit" if w in FRUIT else "veg", i + 1) for i, w in enumerate(WORDS)],
    "d",
    label_names=["fruit", "veg"],
)


def _truth(prompt: str) -> str:
    """The fake model knows fruit: it reads the last 'Text:' line of the prompt."""
    last = prompt.rsplit("Text:", 1)[-1].split("\n")[0]
    return "fruit" if any(w in FRUIT for w in re.findall(r"[a-z]+", last)) else "veg"


class Fake:
    def __init__(self):
        self.mode = "ok"
        self.fail_left = 0
        self.status = 429
        self.requests = 0
        self.key = None
        self.delay = 0.0
        self.prompts = []


def make_handler(fake: Fake):
    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def _send(self, code, body, headers=None):
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):
            fake.requests += 1
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if fake.key and self.headers.get("Authorization") != f"Bearer {fake.key}":
                return self._send(401, {"error": {"message": "invalid api key"}})
            if fake.delay:
                time.sleep(fake.delay)
            if fake.fail_left > 0:
                fake.fail_left -= 1
                return self._send(fake.status, {"error": {"message": "slow down"}}, {"Retry-After": "0"})
            if fake.mode == "malformed":
                return self._send(200, b"<html>oops</html>")
            if fake.mode == "wrong_shape":
                return self._send(200, {"choices": []})
            if self.path == "/v1/embeddings":
                return self._send(
                    200,
                    {"data": [{"index": i, "embedding": [float(len(t)), 1.0]} for i, t in enumerate(body["input"])]},
                )
            prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
            if body.get("echo"):
                if fake.mode == "no_logprobs":
                    return self._send(400, {"error": {"message": "echo is not supported"}})
                choices = []
                for i, p in enumerate(prompts):
                    cut = p.rfind(":") + 1  # the label follows the last colon
                    ctx, label = p[:cut], p[cut:]
                    toks = re.findall(r"\s*\S+", p)
                    offs, lps, pos = [], [], 0
                    for t in toks:
                        pos = p.index(t, pos)
                        offs.append(pos)
                        lps.append(-1.0 if pos < cut else (-0.1 if label.strip() == _truth(ctx) else -3.0))
                        pos += len(t)
                    choices.append(
                        {
                            "index": i,
                            "text": p,
                            "logprobs": {"tokens": toks, "token_logprobs": lps, "text_offset": offs},
                        }
                    )
                return self._send(200, {"choices": choices, "usage": {"prompt_tokens": 10 * len(prompts)}})
            fake.prompts.append(prompts[0])
            if fake.mode == "judge":  # grades a response: 4 when it names Paris
                text = " 4" if "RESPONSE: Paris" in prompts[0] else " I cannot grade this."
                return self._send(200, {"choices": [{"index": 0, "text": text}], "usage": {"prompt_tokens": 7}})
            text = f" I think it is {_truth(prompts[0])}." if fake.mode != "gibberish" else " no idea"
            return self._send(200, {"choices": [{"index": 0, "text": text}], "usage": {"prompt_tokens": 7}})

    return H


@pytest.fixture()
def server():
    fake = Fake()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(fake))
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    fake.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield fake
    httpd.shutdown()
    httpd.server_close()


def backend(fake, **kw):
    return OpenAIBackend(fake.url, model="fake", backoff=0.01, **kw)


def test_zero_shot_with_logprobs_and_artifact_round_trip(server, tmp_path):
    b = backend(server)
    art = get_strategy("zero_shot").strategy_cls(make_config("zero_shot")).fit(b, DATA, DATA)
    assert b.supports_scores and b.mode == "logprobs"
    assert art.metrics["dev"]["accuracy"] == 1.0
    scores = art.scores(["item fig", "item corn"])
    assert scores[0, 0] > scores[0, 1] and scores[1, 1] > scores[1, 0]
    again = Artifact.load(art.save(tmp_path / "zs"), backend(server))
    assert again.predict(["item kiwi", "item okra"]) == ["fruit", "veg"]
    assert b.prompt_tokens > 0  # usage.prompt_tokens from the responses


def test_few_shot_and_prompt_search_over_http(server):
    b = backend(server)
    fs = get_strategy("few_shot").strategy_cls(make_config("few_shot", k=2, calibrate=True)).fit(b, DATA, DATA)
    assert fs.metrics["dev"]["accuracy"] == 1.0 and fs.calibration is not None
    nn = get_strategy("few_shot").strategy_cls(make_config("few_shot", k=2, selection="nearest")).fit(b, DATA, DATA)
    assert nn.predict(["item apple"]) == ["fruit"]
    b2 = backend(server)
    ps = (
        get_strategy("prompt_search")
        .strategy_cls(make_config("prompt_search", budget_calls=40, first_round=2, exemplar_sets=1, bootstrap=4))
        .fit(b2, DATA, DATA)
    )
    assert b2.calls == ps.metrics["search"]["calls_used"] <= 40


def test_parse_mode_when_the_endpoint_has_no_logprobs(server):
    server.mode = "no_logprobs"
    b = backend(server)
    art = get_strategy("zero_shot").strategy_cls(make_config("zero_shot")).fit(b, DATA, DATA)
    assert b.mode == "parse"
    assert art.metrics["dev"]["accuracy"] == 1.0 and art.metrics["dev"]["unparsed"] == 0
    with pytest.raises(BackendError, match="calibration needs label log-probabilities"):
        get_strategy("zero_shot").strategy_cls(make_config("zero_shot", calibrate=True)).fit(backend(server), DATA)
    server.mode = "gibberish"
    b3 = OpenAIBackend(server.url, model="fake", mode="parse")
    art = get_strategy("zero_shot").strategy_cls(make_config("zero_shot")).fit(b3, DATA, DATA)
    assert art.metrics["dev"]["unparsed"] == len(DATA)  # counted, and scored wrong
    assert art.metrics["dev"]["accuracy"] == 0.0
    assert art.predict(["item fig"]) == [NO_LABEL]  # never the majority label


def test_429_and_5xx_are_retried_with_backoff(server):
    server.fail_left, server.status = 2, 429
    b = backend(server)
    assert b.generate(["Text: item fig\nCategory:"]) == ["I think it is fruit."]
    assert b.retries == 2 and server.requests == 3
    server.fail_left, server.status = 100, 503
    with pytest.raises(BackendError, match=r"gave up after 3 attempts: HTTP 503: slow down"):
        backend(server, max_retries=2).generate(["x"])


def test_timeout_is_retried_then_reported(server):
    server.delay = 0.5
    with pytest.raises(BackendError, match=r"gave up after 2 attempts: timed out after 0.1 s"):
        backend(server, timeout=0.1, max_retries=1).generate(["x"])


def test_malformed_responses_are_clear_errors(server):
    server.mode = "malformed"
    with pytest.raises(BackendError, match="malformed response: not JSON"):
        backend(server, mode="logprobs").score(["Text: a\nCategory:"], [" fruit", " veg"])
    server.mode = "wrong_shape"
    with pytest.raises(BackendError, match="malformed response: expected 2 choices, got 0"):
        backend(server, mode="logprobs").score(["Text: a\nCategory:"], [" fruit", " veg"])
    with pytest.raises(BackendError, match="malformed response: missing choices.0.text"):
        backend(server).generate(["x"])


def test_auth_errors_are_not_retried(server, monkeypatch):
    server.key = "sekrit"
    with pytest.raises(BackendError, match="HTTP 401: invalid api key"):
        backend(server).generate(["x"])
    assert server.requests == 1
    monkeypatch.setenv("FAKE_KEY", "sekrit")
    assert backend(server, api_key_env="FAKE_KEY").generate(["Text: kale\nCategory:"]) == ["I think it is veg."]
    monkeypatch.delenv("FAKE_KEY")
    with pytest.raises(BackendError, match="FAKE_KEY"):
        backend(server, api_key_env="FAKE_KEY")


def test_bad_endpoint_arguments():
    with pytest.raises(ValueError, match="must start with http"):
        OpenAIBackend("localhost:8000")
    with pytest.raises(ValueError, match="mode='x'"):
        OpenAIBackend("http://127.0.0.1:1", mode="x")


@pytest.mark.parametrize(
    "answer,expect",
    [
        ("card lost", 0),
        ("Card_Lost.", 0),
        ("refund please", 1),
        ("I'd say: refund", 1),
        ("nothing", -1),
        ("card lost or refund", 0),
    ],
)
def test_parse_label(answer, expect):
    assert parse_label(answer, ["card_lost", "refund"]) == expect


def test_judge_grades_through_the_endpoint_and_keeps_its_prompt(server):
    from adaptlab.evaluation.text_metrics import JUDGE_RUBRIC, judge

    server.mode = "judge"
    out = judge(backend(server), ["capital of France?", "capital of Italy?"], ["Paris", "Milan"], [["Paris"], ["Rome"]])
    assert out["grades"] == [4, None] and out["judge_mean"] == 4 and out["unparsed"] == 1
    assert out["rubric"] == JUDGE_RUBRIC and out["judge"].startswith("endpoint:")
    assert server.prompts[-2] == out["prompt_template"].format(
        rubric=JUDGE_RUBRIC, input="capital of France?", reference="Paris", response="Paris"
    )
