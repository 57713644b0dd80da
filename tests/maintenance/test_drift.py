"""Drift: the statistics and their permutation tests, the false alarm rate on unshifted windows, the
verdict on shifted ones, `adaptlab drift` on a served task, and the server's gauges."""

from __future__ import annotations

import json
import random
import time

import numpy as np
import pytest

from adaptlab.maintenance.drift import (
    DriftWatch,
    compare_traffic,
    drift_for_task,
    ks,
    mmd_permutation,
    psi,
    vocabulary_of,
)
from tests.maintenance.kit import champion

WORDS = ["kiwi", "plum", "pear", "fig", "lime", "leek", "kale", "bean", "corn", "okra", "grape", "mango"]
NEW = ["crypto", "wallet", "refund", "blockchain", "token", "exchange"]


def _sentences(rng, words, n, lo=3, hi=8):
    return [" ".join(rng.choice(words) for _ in range(rng.randint(lo, hi))) for _ in range(n)]


def _words(text):
    return len(text.split())


def _fake_embed(texts):
    """A deterministic bag-of-words embedding (the real one is MiniLM; tests need no model)."""
    out = np.zeros((len(texts), 32))
    for i, t in enumerate(texts):
        for w in t.split():
            out[i, hash(w) % 32] += 1
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def test_statistics():
    a, b = np.array([0, 0, 1, 1]), np.array([0, 0, 1, 1])
    assert psi(a, b, 2) == pytest.approx(0.0, abs=1e-9) and psi(a, np.array([1, 1, 1, 1]), 2) > 1
    assert ks(np.array([1.0, 2, 3]), np.array([1.0, 2, 3])) == 0 and ks(np.array([1.0, 2]), np.array([5.0, 6])) == 1
    rng = np.random.default_rng(0)
    same = mmd_permutation(rng.normal(size=(60, 4)), rng.normal(size=(60, 4)), rng, 200)
    moved = mmd_permutation(rng.normal(size=(60, 4)), rng.normal(1.0, size=(60, 4)), rng, 200)
    assert same[1] > 0.05 and moved[1] < 0.01


def test_false_alarms_stay_under_alpha_and_a_shift_is_found():
    rng = random.Random(0)
    train = _sentences(rng, WORDS, 300)
    vocab = vocabulary_of(train)
    reference = _sentences(rng, WORDS, 120)
    ref_labels = [rng.choice(["fruit", "veg"]) for _ in reference]
    alarms = 0
    for seed in range(20):  # unshifted windows from the same source
        window = _sentences(rng, WORDS, 80)
        rep = compare_traffic(
            "t",
            "t@1",
            reference,
            window,
            vocab,
            _words,
            _fake_embed,
            ref_labels,
            [rng.choice(["fruit", "veg"]) for _ in window],
            seed=seed,
            permutations=200,
        )
        alarms += rep.retrain
    assert alarms <= 2  # alpha = 0.05 over all signals: about 1 in 20 at most
    shifted = _sentences(rng, WORDS + NEW * 2, 80, 6, 14)
    rep = compare_traffic(
        "t",
        "t@1",
        reference,
        shifted,
        vocab,
        _words,
        _fake_embed,
        ref_labels,
        ["veg"] * 70 + ["fruit"] * 10,
        permutations=200,
    )
    assert rep.retrain and {s.name for s in rep.drifted} == {"labels", "length", "unknown_words", "embedding"}
    assert rep.reason().startswith("retraining is due") and "unknown_words" in rep.reason()
    text = rep.prometheus()
    assert 'adaptlab_drift_retrain_due{task="t"} 1' in text and 'signal="embedding"' in text


def test_too_few_requests_give_no_verdict():
    rep = compare_traffic("t", "t@1", ["a b"] * 50, ["a b"] * 5, {"a"}, _words)
    assert not rep.retrain and rep.signals == [] and "not enough rows" in rep.reason()


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A champion trained by `adaptlab train` (so it has a recipe) and registered as prod."""

    monkeypatch.setenv("ADAPTLAB_REGISTRY", str(tmp_path / "reg"))
    rng = random.Random(1)
    rows = [{"text": f"I ate {s}", "label": "fruit"} for s in _sentences(rng, WORDS[:5], 150, 2, 5)] + [
        {"text": f"I cooked {s}", "label": "veg"} for s in _sentences(rng, WORDS[5:10], 150, 2, 5)
    ]
    reg, _ = champion(tmp_path, rows, "--max-steps", "3")
    return reg, rng


def _log(reg, texts, outputs, start=0):
    for i, (t, o) in enumerate(zip(texts, outputs)):
        reg.requests.log(f"r{start + i}", "food", 1, "classification", t, o)


def test_drift_of_a_served_task(served, tmp_path):
    from adaptlab.models.tiny import build_tiny
    from adaptlab.strategies.base import Artifact

    reg, rng = served
    base = build_tiny()
    art = Artifact.load(reg.resolve("food").path, base)
    same = [f"I ate {s}" if i % 2 else f"I cooked {s}" for i, s in enumerate(_sentences(rng, WORDS[:10], 80, 2, 5))]
    _log(reg, same, art.predict(same))
    rep = drift_for_task(reg, "food", window=80, base=base, embed=False, permutations=200)
    assert rep.recent_rows == 80 and [s.name for s in rep.signals] == ["labels", "length", "unknown_words"]
    assert not rep.retrain, rep.reason()
    moved = [f"please {s} my crypto wallet refund now" for s in _sentences(rng, NEW, 80, 4, 9)]
    _log(reg, moved, art.predict(moved), start=1000)
    rep = drift_for_task(reg, "food", window=80, base=base, embed=False, permutations=200)
    assert rep.retrain and "unknown_words" in {s.name for s in rep.drifted}


def test_the_cli_and_the_server_gauges(served, tmp_path):
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from adaptlab.cli import app
    from adaptlab.models.tiny import build_tiny
    from adaptlab.serving import Service
    from adaptlab.serving.app import create_app
    from adaptlab.serving.http import Metrics

    reg, rng = served
    moved = [f"please {s} my crypto wallet refund now" for s in _sentences(rng, NEW, 60, 4, 9)]
    _log(reg, moved, ["veg"] * 60)
    prom = tmp_path / "drift.prom"
    r = CliRunner().invoke(
        app,
        [
            "drift",
            "food",
            "--window",
            "60",
            "--no-embed",
            "--prometheus",
            str(prom),
            "--json",
            str(tmp_path / "d.json"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert "retraining is due" in r.output and 'adaptlab_drift_retrain_due{task="food"} 1' in prom.read_text()
    assert json.loads((tmp_path / "d.json").read_text())["retrain"] is True

    service = Service(build_tiny(), reg)
    try:
        service.metrics = Metrics()
        watch = DriftWatch(service, 3600)
        service.metrics.add_source(watch.text)
        client = TestClient(create_app(service, auth=False))
        client.get("/metrics")  # starts the computation; the answer has the last values (none yet)
        for _ in range(600):
            if watch.reports or watch.errors:
                break
            time.sleep(0.1)
        assert watch.errors == {}
        text = client.get("/metrics").text
        assert 'adaptlab_drift_retrain_due{task="food"} 1' in text and 'signal="unknown_words"' in text
    finally:
        service.close()
