"""The registry CLI and a real `adaptlab serve` process: rollback from the command line, live."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests
from typer.testing import CliRunner

from adaptlab.cli import app
from adaptlab.models.tiny import build_tiny

from .kit import FOOD, build

runner = CliRunner()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, seconds: float = 60) -> None:
    """Wait for a server process to answer /healthz; fail with its output if it exits first."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if requests.get(url + "/healthz", timeout=1).ok:
                return
        except requests.ConnectionError:
            time.sleep(0.1)
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else "server exited"
    raise AssertionError(f"{url} did not become healthy in {seconds} s")


def cli(*args):
    r = runner.invoke(app, list(args))
    return r.exit_code, r.output


def test_registry_commands_and_errors(tmp_path):
    base = build_tiny()
    art = build(base, "lora", "lora", FOOD, {}, tmp_path)
    reg = str(tmp_path / "reg")
    assert cli("registry", "register", str(art), "--task", "food", "--registry", reg)[0] == 0
    code, out = cli("registry", "register", str(art), "--task", "food", "--alias", "staging", "--registry", reg)
    assert code == 0 and "food@2" in out
    code, out = cli("registry", "list", "--registry", reg)
    assert code == 0 and "food@1" in out and "staging" in out
    assert cli("registry", "promote", "food", "1", "--registry", reg)[0] == 0
    code, out = cli("registry", "show", "food@prod", "--registry", reg)
    assert code == 0 and json.loads(out)["version"] == 1
    code, out = cli("registry", "rollback", "food", "--registry", reg)
    assert code == 2 and "no earlier version" in out
    for args in (
        ["registry", "register", str(art), "--task", "../x"],
        ["registry", "promote", "food", "9"],
        ["registry", "show", "nope"],
        ["registry", "register", str(tmp_path), "--task", "x"],
    ):
        code, out = cli(*args, "--registry", reg)
        assert code == 2 and out.startswith("error:") and "Traceback" not in out, out
    code, key = cli("keys", "add", "ci", "--tasks", "food", "--registry", reg)
    assert code == 0 and key.strip().startswith("al-")
    assert "ci: food" in cli("keys", "list", "--registry", reg)[1]
    assert cli("registry", "delete", "food", "2", "--force", "--registry", reg)[0] == 0
    assert "removed 0 folders" in cli("registry", "gc", "--registry", reg)[1]  # v1 has the same files


@pytest.mark.timeout(300)
def test_rollback_from_the_cli_reaches_a_running_server(tmp_path):
    base = build_tiny()
    reg = str(tmp_path / "reg")
    cli("registry", "register", str(build(base, "v1", "lora", FOOD, {}, tmp_path)), "--task", "food", "--registry", reg)
    cli(
        "registry",
        "register",
        str(build(base, "v2", "soft_prompt", FOOD, {"n_tokens": 3}, tmp_path)),
        "--task",
        "food",
        "--registry",
        reg,
    )
    cli("registry", "promote", "food", "1", "--registry", reg)
    key = cli("keys", "add", "ops", "--tasks", "*", "--registry", reg)[1].strip()
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "adaptlab.cli",
            "serve",
            "--model",
            "tiny",
            "--registry",
            reg,
            "--port",
            str(port),
            "--preload",
            "food",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, server)
        auth = {"Authorization": f"Bearer {key}"}

        def resolved():
            r = requests.post(
                url + "/v1/classify", json={"model": "food", "input": "item kiwi"}, headers=auth, timeout=30
            )
            assert r.status_code == 200, r.text
            return r.json()["resolved"]

        assert resolved() == "food@1"
        promote = subprocess.run(
            [sys.executable, "-m", "adaptlab.cli", "registry", "promote", "food", "2", "--registry", reg],
            capture_output=True,
            text=True,
            env=env,
        )
        assert promote.returncode == 0, promote.stderr
        assert resolved() == "food@2"
        rollback = subprocess.run(
            [sys.executable, "-m", "adaptlab.cli", "registry", "rollback", "food", "--registry", reg],
            capture_output=True,
            text=True,
            env=env,
        )
        assert rollback.returncode == 0 and "food@1" in rollback.stdout
        assert resolved() == "food@1"
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
