"""Drift: is recent traffic still the data an adaptation was trained for?

The **reference** is what the serving version was judged on: the held-out rows (dev + test) its
recipe makes (:func:`adaptlab.data.named.splits_of_recipe`), never seen in training, so they look
like unshifted traffic; for the signals nothing was fitted on (length, embedding) a sample of the
training rows joins them (up to ``MAX_REFERENCE`` rows in all), for more power. **Recent traffic** is the task's last ``window`` served requests from the
request log. Four signals, each a two-sample permutation test (the pooled rows shuffled between the
two groups, ``PERMUTATIONS`` times), so no distributional assumption is needed:

- ``labels`` (tasks with a label set): the predicted-label distribution, against the serving
  version's own predictions on the reference inputs (not the true labels: a model's systematic
  confusions are not drift); statistic: the population stability index (PSI);
- ``length``: input length in tokens; statistic: the Kolmogorov-Smirnov distance;
- ``unknown_words``: the share of an input's words that never occur in the training rows (a
  byte-fallback tokenizer like Gemma's never emits an unknown *token*, so that rate is always 0 and
  says nothing; new words are what a changed domain brings); statistic: the difference in means;
- ``embedding``: MiniLM sentence embeddings (the model the text metrics use); statistic: the squared
  maximum mean discrepancy with a Gaussian kernel (median-distance bandwidth), the test
  alibi-detect's ``MMDDrift`` runs.

Retraining is due when any signal's p-value is below ``alpha / k`` (Bonferroni over the k signals
tested, so the false alarm rate over all of them stays at most ``alpha``).

Hand-written rather than with ``evidently`` or ``alibi-detect``: the four statistics and their
permutation tests are about sixty lines of numpy, while evidently brings a dataframe and plotting
stack and alibi-detect a TensorFlow or PyTorch extra with its own model loading (and it would embed
with a model it downloads, which adaptlab never does).
"""

from __future__ import annotations

import dataclasses
import math
import re
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from adaptlab.utils import cli_setting

PERMUTATIONS = 500
ALPHA = 0.05
MAX_REFERENCE = 400  # reference rows used at most (a seeded sample)
MIN_RECENT = 30  # fewer recent requests than this: no verdict
PSI_BINS_EPS = 1e-4
WORD = re.compile(r"[^\W\d_]+", re.UNICODE)


# ------------------------------------------------------------------ statistics
def psi(a: np.ndarray, b: np.ndarray, k: int) -> float:
    """Population stability index of the shares of categories ``0..k-1``, ``b`` (recent) against ``a``."""
    pa = np.bincount(a, minlength=k) / max(1, len(a)) + PSI_BINS_EPS
    pb = np.bincount(b, minlength=k) / max(1, len(b)) + PSI_BINS_EPS
    return float(np.sum((pb - pa) * np.log(pb / pa)))


def ks(a: np.ndarray, b: np.ndarray) -> float:
    grid = np.sort(np.concatenate([a, b]))
    ca = np.searchsorted(np.sort(a), grid, side="right") / len(a)
    cb = np.searchsorted(np.sort(b), grid, side="right") / len(b)
    return float(np.max(np.abs(ca - cb)))


def mean_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(abs(np.mean(b) - np.mean(a)))


def mmd2(k: np.ndarray, n_a: int) -> float:
    """Biased squared MMD from the pooled kernel matrix, the first ``n_a`` rows being sample a."""
    kaa, kbb, kab = k[:n_a, :n_a], k[n_a:, n_a:], k[:n_a, n_a:]
    return float(kaa.mean() + kbb.mean() - 2 * kab.mean())


def permutation_p(stat, a, b, rng: np.random.Generator, n: int = PERMUTATIONS) -> tuple[float, float]:
    """(observed statistic, p-value) of ``stat(a, b)`` against the pooled rows reshuffled."""
    observed = stat(a, b)
    pooled = np.concatenate([a, b])
    hits = 0
    for _ in range(n):
        idx = rng.permutation(len(pooled))
        hits += stat(pooled[idx[: len(a)]], pooled[idx[len(a) :]]) >= observed - 1e-12
    return observed, (hits + 1) / (n + 1)


