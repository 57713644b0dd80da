"""A workbench over a temporary work folder and registry, with the tiny model (seconds)."""

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from adaptlab.registry import Registry
from adaptlab.ui import create_ui
from adaptlab.ui.state import UiState

DEMO = Path(__file__).resolve().parents[2] / "adaptlab" / "data" / "demo"


def make_client(tmp: Path, **kw) -> TestClient:
    st = UiState(tmp / "work", Registry(tmp / "registry"), model="tiny", **kw)
    return TestClient(create_ui(st))


def token(client: TestClient) -> str:
    if "adaptlab_csrf" not in client.cookies:
        client.get("/ui/login")
    return client.cookies["adaptlab_csrf"]


def wait_finished(client: TestClient, job_id: str, timeout: float = 300) -> dict:
    t0 = time.time()
    while time.time() - t0 < timeout:
        s = client.get(f"/ui/api/compare/{job_id}").json()
        if s["state"] != "running":
            return s
        time.sleep(0.5)
    raise AssertionError(f"compare {job_id} still running after {timeout} s: {s}")


@pytest.fixture
def client(tmp_path):
    with make_client(tmp_path) as c:
        yield c
