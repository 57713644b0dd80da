"""Request bodies of the HTTP API (pydantic): validated before any route code runs."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel as Schema
from pydantic import ConfigDict, Field


class _Req(Schema):
    model_config = ConfigDict(extra="ignore")  # OpenAI clients send fields we do not use (user, seed, ...)


class CompletionRequest(_Req):
    model: str
    prompt: str | list[str]
    max_tokens: int | None = Field(default=None, ge=1)
    stream: bool = False
    n: int = Field(default=1, ge=1, le=1)
    temperature: float | None = None
    top_p: float | None = None


class ChatMessage(_Req):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(_Req):
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    stream: bool = False
    n: int = Field(default=1, ge=1, le=1)
    temperature: float | None = None
    top_p: float | None = None


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
