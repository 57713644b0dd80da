"""Any OpenAI-compatible HTTP endpoint as a backend (vLLM, llama.cpp server, TGI, hosted APIs).

Classification uses label log-probabilities where the endpoint offers them: one
``/v1/completions`` request per example carries the prompt followed by each label, with
``echo=true, max_tokens=0, logprobs=0``, and the log-probabilities of the tokens after the prompt
are summed (the lm-evaluation-harness technique). Where the endpoint has no echo logprobs, the
model answers greedily and the answer is parsed into a label (constrained parsing).

Requests time out, and 429 / 5xx / connection errors are retried with exponential backoff
(``Retry-After`` honoured, capped); anything else, including malformed JSON or a response of the
wrong shape, is a one-line :class:`BackendError` naming the endpoint and the field.

Up to ``concurrency`` requests are in flight at once (one per prompt); with a ``cache``
(:class:`adaptlab.backends.endpoints.ResponseCache`), an answer already paid for is read back instead
of sent again. ``requests`` counts HTTP requests answered, ``cache_hits`` the answers read back;
``prompt_tokens``/``completion_tokens`` sum the tokens the answers report (read back or not: what a
prediction costs), ``paid_prompt_tokens``/``paid_completion_tokens`` those of the HTTP answers only
(what this process paid).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import os
import random
import threading
import time

import torch

from adaptlab.backends.base import Backend, BackendError

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class OpenAIBackend(Backend):
    def __init__(
        self,
        url: str,
        model: str = "default",
        api_key_env: str | None = None,
        timeout: float = 30.0,
        max_retries: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 20.0,
        mode: str = "auto",
        chat: bool = False,
        seed: int = 0,
        concurrency: int = 1,
        cache=None,
    ):
        super().__init__()
        if mode not in ("auto", "logprobs", "parse"):
            raise ValueError(f"endpoint mode={mode!r}: must be auto, logprobs or parse")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"endpoint {url!r}: must start with http:// or https://")
        self.url = url.rstrip("/")
        if self.url.endswith("/v1"):
            self.url = self.url[:-3]
        self.model = model
        self.api_key = None
        if api_key_env:
            self.api_key = os.environ.get(api_key_env)
            if not self.api_key:
                raise BackendError(f"environment variable {api_key_env} (API key) is not set or empty")
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.mode = mode
        self.chat = chat
        self._rng = random.Random(seed)
        self.name = f"endpoint:{self.url}#{model}"
        self.fingerprint = f"endpoint:{self.url}#{model}"
        self.retries = 0
        self.concurrency = max(1, int(concurrency))
        self.cache = cache
        self.requests = 0  # HTTP requests the endpoint answered (paid for)
        self.cache_hits = 0  # answers read back from the cache instead
        self.completion_tokens = 0
        self.paid_prompt_tokens = 0
        self.paid_completion_tokens = 0
        self.latencies: list[float] = []  # seconds per answer (retries included; read back: as first paid)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ HTTP
    def _post(self, path: str, payload: dict) -> dict:
        key = None
        if self.cache is not None and self.cache.cacheable(payload):
            key = self.cache.key(self.url, self.model, path, payload)
            found = self.cache.get(key)
            if found is not None:
                body, seconds = found
                with self._lock:
                    self.cache_hits += 1
                    self._count(body, paid=False)
                    if seconds is not None:
                        self.latencies.append(seconds)
                return body
        t0 = time.perf_counter()
        body = self._send(path, payload)
        seconds = time.perf_counter() - t0
        with self._lock:
            self.latencies.append(seconds)
        if key is not None:
            self.cache.put(key, self.url, self.model, path, body, seconds)
        return body

    def _count(self, body: dict, paid: bool) -> None:
        usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
        pt = usage.get("prompt_tokens") if isinstance(usage.get("prompt_tokens"), int) else 0
        ct = usage.get("completion_tokens") if isinstance(usage.get("completion_tokens"), int) else 0
        self.prompt_tokens += pt
        self.completion_tokens += ct
        if paid:
            self.requests += 1
            self.paid_prompt_tokens += pt
            self.paid_completion_tokens += ct

    def usage(self) -> dict:
        """The counters, for a caller that measures what one piece of work used (a difference of two)."""
        with self._lock:
            return {
                "calls": self.calls,
                "requests": self.requests,
                "cache_hits": self.cache_hits,
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "paid_prompt_tokens": self.paid_prompt_tokens,
                "paid_completion_tokens": self.paid_completion_tokens,
                "answers": len(self.latencies),
            }

    def _map(self, fn, items: list) -> list:
        """``fn`` over ``items`` in order, up to ``concurrency`` at once."""
        if self.concurrency == 1 or len(items) < 2:
            return [fn(x) for x in items]
        with cf.ThreadPoolExecutor(min(self.concurrency, len(items))) as pool:
            return list(pool.map(fn, items))

    def _send(self, path: str, payload: dict) -> dict:
        import requests

        url = self.url + path
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last = ""
        for attempt in range(self.max_retries + 1):
            wait = min(self.max_backoff, self.backoff * 2**attempt) * (0.5 + self._rng.random() / 2)
            try:
                r = requests.post(url, json=payload, headers=headers, timeout=self.timeout)
            except requests.Timeout:
                last = f"timed out after {self.timeout:g} s"
            except requests.ConnectionError as e:
                last = f"connection failed ({type(e).__name__})"
            else:
                if r.status_code == 200:
                    try:
                        body = r.json()
                    except ValueError:
                        raise BackendError(f"{url}: malformed response: not JSON ({r.text[:80]!r})") from None
                    if not isinstance(body, dict):
                        raise BackendError(f"{url}: malformed response: expected a JSON object")
                    with self._lock:
                        self._count(body, paid=True)
                    return body
                if r.status_code not in RETRY_STATUS:
                    raise BackendError(f"{url}: HTTP {r.status_code}: {_error_message(r)}")
                last = f"HTTP {r.status_code}: {_error_message(r)}"
                ra = r.headers.get("Retry-After")
                if ra:
                    with contextlib.suppress(ValueError):
                        wait = min(self.max_backoff, float(ra))
            if attempt < self.max_retries:
                with self._lock:
                    self.retries += 1
                time.sleep(wait)
        raise BackendError(f"{url}: gave up after {self.max_retries + 1} attempts: {last}")

    # ------------------------------------------------------------------ capabilities
    @property
    def supports_scores(self) -> bool:  # type: ignore[override]
        if self.mode == "auto":
            self.mode = "logprobs" if self._probe() else "parse"
        return self.mode == "logprobs"

    def _probe(self) -> bool:
        """Does the endpoint return echoed prompt logprobs? (one tiny request, not counted as a call)"""
        if self.chat:
            return False
        try:
            body = self._post(
                "/v1/completions",
                {"model": self.model, "prompt": ["Hi"], "max_tokens": 0, "echo": True, "logprobs": 0, "temperature": 0},
            )
            _echo_logprobs(body, 0, self.url)
            return True
        except BackendError:
            return False

    def count_tokens(self, text: str) -> int:
        return max(1, len(text) // 4)  # estimate; usage.prompt_tokens from responses is the measured figure

    # ------------------------------------------------------------------ calls
    def score(self, prompts: list[str], label_texts: list[str]) -> torch.Tensor:
        if not self.supports_scores:
            raise BackendError(f"{self.url}: endpoint returns no prompt logprobs; use mode=parse (no label scores)")
        out = torch.empty(len(prompts), len(label_texts))

        def one(p: str) -> list[float]:
            body = self._post(
                "/v1/completions",
                {
                    "model": self.model,
                    "prompt": [p + t for t in label_texts],
                    "max_tokens": 0,
                    "echo": True,
                    "logprobs": 0,
                    "temperature": 0,
                },
            )
            choices = body.get("choices")
            if not isinstance(choices, list) or len(choices) != len(label_texts):
                raise BackendError(
                    f"{self.url}/v1/completions: malformed response: expected {len(label_texts)} "
                    f"choices, got {len(choices) if isinstance(choices, list) else type(choices).__name__}"
                )
            by_index = sorted(choices, key=lambda c: c.get("index", 0) if isinstance(c, dict) else 0)
            return [_sum_after(by_index[j], len(p), self.url, j) for j in range(len(label_texts))]

        for i, row in enumerate(self._map(one, prompts)):
            out[i] = torch.tensor(row)
        self.calls += len(prompts)
        return out

    def generate(
        self,
        prompts: list[str],
        max_new_tokens: int = 64,
        num_beams: int = 1,
        stop: list[str] | None = None,
        sampling=None,
    ) -> list[str]:
        if num_beams != 1:
            raise BackendError(f"{self.url}: num_beams={num_beams}: an OpenAI-compatible endpoint does not beam-search")

        def one(item: tuple[int, str]) -> str:
            i, p = item
            fields = {
                "model": self.model,
                "max_tokens": max_new_tokens,
                **_sampling_fields(sampling, i),
                **({"stop": stop} if stop else {}),
            }
            if self.chat:
                body = self._post("/v1/chat/completions", {**fields, "messages": [{"role": "user", "content": p}]})
                text = _field(body, ("choices", 0, "message", "content"), self.url)
            else:
                body = self._post("/v1/completions", {**fields, "prompt": p})
                text = _field(body, ("choices", 0, "text"), self.url)
            if not isinstance(text, str):
                raise BackendError(f"{self.url}: malformed response: choices[0] text is not a string")
            return text.strip()

        outs = self._map(one, list(enumerate(prompts)))
        self.calls += len(prompts)
        return outs

    def embed(self, texts: list[str]) -> torch.Tensor:
        body = self._post("/v1/embeddings", {"model": self.model, "input": texts})
        self.calls += len(texts)
        data = body.get("data")
        if not isinstance(data, list) or len(data) != len(texts):
            raise BackendError(f"{self.url}/v1/embeddings: malformed response: expected {len(texts)} embeddings")
        try:
            vecs = torch.tensor(
                [d["embedding"] for d in sorted(data, key=lambda d: d.get("index", 0))], dtype=torch.float32
            )
        except (KeyError, TypeError, ValueError):
            raise BackendError(f"{self.url}/v1/embeddings: malformed response: data[].embedding") from None
        return torch.nn.functional.normalize(vecs, dim=-1)

    def describe(self) -> dict:
        return {
            "name": self.name,
            "fingerprint": self.fingerprint,
            "url": self.url,
            "model": self.model,
            "mode": self.mode,
            "chat": self.chat,
        }


def _error_message(r) -> str:
    try:
        body = r.json()
        err = body.get("error", body) if isinstance(body, dict) else body
        msg = err.get("message", err) if isinstance(err, dict) else err
        return str(msg)[:200]
    except ValueError:
        return (r.text or r.reason or "").strip()[:200]


def _field(body, path, url):
    cur = body
    for k in path:
        try:
            cur = cur[k]
        except (KeyError, IndexError, TypeError):
            raise BackendError(f"{url}: malformed response: missing {'.'.join(str(p) for p in path)}") from None
    return cur


def _echo_logprobs(choice_or_body, j, url):
    c = choice_or_body["choices"][j] if "choices" in choice_or_body else choice_or_body
    lp = c.get("logprobs") if isinstance(c, dict) else None
    if not isinstance(lp, dict):
        raise BackendError(f"{url}: malformed response: choices[{j}].logprobs missing")
    toks, offs = lp.get("token_logprobs"), lp.get("text_offset")
    if not isinstance(toks, list) or not isinstance(offs, list) or len(toks) != len(offs):
        raise BackendError(f"{url}: malformed response: choices[{j}].logprobs needs token_logprobs and text_offset")
    return toks, offs


def _sum_after(choice, prompt_chars: int, url: str, j: int) -> float:
    """Sum of the logprobs of the tokens that start at or after the end of the prompt."""
    toks, offs = _echo_logprobs(choice, j, url)
    total, n = 0.0, 0
    for lp, off in zip(toks, offs):
        if isinstance(off, int) and off >= prompt_chars:
            if not isinstance(lp, (int, float)):
                raise BackendError(f"{url}: malformed response: choices[{j}] has a non-numeric logprob")
            total += float(lp)
            n += 1
    if n == 0:
        raise BackendError(f"{url}: malformed response: choices[{j}] has no tokens after the prompt")
    return total


def _sampling_fields(sampling, i: int) -> dict:
    """Request fields for a Sampling (greedy: temperature 0); prompt i samples with seed + i.
    ``top_k`` is not OpenAI's but vLLM and adaptlab take it; a strict endpoint refuses it loudly."""
    if sampling is None or sampling.greedy:
        return {"temperature": 0}
    out = {"temperature": sampling.temperature, "top_p": sampling.top_p}
    if sampling.seed is not None:
        out["seed"] = sampling.seed + i
    if sampling.top_k:
        out["top_k"] = sampling.top_k
    return out
