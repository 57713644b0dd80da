"""OpenAI-compatible routes: ``/v1/models``, ``/v1/completions``, ``/v1/chat/completions`` (with
streaming), and ``/v1/classify`` (label probabilities)."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from adaptlab.serving.http import Scope, ServerState, adapter_for, allowed, check_text, classify_texts, log, max_new
from adaptlab.serving.http import state
from adaptlab.serving.schemas import ChatRequest, ClassifyRequest, CompletionRequest
from adaptlab.serving.service import ServingError, Work

router = APIRouter()


@router.get("/v1/models")
async def models(request: Request, scope: list[str] | None = Scope):
    st = state(request)
    now = int(time.time())
    data = [{"id": st.service.base.name, "object": "model", "created": now, "owned_by": "adaptlab"}]
    registry = st.registry
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


@router.post("/v1/classify")
async def classify(body: ClassifyRequest, request: Request, scope: list[str] | None = Scope):
    st = state(request)
    entry, adapter = adapter_for(st, scope, body.model)
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts:
        raise ServingError(400, "invalid_request", "input: at least one text")
    limit = st.service.config.max_batch * 8
    if len(texts) > limit:
        raise ServingError(413, "too_many_inputs", f"input: {len(texts)} texts, limit {limit}")
    for i, t in enumerate(texts):
        check_text(st, t, f"input[{i}]")
    rid = "cls-" + secrets.token_hex(12)
    results = await classify_texts(st, adapter, texts)
    data = []
    for i, (t, r) in enumerate(zip(texts, results)):
        item_id = rid if len(texts) == 1 else f"{rid}.{i}"
        await log(st, item_id, entry, adapter, t, r["label"])
        data.append({"index": i, "request_id": item_id, "label": r["label"], "probs": r["probs"]})
    return {"id": rid, "object": "classification", "model": body.model,
            "resolved": entry.ref if entry else st.service.base.name, "data": data}


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request, scope: list[str] | None = Scope):
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if len(prompts) != 1:
        raise ServingError(400, "invalid_request", "prompt: send one prompt per request")
    st = state(request)
    entry, adapter = adapter_for(st, scope, body.model)
    return await complete(_Answer(st, entry, adapter, body.model, chat=False), prompts[0], body.max_tokens, body.stream)


@router.post("/v1/chat/completions")
async def chat(body: ChatRequest, request: Request, scope: list[str] | None = Scope):
    st = state(request)
    entry, adapter = adapter_for(st, scope, body.model)
    if adapter.task_type is None:  # the plain base model: the whole conversation, in its chat format
        text = chat_prompt(st.service.base.tokenizer, body.messages)
    else:  # a task adaptation answers the last user message through its own template
        users = [m.content for m in body.messages if m.role == "user"]
        if not users:
            raise ServingError(400, "invalid_request", "messages: no user message")
        text = users[-1]
    return await complete(_Answer(st, entry, adapter, body.model, chat=True), text, body.max_tokens, body.stream)


# ---------------------------------------------------------------------------------- answering
@dataclass
class _Answer:
    """One completion request being answered: who asked for what, and how its chunks are shaped."""

    st: ServerState
    entry: object
    adapter: object
    model: str
    chat: bool

    def __post_init__(self):
        self.id = ("chatcmpl-" if self.chat else "cmpl-") + secrets.token_hex(12)
        self.created = int(time.time())
        self.object = "chat.completion" if self.chat else "text_completion"
        self.resolved = self.entry.ref if self.entry else self.st.service.base.name

    def choice(self, content: str, finish: str | None, delta: bool = False) -> dict:
        if self.chat:
            key = "delta" if delta else "message"
            return {"index": 0, key: {"role": "assistant", "content": content}, "finish_reason": finish}
        return {"index": 0, "text": content, "finish_reason": finish, "logprobs": None}

    def body(self, content: str, finish: str, **extra) -> dict:
        return {"id": self.id, "object": self.object, "created": self.created, "model": self.model,
                "resolved": self.resolved, "choices": [self.choice(content, finish)], **extra}

    def chunk(self, content: str, finish: str | None) -> str:
        c = {"id": self.id, "object": self.object + (".chunk" if self.chat else ""), "created": self.created,
             "model": self.model, "choices": [self.choice(content, finish, delta=True)]}
        return f"data: {json.dumps(c)}\n\n"

    def usage(self, work: Work, label: str | None = None) -> dict:
        """Token counts the worker recorded (it rendered and tokenized the prompt once, under the
        model lock: rendering a nearest-neighbour few-shot prompt runs the model)."""
        c = work.completion_tokens
        if label is not None:  # a classifier "answers" with its label's tokens
            c = len(self.st.service.base.tokenizer(label, add_special_tokens=False)["input_ids"])
        return {"prompt_tokens": work.prompt_tokens, "completion_tokens": c, "total_tokens": work.prompt_tokens + c}


def finish_reason(work: Work) -> str:
    return "length" if work.completion_tokens >= work.max_new else "stop"


async def complete(a: _Answer, text: str, max_tokens: int | None, stream: bool):
    check_text(a.st, text, "messages" if a.chat else "prompt")
    if a.adapter.task_type == "classification":  # the answer is the label, always one of the label set
        return await _label_answer(a, text, stream)
    limit = max_new(a.st, max_tokens, a.adapter)
    if stream:
        return _streamed(a, text, limit)
    work = Work("generate", a.adapter, text, max_new=limit)
    out = await asyncio.wrap_future(a.st.service.submit(work))
    await log(a.st, a.id, a.entry, a.adapter, text, out)
    return a.body(out, finish_reason(work), usage=a.usage(work))


async def _label_answer(a: _Answer, text: str, stream: bool):
    result = (await classify_texts(a.st, a.adapter, [text]))[0]
    await log(a.st, a.id, a.entry, a.adapter, text, result["label"])
    if stream:
        async def one():
            yield a.chunk(result["label"], "stop")
            yield "data: [DONE]\n\n"
        return StreamingResponse(one(), media_type="text/event-stream")
    return a.body(result["label"], "stop", label_probs=result["probs"], usage=a.usage(result["work"], result["label"]))


def _streamed(a: _Answer, text: str, limit: int) -> StreamingResponse:
    """Server-sent events: each decoded piece as the worker picks its token, then the finish."""
    loop = asyncio.get_running_loop()
    tokens: asyncio.Queue = asyncio.Queue()
    work = Work("generate", a.adapter, text, max_new=limit,
                on_token=lambda t: loop.call_soon_threadsafe(tokens.put_nowait, t))
    future = a.st.service.submit(work)
    future.add_done_callback(lambda f: loop.call_soon_threadsafe(tokens.put_nowait, None))

    async def events():
        tok = a.st.service.base.tokenizer
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
                yield a.chunk(piece, None)
        try:
            final = future.result()
        except Exception as e:  # noqa: BLE001 - the stream has started: report in-band
            yield f"data: {json.dumps({'error': {'message': str(e), 'type': 'server_error'}})}\n\n"
            return
        await log(a.st, a.id, a.entry, a.adapter, text, final)
        yield a.chunk("", finish_reason(work))
        yield "data: [DONE]\n\n"
    return StreamingResponse(events(), media_type="text/event-stream", headers={"x-request-id": a.id})


def chat_prompt(tokenizer, messages) -> str:
    """The base model's own chat format when its tokenizer has one, else a plain transcript."""
    msgs = [{"role": m.role, "content": m.content} for m in messages]
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        bos = tokenizer.bos_token or ""
        return text[len(bos):] if bos and text.startswith(bos) else text  # the tokenizer adds BOS itself
    return "".join(f"{m['role']}: {m['content']}\n" for m in msgs) + "assistant:"
