"""Where prompts are run: the local model, or any OpenAI-compatible HTTP endpoint.

Prompt strategies (zero_shot, few_shot, prompt_search) only talk to a :class:`Backend`, so the
same search runs on a model whose weights the user cannot touch.
"""

from adaptlab.backends.base import Backend, BackendError, as_backend
from adaptlab.backends.local import LocalBackend
from adaptlab.backends.openai_http import OpenAIBackend

__all__ = ["Backend", "BackendError", "LocalBackend", "OpenAIBackend", "as_backend"]
