"""The HTTP layer: decode request -> schedule -> predict -> encode response, one function each.

OpenAI-compatible routes (``/v1/models``, ``/v1/completions``, ``/v1/chat/completions`` with
streaming) plus ``/v1/classify`` and ``/v1/feedback``, ``/healthz`` and ``/metrics``. The
``model`` field names a registry entry (``task``, ``task@3``, ``task@prod``) or the base model;
it is parsed by the registry's name rules, so no file path ever comes from a request.
Decoding is greedy: ``temperature`` and ``top_p`` are accepted for client compatibility and
ignored.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import Literal

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel as Schema
from pydantic import ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from adaptlab.registry import RegistryError, check_name
from adaptlab.serving.service import Service, ServingError, Work


# ---------------------------------------------------------------------------------- schemas
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


# ---------------------------------------------------------------------------------- metrics
class Metrics:
    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("adaptlab_requests", "HTTP requests by route and status", ["route", "status"],
                                registry=self.registry)
        self.latency = Histogram("adaptlab_request_seconds", "Request latency", ["route"], registry=self.registry,
                                 buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.batch_size = Histogram("adaptlab_batch_rows", "Rows per forward batch", registry=self.registry,
                                    buckets=(1, 2, 4, 8, 16, 32, 64))
        self.queue_depth = Gauge("adaptlab_queue_depth", "Rows waiting for the batcher", registry=self.registry)
        self.loaded = Gauge("adaptlab_loaded_adapters", "Adapters in memory", registry=self.registry)
        self.loaded_bytes = Gauge("adaptlab_loaded_adapter_bytes", "Bytes of loaded adapters", registry=self.registry)

    def text(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


def _error(status: int, code: str, message: str) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    if status in (401, 403):
        kind = "authentication_error" if status == 401 else "permission_error"
    return JSONResponse({"error": {"message": message, "type": kind, "code": code}}, status_code=status)


def create_app(service: Service, auth: bool = True, max_body_bytes: int = 1 << 20,
               max_input_chars: int = 20_000, log_requests: bool = True) -> FastAPI:
    """The FastAPI app over a running :class:`Service`. ``auth=False`` serves without API keys."""
    metrics = service.metrics or Metrics()
    service.metrics = metrics
    registry = service.registry
    app = FastAPI(title="adaptlab", docs_url=None, redoc_url=None)
    if auth and (registry is None or not registry.has_keys()):
        raise ValueError("no API keys exist: create one with `adaptlab keys add NAME --tasks ...` or serve with "
                         "--no-auth (loopback development only)")

    # ------------------------------------------------------------------ cross-cutting
    @app.middleware("http")
    async def limits_and_metrics(request: Request, call_next):
        t0 = time.perf_counter()
        route = request.url.path
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > max_body_bytes):
            resp = _error(413, "request_too_large", f"request body over {max_body_bytes} bytes")
        else:
            # A chunked upload carries no length: read it up to the limit, never all of it.
            chunks, size = [], 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > max_body_bytes:
                    break
                chunks.append(chunk)
            request._body = b"".join(chunks)  # what the route handlers read (Starlette's cached body)
            if size > max_body_bytes:
                resp = _error(413, "request_too_large", f"request body over {max_body_bytes} bytes")
            else:
                try:
                    resp = await call_next(request)
                except Exception as e:  # noqa: BLE001 - never a traceback to the client
                    resp = _error(500, "internal_error", f"{type(e).__name__}: {e}")
        metrics.requests.labels(route if route in KNOWN_ROUTES else "other", str(resp.status_code)).inc()
        metrics.latency.labels(route if route in KNOWN_ROUTES else "other").observe(time.perf_counter() - t0)
        return resp

    @app.exception_handler(ServingError)
    async def serving_error(request, e: ServingError):
        return _error(e.status, e.code, e.message)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body") or "body"
        return _error(400, "invalid_request", f"{where}: {first.get('msg')}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, e: StarletteHTTPException):
        return _error(e.status_code, "not_found" if e.status_code == 404 else "http_error", str(e.detail))

    def scope_of(request: Request) -> list[str] | None:
        """Tasks the caller may use (``None``: no auth on this server)."""
        if not auth:
            return None
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("bearer ") or not header[7:].strip():
            raise ServingError(401, "missing_api_key", "missing API key: send 'Authorization: Bearer KEY'")
        tasks = registry.key_scope(header[7:].strip())
        if tasks is None:
            raise ServingError(401, "invalid_api_key", "invalid or revoked API key")
        return tasks

    def allowed(scope: list[str] | None, task: str | None) -> bool:
        return scope is None or "*" in scope or (task or "base") in scope

    def adapter_for(request: Request, model: str):
        scope = scope_of(request)
        if not isinstance(model, str) or not model or len(model) > 200:
            raise ServingError(400, "invalid_model", "model: a non-empty name of at most 200 characters")
        try:
            task = None if model in ("base", service.base.name) else check_name(model.partition("@")[0], "task")
        except RegistryError as e:
            raise ServingError(404, "model_not_found", str(e)) from None
        if not allowed(scope, task):  # checked before loading anything
            raise ServingError(403, "model_not_allowed", f"this API key may not use {model!r}")
        return service.resolve(model)

    def check_text(text: str, field: str) -> None:
        if len(text) > max_input_chars:
            raise ServingError(413, "input_too_large", f"{field}: {len(text)} characters, limit {max_input_chars}")

    def max_new(requested: int | None, adapter) -> int:
        n = requested or adapter.decoding.get("max_new_tokens", 64)
        if n > service.config.max_new_tokens:
            raise ServingError(400, "max_tokens_too_large",
                               f"max_tokens={n}: this server allows at most {service.config.max_new_tokens}")
        return n

    async def log(request_id: str, entry, adapter, text: str, output: str) -> None:
        if log_requests and registry is not None and entry is not None:
            await asyncio.to_thread(registry.log_request, request_id, entry.task, entry.version, adapter.task_type,
                                    text, output)

    async def classify_texts(adapter, texts: list[str]) -> list[dict]:
        if adapter.task_type != "classification":
            raise ServingError(400, "not_a_classifier", f"{adapter.name} is not a classification model")
        works = [Work("classify", adapter, t) for t in texts]
        futures = [service.submit(w) for w in works]
        out = []
        for w, f in zip(works, futures):
            scores = await asyncio.wrap_future(f)
            probs = torch.softmax(scores.double(), dim=-1).tolist()
            best = int(torch.tensor(probs).argmax())
            out.append({"label": adapter.labels[best], "probs": dict(zip(adapter.labels, probs)), "work": w})
        return out

    # ------------------------------------------------------------------ routes
    @app.get("/healthz")
    async def healthz():
        return {"status": "ok", "base_model": service.base.name, "fingerprint": service.base.fingerprint,
                "loaded_adapters": len(service.cache), "queue_depth": service.queue.qsize()}

    @app.get("/metrics")
    async def prometheus():
        return PlainTextResponse(metrics.text(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models(request: Request):
        scope = scope_of(request)
        now = int(time.time())
        data = [{"id": service.base.name, "object": "model", "created": now, "owned_by": "adaptlab"}]
        if registry is not None:
            aliases = await asyncio.to_thread(registry.aliases)
            for e in await asyncio.to_thread(registry.entries):
                if not allowed(scope, e.task):
                    continue
                names = [e.ref] + [f"{e.task}@{a}" for a, v in aliases.get(e.task, {}).items() if v == e.version]
                for n in names:
                    data.append({"id": n, "object": "model", "created": int(e.created_at), "owned_by": e.created_by,
                                 "adaptlab": {"task": e.task, "version": e.version, "strategy": e.strategy,
                                              "task_type": e.task_type, "metrics": e.metrics}})
        return {"object": "list", "data": data}

    @app.post("/v1/classify")
    async def classify(body: ClassifyRequest, request: Request):
        entry, adapter = adapter_for(request, body.model)
        texts = [body.input] if isinstance(body.input, str) else body.input
        if not texts:
            raise ServingError(400, "invalid_request", "input: at least one text")
        if len(texts) > service.config.max_batch * 8:
            raise ServingError(413, "too_many_inputs", f"input: {len(texts)} texts, limit {service.config.max_batch * 8}")
        for i, t in enumerate(texts):
            check_text(t, f"input[{i}]")
        rid = "cls-" + secrets.token_hex(12)
        results = await classify_texts(adapter, texts)
        data = []
        for i, (t, r) in enumerate(zip(texts, results)):
            item_id = rid if len(texts) == 1 else f"{rid}.{i}"
            await log(item_id, entry, adapter, t, r["label"])
            data.append({"index": i, "request_id": item_id, "label": r["label"], "probs": r["probs"]})
        return {"id": rid, "object": "classification", "model": body.model,
                "resolved": entry.ref if entry else service.base.name, "data": data}

    async def complete(request: Request, model: str, text: str, max_tokens: int | None, stream: bool, chat: bool):
        entry, adapter = adapter_for(request, model)
        check_text(text, "messages" if chat else "prompt")
        rid = ("chatcmpl-" if chat else "cmpl-") + secrets.token_hex(12)
        created = int(time.time())
        obj = "chat.completion" if chat else "text_completion"
        resolved = entry.ref if entry else service.base.name

        def choice(content: str, finish: str | None, delta: bool = False) -> dict:
            if chat:
                key = "delta" if delta else "message"
                return {"index": 0, key: {"role": "assistant", "content": content}, "finish_reason": finish}
            return {"index": 0, "text": content, "finish_reason": finish, "logprobs": None}

        if adapter.task_type == "classification":  # the answer is the label, always one of the label set
            result = (await classify_texts(adapter, [text]))[0]
            await log(rid, entry, adapter, text, result["label"])
            if stream:
                async def one():
                    chunk = {"id": rid, "object": obj + (".chunk" if chat else ""), "created": created,
                             "model": model, "choices": [choice(result["label"], "stop", delta=True)]}
                    yield f"data: {json.dumps(chunk)}\n\n"
                    yield "data: [DONE]\n\n"
                return StreamingResponse(one(), media_type="text/event-stream")
            return {"id": rid, "object": obj, "created": created, "model": model, "resolved": resolved,
                    "choices": [choice(result["label"], "stop")], "label_probs": result["probs"],
                    "usage": usage(result["work"], label=result["label"])}
        limit = max_new(max_tokens, adapter)
        if not stream:
            work = Work("generate", adapter, text, max_new=limit)
            out = await asyncio.wrap_future(service.submit(work))
            await log(rid, entry, adapter, text, out)
            return {"id": rid, "object": obj, "created": created, "model": model, "resolved": resolved,
                    "choices": [choice(out, finish_reason(work))], "usage": usage(work)}
        loop = asyncio.get_running_loop()
        tokens: asyncio.Queue = asyncio.Queue()
        work = Work("generate", adapter, text, max_new=limit,
                    on_token=lambda t: loop.call_soon_threadsafe(tokens.put_nowait, t))
        future = service.submit(work)
        future.add_done_callback(lambda f: loop.call_soon_threadsafe(tokens.put_nowait, None))

        async def events():
            tok = service.base.tokenizer
            seq: list[int] = []
            sent = ""
            while True:
                t = await tokens.get()
                if t is None:
                    break
                seq.append(t)
                text_now = tok.decode(seq, skip_special_tokens=True)
                if text_now.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
                    continue
                piece, sent = text_now[len(sent):], text_now
                if piece:
                    chunk = {"id": rid, "object": obj + (".chunk" if chat else ""), "created": created,
                             "model": model, "choices": [choice(piece, None, delta=True)]}
                    yield f"data: {json.dumps(chunk)}\n\n"
            try:
                final = future.result()
            except Exception as e:  # noqa: BLE001 - the stream has started: report in-band
                yield f"data: {json.dumps({'error': {'message': str(e), 'type': 'server_error'}})}\n\n"
                return
            await log(rid, entry, adapter, text, final)
            done = {"id": rid, "object": obj + (".chunk" if chat else ""), "created": created, "model": model,
                    "choices": [choice("", finish_reason(work), delta=True)]}
            yield f"data: {json.dumps(done)}\n\n"
            yield "data: [DONE]\n\n"
        return StreamingResponse(events(), media_type="text/event-stream", headers={"x-request-id": rid})

    def finish_reason(work: Work) -> str:
        return "length" if work.completion_tokens >= work.max_new else "stop"

    def usage(work: Work, label: str | None = None) -> dict:
        """Token counts the worker recorded (it rendered and tokenized the prompt once, under the
        model lock: rendering a nearest-neighbour few-shot prompt runs the model)."""
        c = work.completion_tokens
        if label is not None:  # a classifier "answers" with its label's tokens
            c = len(service.base.tokenizer(label, add_special_tokens=False)["input_ids"])
        return {"prompt_tokens": work.prompt_tokens, "completion_tokens": c, "total_tokens": work.prompt_tokens + c}

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if len(prompts) != 1:
            raise ServingError(400, "invalid_request", "prompt: send one prompt per request")
        return await complete(request, body.model, prompts[0], body.max_tokens, body.stream, chat=False)

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request):
        entry, adapter = adapter_for(request, body.model)
        if adapter.task_type is None:  # the plain base model: the whole conversation, in its chat format
            text = chat_prompt(service.base.tokenizer, body.messages)
        else:  # a task adaptation answers the last user message through its own template
            users = [m.content for m in body.messages if m.role == "user"]
            if not users:
                raise ServingError(400, "invalid_request", "messages: no user message")
            text = users[-1]
        return await complete(request, body.model, text, body.max_tokens, body.stream, chat=True)

    def admin(request: Request) -> None:
        scope = scope_of(request)
        if scope is not None and "*" not in scope:
            raise ServingError(403, "admin_only", "loading and unloading need a key scoped to '*'")

    @app.post("/admin/load")
    async def admin_load(body: AdminModelRequest, request: Request):
        """Load (or refresh the recency of) an adaptation now, instead of at its first request."""
        admin(request)
        entry, adapter = await asyncio.to_thread(service.resolve, body.model)
        return {"model": body.model, "resolved": entry.ref if entry else service.base.name,
                "loaded": len(service.cache), "loaded_bytes": service.loaded_bytes()}

    @app.post("/admin/unload")
    async def admin_unload(body: AdminModelRequest, request: Request):
        """Drop an adaptation from memory (it reloads at its next request)."""
        admin(request)
        if registry is None:
            raise ServingError(404, "model_not_found", "no registry is configured")
        try:
            entry = await asyncio.to_thread(registry.resolve, body.model)
        except RegistryError as e:
            raise ServingError(404, "model_not_found", str(e)) from None
        gone = service.unload(entry.digest)
        return {"model": body.model, "resolved": entry.ref, "unloaded": gone, "loaded": len(service.cache)}

    @app.post("/v1/feedback")
    async def feedback(body: FeedbackRequest, request: Request):
        scope = scope_of(request)
        if registry is None:
            raise ServingError(400, "no_registry", "feedback needs a registry")
        req = await asyncio.to_thread(registry.request, body.request_id)
        if req is None:
            raise ServingError(404, "unknown_request", f"unknown request id {body.request_id!r}")
        if not allowed(scope, req["task"]):
            raise ServingError(403, "model_not_allowed", "this API key may not give feedback on that task")
        if body.correction is not None and req["task_type"] == "classification":
            labels = service.labels_of(req["task"], req["version"])
            if labels is not None and body.correction not in labels:
                raise ServingError(400, "unknown_label",
                                   f"correction: {body.correction!r} is not a label of {req['task']}@{req['version']}")
        fid = await asyncio.to_thread(registry.add_feedback, body.request_id, body.rating, body.correction,
                                      body.comment)
        return {"id": fid, "object": "feedback", "request_id": body.request_id, "status": "stored"}

    return app


KNOWN_ROUTES = {"/healthz", "/metrics", "/v1/models", "/v1/completions", "/v1/chat/completions", "/v1/classify",
                "/v1/feedback", "/admin/load", "/admin/unload"}


def chat_prompt(tokenizer, messages) -> str:
    """The base model's own chat format when its tokenizer has one, else a plain transcript."""
    msgs = [{"role": m.role, "content": m.content} for m in messages]
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        bos = tokenizer.bos_token or ""
        return text[len(bos):] if bos and text.startswith(bos) else text  # the tokenizer adds BOS itself
    return "".join(f"{m['role']}: {m['content']}\n" for m in msgs) + "assistant:"
