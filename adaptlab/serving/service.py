"""The serving core, with no HTTP in it: resolve a model name, load adapters, batch, predict.

A :class:`Service` serves one or several base models, each through a :class:`Lane` whose one
worker thread owns that base's model. Requests from any thread are queued; the worker takes what
arrives while requests keep coming (up to ``max_batch`` rows), splits it by weights (the base model,
or each full fine-tune's private copy) and runs each part as one mixed batch. No adaptation
ever changes the base model, so loading an artifact needs no coordination with forward passes
beyond the adapter cache's own lock.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import queue
import threading
import time

import torch

from adaptlab.evaluation.generation import cut_at_stop
from adaptlab.models import fastweights
from adaptlab.models.arch import arch_facts
from adaptlab.models.decoding import GREEDY, Sampling
from adaptlab.models.types import BaseModel
from adaptlab.registry import Entry, Registry, RegistryError
from adaptlab.serving.adapters import BASE_WEIGHTS, ServingAdapter, from_artifact, plain_adapter
from adaptlab.serving.engine import (
    build_lead,
    classify_rows,
    encode_rows,
    generate_rows,
    mixed_lm,
    plan_batches,
    with_leads,
)
from adaptlab.strategies.base import Artifact, ArtifactError, read_artifact_meta
from adaptlab.utils import cli_setting

BASE_ALIASES = ("base",)


class ServingError(Exception):
    """An error the client caused or must know about: HTTP status + machine code + one-line message."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclasses.dataclass
class ServeConfig:
    max_batch: int = cli_setting(16, "Most rows in one forward pass.")
    max_wait_ms: float = cli_setting(
        10.0, "The batcher closes a batch when no request came for this long (milliseconds)..."
    )
    max_gather_ms: float = cli_setting(100.0, "... or when it has gathered for this long (milliseconds).")
    memory_cap_mb: float = cli_setting(4096.0, "Loaded adapters above this are unloaded, least recent first.")
    max_prompt_tokens: int = cli_setting(1024, "Longest prompt a request may send (tokens, after the template).")
    max_new_tokens: int = cli_setting(256, "Largest max_tokens a request may ask for.")
    max_n: int = cli_setting(8, "Most choices one request may ask for (n).")
    batching: str = cli_setting(
        "mixed",
        "mixed (adaptations share forward passes) or swap (one adaptation at a time through its own code path; "
        "the benchmark baseline).",
    )
    verify_artifacts: bool = True
    prompt_cache: bool = cli_setting(
        True,
        "Keep each adaptation's static prompt start (prefix, soft prompt, instruction, fixed exemplars) as "
        "keys/values, run once (engine.build_lead).",
    )
    weights: str = cli_setting(
        "auto",
        "The base's weights as served: auto (fp32 packed for oneDNN on a CPU that has it), fp32, fp32-packed, "
        "bf16-head, bf16 or int8 (adaptlab.models.fastweights.WEIGHTS; docs/results/engine.md for their speed "
        "and agreement).",
    )

    def __post_init__(self):
        if self.max_batch < 1:
            raise ValueError(f"max_batch={self.max_batch}: must be >= 1")
        for name in ("max_prompt_tokens", "max_new_tokens", "max_n"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: must be >= 1")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms={self.max_wait_ms}: must be >= 0")
        if self.max_gather_ms < self.max_wait_ms:
            raise ValueError(f"max_gather_ms={self.max_gather_ms}: must be >= max_wait_ms ({self.max_wait_ms})")
        if self.memory_cap_mb <= 0:
            raise ValueError(f"memory_cap_mb={self.memory_cap_mb}: must be > 0")
        if self.batching not in ("mixed", "swap"):
            raise ValueError(f"batching={self.batching!r}: use 'mixed' or 'swap'")
        fastweights.check(self.weights)


@dataclasses.dataclass
class Work:
    op: str  # "classify" | "generate"
    adapter: ServingAdapter
    text: str
    max_new: int = 0
    on_token: object = None  # (token_id) -> None, called from the worker thread
    sampling: Sampling = GREEDY  # temperature, top_p, top_k, seed, logprobs
    stop: list[str] = dataclasses.field(default_factory=list)  # stop texts (not included in the answer)
    prompt_tokens: int = 0  # set by the worker: rendered prompt + virtual tokens
    completion_tokens: int = 0  # set by the worker: generated tokens
    finish: str = ""  # set by the worker: "stop" or "length"
    logprobs: list = dataclasses.field(default_factory=list)  # set by the worker when sampling.logprobs
    future: concurrent.futures.Future = dataclasses.field(default_factory=concurrent.futures.Future)


