"""Faults and bad input: fuzzed data files and HTTP requests, kills at random moments, full disks.

Counts scale with ``ADAPTLAB_FUZZ_EXAMPLES`` and ``ADAPTLAB_KILLS`` (``bench/reliability.py``
runs this file with large ones and writes docs/results/reliability.md); with
``ADAPTLAB_RELIABILITY_LOG`` set, each test appends what it tried to that JSONL file.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adaptlab.data.loading import DataError, load_file

FUZZ = int(os.environ.get("ADAPTLAB_FUZZ_EXAMPLES", "120"))
KILLS = int(os.environ.get("ADAPTLAB_KILLS", "3"))
ROOT = Path(__file__).resolve().parents[1]


def record(test: str, **counts) -> None:
    path = os.environ.get("ADAPTLAB_RELIABILITY_LOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"test": test, **counts}) + "\n")


# ---------------------------------------------------------------- data loader fuzzing
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids, max_size=3),
    max_leaves=6,
)
records = st.dictionaries(
    st.sampled_from(["text", "label", "input", "target", "extra", ""]) | st.text(max_size=6), json_values, max_size=4
)
valid = st.fixed_dictionaries(
    {"text": st.text(min_size=1, max_size=30).filter(str.strip), "label": st.sampled_from(["pos", "neg", "neutral"])}
).map(json.dumps)
line = st.one_of(
    valid,
    valid,
    records.map(json.dumps),
    st.text(max_size=40),
    st.just(""),
    st.just("{"),
    st.just("[]"),
    st.binary(max_size=30).map(lambda b: b.decode("latin-1")),
)
FILE_OUTCOMES = {"loaded": 0, "data_error": 0}


@settings(max_examples=FUZZ, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    lines=st.lists(line, max_size=8) | st.lists(valid, min_size=2, max_size=8),
    suffix=st.sampled_from([".jsonl", ".jsonl", ".csv", ".tsv", ".json"]),
    raw=st.binary(max_size=60),
    use_raw=st.sampled_from([False, False, False, True]),
)
def test_fuzzed_data_files_load_or_fail_with_one_clear_line(tmp_path_factory, lines, suffix, raw, use_raw):
    path = tmp_path_factory.mktemp("fuzz") / f"data{suffix}"
    if use_raw:
        path.write_bytes(raw)
    else:
        path.write_text("\n".join(lines), encoding="utf-8")
    before = sorted(p.name for p in path.parent.iterdir())
    try:
        data = load_file(path)
        assert len(data) >= 1 and all(ex.text.strip() and ex.label for ex in data.examples)
        FILE_OUTCOMES["loaded"] += 1
    except DataError as e:
        msg = str(e)
        assert "\n" not in msg and msg.strip(), msg
        assert str(path) in msg or path.name in msg or "unknown task" in msg, msg
        FILE_OUTCOMES["data_error"] += 1
    assert sorted(p.name for p in path.parent.iterdir()) == before  # nothing written next to the input


def test_zz_record_data_fuzz_counts():
    record("data_loader_fuzz", **FILE_OUTCOMES, examples=sum(FILE_OUTCOMES.values()))


# ---------------------------------------------------------------- server request fuzzing
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from fastapi.testclient import TestClient

    from adaptlab.models.tiny import build_tiny
    from adaptlab.registry import Registry
    from adaptlab.serving import ServeConfig, Service
    from adaptlab.serving.app import create_app
    from tests.serving.kit import ECHO, FOOD, build

    tmp = tmp_path_factory.mktemp("fuzzsrv")
    base = build_tiny()
    reg = Registry(tmp / "reg")
    reg.register(build(base, "zs", "zero_shot", FOOD, {}, tmp), "food")
    reg.register(build(base, "gen", "lora", ECHO, {}, tmp), "echo")
    service = Service(base, reg, ServeConfig(max_batch=4, max_wait_ms=1, max_new_tokens=4))
    client = TestClient(
        create_app(service, auth=False, max_body_bytes=2048, max_input_chars=200), raise_server_exceptions=False
    )
    yield client, reg
    service.close()


models = st.sampled_from(
    ["food", "food@1", "food@prod", "echo", "base", "tiny", "nope", "../x", "food@9", ""]
) | st.text(max_size=12)
texts = st.text(max_size=60) | st.just("x" * 300)
bodies = st.one_of(
    st.fixed_dictionaries({"model": models, "input": texts | st.lists(texts, max_size=4) | json_values}),
    st.fixed_dictionaries(
        {
            "model": models,
            "prompt": texts | json_values,
            "max_tokens": st.integers(-2, 10) | st.none(),
            "stream": st.booleans(),
        }
    ),
    st.fixed_dictionaries(
        {
            "model": models,
            "messages": st.lists(
                st.fixed_dictionaries(
                    {"role": st.sampled_from(["user", "system", "assistant", "robot"]), "content": texts | json_values}
                ),
                max_size=3,
            ),
            "max_tokens": st.integers(0, 6),
        }
    ),
    st.fixed_dictionaries(
        {
            "request_id": st.text(max_size=10) | json_values,
            "rating": st.integers(-3, 3) | json_values,
            "correction": st.none() | texts,
        }
    ),
    json_values,
)
SERVER_OUTCOMES: dict[str, int] = {}


@settings(max_examples=FUZZ, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    route=st.sampled_from(["/v1/classify", "/v1/completions", "/v1/chat/completions", "/v1/feedback"]),
    body=bodies,
    raw=st.booleans(),
    junk=st.binary(max_size=40),
)
def test_fuzzed_requests_get_an_answer_or_a_clear_error(server, route, body, raw, junk):
    client, reg = server
    with sqlite3.connect(reg.db_path) as con:
        before = con.execute("SELECT (SELECT COUNT(*) FROM requests), (SELECT COUNT(*) FROM feedback)").fetchone()
    if raw:
        r = client.post(route, content=junk, headers={"content-type": "application/json"})
    else:  # json.dumps writes NaN / Infinity, which are not JSON: the server must refuse them too
        r = client.post(route, content=json.dumps(body), headers={"content-type": "application/json"})
    SERVER_OUTCOMES[str(r.status_code)] = SERVER_OUTCOMES.get(str(r.status_code), 0) + 1
    assert r.status_code < 500, (route, body, r.text)
    if r.status_code != 200:
        err = r.json()["error"]
        assert err["message"] and err["code"] and "Traceback" not in err["message"]
        with sqlite3.connect(reg.db_path) as con:  # a refused request stored nothing
            after = con.execute("SELECT (SELECT COUNT(*) FROM requests), (SELECT COUNT(*) FROM feedback)").fetchone()
        assert after == before


def test_zz_record_server_fuzz_counts():
    record("server_request_fuzz", statuses=SERVER_OUTCOMES, examples=sum(SERVER_OUTCOMES.values()))


# ---------------------------------------------------------------- kills
def test_training_killed_at_random_steps_resumes_to_the_same_weights(tmp_path):
    from safetensors.torch import load_file as load_st

    from tests.training.test_resume import run_job

    rng = random.Random(int(os.environ.get("ADAPTLAB_KILL_SEED", "0")))
    run_job(tmp_path, tmp_path / "ref_run", tmp_path / "ref", resume=False)
    total = len((tmp_path / "ref_run" / "train_log.jsonl").read_text().splitlines())
    points = sorted(rng.sample(range(2, total - 2), KILLS))
    killed = 0
    for i, at in enumerate(points):
        rc = run_job(tmp_path, tmp_path / "run", tmp_path / "out", resume=i > 0, kill_after_lines=at)
        killed += rc == -signal.SIGKILL
    run_job(tmp_path, tmp_path / "run", tmp_path / "out", resume=True)
    ref, got = (
        load_st(tmp_path / "ref" / "adapter_model.safetensors"),
        load_st(tmp_path / "out" / "adapter_model.safetensors"),
    )
    for k in ref:
        assert (ref[k] == got[k]).all(), k
    record("training_kill_resume", kills=killed, kill_steps=points, total_steps=total, identical=True)
    assert killed >= 1


def test_server_killed_mid_request_keeps_all_acknowledged_feedback(tmp_path):
    import concurrent.futures as cf

    import requests

    from adaptlab.models.tiny import build_tiny
    from adaptlab.registry import Registry
    from tests.serving.kit import ECHO, FOOD, build
    from tests.serving.test_cli_serve import free_port, wait_healthy

    base = build_tiny()
    reg = Registry(tmp_path / "reg")
    reg.register(build(base, "zs", "zero_shot", FOOD, {}, tmp_path), "food")
    reg.register(build(base, "gen", "lora", ECHO, {}, tmp_path), "echo")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "adaptlab.cli",
            "serve",
            "--model",
            "tiny",
            "--registry",
            str(reg.root),
            "--port",
            str(port),
            "--no-auth",
            "--max-new-tokens",
            "64",
        ],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_healthy(url, proc)
    ids = [
        requests.post(url + "/v1/classify", json={"model": "food", "input": f"item {i}"}, timeout=30).json()["data"][0][
            "request_id"
        ]
        for i in range(KILLS * 4)
    ]
    acked: list[str] = []

    def give(rid):
        try:
            r = requests.post(url + "/v1/feedback", json={"request_id": rid, "rating": 1}, timeout=30)
            if r.status_code == 200:
                acked.append(rid)
        except requests.RequestException:
            pass

    def busy():
        with contextlib.suppress(requests.RequestException):
            requests.post(
                url + "/v1/completions", json={"model": "echo", "prompt": "say ab", "max_tokens": 64}, timeout=30
            )

    with cf.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(busy) for _ in range(4)] + [pool.submit(give, rid) for rid in ids]
        time.sleep(0.3)
        os.kill(proc.pid, signal.SIGKILL)  # mid-request: generations and feedback are in flight
        for f in futures:
            f.result()
    proc.wait()
    with sqlite3.connect(reg.db_path) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = {r[0] for r in con.execute("SELECT request_id FROM feedback")}
    assert set(acked) <= stored  # every acknowledged feedback survived the kill
    record(
        "server_kill_feedback",
        requests_sent=len(ids),
        acknowledged=len(acked),
        stored=len(stored),
        lost_acknowledged=len(set(acked) - stored),
    )


# ---------------------------------------------------------------- full disks, unwritable places
def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_during_an_atomic_write_keeps_the_old_file(tmp_path, monkeypatch):
    from adaptlab.utils import atomic_write_json

    target = tmp_path / "results.json"
    atomic_write_json(target, {"v": 1})
    monkeypatch.setattr(os, "fsync", _enospc)
    with pytest.raises(OSError, match="No space"):
        atomic_write_json(target, {"v": 2})
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temp file left


def test_disk_full_while_registering_keeps_the_index(tmp_path, monkeypatch):
    from adaptlab.registry import Registry, RegistryError
    from tests.serving.test_registry import fake_artifact

    reg = Registry(tmp_path / "reg")
    reg.register(fake_artifact(tmp_path / "a", "one"), "food")
    monkeypatch.setattr(os, "fsync", _enospc)  # the copy fails when flushed, as on a full disk
    with pytest.raises(RegistryError, match="No space left"):
        reg.register(fake_artifact(tmp_path / "b", "two"), "food")
    monkeypatch.undo()
    assert [e.version for e in reg.entries("food")] == [1]
    assert list(reg.tmp.iterdir()) == []
    reg.verify(reg.resolve("food"))


def test_disk_full_while_checkpointing_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    from adaptlab.data.loading import Example, TaskData
    from adaptlab.models.tiny import build_tiny
    from adaptlab.strategies import get_strategy, make_config
    from adaptlab.training import TrainConfig, loop

    data = TaskData(
        "classification",
        [
            Example(f"item {w}", lab, i + 1)
            for i, (w, lab) in enumerate([("apple", "fruit"), ("kale", "veg"), ("pear", "fruit"), ("leek", "veg")])
        ],
        "m",
        label_names=["fruit", "veg"],
    )
    strat = get_strategy("soft_prompt").strategy_cls(make_config("soft_prompt", n_tokens=2))
    cfg = TrainConfig(max_steps=6, batch_size=2, checkpoint_every=2, lr=0.1)
    real_save = loop.save_file
    calls = {"n": 0}

    def failing_save(tensors, path, *a, **k):
        calls["n"] += 1
        if calls["n"] > 5:  # the first checkpoint (several files) goes through, the second fails
            _enospc()
        return real_save(tensors, path, *a, **k)

    monkeypatch.setattr(loop, "save_file", failing_save)
    with pytest.raises(OSError, match="No space"):
        strat.fit(build_tiny(), data, None, cfg, run_dir=tmp_path / "run", progress=False)
    monkeypatch.undo()
    state = json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 2  # the last complete checkpoint, intact
    art = strat.fit(build_tiny(), data, None, cfg, run_dir=tmp_path / "run", resume=True, progress=False)
    assert art.metrics["train"]["steps"] == 6


def test_unwritable_cache_is_one_clear_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    r = subprocess.run(
        [sys.executable, "-m", "adaptlab.cli", "models", "info"],
        capture_output=True,
        text=True,
        env={**os.environ, "ADAPTLAB_CACHE": str(blocker / "cache")},
        timeout=120,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "model cache" in r.stderr and "ADAPTLAB_CACHE" in r.stderr
