"""What the UI keeps: its work folder (uploads, compares, exports), the registry, and a model
service started on first use (the playground needs the base model; nothing else does)."""

from __future__ import annotations

import re
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path

from adaptlab.registry import Registry

ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")  # upload and compare ids: made here, checked when they come back


class UiError(Exception):
    """A request the UI refuses: shown as a one-line message with this HTTP status."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def check_id(value: str, what: str) -> str:
    if not isinstance(value, str) or not ID.match(value):
        raise UiError(404, f"no such {what}: {value!r}")
    return value


@dataclass
class UiState:
    """``workdir`` holds ``uploads/``, ``compares/`` and ``exports/``; ``registry`` is the one the
    CLI and the server use. ``key_required``: every page needs a signed-in key scoped to ``*``
    (always when bound beyond loopback). ``service``: a running :class:`~adaptlab.serving.service.Service`
    when mounted in ``adaptlab serve``; else one is started on first playground use."""

    workdir: Path
    registry: Registry
    model: str = "gemma-3-270m"
    data_dir: Path | None = None
    key_required: bool = False
    max_upload_bytes: int = 20 << 20
    service: object | None = None
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    _lock: threading.Lock = field(default_factory=threading.Lock)
    loading: str | None = None  # what the model service is doing while it starts, for the page

    def __post_init__(self):
        self.workdir = Path(self.workdir).resolve()  # compares run in their own folder: no relative paths
        self.data_dir = Path(self.data_dir).resolve() if self.data_dir is not None else None
        for sub in ("uploads", "compares", "exports"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)

    @property
    def uploads(self) -> Path:
        return self.workdir / "uploads"

    @property
    def compares(self) -> Path:
        return self.workdir / "compares"

    def get_service(self):
        """The model service, started once (the base model loads from its cache: seconds)."""
        with self._lock:
            if self.service is None:
                from adaptlab.models.base import load_base
                from adaptlab.serving.service import Service

                self.loading = f"loading {self.model}"
                try:
                    self.service = Service(load_base(self.model), self.registry)
                finally:
                    self.loading = None
            return self.service

    def close(self) -> None:
        if self.service is not None and hasattr(self.service, "close"):
            self.service.close()
