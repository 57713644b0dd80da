import os
from pathlib import Path

import pytest
import torch

from adaptlab.models.tiny import build_tiny

torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
SHARED_DATASETS = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets"


@pytest.fixture(scope="session")
def tiny():
    return build_tiny()


@pytest.fixture(autouse=True)
def _response_cache(tmp_path, monkeypatch):
    """Endpoint answers cached by a test go to its own folder, never the user's cache."""
    monkeypatch.setenv("ADAPTLAB_RESPONSE_CACHE", str(tmp_path / "responses.sqlite"))


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    """An empty adaptlab cache for tests that write to it (never the user's real cache)."""
    d = tmp_path / "cache"
    monkeypatch.setenv("ADAPTLAB_CACHE", str(d))
    return d


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path
