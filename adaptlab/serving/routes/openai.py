"""OpenAI-compatible routes: ``/v1/models``, ``/v1/completions``, ``/v1/chat/completions`` (with
streaming), and ``/v1/classify`` (label probabilities)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import secrets
import time
from dataclasses import dataclass, field

import torch
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from adaptlab.evaluation.generation import cut_at_stop
from adaptlab.models.decoding import GREEDY, Sampling
from adaptlab.models.runtime import ChatTemplateError, has_chat_template, render_chat
from adaptlab.serving.http import (
    Scope,
    ServerState,
    adapter_for,
    allowed,
    check_text,
    classify_texts,
    log,
    max_new,
    state,
)
from adaptlab.serving.schemas import ChatRequest, ClassifyRequest, CompletionRequest
from adaptlab.serving.service import ServingError, Work

router = APIRouter()


@router.get("/v1/models")
async def models(request: Request, scope: list[str] | None = Scope):
    st = state(request)
    now = int(time.time())
    data = [{"id": b.name, "object": "model", "created": now, "owned_by": "adaptlab"} for b in st.service.bases]
    registry = st.registry
    if registry is not None:
        aliases = await asyncio.to_thread(registry.aliases)
        for e in await asyncio.to_thread(registry.entries):
            if not allowed(scope, e.task):
                continue
            names = [e.ref] + [f"{e.task}@{a}" for a, v in aliases.get(e.task, {}).items() if v == e.version]
            for n in names:
                data.append(
                    {
                        "id": n,
                        "object": "model",
                        "created": int(e.created_at),
                        "owned_by": e.created_by,
                        "adaptlab": {
                            "task": e.task,
                            "version": e.version,
                            "strategy": e.strategy,
                            "task_type": e.task_type,
                            "metrics": e.metrics,
                        },
                    }
                )
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
    return {
        "id": rid,
        "object": "classification",
        "model": body.model,
        "resolved": entry.ref if entry else adapter.base.name,
        "data": data,
    }


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request, scope: list[str] | None = Scope):
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if len(prompts) != 1:
        raise ServingError(400, "invalid_request", "prompt: send one prompt per request")
    st = state(request)
    entry, adapter = adapter_for(st, scope, body.model)
    a = _Answer(
        st,
        entry,
        adapter,
        body.model,
        chat=False,
        n=_n(st, body),
        stops=_stops(body),
        sampling=_sampling(body, body.logprobs),
    )
    text = prompts[0]
    if adapter.task_type is not None:  # a prompt is one user turn (a chat adaptation sees it as a conversation)
        text = adapter.request_input([{"role": "user", "content": text}])
    return await complete(a, text, body.max_tokens, body.stream)


@router.post("/v1/chat/completions")
async def chat(body: ChatRequest, request: Request, scope: list[str] | None = Scope):
    st = state(request)
    entry, adapter = adapter_for(st, scope, body.model)
    if body.top_logprobs is not None and not body.logprobs:
        raise ServingError(400, "invalid_request", "top_logprobs: needs logprobs=true")
    stops = _stops(body)
    tokenizer = adapter.base.tokenizer
    if adapter.task_type is None or adapter.conversation:
        rendered = chat_prompt(tokenizer, body.messages)  # a template that refuses the turns: 400 now, not in a batch
    if adapter.task_type is None:  # the plain base model: the whole conversation, in its chat format
        text = rendered
        if not has_chat_template(tokenizer):  # a plain transcript: the next "user:" line ends the turn
            stops = stops + ["\nuser:"]
    else:  # a chat adaptation sees the whole conversation; a single-input one, the last user message
        try:
            text = adapter.request_input([{"role": m.role, "content": m.content} for m in body.messages])
        except ValueError as e:
            raise ServingError(400, "invalid_request", str(e)) from None
    a = _Answer(
        st,
        entry,
        adapter,
        body.model,
        chat=True,
        n=_n(st, body),
        stops=stops,
        sampling=_sampling(body, (body.top_logprobs or 0) if body.logprobs else None),
    )
    return await complete(a, text, body.max_tokens, body.stream)


def _n(st: ServerState, body) -> int:
    if body.n > st.service.config.max_n:
        raise ServingError(400, "n_too_large", f"n={body.n}: this server allows at most {st.service.config.max_n}")
    return body.n


def _stops(body) -> list[str]:
    try:
        return body.stops()
    except ValueError as e:
        raise ServingError(400, "invalid_request", str(e)) from None


def _sampling(body, logprobs: int | None) -> Sampling:
    try:
        return Sampling(
            temperature=body.temperature or 0.0,
            top_p=body.top_p if body.top_p is not None else 1.0,
            top_k=body.top_k or 0,
            seed=body.seed,
            logprobs=logprobs,
        )
    except ValueError as e:
        raise ServingError(400, "invalid_request", str(e)) from None


# ---------------------------------------------------------------------------------- answering
@dataclass
class _Answer:
    """One completion request being answered: who asked for what, and how its chunks are shaped."""

    st: ServerState
    entry: object
    adapter: object
    model: str
    chat: bool
    n: int = 1
    stops: list[str] = field(default_factory=list)
    sampling: Sampling = GREEDY

    def __post_init__(self):
        self.id = ("chatcmpl-" if self.chat else "cmpl-") + secrets.token_hex(12)
        self.created = int(time.time())
        self.object = "chat.completion" if self.chat else "text_completion"
        self.resolved = self.entry.ref if self.entry else self.adapter.base.name

    def row_sampling(self, i: int) -> Sampling:
        """Choice i's sampling: the request's, its seed moved by i so the n choices differ."""
        s = self.sampling
        return s if s.seed is None or i == 0 else dataclasses.replace(s, seed=s.seed + i)

    def choice(self, i: int, content: str, finish: str | None, delta: bool = False, logprobs=None) -> dict:
        if self.chat:
            key = "delta" if delta else "message"
            return {
                "index": i,
                key: {"role": "assistant", "content": content},
                "finish_reason": finish,
                "logprobs": logprobs,
            }
        return {"index": i, "text": content, "finish_reason": finish, "logprobs": logprobs}

    def body(self, choices: list[dict], **extra) -> dict:
        return {
            "id": self.id,
            "object": self.object,
            "created": self.created,
            "model": self.model,
            "resolved": self.resolved,
            "choices": choices,
            **extra,
        }

    def chunk(self, i: int, content: str, finish: str | None) -> str:
        c = {
            "id": self.id,
            "object": self.object + (".chunk" if self.chat else ""),
            "created": self.created,
            "model": self.model,
            "choices": [self.choice(i, content, finish, delta=True)],
        }
        return f"data: {json.dumps(c)}\n\n"

    def usage(self, works: list[Work], labels: list[str] | None = None) -> dict:
        """Token counts the worker recorded (it rendered and tokenized the prompt once, under the
        model lock: rendering a nearest-neighbour few-shot prompt runs the model)."""
        tok = self.adapter.base.tokenizer
        c = (
            sum(len(tok(lab, add_special_tokens=False)["input_ids"]) for lab in labels)
            if labels is not None
            else sum(w.completion_tokens for w in works)
        )  # a classifier "answers" with its label's tokens
        p = works[0].prompt_tokens
        return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}

    def logprobs(self, work: Work):
        """The chosen tokens' log-probabilities in the endpoint's own shape, when asked for."""
        if self.sampling.logprobs is None:
            return None
        tok = self.adapter.base.tokenizer
        text = lambda i: tok.decode([i])  # noqa: E731
        if self.chat:
            return {
                "content": [
                    {
                        "token": text(e["token"]),
                        "logprob": e["logprob"],
                        "bytes": list(text(e["token"]).encode()),
                        "top_logprobs": [
                            {"token": text(t), "logprob": v, "bytes": list(text(t).encode())} for t, v in e["top"]
                        ],
                    }
                    for e in work.logprobs
                ]
            }
        offsets, at = [], 0
        for e in work.logprobs:
            offsets.append(at)
            at += len(text(e["token"]))
        return {
            "tokens": [text(e["token"]) for e in work.logprobs],
            "token_logprobs": [e["logprob"] for e in work.logprobs],
            "top_logprobs": [{text(t): v for t, v in e["top"]} for e in work.logprobs]
            if self.sampling.logprobs
            else None,
            "text_offset": offsets,
        }


async def complete(a: _Answer, text: str, max_tokens: int | None, stream: bool):
    check_text(a.st, text, "messages" if a.chat else "prompt")
    if a.adapter.closed_labels:  # the answer is a label, always one of the label set
        return await _label_answer(a, text, stream)
    a.stops = a.stops + [s for s in a.adapter.decoding.get("stop", []) if s not in a.stops]  # the answer's own end
    limit = max_new(a.st, max_tokens, a.adapter)
    works = [
        Work("generate", a.adapter, text, max_new=limit, sampling=a.row_sampling(i), stop=a.stops) for i in range(a.n)
    ]
    if stream:
        return _streamed(a, text, works)
    outs = await asyncio.gather(*(asyncio.wrap_future(a.st.service.submit(w)) for w in works))
    await log(a.st, a.id, a.entry, a.adapter, text, outs[0])
    return a.body(
        [a.choice(i, out, w.finish, logprobs=a.logprobs(w)) for i, (w, out) in enumerate(zip(works, outs))],
        usage=a.usage(works),
    )


async def _label_answer(a: _Answer, text: str, stream: bool):
    """A classifier answers with a label: the best one, or with a temperature, drawn from its
    label probabilities (each of the n choices with its own seed)."""
    if a.sampling.logprobs is not None:
        raise ServingError(
            400,
            "invalid_request",
            f"logprobs: {a.adapter.name} answers with a label; its probabilities are in label_probs",
        )
    result = (await classify_texts(a.st, a.adapter, [text]))[0]
    labels = [_draw_label(result["probs"], a.row_sampling(i)) for i in range(a.n)]
    labels = [cut_at_stop(lab, a.stops) for lab in labels]
    await log(a.st, a.id, a.entry, a.adapter, text, labels[0])
    if stream:

        async def one():
            for i, lab in enumerate(labels):
                yield a.chunk(i, lab, "stop")
            yield "data: [DONE]\n\n"

        return StreamingResponse(one(), media_type="text/event-stream")
    return a.body(
        [a.choice(i, lab, "stop") for i, lab in enumerate(labels)],
        label_probs=result["probs"],
        usage=a.usage([result["work"]], labels),
    )


def _draw_label(probs: dict[str, float], s: Sampling) -> str:
    labels = list(probs)
    p = torch.tensor([probs[k] for k in labels], dtype=torch.float64)
    return labels[s.pick(torch.log(p.clamp_min(1e-300)), s.generator("cpu"))]


def _streamed(a: _Answer, text: str, works: list[Work]) -> StreamingResponse:
    """Server-sent events: each choice's decoded pieces as the worker picks its tokens (a stop text
    is never sent, even in part), then each choice's finish."""
    loop = asyncio.get_running_loop()
    tokens: asyncio.Queue = asyncio.Queue()
    futures = []
    for i, w in enumerate(works):
        w.on_token = lambda t, i=i: loop.call_soon_threadsafe(tokens.put_nowait, (i, t))
        f = a.st.service.submit(w)
        f.add_done_callback(lambda f, i=i: loop.call_soon_threadsafe(tokens.put_nowait, (i, None)))
        futures.append(f)
    hold = max((len(s) for s in a.stops), default=1) - 1  # characters that may be the start of a stop text

    async def events():
        tok = a.adapter.base.tokenizer
        seqs: list[list[int]] = [[] for _ in works]
        sent = [""] * len(works)
        open_rows = len(works)
        while open_rows:
            i, t = await tokens.get()
            if t is None:
                open_rows -= 1
                continue
            seqs[i].append(t)
            text_now = tok.decode(seqs[i], skip_special_tokens=True)
            if text_now.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
                continue
            text_now = cut_at_stop(text_now, a.stops).lstrip()  # as the whole answer is: no leading space
            ready = text_now[: max(0, len(text_now) - hold)] if a.stops else text_now
            if len(ready) > len(sent[i]):
                yield a.chunk(i, ready[len(sent[i]) :], None)
                sent[i] = ready
        for i, (w, f) in enumerate(zip(works, futures)):
            try:
                final = f.result()
            except Exception as e:  # noqa: BLE001 - the stream has started: report in-band
                yield f"data: {json.dumps({'error': {'message': str(e), 'type': 'server_error'}})}\n\n"
                return
            full = cut_at_stop(tok.decode(seqs[i], skip_special_tokens=True), a.stops).lstrip()
            if len(full) > len(sent[i]):  # what the stop-text hold kept back
                yield a.chunk(i, full[len(sent[i]) :], None)
            if i == 0:
                await log(a.st, a.id, a.entry, a.adapter, text, final)
            yield a.chunk(i, "", w.finish or "stop")
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers={"x-request-id": a.id})


def chat_prompt(tokenizer, messages) -> str:
    """The base model's own chat format when its tokenizer has one, else a plain transcript."""
    try:
        return render_chat(tokenizer, [{"role": m.role, "content": m.content} for m in messages])
    except ChatTemplateError as e:
        raise ServingError(400, "invalid_request", f"messages: {e}") from None