class Service:
    """The serving core of one or several base models (``Service(base)`` or ``Service([a, b])``).

    Each base is a :class:`Lane` (its served weights, loaded adaptations, queue and worker); one
    route table sends a name to its lane. A registry version goes to the lane whose base has its
    fingerprint, so ``TASK@prod`` may move between bases (``adaptlab rebase``) without a restart.
    The first base is the default one (``base``).

    ``threads=False``: no lane starts a worker thread of its own; :meth:`run` works the first
    base's queue on the thread that calls it (``adaptlab serve``: the main thread, with HTTP on
    another). Why it matters on a CPU: PyTorch's OpenMP runtime (libgomp) keeps a team of threads
    per thread that ran parallel work, and once its threads outnumber the cores it stops spinning
    between parallel regions and puts them to sleep, so every small product pays a wake-up. The
    thread that loaded the model already has a team; a worker thread's team makes four threads
    on two cores. Measured on this 2-core VM: a LoRA's two small products took 54.8 us on the
    thread that loaded the weights and 314.6 us on a second thread; over HTTP, 8 LoRAs each request
    another, 52.9 against 80.4 tokens/s (``docs/results/serving_llamacpp_http.md``). Several bases
    still mean several teams: the others' lanes run on threads of their own."""

    def __init__(
        self,
        bases: BaseModel | list[BaseModel],
        registry: Registry | None,
        config: ServeConfig | None = None,
        metrics=None,
        threads: bool = True,
    ):
        bases = list(bases) if isinstance(bases, (list, tuple)) else [bases]
        if not bases:
            raise ValueError("no base model to serve")
        fps = [b.fingerprint for b in bases]
        if len(set(fps)) != len(fps):
            raise ValueError("the same base model twice")
        self.registry = registry
        self.config = config or ServeConfig()
        self.metrics = metrics  # read by the lanes at each batch: create_app may set it later
        self.lanes = [Lane(self, b, start=threads) for b in bases]
        self.by_fingerprint = {lane.base.fingerprint: lane for lane in self.lanes}

    @property
    def base(self) -> BaseModel:
        return self.lanes[0].base

    @property
    def bases(self) -> list[BaseModel]:
        return [lane.base for lane in self.lanes]

    # ------------------------------------------------------------------ names and adapters
    def resolve(self, name: str) -> tuple[Entry | None, ServingAdapter]:
        """``model`` field -> (registry entry or None for a base model, adapter)."""
        if name in BASE_ALIASES:
            return None, self.lanes[0].plain
        for lane in self.lanes:
            if name == lane.base.name:
                return None, lane.plain
        if self.registry is None:
            raise ServingError(404, "model_not_found", f"unknown model {name!r}: no registry is configured")
        try:
            entry = self.registry.resolve(name)
        except RegistryError as e:
            raise ServingError(404, "model_not_found", str(e)) from None
        return entry, self.adapter(entry)

    def adapter(self, entry: Entry) -> ServingAdapter:
        lane = self.by_fingerprint.get(entry.fingerprint)
        if lane is None:
            raise ServingError(
                409,
                "base_model_mismatch",
                f"{entry.ref} was made for base model {entry.fingerprint[:12]}; this server runs "
                + ", ".join(f"{b.name} ({b.fingerprint[:12]})" for b in self.bases),
            )
        return lane.adapter(entry)

    def labels_of(self, task: str, version: int) -> list[str] | None:
        """The label set of a registered version (from its artifact file; no weights are loaded)."""
        return read_artifact_meta(self.registry.get(task, version).path).get("labels")

    @property
    def cache(self) -> dict[str, ServingAdapter]:
        """Every loaded adaptation, by digest (a snapshot)."""
        return {k: v for lane in self.lanes for k, v in lane.snapshot().items()}

    def unload(self, digest: str) -> bool:
        return any([lane.unload(digest) for lane in self.lanes])

    def loaded_bytes(self) -> int:
        return sum(lane.loaded_bytes() for lane in self.lanes)

    def queue_depth(self) -> int:
        """Rows waiting for a worker, all bases together (what /healthz reports)."""
        return sum(lane.queue.qsize() for lane in self.lanes)

    @property
    def batches(self) -> int:
        return sum(lane.batches for lane in self.lanes)

    def _gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.loaded.set(len(self.cache))
            self.metrics.loaded_bytes.set(self.loaded_bytes())
            self.metrics.queue_depth.set(self.queue_depth())

    # ------------------------------------------------------------------ requests
    def lane_of(self, adapter: ServingAdapter) -> Lane:
        return self.by_fingerprint[adapter.base.fingerprint] if adapter.base is not None else self.lanes[0]

    def submit(self, work: Work) -> concurrent.futures.Future:
        return self.lane_of(work.adapter).submit(work)

    def classify(self, adapter: ServingAdapter, texts: list[str]) -> list[torch.Tensor]:
        """Blocking helper: label scores (calibrated where the artifact says so) for each text."""
        futures = [self.submit(Work("classify", adapter, t)) for t in texts]
        return [f.result() for f in futures]

    def generate(self, adapter: ServingAdapter, texts: list[str], max_new: int) -> list[str]:
        futures = [self.submit(Work("generate", adapter, t, max_new=max_new)) for t in texts]
        return [f.result() for f in futures]

    def run(self, until) -> None:
        """Work the first base's queue on the calling thread until ``until()`` is true or the
        service is closed; every other base's lane gets its own worker thread (for a service made
        with ``threads=False``)."""
        for lane in self.lanes[1:]:
            lane.start()
        self.lanes[0].work(until)

    def close(self) -> None:
        for lane in self.lanes:
            lane.close()