def mmd_permutation(ea: np.ndarray, eb: np.ndarray, rng, n: int = PERMUTATIONS) -> tuple[float, float]:
    """Squared MMD of two embedding samples and its permutation p-value (the kernel matrix once)."""
    x = np.concatenate([ea, eb]).astype(np.float64)
    sq = np.sum(x * x, 1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0)
    bandwidth = np.median(d2[np.triu_indices(len(x), 1)]) or 1.0
    k = np.exp(-d2 / bandwidth)
    observed = mmd2(k, len(ea))
    hits = 0
    for _ in range(n):
        idx = rng.permutation(len(x))
        hits += mmd2(k[np.ix_(idx, idx)], len(ea)) >= observed - 1e-12
    return observed, (hits + 1) / (n + 1)


def unknown_word_share(text: str, vocabulary: set[str]) -> float:
    words = [w.lower() for w in WORD.findall(text)]
    return sum(w not in vocabulary for w in words) / len(words) if words else 0.0


# ------------------------------------------------------------------ the report
@dataclass
class Signal:
    name: str
    statistic: str
    value: float
    p: float
    reference: float | None = None  # the signal's summary on the reference rows (a mean or a share)
    recent: float | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class DriftReport:
    task: str
    version: str
    reference_rows: int  # held-out rows (every signal)
    recent_rows: int
    alpha: float = ALPHA
    signals: list[Signal] = field(default_factory=list)
    note: str | None = None
    train_rows: int = 0  # training rows added for length and embedding

    @property
    def threshold(self) -> float:
        return self.alpha / max(1, len(self.signals))

    @property
    def drifted(self) -> list[Signal]:
        return [s for s in self.signals if s.p < self.threshold]

    @property
    def retrain(self) -> bool:
        return bool(self.drifted)

    def reason(self) -> str:
        if self.note:
            return self.note
        if not self.drifted:
            return (
                f"no drift: no signal's p-value is below {self.threshold:.4f} (alpha {self.alpha} over "
                f"{len(self.signals)} signals) on {self.recent_rows} recent requests"
            )
        parts = [
            f"{s.name} ({s.statistic} {s.value:.3f}, p = {s.p:.4f}"
            + (f"; {s.reference:.3f} on the reference, {s.recent:.3f} recently" if s.reference is not None else "")
            + ")"
            for s in self.drifted
        ]
        return "retraining is due: recent traffic differs from the data it was judged on in " + "; ".join(parts)

    def to_dict(self) -> dict:
        return {
            "task": self.task,
            "version": self.version,
            "reference_rows": self.reference_rows,
            "train_rows": self.train_rows,
            "recent_rows": self.recent_rows,
            "alpha": self.alpha,
            "threshold": self.threshold,
            "retrain": self.retrain,
            "reason": self.reason(),
            "signals": [s.to_dict() for s in self.signals],
        }

    def prometheus(self) -> str:
        """The report as Prometheus gauges (text exposition format), for a textfile collector."""
        t = self.task.replace("\\", "\\\\").replace('"', '\\"')
        lines = [
            "# HELP adaptlab_drift_retrain_due 1 when a drift signal is significant for the task",
            "# TYPE adaptlab_drift_retrain_due gauge",
            f'adaptlab_drift_retrain_due{{task="{t}"}} {int(self.retrain)}',
            "# HELP adaptlab_drift_statistic A drift signal's statistic (PSI, KS distance, mean difference, MMD^2)",
            "# TYPE adaptlab_drift_statistic gauge",
        ]
        lines += [f'adaptlab_drift_statistic{{task="{t}",signal="{s.name}"}} {s.value:.6g}' for s in self.signals]
        lines += [
            "# HELP adaptlab_drift_p_value A drift signal's permutation p-value",
            "# TYPE adaptlab_drift_p_value gauge",
        ]
        lines += [f'adaptlab_drift_p_value{{task="{t}",signal="{s.name}"}} {s.p:.6g}' for s in self.signals]
        lines += [
            "# HELP adaptlab_drift_recent_rows Recent requests the signals were computed on",
            "# TYPE adaptlab_drift_recent_rows gauge",
            f'adaptlab_drift_recent_rows{{task="{t}"}} {self.recent_rows}',
        ]
        return "\n".join(lines) + "\n"


