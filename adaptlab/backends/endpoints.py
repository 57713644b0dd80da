"""Endpoints as named, priced things, and the care that calls which cost money need.

- :class:`EndpointSpec`: a name, the base URL, the ``model`` field, the environment variable that
  holds the API key, prices per 1M input and output tokens, and a concurrency limit; from a flag
  (``--endpoint 'gpt=https://api.example.com/v1,model=gpt-4o-mini,key=OPENAI_API_KEY,in=0.15,out=0.6,
  concurrency=8'``) or a TOML file (``--endpoints endpoints.toml``)::

      [endpoints.gpt]
      url = "https://api.example.com/v1"
      model = "gpt-4o-mini"
      api_key_env = "OPENAI_API_KEY"
      price_in = 0.15        # per 1M input tokens
      price_out = 0.60       # per 1M output tokens
      concurrency = 8

- :class:`ResponseCache`: answers kept in SQLite under a key of (URL, model, route, request body),
  so a repeated or resumed run pays nothing twice. Only requests whose answer is fixed are kept:
  greedy (temperature 0), or sampled with a seed.
- :func:`preflight`: before any run starts, each endpoint is checked: reachable, key accepted,
  model present (where the server lists its models), label log-probabilities offered or not; a
  failure is one line naming the endpoint and what failed.
- :func:`spend`: calls, cache hits, tokens and their price, from a backend's counters.

Written here rather than with an HTTP-cache library (requests-cache, hishel): those key on the URL
and headers of GETs and honour the server's cache headers, which an OpenAI-compatible POST never
sends; what must not be paid twice is the same body sent to the same model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import sqlite3
import threading
import time
from pathlib import Path

from adaptlab.backends.base import BackendError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
FLAG_KEYS = {
    "model": "model",
    "key": "api_key_env",
    "in": "price_in",
    "out": "price_out",
    "concurrency": "concurrency",
    "mode": "mode",
    "chat": "chat",
    "timeout": "timeout",
}


class EndpointError(ValueError):
    """A bad endpoint definition, named by flag or file and field."""


@dataclasses.dataclass(frozen=True)
class EndpointSpec:
    name: str
    url: str
    model: str = "default"
    api_key_env: str | None = None
    price_in: float = 0.0  # per 1M input (prompt) tokens
    price_out: float = 0.0  # per 1M output (completion) tokens
    concurrency: int = 4
    mode: str = "auto"  # auto | logprobs | parse (see OpenAIBackend)
    chat: bool = False
    timeout: float = 30.0

    def __post_init__(self):
        where = f"endpoint {self.name!r}"
        if not NAME.match(self.name):
            raise EndpointError(f"{where}: a name is letters, digits, '_', '.', '-' (at most 64)")
        if not self.url.startswith(("http://", "https://")):
            raise EndpointError(f"{where}: url {self.url!r} must start with http:// or https://")
        for field in ("price_in", "price_out", "timeout"):
            value = getattr(self, field)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise EndpointError(f"{where}: {field}={value!r} must be a number >= 0")
        if (
            not isinstance(self.concurrency, int)
            or isinstance(self.concurrency, bool)
            or not 1 <= self.concurrency <= 256
        ):
            raise EndpointError(f"{where}: concurrency={self.concurrency!r} must be an integer in 1..256")
        if self.mode not in ("auto", "logprobs", "parse"):
            raise EndpointError(f"{where}: mode={self.mode!r} must be auto, logprobs or parse")

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.price_in + completion_tokens * self.price_out) / 1e6

    def backend(self, cache: ResponseCache | None = None, **kw):
        from adaptlab.backends.openai_http import OpenAIBackend

        return OpenAIBackend(
            self.url,
            model=self.model,
            api_key_env=self.api_key_env,
            timeout=self.timeout,
            mode=self.mode,
            chat=self.chat,
            concurrency=self.concurrency,
            cache=cache,
            **kw,
        )


def _coerce(name: str, field: str, raw: str):
    if field in ("price_in", "price_out", "timeout"):
        try:
            return float(raw)
        except ValueError:
            raise EndpointError(f"--endpoint {name}: {field}={raw!r} is not a number") from None
    if field == "concurrency":
        if not raw.isdigit():
            raise EndpointError(f"--endpoint {name}: concurrency={raw!r} is not a positive integer")
        return int(raw)
    if field == "chat":
        if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise EndpointError(f"--endpoint {name}: chat={raw!r}: use true or false")
        return raw.lower() in ("true", "1", "yes")
    return raw


def parse_endpoint_flag(text: str) -> EndpointSpec:
    """``NAME=URL[,model=M][,key=ENV][,in=P][,out=P][,concurrency=N][,mode=..][,chat=true]``."""
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise EndpointError(f"--endpoint {text!r}: use NAME=URL[,model=M,key=ENV,in=PRICE,out=PRICE,concurrency=N]")
    url, *options = rest.split(",")
    fields: dict = {}
    for opt in options:
        k, sep, v = opt.partition("=")
        if not sep or k.strip() not in FLAG_KEYS:
            raise EndpointError(
                f"--endpoint {name}: option {opt!r}: use one of {', '.join(f'{k}=' for k in FLAG_KEYS)}"
            )
        field = FLAG_KEYS[k.strip()]
        fields[field] = _coerce(name, field, v.strip())
    return EndpointSpec(name=name.strip(), url=url.strip(), **fields)


def load_endpoints_file(path: str | Path) -> list[EndpointSpec]:
    """The ``[endpoints.NAME]`` tables of a TOML file; errors name the file and the table."""
    import tomllib

    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise EndpointError(f"{path}: no such file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise EndpointError(f"{path}: not valid TOML ({e})") from None
    tables = doc.get("endpoints")
    if not isinstance(tables, dict) or not tables:
        raise EndpointError(f"{path}: no [endpoints.NAME] tables")
    allowed = {f.name for f in dataclasses.fields(EndpointSpec)} - {"name"}
    out = []
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise EndpointError(f"{path}: endpoints.{name} must be a table")
        unknown = sorted(set(table) - allowed)
        if unknown:
            raise EndpointError(
                f"{path}: endpoints.{name}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(allowed))}"
            )
        if "url" not in table:
            raise EndpointError(f"{path}: endpoints.{name}: missing field url")
        try:
            out.append(EndpointSpec(name=name, **table))
        except EndpointError as e:
            raise EndpointError(f"{path}: {e}") from None
    return out


def gather_endpoints(flags: list[str] | None, file: str | Path | None) -> list[EndpointSpec]:
    """Flags and file together; a name given twice is an error."""
    specs = (load_endpoints_file(file) if file else []) + [parse_endpoint_flag(f) for f in flags or []]
    seen: set[str] = set()
    for s in specs:
        if s.name in seen:
            raise EndpointError(f"endpoint {s.name!r} is defined twice")
        seen.add(s.name)
    return specs


# ------------------------------------------------------------------ the response cache
class ResponseCache:
    """SQLite: key (sha256 of URL, model, route and the canonical request body) -> response body.

    Thread-safe (one connection per thread; SQLite serialises writers) and shared by processes (WAL).
    A body is stored after it was read in full and parsed, so a killed run leaves no half answer."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._db() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, url TEXT, model TEXT, "
                "route TEXT, body TEXT, created REAL, seconds REAL)"
            )

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30)
            self._local.db = db
        return db

    @staticmethod
    def cacheable(payload: dict) -> bool:
        """Only answers that are fixed: greedy, or sampled with a seed."""
        return payload.get("temperature", 1.0) == 0 or payload.get("seed") is not None

    @staticmethod
    def key(url: str, model: str, route: str, payload: dict) -> str:
        text = json.dumps([url, model, route, payload], sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def get(self, key: str) -> tuple[dict, float | None] | None:
        """(body, the seconds the endpoint took to answer it when it was paid for), or None."""
        row = self._db().execute("SELECT body, seconds FROM responses WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        return json.loads(row[0]), row[1]

    def put(self, key: str, url: str, model: str, route: str, body: dict, seconds: float | None = None) -> None:
        with self._db() as db:
            db.execute(
                "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?, ?)",
                (key, url, model, route, json.dumps(body), time.time(), seconds),
            )

    def __len__(self) -> int:
        return self._db().execute("SELECT COUNT(*) FROM responses").fetchone()[0]


def default_cache_path() -> Path:
    return Path(os.environ.get("ADAPTLAB_RESPONSE_CACHE", Path.home() / ".cache" / "adaptlab" / "responses.sqlite"))


# ------------------------------------------------------------------ pre-flight and spend
def preflight(spec: EndpointSpec, backend=None) -> dict:
    """Check one endpoint before anything runs on it; returns what was found, or raises a one-line
    :class:`BackendError` naming the endpoint: unreachable, key missing or refused, model absent."""
    import requests

    b = backend or spec.backend()
    where = f"endpoint {spec.name} ({spec.url})"
    headers = {"Authorization": f"Bearer {b.api_key}"} if b.api_key else {}
    try:
        r = requests.get(b.url + "/v1/models", headers=headers, timeout=min(spec.timeout, 10.0))
    except requests.RequestException as e:
        raise BackendError(f"{where}: not reachable ({type(e).__name__})") from None
    if r.status_code in (401, 403):
        raise BackendError(
            f"{where}: the API key was refused (HTTP {r.status_code})"
            + ("" if b.api_key else f"; no key set (api_key_env={spec.api_key_env})")
        )
    models = None
    if r.status_code == 200:
        try:
            models = [m.get("id") for m in r.json().get("data", []) if isinstance(m, dict)]
        except (ValueError, AttributeError):
            models = None
    if models and spec.model != "default" and spec.model not in models:
        raise BackendError(f"{where}: model {spec.model!r} is not served there (it lists {', '.join(models[:8])})")
    logprobs = b.supports_scores if not spec.chat else False
    return {
        "endpoint": spec.name,
        "url": spec.url,
        "model": spec.model,
        "reachable": True,
        "models_listed": models,
        "logprobs": logprobs,
        "mode": b.mode,
    }


def spend(spec: EndpointSpec, backend, since: dict | None = None) -> dict:
    """What a backend's calls cost since ``since`` (a :meth:`OpenAIBackend.usage`; None: since it was
    made): calls, HTTP requests and answers read from the cache, the tokens paid for and their price,
    and the tokens all answers report (``tokens_*``: what the same calls cost uncached)."""
    now = backend.usage()
    d = {k: now[k] - (since or {}).get(k, 0) for k in now}
    return {
        "endpoint": spec.name,
        "calls": d["calls"],
        "http_requests": d["requests"],
        "cache_hits": d["cache_hits"],
        "prompt_tokens": d["paid_prompt_tokens"],
        "completion_tokens": d["paid_completion_tokens"],
        "cost_usd": spec.cost(d["paid_prompt_tokens"], d["paid_completion_tokens"]),
        "tokens_prompt": d["prompt_tokens"],
        "tokens_completion": d["completion_tokens"],
        "uncached_cost_usd": spec.cost(d["prompt_tokens"], d["completion_tokens"]),
    }


def latency_summary(seconds: list[float]) -> dict:
    """p50/p95 of request latencies (None where there are none): an endpoint's answers, or a local
    artifact's requests one at a time (:func:`adaptlab.compare.measure.local_latency`)."""
    import statistics

    xs = sorted(seconds)
    if not xs:
        return {"latency_p50_s": None, "latency_p95_s": None}
    return {"latency_p50_s": statistics.median(xs), "latency_p95_s": xs[min(len(xs) - 1, int(0.95 * len(xs)))]}


def latency(backend, since: dict | None = None) -> dict:
    """p50/p95 seconds of the answers since ``since`` (a :meth:`OpenAIBackend.usage`)."""
    return latency_summary(backend.latencies[(since or {}).get("answers", 0) :])


# The endpoints this process has opened (a compare's, or train's --endpoints), by name: where a
# strategy that names another model (gepa's proposer) finds it, with the spec that prices its calls.
_OPEN: dict[str, tuple[EndpointSpec, object]] = {}
_OPEN_LOCK = threading.Lock()


def register_open(spec: EndpointSpec, backend) -> None:
    with _OPEN_LOCK:
        _OPEN[spec.name] = (spec, backend)


def opened(name: str) -> tuple[EndpointSpec, object] | None:
    with _OPEN_LOCK:
        return _OPEN.get(name)


def proposer_backend(name: str, backend):
    """The model a strategy's proposer ``name`` means: ``self`` (the model being prompted) or an
    endpoint opened in this process."""
    if name == "self":
        return backend
    found = opened(name)
    if found is None:
        with _OPEN_LOCK:
            known = ", ".join(sorted(_OPEN)) or "none"
        raise EndpointError(
            f"proposer {name!r}: no endpoint of that name was opened (opened: {known}; define it "
            f"with --endpoint/--endpoints or --proposer NAME=URL,...), or use 'self'"
        )
    return found[1]


def proposer_spend(name: str, backend, before: dict | None) -> dict:
    """What a search's proposer calls cost on its endpoint (empty for 'self' or a local model)."""
    found = opened(name) if name != "self" else None
    if found is None or before is None:
        return {}
    return {"spend": spend(found[0], backend, before)}
