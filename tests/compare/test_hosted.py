"""Hosted candidates in one compare: prompt strategies on a (fake, loopback) endpoint beside local
adaptations of the tiny model, on the same test rows, in one ranking and one cost model; a repeated
compare pays the endpoint nothing; a bad endpoint stops the compare before any run."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from adaptlab.cli import app
from adaptlab.compare.config import CompareConfig, parse_volume
from adaptlab.compare.hosted import break_even
from adaptlab.compare.summary import Row
from tests.backends.test_endpoints import fake_endpoint

FRUIT = ["apple", "pear", "plum", "fig", "kiwi", "lime", "mango", "peach", "grape", "melon"]
VEG = ["kale", "leek", "okra", "corn", "bean", "pea", "onion", "chard", "radish", "turnip"]


@pytest.fixture()
def fake():
    with fake_endpoint() as f:
        yield f


def _data(tmp_path):
    rows = [{"text": f"item {w} {i}", "label": "fruit"} for i in range(2) for w in FRUIT]
    rows += [{"text": f"item {w} {i}", "label": "veg"} for i in range(2) for w in VEG]
    path = tmp_path / "food.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def _compare(data, out, endpoint, extra=()):
    return CliRunner().invoke(
        app,
        [
            "compare",
            "--data",
            str(data),
            "--model",
            "tiny",
            *([] if "--strategies" in extra else ["--strategies", "zero_shot,few_shot,lora"]),
            *(["--endpoint", endpoint] if endpoint else []),
            "--train-sizes",
            "8",
            "--out",
            str(out),
            "--no-forgetting",
            "--fragility-k",
            "0",
            "--consistency-examples",
            "0",
            "--no-progress",
            "--full-grid",
            "--set",
            "few_shot.k=2",
            "--set",
            "lora.epochs=1",
            *extra,
        ],
    )


def test_hosted_and_local_in_one_compare(fake, tmp_path):
    data = _data(tmp_path)
    endpoint = f"fake={fake.url}/v1,model=fake,in=1.5,out=2,concurrency=4"
    r = _compare(data, tmp_path / "run", endpoint, ["--volume", "1M/month"])
    assert r.exit_code == 0, r.output
    results = {
        json.loads(p.read_text())["run"]["strategy"]: json.loads(p.read_text())
        for p in (tmp_path / "run" / "results").glob("*.json")
    }
    assert {"zero_shot", "few_shot", "lora", "zero_shot@fake", "few_shot@fake"} <= set(results)
    hosted = results["few_shot@fake"]
    assert hosted["run"]["endpoint"] == "fake" and hosted["cost"]["pricing"] == "tokens"
    used = hosted["eval"]["endpoint"]
    n = hosted["eval"]["test_examples"]
    assert used["calls"] == n and used["predictions"] == n
    assert used["usd_per_1m"] == pytest.approx(used["prompt_tokens_per_prediction"] * 1.5)  # no completion tokens
    assert hosted["eval"]["quality"] == 1.0  # the fake knows fruit: the same test rows as the local runs
    assert hosted["run"]["settings"]["k"] == 2  # --set few_shot.k=2 reaches few_shot@fake too
    assert hosted["eval"]["endpoint_extras"]["calls"] > 0  # the train-test gap's calls, counted in the spend too
    assert results["lora"]["eval"]["latency"]["latency_p50_s"] > 0  # beside hosted candidates: one request alone
    assert used["latency_p50_s"] is not None and used["latency_p95_s"] >= used["latency_p50_s"]
    local_ids = {p["id"] for p in results["lora"]["predictions"]}
    assert {p["id"] for p in hosted["predictions"]} == local_ids
    report = (tmp_path / "run" / "report" / "report.md").read_text()
    assert "## Hosted and local: one cost model" in report and "break-even vs" in report
    assert "What this compare paid its endpoints" in report and "at 1,000,000 predictions a month" in report
    compare_json = json.loads((tmp_path / "run" / "compare.json").read_text())
    assert compare_json["endpoints"][0]["name"] == "fake" and compare_json["volume"] == 1e6

    sent = fake.requests
    r = _compare(data, tmp_path / "again", endpoint)  # the same compare in a new folder
    assert r.exit_code == 0, r.output
    assert fake.requests == sent  # every endpoint answer came from the response cache
    again = json.loads((tmp_path / "again" / "results" / "few_shot@fake-n8-s0.json").read_text())
    assert again["eval"]["endpoint"]["http_requests"] == 0 and again["eval"]["endpoint"]["cache_hits"] == n
    assert again["eval"]["endpoint"]["usd_per_1m"] == pytest.approx(used["usd_per_1m"])  # cost per prediction kept


def test_a_bad_endpoint_stops_the_compare_before_any_run(fake, tmp_path):
    r = _compare(_data(tmp_path), tmp_path / "run", f"fake={fake.url},model=gpt-9")
    assert r.exit_code == 2 and "model 'gpt-9' is not served there" in r.output
    assert not list((tmp_path / "run").glob("results/*.json"))


def test_only_prompt_strategies_run_on_an_endpoint():
    ep = [{"name": "h", "url": "http://127.0.0.1:9"}]
    with pytest.raises(ValueError, match="lora@h: lora changes weights"):
        CompareConfig(data="demo", strategies=["lora@h"], endpoints=ep)
    with pytest.raises(ValueError, match="names endpoint 'x', which is not defined"):
        CompareConfig(data="demo", strategies=["zero_shot@x"], endpoints=ep)
    with pytest.raises(ValueError, match="--volume 'lots'"):
        parse_volume("lots")


def _row(strategy, usd_per_1m, train_usd, endpoint=None):
    return Row(
        strategy=strategy,
        kind="gradient",
        train_size=100,
        seeds=1,
        quality=0.9,
        quality_std=0.0,
        macro_f1=None,
        chrf=None,
        train_seconds=0.0,
        peak_rss_gb=0.0,
        trainable_params=0,
        artifact_bytes=0,
        examples_per_s=1.0,
        prompt_tokens=10.0,
        usd_per_1m=usd_per_1m,
        overfit_gap=None,
        stopped_early=0,
        steps=None,
        best_step=None,
        paraphrase_spread=None,
        perturbation_drop=None,
        ppl_change=None,
        second_task_change=None,
        metric="accuracy",
        train_usd=train_usd,
        endpoint=endpoint,
    )


def test_break_even_volume():
    local, hosted = _row("lora", 2.0, 5.0), _row("few_shot@h", 52.0, 0.5, "h")
    assert break_even(local, hosted) == pytest.approx(4.5 / (50.0 / 1e6))  # 90k predictions
    assert break_even(_row("lora", 60.0, 5.0), hosted) is None  # the hosted prompt is cheaper per prediction


def test_a_key_that_expires_mid_compare_loses_no_finished_run(fake, tmp_path, monkeypatch):
    """The key is refused part-way through: the compare stops with the endpoint's one-line error,
    the runs finished before stay, and the same compare with a good key resumes, paying again only
    for what was not answered."""
    data = _data(tmp_path)
    fake.key = "good"
    monkeypatch.setenv("FAKE_KEY", "good")
    endpoint = f"fake={fake.url},model=fake,key=FAKE_KEY"
    fake.expire_after = 5  # the pre-flight probe and the first hosted run (4 test rows), then the key fails

    r = _compare(data, tmp_path / "run", endpoint)
    assert r.exit_code == 2 and "HTTP 401" in r.output, r.output
    results = tmp_path / "run" / "results"
    finished = {p.name: p.read_text() for p in results.glob("*.json")}
    assert "zero_shot@fake-n0-s0.json" in finished and len(finished) < 5
    fake.expire_after = None  # a new key
    r = _compare(data, tmp_path / "run", endpoint)
    assert r.exit_code == 0, r.output
    assert "resuming" in r.output
    again = {p.name: p.read_text() for p in results.glob("*.json")}
    assert len(again) == 5 and all(again[k] == v for k, v in finished.items())  # kept as they were, not rerun
    used = json.loads(again["few_shot@fake-n8-s0.json"])["eval"]["endpoint"]
    assert used["calls"] == used["predictions"] == used["http_requests"] + used["cache_hits"]


def test_an_endpoint_that_times_out_mid_compare_loses_no_finished_run(fake, tmp_path):
    """The endpoint stops answering in time part-way through: the backend's retries give up, the
    compare stops with a one-line error naming the timeout, the finished runs stay, and the same
    compare resumes once the endpoint answers again."""
    data = _data(tmp_path)
    endpoint = f"fake={fake.url},model=fake,timeout=0.2"
    fake.slow_after, fake.slow_seconds = 5, 0.6  # the pre-flight and the first hosted run answer in time
    r = _compare(data, tmp_path / "run", endpoint)
    assert r.exit_code == 2 and "timed out after 0.2 s" in r.output, r.output
    assert len([line for line in r.output.strip().splitlines() if "timed out" in line]) == 1
    results = tmp_path / "run" / "results"
    finished = {p.name: p.read_text() for p in results.glob("*.json")}
    assert "zero_shot@fake-n0-s0.json" in finished and len(finished) < 5
    fake.slow_after = None
    r = _compare(data, tmp_path / "run", endpoint)
    assert r.exit_code == 0, r.output
    again = {p.name: p.read_text() for p in results.glob("*.json")}
    assert len(again) == 5 and all(again[k] == v for k, v in finished.items())


def test_gepa_in_a_compare_with_a_proposer_of_its_own(fake, tmp_path):
    """gepa runs on the local model and on the endpoint; its proposer is an endpoint that is not a
    candidate (--proposer NAME=URL,...): the proposer's calls are in the gepa runs' fitting cost and
    in the report's endpoint spend, under the proposer's name."""
    data = _data(tmp_path)
    with fake_endpoint() as prop:
        r = _compare(
            data,
            tmp_path / "run",
            f"fake={fake.url},model=fake",
            [
                "--strategies",
                "zero_shot,gepa",
                "--proposer",
                f"prop={prop.url},model=fake,in=3,out=9",
                "--set",
                "gepa.budget_calls=40",
                "--set",
                "gepa.val_examples=4",
                "--set",
                "gepa.minibatch=2",
                "--set",
                "gepa.k=1",
            ],
        )
        assert r.exit_code == 0, r.output
        results = {
            json.loads(p.read_text())["run"]["strategy"]: json.loads(p.read_text())
            for p in (tmp_path / "run" / "results").glob("*.json")
        }
        assert {"zero_shot", "gepa", "zero_shot@fake", "gepa@fake"} == set(results)
        assert "prop" not in {r["run"]["endpoint"] for r in results.values()}  # not a candidate
        for name in ("gepa", "gepa@fake"):
            proposer = results[name]["train"]["proposer"]
            assert proposer["proposer"] == "prop" and proposer["calls"] >= 1
            assert proposer["spend"]["endpoint"] == "prop" and proposer["spend"]["http_requests"] >= 1
        assert prop.requests > 0
        report = (tmp_path / "run" / "report" / "report.md").read_text()
        spend = report[report.index("What this compare paid its endpoints") :]
        assert "| prop |" in spend and "| fake |" in spend
    with pytest.raises(ValueError, match="--proposer 'nobody': not an endpoint of this compare"):
        CompareConfig(data="demo", strategies=["gepa"], proposer="nobody")


def test_a_gepa_run_whose_proposer_fails_resumes_from_its_journal(tmp_path, monkeypatch):
    """The proposer's key expires part-way through a gepa run: the compare stops with the one-line
    401, the run's journal stays in its live folder, and the same compare with a good key finishes
    the run, sending the proposer only the proposals it had not answered."""
    data = _data(tmp_path)
    monkeypatch.setenv("PROP_KEY", "good")
    argv = [
        "--strategies",
        "gepa",
        "--set",
        "gepa.budget_calls=60",
        "--set",
        "gepa.val_examples=4",
        "--set",
        "gepa.minibatch=2",
        "--set",
        "gepa.k=0",
    ]
    with fake_endpoint() as prop:
        prop.key = "good"
        proposer = f"prop={prop.url},model=fake,key=PROP_KEY,mode=parse"
        prop.expire_after = 2  # two proposals answered, then the key fails
        extra = ["--proposer", proposer, "--no-response-cache", *argv]
        r = _compare(data, tmp_path / "run", None, extra)
        assert r.exit_code == 2 and "HTTP 401" in r.output, r.output
        journal = tmp_path / "run" / "live" / "gepa-n8-s0" / "gepa_journal.jsonl"
        assert journal.exists() and len(journal.read_text().splitlines()) > 5
        prop.expire_after = None
        sent = prop.requests
        r = _compare(data, tmp_path / "run", None, extra)
        assert r.exit_code == 0, r.output
        rec = json.loads((tmp_path / "run" / "results" / "gepa-n8-s0.json").read_text())
        p = rec["train"]["proposer"]
        assert p["spend"]["http_requests"] == prop.requests - sent == p["spend"]["calls"]
        assert p["spend"]["calls"] <= p["calls"] - 2  # the two answered proposals came from the journal
        assert not journal.parent.exists()  # done: its live folder is gone
        assert json.loads((tmp_path / "run" / "compare.json").read_text())["response_cache"] is None  # it was off
