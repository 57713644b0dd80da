"""What the two llama.cpp benchmarks share (gguf_check.py, serving_llamacpp.py): the artifact, its
rows rendered as prompts, the export they run in llama.cpp, a llama.cpp model on it, and the
provenance every results file carries (adaptlab.utils: machine, versions)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def setup(artifact: Path, data: str, n: int):
    """(base model, artifact, N test inputs of ``data`` (repeated if it has fewer), their prompts)."""
    from adaptlab.data.named import load_task
    from adaptlab.models.base import load_base
    from adaptlab.strategies.base import Artifact, read_artifact_meta
    from adaptlab.utils import set_torch_threads

    set_torch_threads()
    base = load_base(read_artifact_meta(artifact)["base_model"]["name"])  # the base it was trained on
    art = Artifact.load(artifact, base)
    rows = load_task(data).test.examples
    texts = [rows[i % len(rows)].text for i in range(n)]
    return base, art, texts, art.prompts(texts)


def llama(folder: Path, adapter: bool, model_file: str = "base.gguf"):
    """llama.cpp on an exported GGUF (the base, or a merged model), with the exported adapter (or
    none), quiet."""
    from llama_cpp import Llama

    lora = str(folder / "adapter.gguf") if adapter else None
    path = folder / model_file
    if not path.exists():  # a base installed as one file is named by the Modelfile's FROM, not copied
        path = next(ln[5:] for ln in (folder / "Modelfile").read_text().splitlines() if ln.startswith("FROM "))
    return Llama(
        model_path=str(path),
        lora_path=lora,
        n_ctx=1024,
        n_threads=len(os.sched_getaffinity(0)),
        verbose=False,
        seed=0,
    )


def meta(**extra) -> dict:
    """The provenance of a results file, as the other benchmarks write it (provenance_lines reads it)."""
    import torch

    from adaptlab.utils import machine_info, package_versions

    versions = package_versions()
    try:
        from importlib.metadata import version

        versions["llama-cpp-python"] = version("llama-cpp-python")
    except Exception:  # noqa: BLE001 - not installed: the llama.cpp side will say so itself
        pass
    return {
        "command": "python " + " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d"),
        "versions": versions,
        "machine": {**machine_info(), "torch_threads": torch.get_num_threads()},
        **extra,
    }


PACKAGES = ("torch", "transformers", "llama-cpp-python")
