"""Training, comparing and serving never send data anywhere: a compare and a served request run in
processes whose every connect, send and host lookup goes through an audit hook that refuses anything
but loopback (tests/egress/sitecustomize.py); the hook's own log must show it ran and refused nothing.
A control process shows the hook does refuse an outside address."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.serving.test_cli_serve import free_port, wait_healthy

GUARD = Path(__file__).parent / "egress"


def _env(log: Path) -> dict:
    pythonpath = os.pathsep.join([str(GUARD), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {**os.environ, "PYTHONPATH": pythonpath, "ADAPTLAB_EGRESS_LOG": str(log), "OMP_NUM_THREADS": "1"}


def _records(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_the_guard_refuses_an_outside_address(tmp_path):
    log = tmp_path / "egress.jsonl"
    code = (
        "import socket\ns = socket.socket()\ns.settimeout(0.2)\n"
        "try:\n    s.connect(('192.0.2.1', 9))\nexcept OSError as e:\n    print('refused' if 'egress guard' in str(e) "
        "else 'other')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], env=_env(log), capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "refused", r.stderr
    assert [x for x in _records(log) if not x.get("local", True)] == [
        {"event": "socket.connect", "host": "192.0.2.1", "local": False, "pid": _records(log)[0]["pid"]}
    ]


@pytest.mark.timeout(600)
def test_a_compare_and_a_serve_stay_on_this_machine(tmp_path):
    log = tmp_path / "egress.jsonl"
    env = _env(log)
    rows = [{"text": f"I ate a {w}", "label": "fruit"} for w in ("kiwi", "plum", "pear", "fig", "lime")] * 4 + [
        {"text": f"I cooked a {w}", "label": "veg"} for w in ("leek", "kale", "bean", "corn", "okra")
    ] * 4
    data = tmp_path / "food.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cmp = subprocess.run(
        [
            sys.executable,
            "-m",
            "adaptlab.cli",
            "compare",
            "--data",
            str(data),
            "--model",
            "tiny",
            "--out",
            str(tmp_path / "cmp"),
            "--budget",
            "2m",
            "--strategies",
            "zero_shot,lora",
            "--no-progress",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=500,
    )
    assert cmp.returncode == 0, cmp.stdout[-2000:] + cmp.stderr[-2000:]

    reg = tmp_path / "reg"
    art = next((tmp_path / "cmp" / "artifacts").iterdir())
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "adaptlab.cli",
            "registry",
            "register",
            str(art),
            "--task",
            "food",
            "--alias",
            "prod",
            "--registry",
            str(reg),
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "adaptlab.cli",
            "serve",
            "--model",
            "tiny",
            "--registry",
            str(reg),
            "--port",
            str(port),
            "--no-auth",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, server)
        r = requests.post(
            url + "/v1/chat/completions",
            timeout=60,
            json={"model": "food", "messages": [{"role": "user", "content": "I ate a kiwi"}]},
        )
        assert r.status_code == 200, r.text
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    recs = _records(log)
    guarded = {
        x["argv"][1] for x in recs if x["event"] == "guard" and len(x["argv"]) > 1
    }  # python -m: ["-m", cmd, ...]
    assert {"compare", "serve"} <= guarded, guarded  # the hook ran in both processes
    assert [x for x in recs if not x.get("local", True)] == []
