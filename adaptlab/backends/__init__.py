"""Where prompts are run: the local model, or any OpenAI-compatible HTTP endpoint.

Prompt strategies (zero_shot, few_shot, prompt_search) only talk to a :class:`Backend`, so the
same search runs on a model whose weights the user cannot touch.
"""

from adaptlab.backends.base import Backend, BackendError
from adaptlab.backends.local import LocalBackend
from adaptlab.backends.openai_http import OpenAIBackend
from adaptlab.models.types import BaseModel


def as_backend(model) -> Backend:
    """A Backend from a Backend or a loaded base model."""
    if isinstance(model, Backend):
        return model
    if isinstance(model, BaseModel):
        return LocalBackend(model)
    raise TypeError(f"expected a Backend or a BaseModel, got {type(model).__name__}")


__all__ = ["Backend", "BackendError", "LocalBackend", "OpenAIBackend", "as_backend"]
