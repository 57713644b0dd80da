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

__all__ = [
    "DEFAULT_MODEL", "TINY_MODEL", "BaseModel", "FingerprintMismatch", "ModelError", "cache_root",
    "check_fingerprint", "load_base", "model_info", "save_base",
]
