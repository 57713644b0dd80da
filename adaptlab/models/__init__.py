"""Base models: the cached Gemma 3 270M default, local folders and GGUF files, a tiny test model."""

from adaptlab.models.base import (
    DEFAULT_MODEL,
    TINY_MODEL,
    BaseModel,
    FingerprintMismatch,
    ModelError,
    cache_root,
    check_fingerprint,
    load_base,
    model_info,
    save_base,
)
from adaptlab.models.known import GEMMA, SMOLLM2  # noqa: F401  (registers the built-in named models)
from adaptlab.models.registry import ModelSpec, list_models, register_model, resolve_model

__all__ = [
    "DEFAULT_MODEL",
    "TINY_MODEL",
    "BaseModel",
    "FingerprintMismatch",
    "ModelError",
    "cache_root",
    "check_fingerprint",
    "load_base",
    "list_models",
    "model_info",
    "ModelSpec",
    "register_model",
    "resolve_model",
    "save_base",
]