def compare_traffic(
    task: str,
    version: str,
    ref_inputs: list[str],
    recent_inputs: list[str],
    vocabulary: set[str],
    count_tokens,
    embed=None,
    ref_labels: list[str] | None = None,
    recent_labels: list[str] | None = None,
    seed: int = 0,
    alpha: float = ALPHA,
    permutations: int = PERMUTATIONS,
    train_inputs: list[str] | None = None,
) -> DriftReport:
    """The drift signals of ``recent_inputs`` (and their predicted labels) against the reference:
    ``ref_inputs`` (held-out rows) for every signal; ``train_inputs`` join them for the signals no
    model or vocabulary is fitted on (length, embedding), for more power."""
    rng = np.random.default_rng(seed)
    rep = DriftReport(task, version, len(ref_inputs), len(recent_inputs), alpha, train_rows=len(train_inputs or []))
    if len(recent_inputs) < MIN_RECENT or len(ref_inputs) < MIN_RECENT:
        rep.note = (
            f"not enough rows for a verdict: {len(recent_inputs)} recent requests and {len(ref_inputs)} "
            f"reference rows (at least {MIN_RECENT} of each)"
        )
        return rep
    if ref_labels is not None and recent_labels is not None:
        cats = sorted(set(ref_labels) | set(recent_labels))
        code = {c: i for i, c in enumerate(cats)}
        ia, ib = np.array([code[x] for x in ref_labels]), np.array([code[x] for x in recent_labels])
        v, p = permutation_p(lambda x, y: psi(x, y, len(cats)), ia, ib, rng, permutations)
        moved = np.abs(np.bincount(ib, minlength=len(cats)) / len(ib) - np.bincount(ia, minlength=len(cats)) / len(ia))
        top = int(np.argmax(moved))  # the label whose share moved most
        rep.signals.append(
            Signal(
                "labels", f"PSI (most moved: {cats[top]})", v, p, float(np.mean(ia == top)), float(np.mean(ib == top))
            )
        )
    pool = list(ref_inputs) + list(train_inputs or [])
    la = np.array([count_tokens(t) for t in pool], float)
    lb = np.array([count_tokens(t) for t in recent_inputs], float)
    v, p = permutation_p(ks, la, lb, rng, permutations)
    rep.signals.append(Signal("length", "KS distance", v, p, float(la.mean()), float(lb.mean())))
    ua = np.array([unknown_word_share(t, vocabulary) for t in ref_inputs])
    ub = np.array([unknown_word_share(t, vocabulary) for t in recent_inputs])
    v, p = permutation_p(mean_diff, ua, ub, rng, permutations)
    rep.signals.append(Signal("unknown_words", "mean difference", v, p, float(ua.mean()), float(ub.mean())))
    if embed is not None:
        ea, eb = embed(pool), embed(recent_inputs)
        v, p = mmd_permutation(np.asarray(ea), np.asarray(eb), rng, permutations)
        rep.signals.append(Signal("embedding", "MMD^2", v, p))
    return rep


def vocabulary_of(texts: list[str]) -> set[str]:
    return {w.lower() for t in texts for w in WORD.findall(t)}


def _plain(text: str, conversation: bool) -> str:
    """What a drift signal reads of an input: a conversation's user turns, else the text."""
    if not conversation:
        return text
    import json

    try:
        return "\n".join(m["content"] for m in json.loads(text) if m.get("role") == "user")
    except (ValueError, TypeError, KeyError):
        return text


@dataclass
class DriftConfig:
    """What a drift check compares and how strictly; the fields marked with ``cli_setting`` are
    ``adaptlab drift``'s options (and the server's gauges use the same defaults)."""

    window: int = cli_setting(500, "The last N logged requests are the recent traffic.")
    alpha: float = cli_setting(ALPHA, "False alarm rate over all signals together (Bonferroni).")
    embed: bool = cli_setting(True, "Also compare MiniLM embeddings of the inputs (MMD).")
    permutations: int = PERMUTATIONS  # shuffles per permutation test

    def __post_init__(self):
        if self.window < 1:
            raise ValueError(f"--window {self.window}: must be >= 1")
        if not 0 < self.alpha < 1:
            raise ValueError(f"--alpha {self.alpha}: must be in (0, 1)")
        if self.permutations < 1:
            raise ValueError(f"permutations={self.permutations}: must be >= 1")


