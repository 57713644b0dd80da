import os
import random
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from adaptlab.models.tiny import build_tiny

torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
SHARED_DATASETS = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets"


@pytest.fixture(scope="session")
def tiny():
    return build_tiny()


def _seed(name: str) -> None:
    seed = zlib.crc32(name.encode())
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@pytest.fixture(scope="module", autouse=True)
def _seeded_module(request):
    """A module's shared fixtures (built before any of its tests) draw from a seed of their own too."""
    _seed(request.node.nodeid)


@pytest.fixture(autouse=True)
def _seeded(request):
    """Every test draws from generators seeded by its own name, never from the state earlier tests
    left: the suite passes in any order (``make test`` shuffles it with pytest-randomly and prints
    the order's seed; ``pytest -p randomly --randomly-seed=N`` replays that order). pytest-randomly reseeds
    ``random`` and numpy itself; torch it does not know, so this seeds all three alike."""
    _seed(request.node.nodeid)


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
