"""Request bodies of the HTTP API (pydantic): validated before any route code runs."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel as Schema
from pydantic import ConfigDict, Field


class _Req(Schema):
    model_config = ConfigDict(extra="ignore")  # OpenAI clients send fields we do not use (user, seed, ...)


class _Sampled(_Req):
    """Sampling fields, honoured (or refused with a 400 naming the field), never ignored.
    Unlike OpenAI's default of 1, no ``temperature`` means 0: greedy, the same text every time."""

    max_tokens: int | None = Field(default=None, ge=1)
    stream: bool = False
    n: int = Field(default=1, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    seed: int | None = None
    stop: str | list[str] | None = None

    def stops(self) -> list[str]:
        out = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(out) > 4 or any(not s or len(s) > 100 for s in out):
            raise ValueError("stop: at most 4 stop texts of 1 to 100 characters")
        return out


class CompletionRequest(_Sampled):
    model: str
    prompt: str | list[str]
    logprobs: int | None = Field(default=None, ge=0, le=5)


class ChatMessage(_Req):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(_Sampled):
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)


class ClassifyRequest(_Req):
    model: str
    input: str | list[str]


class AdminModelRequest(_Req):
    model: str = Field(min_length=1, max_length=200)


class FeedbackRequest(_Req):
    request_id: str = Field(min_length=1, max_length=100)
    rating: Literal[-1, 0, 1]
    correction: str | None = Field(default=None, max_length=100_000)
    comment: str | None = Field(default=None, max_length=10_000)
