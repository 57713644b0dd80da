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


SERVER_HOME = Path.home() / ".cache" / "adaptlab" / "llama-server"


def llama_server_binary(version: str = "0.3.36") -> Path:
    """llama.cpp's own HTTP server (``llama-server``: parallel slots, continuous batching, several
    LoRA adapters chosen per request), built once from the llama.cpp that llama-cpp-python's PyPI
    source distribution vendors (the same version as the ``engine`` extra), and cached. The Python
    package's own server (``llama_cpp.server``) serves one request at a time, so it is not the anchor."""
    import subprocess
    import tarfile

    binary = SERVER_HOME / f"llama-server-{version}"
    if binary.exists():
        return binary
    SERVER_HOME.mkdir(parents=True, exist_ok=True)
    sdist = SERVER_HOME / f"llama_cpp_python-{version}.tar.gz"
    if not sdist.exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                f"llama-cpp-python=={version}",
                "-d",
                str(SERVER_HOME),
            ],
            check=True,
        )
    src = SERVER_HOME / f"llama_cpp_python-{version}"
    if not src.exists():
        with tarfile.open(sdist) as tar:
            tar.extractall(SERVER_HOME, filter="data")
    build = src / "build-server"
    cpp = src / "vendor" / "llama.cpp"
    subprocess.run(
        [
            "cmake",
            "-S",
            str(cpp),
            "-B",
            str(build),
            "-DCMAKE_BUILD_TYPE=Release",
            "-DLLAMA_CURL=OFF",
            "-DBUILD_SHARED_LIBS=OFF",
            "-DLLAMA_BUILD_TESTS=OFF",
            "-DLLAMA_BUILD_EXAMPLES=OFF",
            "-DLLAMA_BUILD_SERVER=ON",
            "-DLLAMA_OPENSSL=OFF",
        ],
        check=True,
    )
    jobs = str(len(os.sched_getaffinity(0)))
    subprocess.run(["cmake", "--build", str(build), "--target", "llama-server", "-j", jobs], check=True)
    (build / "bin" / "llama-server").rename(binary)
    return binary