def drift_for_task(
    registry,
    task: str,
    config: DriftConfig | None = None,
    *,
    base=None,
    seed: int = 0,
    data_dir=None,
    **settings,
) -> DriftReport:
    """The drift report of ``task``'s serving version (``prod``, else its latest) on its last
    ``config.window`` requests (``settings``: DriftConfig fields, replacing ``config``'s). ``base``:
    the loaded base model, or a list of them (a server's) to pick the version's from; None loads it."""
    cfg = DriftConfig(**{**(dataclasses.asdict(config) if config else {}), **settings})
    from adaptlab.data.named import splits_of_recipe
    from adaptlab.evaluation.text_metrics import minilm
    from adaptlab.maintenance.improve import recipe_of
    from adaptlab.models.base import load_base
    from adaptlab.strategies.base import Artifact, read_artifact_meta
    from adaptlab.tasks.base import get_task

    entry = registry.resolve(task)
    meta = read_artifact_meta(entry.path)
    spec = get_task(meta["task"])
    splits, train = splits_of_recipe(recipe_of(meta, entry.ref), data_dir)
    held = list(splits.dev.examples) + list(splits.test.examples)
    rng = np.random.default_rng(seed)
    if len(held) > MAX_REFERENCE:
        held = [held[i] for i in sorted(rng.choice(len(held), MAX_REFERENCE, replace=False))]
    recent = registry.requests.recent(task, cfg.window)
    conv = spec.conversation
    ref_inputs = [_plain(ex.text, conv) for ex in held]
    recent_inputs = [_plain(r["input"], conv) for r in recent]
    vocabulary = vocabulary_of([_plain(ex.text, conv) for ex in train.examples])
    # Training inputs add power to the signals that fit nothing on them (length, embedding), up to
    # MAX_REFERENCE rows in all; the predicted labels and unknown words need rows never trained on.
    room = max(0, MAX_REFERENCE - len(held))
    extra = train.examples
    if len(extra) > room:
        extra = [extra[i] for i in sorted(rng.choice(len(extra), room, replace=False))]
    train_inputs = [_plain(ex.text, conv) for ex in extra]
    if isinstance(base, (list, tuple)):
        base = next((b for b in base if b.fingerprint == meta["base_model"]["fingerprint"]), None)
    if base is None:
        base = load_base(meta["base_model"]["name"])
    tok = base.tokenizer

    def count(text: str) -> int:
        return len(tok(text, add_special_tokens=False)["input_ids"])

    ref_labels = recent_labels = None
    if spec.closed_labels and recent and len(held) >= MIN_RECENT:
        art = Artifact.load(entry.path, base)
        ref_labels = art.predict([ex.text for ex in held])
        recent_labels = [r["output"] for r in recent]
    embedder = (lambda texts: minilm().embed(texts).numpy()) if cfg.embed else None
    return compare_traffic(
        task,
        entry.ref,
        ref_inputs,
        recent_inputs,
        vocabulary,
        count,
        embedder,
        ref_labels,
        recent_labels,
        seed=seed,
        alpha=cfg.alpha,
        permutations=cfg.permutations,
        train_inputs=train_inputs,
    )


def false_alarm_rate(reports: list[DriftReport]) -> float:
    return sum(r.retrain for r in reports) / len(reports) if reports else math.nan


class DriftWatch:
    """Drift gauges for every task with logged requests, recomputed from a server's own request log
    at most every ``interval`` seconds, when ``/metrics`` is read (in a worker thread: the scrape
    answers with the last values meanwhile). ``service`` is a :class:`adaptlab.serving.Service`
    (its ``registry`` and ``bases``); register ``watch.text`` with ``Metrics.add_source``."""

    def __init__(self, service, interval: float, window: int = DriftConfig.window):
        self.service, self.interval, self.window = service, interval, window
        self.reports: dict[str, str] = {}
        self.errors: dict[str, str] = {}
        self.last = 0.0
        self._busy = False

    def text(self) -> str:
        if not self._busy and time.time() - self.last >= self.interval and self.service.registry is not None:
            self._busy = True
            threading.Thread(target=self.refresh, daemon=True).start()
        return "".join(self.reports.values())

    def refresh(self) -> None:
        try:
            reg = self.service.registry
            for task in reg.requests.tasks():
                try:
                    rep = drift_for_task(reg, task, window=self.window, base=self.service.bases)
                    self.reports[task] = rep.prometheus()
                    self.errors.pop(task, None)
                except Exception as e:  # a task without a recipe, or without data at hand: no gauges for it
                    self.errors[task] = str(e)
        finally:
            self.last, self._busy = time.time(), False