class Lane:
    """One base model in a :class:`Service`: its weights as served, its loaded adaptations, its
    queue and the one thread that works its model (a worker thread of its own, or the caller of
    :meth:`Service.run`). Requests from any thread are queued; that thread takes what arrives while requests keep coming (``max_wait_ms`` apart, for at most
    ``max_gather_ms``; up to ``max_batch`` rows), splits it by
    weights (the base, or each full fine-tune's private copy) and runs each part as one mixed batch."""

    def __init__(self, service: Service, base: BaseModel, start: bool = True):
        self.service, self.base, self.config = service, base, service.config
        self.lock = threading.RLock()  # the model: held by the worker for a whole batch
        self.cache_lock = threading.RLock()  # the loaded adaptations (self.cache): held briefly
        self.weights = fastweights.resolve(self.config.weights, base.model)
        self.model = fastweights.inference_model(base.model, self.weights)  # the base's weights as served
        self.plain = plain_adapter(base)
        self.cache: collections.OrderedDict[str, ServingAdapter] = collections.OrderedDict()
        self.queue: queue.Queue[Work] = queue.Queue()
        self.window = arch_facts(base.model).sliding_window
        self._stop = threading.Event()
        self.batches = 0
        self._answered = (0, 0.0)  # the last batch's rows and when they were answered (Lane._gather)
        self.worker: threading.Thread | None = None
        if start:
            self.start()

    def start(self) -> None:
        """Work this lane's queue on a thread of its own."""
        if self.worker is None:
            self.worker = threading.Thread(target=self.work, name=f"adaptlab-batcher-{self.base.name}", daemon=True)
            self.worker.start()

    @property
    def metrics(self):
        return self.service.metrics

    def adapter(self, entry: Entry) -> ServingAdapter:
        # A loaded adaptation is looked up under the cache's own lock only: ``self.lock`` is held by
        # the worker for a whole batch, and a request waiting on it cannot join the next batch (with
        # 16 clients, adapted requests then arrived a few at a time: 5-6 rows a batch, against 16
        # for the base model; bench/serving_llamacpp_http.py).
        with self.cache_lock:
            ad = self.cache.get(entry.digest)
            if ad is not None:
                self.cache.move_to_end(entry.digest)
                return ad
        with self.lock:
            with self.cache_lock:
                ad = self.cache.get(entry.digest)
            if ad is not None:
                return ad
            try:
                if self.config.verify_artifacts:
                    self.service.registry.verify(entry)
                art = Artifact.load(entry.path, self.base)
                ad = from_artifact(art, entry.ref, entry.digest, self.base)
                if self.config.batching == "swap":
                    ad.artifact = art
            except (RegistryError, ArtifactError, ValueError, OSError) as e:
                raise ServingError(500, "artifact_unloadable", f"{entry.ref}: {e}") from None
            with self.cache_lock:
                self.cache[entry.digest] = ad
                self._evict(keep=entry.digest)
            self.service._gauge()
            return ad

    def _evict(self, keep: str) -> None:
        cap = self.config.memory_cap_mb * 2**20
        while self.loaded_bytes() > cap and len(self.cache) > 1:
            oldest = next(k for k in self.cache if k != keep)
            self.cache.pop(oldest)

    def snapshot(self) -> dict[str, ServingAdapter]:
        with self.cache_lock:
            return dict(self.cache)

    def unload(self, digest: str) -> bool:
        with self.lock, self.cache_lock:
            gone = self.cache.pop(digest, None) is not None
        self.service._gauge()
        return gone

    def loaded_bytes(self) -> int:
        with self.cache_lock:
            return sum(a.nbytes for a in self.cache.values())

    def submit(self, work: Work) -> concurrent.futures.Future:
        if self._stop.is_set():
            raise ServingError(503, "shutting_down", "the server is shutting down")
        self.queue.put(work)
        if self.metrics is not None:
            self.metrics.queue_depth.set(self.service.queue_depth())
        return work.future

    def close(self) -> None:
        self._stop.set()
        if self.worker is not None and self.worker is not threading.current_thread():
            self.worker.join(timeout=10)
        elif self.worker is None:  # worked by Service.run, if at all: nothing else answers them now
            self._fail_left()

    # ------------------------------------------------------------------ the worker
    def work(self, until=None) -> None:
        """Take batches from the queue until the lane is closed (or ``until()`` is true), then fail
        what is left. Runs on the lane's own thread, or on the caller's (:meth:`Service.run`)."""
        with torch.no_grad():  # not set_grad_enabled: the calling thread may be the main one
            while not self._stop.is_set() and not (until is not None and until()):
                try:
                    first = self.queue.get(timeout=0.05)
                except queue.Empty:
                    continue
                items = self._gather(first)
                if self.metrics is not None:
                    self.metrics.queue_depth.set(self.service.queue_depth())
                self._process(items)
                self._answered = (len(items), time.monotonic())
        if self._stop.is_set():
            self._fail_left()

    def _fail_left(self) -> None:
        while True:  # fail what is left rather than leave callers waiting forever
            try:
                self.queue.get_nowait().future.set_exception(ServingError(503, "shutting_down", "server stopped"))
            except queue.Empty:
                break

    def _gather(self, first: Work) -> list[Work]:
        """A batch: what arrives while requests keep coming (each one extends the wait by
        ``max_wait_ms``), for at most ``max_gather_ms``. A fixed window closed batches early: when
        a batch of 16 answers, its clients' next requests come back over some tens of
        milliseconds, and over HTTP a 20 ms window took 9-13 of them (bench/probe_http_batches.py).

        The clients just answered are expected back: when the first request comes within
        ``max_gather_ms`` of the last batch's answers, the batch waits (up to ``max_gather_ms``)
        until it has as many rows as that batch had, gaps or not. Over HTTP with 8 LoRAs the
        returning requests came more than 20 ms apart and batches of 16 fell to 12.8 rows on
        average; each extra batch repeats every decode step."""
        items = [first]
        now = time.monotonic()
        end = now + self.config.max_gather_ms / 1000
        quiet = now + self.config.max_wait_ms / 1000
        rows, answered_at = self._answered
        expect = rows if now - answered_at <= self.config.max_gather_ms / 1000 else 0
        while len(items) < self.config.max_batch:
            left = (end if len(items) < expect else min(quiet, end)) - time.monotonic()
            try:
                items.append(self.queue.get(timeout=left) if left > 0 else self.queue.get_nowait())
            except queue.Empty:
                break
            quiet = time.monotonic() + self.config.max_wait_ms / 1000
        return items

    def _group_key(self, w: Work) -> tuple:
        key = (w.adapter.weights, w.op)
        return key + ((w.adapter.key,) if self.config.batching == "swap" else ())

    def _process(self, items: list[Work]) -> None:
        groups: dict[tuple, list[Work]] = {}
        for w in items:
            groups.setdefault(self._group_key(w), []).append(w)
        for (weights, op, *_), group in groups.items():
            try:
                with self.lock:
                    self._run_group(weights, op, group)
            except Exception as e:  # noqa: BLE001 - every waiting caller must hear about it
                for w in group:
                    if not w.future.done():
                        w.future.set_exception(e)

    def _run_group(self, weights: str, op: str, group: list[Work]) -> None:
        art = getattr(group[0].adapter, "artifact", None)
        if self.config.batching == "swap" and art is not None:
            return self._run_swapped(art, op, group)
        tok = self.base.tokenizer
        model = self.model if weights == BASE_WEIGHTS else group[0].adapter.model
        ads = [w.adapter for w in group]
        ids = encode_rows(tok, ads, [w.text for w in group], self.config.max_prompt_tokens)
        for w, ad, x in zip(group, ads, ids):
            w.prompt_tokens = len(x) + ad.soft_len + ad.prefix_len
        if op == "classify":
            extra = [
                max(len(x) for x in tok(w.adapter.label_texts, add_special_tokens=False)["input_ids"]) for w in group
            ]
        else:
            extra = [w.max_new for w in group]
        if self.config.prompt_cache:
            for ad in {a.key: a for a in ads}.values():
                if not ad.lead_built:
                    ad.lead = build_lead(model, tok, ad, self.window, self.config.max_prompt_tokens)
                    ad.lead_built = True
            self.service._gauge()
            ads, ids = with_leads(ads, ids)
        for rows in plan_batches(ads, ids, extra, self.window, self.config.max_batch, decode=op != "classify"):
            lm = mixed_lm(model, [ads[i] for i in rows])
            if self.metrics is not None:
                self.metrics.batch_size.observe(len(rows))
            self.batches += 1
            if op == "classify":
                out = classify_rows(lm, tok, [ids[i] for i in rows], [ads[i] for i in rows])
                for i, scores in zip(rows, out):
                    ad = ads[i]
                    if ad.calibrate is not None:
                        scores = ad.calibrate(scores.unsqueeze(0))[0]
                    group[i].future.set_result(scores)
            else:

                def on_token(r, token, rows=rows):
                    cb = group[rows[r]].on_token
                    if cb is not None:
                        cb(token)

                works = [group[i] for i in rows]
                outs = generate_rows(
                    lm,
                    tok,
                    [ids[i] for i in rows],
                    [w.max_new for w in works],
                    on_token,
                    [w.sampling for w in works],
                    [w.stop for w in works],
                )
                for w, d in zip(works, outs):
                    w.completion_tokens, w.finish, w.logprobs = len(d.tokens), d.finish, d.logprobs
                    w.future.set_result(cut_at_stop(tok.decode(d.tokens, skip_special_tokens=True), w.stop).strip())

    def _run_swapped(self, art, op: str, group: list[Work]) -> None:
        """Baseline for the benchmark: one adaptation's requests through its own artifact code path,
        as a server without mixed batches does (PEFT swaps LoRA layers in and out of the base)."""
        texts = [w.text for w in group]
        tok = self.base.tokenizer
        for w, x in zip(group, encode_rows(tok, [w.adapter for w in group], texts, self.config.max_prompt_tokens)):
            w.prompt_tokens = len(x) + w.adapter.soft_len + w.adapter.prefix_len
        if self.metrics is not None:
            self.metrics.batch_size.observe(len(group))
        self.batches += 1
        if op == "classify":
            for w, scores in zip(group, art.scores(texts)):
                w.future.set_result(scores)
        else:
            limit = max(w.max_new for w in group)
            outs = art.generate(texts, max_new_tokens=limit)
            for w, out in zip(group, outs):
                generated = tok(out, add_special_tokens=False)["input_ids"]
                w.completion_tokens = len(generated)
                if w.on_token is not None:  # no streaming in the baseline: the whole answer at once
                    for t in generated:
                        w.on_token(t)
                w.future.set_result(out)
