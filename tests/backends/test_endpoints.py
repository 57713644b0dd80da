"""Endpoints as named, priced definitions; the response cache; the pre-flight; concurrency.

Against the fake endpoint of test_openai_http (faults on demand) and a real ``adaptlab serve`` on
loopback (uvicorn in a thread, the tiny model as the "hosted" one)."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from http.server import ThreadingHTTPServer

import pytest
from typer.testing import CliRunner

from adaptlab.backends import BackendError
from adaptlab.backends.endpoints import (
    EndpointError,
    EndpointSpec,
    ResponseCache,
    gather_endpoints,
    load_endpoints_file,
    parse_endpoint_flag,
    preflight,
    spend,
)
from adaptlab.cli import app
from adaptlab.strategies import get_strategy, make_config
from tests.backends.test_openai_http import DATA, Fake, make_handler


def test_an_endpoint_from_a_flag():
    s = parse_endpoint_flag(
        "gpt=https://api.example.com/v1,model=gpt-4o-mini,key=OPENAI_KEY,in=0.15,out=0.6,concurrency=8"
    )
    assert (s.name, s.url, s.model, s.api_key_env, s.price_in, s.price_out, s.concurrency) == (
        "gpt",
        "https://api.example.com/v1",
        "gpt-4o-mini",
        "OPENAI_KEY",
        0.15,
        0.6,
        8,
    )
    assert s.cost(1_000_000, 2_000_000) == pytest.approx(0.15 + 1.2)


@pytest.mark.parametrize(
    "flag,error",
    [
        ("https://x", "use NAME=URL"),
        ("gpt=ftp://x", "url 'ftp://x' must start with http"),
        ("gpt=https://x,price=3", "option 'price=3': use one of model=, key=, in=, out="),
        ("gpt=https://x,in=cheap", "in=.* is not a number|price_in='cheap' is not a number"),
        ("gpt=https://x,concurrency=0", "concurrency=0 must be an integer in 1..256"),
        ("gpt=https://x,in=-1", "price_in=-1.0 must be a number >= 0"),
        ("g pt=https://x", "a name is letters, digits"),
    ],
)
def test_bad_flags_say_what_is_wrong(flag, error):
    with pytest.raises(EndpointError, match=error):
        parse_endpoint_flag(flag)


def test_endpoints_from_a_toml_file(tmp_path):
    f = tmp_path / "endpoints.toml"
    f.write_text(
        '[endpoints.big]\nurl = "http://127.0.0.1:9/v1"\nmodel = "m"\nprice_in = 2.5\nprice_out = 10\n'
        'concurrency = 2\n\n[endpoints.small]\nurl = "http://127.0.0.1:8/v1"\n'
    )
    big, small = load_endpoints_file(f)
    assert (big.name, big.model, big.price_in, big.price_out, big.concurrency) == ("big", "m", 2.5, 10, 2)
    assert small.model == "default" and small.price_in == 0.0
    with pytest.raises(EndpointError, match="endpoint 'big' is defined twice"):
        gather_endpoints(["big=http://x"], f)
    bad = tmp_path / "bad.toml"
    bad.write_text('[endpoints.x]\nurl = "http://x"\nprices = 3\n')
    with pytest.raises(EndpointError, match=r"bad.toml: endpoints.x: unknown field\(s\) prices"):
        load_endpoints_file(bad)
    bad.write_text('[endpoints.x]\nmodel = "m"\n')
    with pytest.raises(EndpointError, match="bad.toml: endpoints.x: missing field url"):
        load_endpoints_file(bad)
    bad.write_text("[endpoints.x\n")
    with pytest.raises(EndpointError, match="bad.toml: not valid TOML"):
        load_endpoints_file(bad)
    bad.write_text('[endpoints.x]\nurl = "http://x"\nconcurrency = "many"\n')
    with pytest.raises(EndpointError, match="bad.toml: endpoint 'x': concurrency='many'"):
        load_endpoints_file(bad)


class Counting(Fake):
    """The fake endpoint, also counting requests in flight at once and listing its models."""

    def __init__(self):
        super().__init__()
        self.in_flight = 0
        self.most_in_flight = 0
        self.models = ["fake"]
        self.lock = threading.Lock()
        self.expire_after = None  # answered requests after which the key is refused (it "expired")
        self.slow_after = None  # answered requests after which every answer takes slow_seconds
        self.slow_seconds = 0.0
        self.answered = 0


def counting_handler(fake: Counting):
    base = make_handler(fake)

    class H(base):
        def do_GET(self):
            if self.path != "/v1/models":
                return self._send(404, {"error": {"message": "no such route"}})
            if fake.key and self.headers.get("Authorization") != f"Bearer {fake.key}":
                return self._send(401, {"error": {"message": "invalid api key"}})
            return self._send(200, {"data": [{"id": m} for m in fake.models]})

        def do_POST(self):
            with fake.lock:
                expired = fake.expire_after is not None and fake.answered >= fake.expire_after
                slow = fake.slow_after is not None and fake.answered >= fake.slow_after
                fake.answered += 1
                fake.in_flight += 1
                fake.most_in_flight = max(fake.most_in_flight, fake.in_flight)
            try:
                if expired:
                    self.rfile.read(int(self.headers["Content-Length"]))
                    return self._send(401, {"error": {"message": "API key expired"}})
                if slow:
                    time.sleep(fake.slow_seconds)
                super().do_POST()
            finally:
                with fake.lock:
                    fake.in_flight -= 1

    return H


@contextlib.contextmanager
def fake_endpoint():
    """The counting fake endpoint, served on a loopback port for the block."""
    f = Counting()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), counting_handler(f))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    f.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield f
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture()
def fake():
    with fake_endpoint() as f:
        yield f


def test_the_cache_pays_nothing_twice_and_keeps_only_fixed_answers(fake, tmp_path):
    spec = EndpointSpec("f", fake.url + "/v1", model="fake", price_in=1.0, price_out=2.0)
    cache = ResponseCache(tmp_path / "r.sqlite")
    b = spec.backend(cache, backoff=0.01)
    first = b.generate(["Text: item fig\nAnswer:", "Text: item corn\nAnswer:"], max_new_tokens=4)
    assert b.requests == 2 and b.cache_hits == 0 and len(cache) == 2
    sent = fake.requests
    again = spec.backend(ResponseCache(tmp_path / "r.sqlite"), backoff=0.01)  # a resumed run: a new process
    assert again.generate(["Text: item fig\nAnswer:", "Text: item corn\nAnswer:"], max_new_tokens=4) == first
    assert fake.requests == sent and again.requests == 0 and again.cache_hits == 2
    from adaptlab.models.decoding import Sampling

    again.generate(["Text: item fig\nAnswer:"], max_new_tokens=4, sampling=Sampling(temperature=0.7))
    again.generate(["Text: item fig\nAnswer:"], max_new_tokens=4, sampling=Sampling(temperature=0.7))
    assert fake.requests == sent + 2  # sampled without a seed: a new answer each time, never kept
    again.generate(["Text: item fig\nAnswer:"], max_new_tokens=4, sampling=Sampling(temperature=0.7, seed=3))
    again.generate(["Text: item fig\nAnswer:"], max_new_tokens=4, sampling=Sampling(temperature=0.7, seed=3))
    assert fake.requests == sent + 3  # seeded: kept
    paid = spend(spec, again)
    assert paid["calls"] == 6 and paid["http_requests"] == 3 and paid["cache_hits"] == 3
    assert paid["cost_usd"] == pytest.approx((paid["prompt_tokens"] * 1.0 + paid["completion_tokens"] * 2.0) / 1e6)


def test_a_failed_request_is_not_cached_and_retries_still_work(fake, tmp_path):
    cache = ResponseCache(tmp_path / "r.sqlite")
    b = EndpointSpec("f", fake.url, model="fake").backend(cache, backoff=0.01)
    fake.fail_left = 2  # two 429s, then an answer
    assert b.generate(["Text: item fig\nAnswer:"], max_new_tokens=4) == ["I think it is fruit."]
    assert b.retries == 2 and len(cache) == 1
    fake.mode = "malformed"
    with pytest.raises(BackendError, match="malformed response"):
        b.generate(["Text: item okra\nAnswer:"], max_new_tokens=4)
    assert len(cache) == 1


def test_requests_go_out_concurrently_up_to_the_limit(fake):
    fake.delay = 0.05
    prompts = [f"Text: item {w}\nAnswer:" for w in ("fig", "corn", "kiwi", "okra", "pear", "leek", "lime", "kale")]
    one = EndpointSpec("f", fake.url, model="fake", concurrency=1).backend(None, backoff=0.01)
    serial = one.generate(prompts, max_new_tokens=4)
    assert fake.most_in_flight == 1
    four = EndpointSpec("f", fake.url, model="fake", concurrency=4).backend(None, backoff=0.01)
    assert four.generate(prompts, max_new_tokens=4) == serial  # answers in the order asked
    assert 2 <= fake.most_in_flight <= 4
    scores = four.score(prompts, [" fruit", " veg"])
    assert scores.shape == (8, 2) and four.calls == 16


def test_preflight_says_what_failed(fake, monkeypatch):
    spec = EndpointSpec("f", fake.url + "/v1", model="fake")
    info = preflight(spec)
    assert info["reachable"] and info["models_listed"] == ["fake"] and info["logprobs"] is True
    fake.mode = "no_logprobs"
    assert preflight(EndpointSpec("f", fake.url, model="fake"))["logprobs"] is False
    with pytest.raises(BackendError, match=r"endpoint g .*: model 'gpt-9' is not served there \(it lists fake\)"):
        preflight(EndpointSpec("g", fake.url, model="gpt-9"))
    fake.key = "right"
    monkeypatch.setenv("KEY", "wrong")
    with pytest.raises(BackendError, match=r"endpoint f .*: the API key was refused \(HTTP 401\)"):
        preflight(EndpointSpec("f", fake.url, model="fake", api_key_env="KEY"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    with pytest.raises(BackendError, match="endpoint down .*: not reachable"):
        preflight(EndpointSpec("down", f"http://127.0.0.1:{closed}", timeout=2))


def test_the_endpoints_command_and_train_with_a_named_endpoint(fake, tmp_path, monkeypatch):
    f = tmp_path / "e.toml"
    f.write_text(f'[endpoints.fake]\nurl = "{fake.url}/v1"\nmodel = "fake"\nprice_in = 0.5\nconcurrency = 3\n')
    r = CliRunner().invoke(app, ["endpoints", "--endpoints", str(f), "--endpoint", f"other={fake.url},model=fake"])
    assert r.exit_code == 0, r.output
    assert "fake" in r.output and "other" in r.output and "yes" in r.output
    r = CliRunner().invoke(app, ["endpoints", "--endpoint", f"bad={fake.url},model=nope"])
    assert r.exit_code == 2 and "model 'nope' is not served there" in r.output
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(json.dumps({"text": e.text, "label": e.label}) for e in DATA.examples) + "\n")
    args = ["train", "--strategy", "zero_shot", "--data", str(data), "--endpoint", "fake", "--endpoints", str(f)]
    r = CliRunner().invoke(app, args + ["--out", str(tmp_path / "a")])
    assert r.exit_code == 0, r.output
    assert "endpoint fake" in r.output and "answered from the cache" in r.output
    sent = fake.requests
    r = CliRunner().invoke(app, args + ["--out", str(tmp_path / "b")])
    assert r.exit_code == 0, r.output
    assert fake.requests - sent <= 1  # the second run is answered from the cache (the pre-flight lists models)
    r = CliRunner().invoke(app, args[:-2] + ["--out", str(tmp_path / "c")])
    assert r.exit_code == 2 and "not a URL, NAME=URL, or a name in --endpoints" in r.output


# ------------------------------------------------------------------ a real adaptlab server on loopback
@pytest.fixture()
def adaptlab_server(tiny):
    import uvicorn

    from adaptlab.serving.app import create_app
    from adaptlab.serving.service import ServeConfig, Service

    service = Service(tiny, None, ServeConfig(max_batch=8, max_wait_ms=5, max_new_tokens=32))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(service, auth=False), host="127.0.0.1", port=port, log_level="warning")
    )
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    t.join(10)
    service.close()


def test_against_adaptlab_serve_on_loopback(adaptlab_server, tmp_path):
    spec = EndpointSpec("local", adaptlab_server, model="tiny", concurrency=4)
    info = preflight(spec)
    assert "tiny" in info["models_listed"] and info["logprobs"] is False  # no echoed logprobs: answers parsed
    cache = ResponseCache(tmp_path / "r.sqlite")
    b = spec.backend(cache)
    b.mode = "parse"
    art = get_strategy("zero_shot").strategy_cls(make_config("zero_shot")).fit(b, DATA, DATA)
    assert b.requests == len(DATA) and art.metrics["dev"]["n"] == len(DATA)
    assert b.prompt_tokens > 0 and b.completion_tokens > 0  # the server's usage fields, counted
    again = spec.backend(ResponseCache(tmp_path / "r.sqlite"))
    again.mode = "parse"
    get_strategy("zero_shot").strategy_cls(make_config("zero_shot")).fit(again, DATA, DATA)
    assert again.requests == 0 and again.cache_hits == len(DATA)
