"""Learning curves with uncertainty: each strategy's quality predicted at the train size the user has.

Model: a saturating power law ``q(n) = a - b * n**-c`` (b >= 0: more data does not hurt), the form
learning curves take in the literature (Hestness et al. 2017; Kaplan et al. 2020) and in our own
grids. Uncertainty comes from two places, both kept:

- **the measurements**: every run stores its per-row test metrics, so each bootstrap replicate
  resamples the test rows (and draws one seed per size when there are several) and refits;
- **the model**: through two points every exponent c fits exactly, so the prediction is a range
  over ``c`` in [C_MIN, C_MAX]: small c keeps climbing (near log-linear), large c has levelled off.
  With one point the pessimistic curve is flat (no gain) and the optimistic one shrinks the error
  ``1 - q`` as fast as C_OPTIMISTIC_ONE_POINT allows; the band is wide, as it should be.
  With three or more, each replicate picks its least-squares c.

A strategy measured at the target size is not extrapolated: its band is the bootstrap interval of
the measurement. A strategy that uses no train data (zero-shot) is flat, and so is one that declares
it reads at most a fixed number of train rows drawn at random (few-shot's exemplars:
:meth:`adaptlab.strategies.base.Strategy.reads_rows_at_most`) once it is measured at a size at least
that large: any larger train set gives the same distribution of quality, so its band at the target is
its measurement's, with the seed noise of another draw, not a learning curve's.

**Calibrated on the data itself.** A power law through small sizes cannot bend upwards, and real
curves do: on Banking77 (77 intents) every fine-tuning strategy sat near 0.30-0.45 up to 256
examples (about 3 per intent) and jumped to 0.71 at 1000, far above the flattest exponent's
extrapolation. So the model is checked on every strategy measured at the target and at smaller
sizes: when the measurement beats the optimistic bound its smaller sizes gave, the rate at which its
error ``1 - q`` shrank from its largest smaller size to the target (the exponent ``c`` with
``e_target = e_n * (target / n)**-c``) is the **calibration**: the fastest improvement seen on this
data. Every extrapolated strategy of the same kind (trained, or prompt only) has an optimistic
curve at least its largest measured point improving at that rate (:func:`calibrate`; checked by replaying the race on the committed full grids,
``bench/race_replay.py``). It only widens optimistic bounds, never narrows one.

Why by hand: scipy's curve_fit gives one fit and a covariance that means little at 2-4 points; the
paired row bootstrap is what makes the bands comparable between strategies scored on the same rows.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field

import numpy as np

from adaptlab.compare.record import RunRecord, records_of
from adaptlab.compare.stats import CONFIDENCE, RowTable, Statistic, shared_keys

C_MIN, C_MAX = 0.15, 1.5
C_GRID = np.linspace(C_MIN, C_MAX, 14)
C_OPTIMISTIC_ONE_POINT = 1.0  # error 1 - q shrinks at most like n**-1 from a single point
REPLICATES = 300
Q_MAX = 1.0
# Run-to-run noise a single seed cannot show (another train subset and initialisation, other
# exemplars): each replicate adds N(0, sd^2) to a one-seed point. The sd by kind is the RMS of the
# two-seed sample std over the cells of the committed grids, averaged over SST-2 and Banking77:
# gradient strategies 2.5 and 1.4 points -> 2.0; prompt strategies 10.9 and 4.2 -> 7.5 (which
# exemplars a few-shot prompt gets moves SST-2 by up to 12 points). Strategies with several seeds
# per size draw a seed per replicate instead; zero-shot has no seed.
SEED_NOISE = {"gradient": 0.02, "prompt": 0.075}


@dataclass(frozen=True)
class Calibration:
    """The fastest improvement measured on this data by a strategy of one ``kind`` ("gradient":
    weights trained; "prompt": prompts only): ``strategy``'s error shrank like ``n**-rate`` from
    ``sizes[0]`` to ``sizes[1]`` (the target) examples."""

    rate: float
    strategy: str
    sizes: tuple[int, int]
    quality: tuple[float, float]
    kind: str = "gradient"

    def to_dict(self) -> dict:
        return {
            "rate": self.rate,
            "strategy": self.strategy,
            "kind": self.kind,
            "sizes": list(self.sizes),
            "quality": list(self.quality),
        }


@dataclass
class CurveFit:
    strategy: str
    target: int
    sizes: list[int]  # measured train sizes (0: uses no train data)
    quality: list[float]  # measured quality at each size (mean over seeds)
    point: float  # predicted (or measured) quality at the target
    lo: float  # pessimistic bound at ``confidence``
    hi: float  # optimistic bound
    measured_at_target: bool
    confidence: float = CONFIDENCE
    band: dict = field(default_factory=dict)  # {"n": [...], "lo": [...], "mid": [...], "hi": [...]} for plots
    # The bootstrap replicates at the target ("lo", "hi", "mid": one value per replicate). Replicate i
    # of every strategy resamples the same test rows, so two strategies' replicates can be subtracted
    # (paired); the race compares strategies that way.
    samples: dict = field(default_factory=dict, repr=False)
    calibration: Calibration | None = None  # the rate this fit's optimistic bound was widened to, if any
    kind: str = "gradient"  # "gradient" (weights trained) or "prompt"
    # Reads at most this many train rows, whatever the size, and was measured at a size at least that
    # large: predicted flat (another draw of the same distribution), not extrapolated.
    flat_past: int | None = None

    @property
    def extrapolated(self) -> bool:
        return not self.measured_at_target and self.flat_past is None and bool(self.sizes) and max(self.sizes) > 0

    def to_dict(self) -> dict:
        return {
            "strategy": self.strategy,
            "target": self.target,
            "sizes": self.sizes,
            "quality": self.quality,
            "point": self.point,
            "lo": self.lo,
            "hi": self.hi,
            "measured_at_target": self.measured_at_target,
            "extrapolated": self.extrapolated,
            "confidence": self.confidence,
            "band": self.band,
            "calibration": self.calibration.to_dict() if self.calibration else None,
            "kind": self.kind,
            "flat_past": self.flat_past,
        }


def _fit_c(ns: np.ndarray, qs: np.ndarray, c: float) -> tuple[float, float]:
    """Least-squares (a, b) of q = a - b n^-c with b >= 0 (a flat line at the mean when b < 0)."""
    x = ns**-c
    if len(ns) == 1 or np.ptp(x) == 0:
        return float(qs.mean()), 0.0
    b = -float(np.polyfit(x, qs, 1)[0])
    if b <= 0:
        return float(qs.mean()), 0.0
    a = float(qs.mean() + b * x.mean())
    return a, b


def _grown(n1: float, q1: float, c: float):
    """The curve through ``(n1, q1)`` whose error ``1 - q`` shrinks like ``n**-c`` past ``n1``."""
    return lambda at: Q_MAX - (Q_MAX - q1) * np.clip(n1 / np.maximum(at, n1), 0, 1) ** c


def _predictors(ns: np.ndarray, qs: np.ndarray, sigma: float = 0.0, u: float = 0.5, rate: float | None = None) -> dict:
    """The curves through the points ``(ns, qs)``, as functions of the sizes to predict at: "lo"
    (pessimistic), "hi" (optimistic), "mid", and "draw": one curve drawn from the plausible ones
    (``u`` in [0, 1) picks the exponent: uniform over [0, C_OPTIMISTIC_ONE_POINT] from one point, over
    [C_MIN, C_MAX] from two, over the plausible exponents from three or more), for the probability
    that a strategy is the best. The fits are made once, whatever is predicted from them.

    Three or more points: every exponent whose fit is within the noise of the best one (squared
    residuals no more than ``2 * max(1, m - 2) * sigma**2`` above the least) stays plausible, and the
    bounds are the lowest and highest of their predictions; three noisy points rarely pin c down.

    ``rate`` (the calibration): "hi" is at least the largest point improving at that rate, and "draw"
    at least the largest point improving at ``u`` times it."""

    def curve(a, b, c):
        return lambda at: np.clip(a - b * at**-c, 0.0, Q_MAX)

    def at_least(f, g):
        return lambda at: np.maximum(f(at), g(at))

    n_last, q_last = float(ns[-1]), float(qs[-1])
    if len(ns) == 1:

        def flat(at):  # pessimistic and central: no gain is all that one point shows
            return np.full(len(at), q_last)

        c_hi = max(C_OPTIMISTIC_ONE_POINT, rate or 0.0)
        return {"lo": flat, "mid": flat, "hi": _grown(n_last, q_last, c_hi), "draw": _grown(n_last, q_last, c_hi * u)}
    if len(ns) == 2:
        cs = {"lo": C_MAX, "hi": C_MIN, "mid": float(np.sqrt(C_MIN * C_MAX)), "draw": C_MIN + u * (C_MAX - C_MIN)}
        out = {w: curve(*_fit_c(ns, qs, c), c) for w, c in cs.items()}
    else:
        fits = []
        for c in C_GRID:
            a, b = _fit_c(ns, qs, c)
            fits.append((float(np.sum((qs - (a - b * ns**-c)) ** 2)), a, b, c))
        least = min(f[0] for f in fits)
        slack = 2 * max(1, len(ns) - 2) * sigma**2
        plausible = [curve(a, b, c) for sse, a, b, c in fits if sse <= least + slack + 1e-12]
        best = min(fits, key=lambda f: f[0])
        out = {
            "mid": curve(*best[1:]),
            "draw": plausible[min(int(u * len(plausible)), len(plausible) - 1)],
            "lo": lambda at: np.min([f(at) for f in plausible], axis=0),
            "hi": lambda at: np.max([f(at) for f in plausible], axis=0),
        }
    if rate:
        out["hi"] = at_least(out["hi"], _grown(n_last, q_last, rate))
        out["draw"] = at_least(out["draw"], _grown(n_last, q_last, rate * u))
    return out


def calibrate(
    by: dict[str, dict[int, list]],
    target: int,
    metric: str,
    *,
    labels: list[str] | None = None,
    confidence: float = CONFIDENCE,
) -> dict[str, Calibration]:
    """The fastest improvement measured on this data, per kind of strategy, where the curve model
    proved too narrow for it.

    For every strategy measured at ``target`` and at smaller sizes: its curve fitted to the smaller
    sizes alone predicts the target with an optimistic bound; only when the measurement beat that
    bound (the model missed a rise, as on Banking77) does the strategy count, with the exponent at
    which its error shrank from its largest smaller size to the target (measured means). The fastest
    such of each kind; a kind is absent where the model held for every strategy it could be checked
    on. Per kind because a trained strategy's jump says nothing about a prompt's: few-shot's k
    exemplars and prompt search's fixed call budget do not learn from more data the way weights do."""
    by = {s: {n: records_of(rs) for n, rs in sizes.items()} for s, sizes in by.items()}
    best: dict[str, Calibration] = {}
    for s, sizes in sorted(by.items()):
        below = {n: recs for n, recs in sizes.items() if 0 < n < target}
        if target not in sizes or not below:
            continue
        n0 = max(below)
        q0, q1 = _quality(sizes[n0], metric), _quality(sizes[target], metric)
        if q1 <= q0 or q0 >= Q_MAX:
            continue
        if q1 <= fit_curve(s, below, target, metric, labels=labels, confidence=confidence).hi:
            continue  # the model's own band held this strategy's rise: nothing to widen
        rate = math.log((Q_MAX - q0) / max(Q_MAX - q1, 1e-6)) / math.log(target / n0)
        kind = _kind(sizes)
        if kind not in best or rate > best[kind].rate:
            best[kind] = Calibration(float(rate), s, (n0, target), (q0, q1), kind)
    return best


def _kind(by_size: dict[int, list[RunRecord]]) -> str:
    return next(iter(by_size.values()))[0].kind if by_size else "gradient"


def fit_curve(
    strategy: str,
    by_size: dict[int, list],
    target: int,
    metric: str,
    *,
    labels: list[str] | None = None,
    confidence: float = CONFIDENCE,
    replicates: int = REPLICATES,
    seed: int = 0,
    plot_sizes: list[int] | None = None,
    calibration: Calibration | None = None,
) -> CurveFit:
    """Fit ``strategy``'s curve from its records per train size and predict its quality at ``target``;
    an extrapolation's optimistic bound is widened to ``calibration``'s rate (:func:`calibrate`)."""
    by_size = {n: records_of(rs) for n, rs in by_size.items()}
    sizes = sorted(by_size)
    kind = "macro_f1" if metric == "macro_f1" else "mean"
    tables = {n: RowTable(by_size[n]) for n in sizes}
    stats: dict[int, Statistic] = {}
    keys: list = []
    if sizes and all(tables[n] for n in sizes):
        keys = tables[sizes[0]].keys
        for n in sizes[1:]:
            common = set(shared_keys(tables[sizes[0]], tables[n]))
            keys = [k for k in keys if k in common]
        if keys:
            stats = {n: Statistic(kind, tables[n].aligned(keys), labels) for n in sizes}
    measured = np.array([_quality(by_size[n], metric) for n in sizes])
    at_target = target in by_size or (sizes == [0])
    flat_past = None if at_target else _flat_past(by_size, target)
    grid = np.array(plot_sizes or [], dtype=float)
    rng_rows = np.random.default_rng(seed)  # the same row draws for every strategy: replicates pair up
    rng = np.random.default_rng([seed, zlib.crc32(strategy.encode())])
    # A point's own noise has its own stream, so its draws do not change when other sizes are measured.
    rng_at = {n: np.random.default_rng([seed, zlib.crc32(strategy.encode()), n]) for n in sizes}
    samples = {"lo": [], "hi": [], "mid": [], "draw": []}
    band = {"lo": [], "hi": [], "mid": []}
    seed_sd = SEED_NOISE.get(_kind(by_size), SEED_NOISE["gradient"])
    sigma = _point_noise(stats, keys, seed_sd)
    spread = None if stats else _parametric_noise(by_size, sizes, measured, metric, seed_sd)
    if spread is not None:
        sigma = float(np.sqrt(np.mean(spread**2)))
    rate = calibration.rate if calibration and not (at_target or flat_past) else None
    for _ in range(replicates if stats or spread is not None else 1):
        qs = _replicate(stats, sizes, keys, measured, spread, seed_sd, rng_rows, rng_at)
        if at_target or flat_past:
            v = qs[sizes.index(target)] if target in by_size else qs[-1]
            for w in samples:
                samples[w].append(v)
            if flat_past and len(grid):
                for w in band:
                    band[w].append(np.full(len(grid), v))
            continue
        curves = _predictors(np.array(sizes, dtype=float), qs, sigma, float(rng.random()), rate)
        for w in samples:
            samples[w].append(float(curves[w](np.array([float(target)]))[0]))
            if len(grid) and w in band:
                band[w].append(curves[w](grid))
    tail = (1 - confidence) / 2
    point = (
        float(measured[sizes.index(target)])
        if target in by_size
        else (
            float(measured[-1])
            if sizes == [0] or flat_past
            else float(_predictors(np.array(sizes, float), measured)["mid"](np.array([float(target)]))[0])
        )
    )
    out = CurveFit(
        strategy,
        target,
        sizes,
        [float(q) for q in measured],
        point,
        float(np.quantile(samples["lo"], tail)),
        float(np.quantile(samples["hi"], 1 - tail)),
        at_target,
        confidence,
        calibration=calibration if rate else None,
        kind=_kind(by_size),
        flat_past=flat_past,
    )
    out.samples = {w: np.array(v) for w, v in samples.items()}
    if len(grid) and band["mid"]:
        out.band = {
            "n": grid.tolist(),
            "lo": np.quantile(np.array(band["lo"]), tail, axis=0).tolist(),
            "mid": np.median(np.array(band["mid"]), axis=0).tolist(),
            "hi": np.quantile(np.array(band["hi"]), 1 - tail, axis=0).tolist(),
        }
    return out


def _replicate(stats, sizes, keys, measured, spread, seed_sd, rng_rows, rng_at) -> np.ndarray:
    """One bootstrap replicate of the quality at each measured size: the test rows resampled (the
    same draw for every strategy, so replicates pair up) plus a seed's noise where one seed ran;
    kept inside the metric's range (the demo's hybrid, 0.983 at 360, plus a seed's noise once read "interval
    0.937-1.025" for an accuracy)."""
    if stats:
        idx = rng_rows.integers(0, len(keys), len(keys))
        qs = np.array(
            [
                stats[n](int(rng_at[n].integers(stats[n].n_seeds)), idx)
                + (rng_at[n].normal(0, seed_sd) if stats[n].n_seeds == 1 and n else 0.0)
                for n in sizes
            ]
        )
    elif spread is not None:  # records without per-row metrics: normal noise of the same size, unpaired
        qs = measured + np.array([rng_at[n].normal() for n in sizes]) * spread
    else:  # nor a test size: the measured means, no measurement noise
        return measured
    return np.clip(qs, 0.0, Q_MAX)


def _flat_past(by_size: dict[int, list[RunRecord]], target: int) -> int | None:
    """The row count past which the strategy is flat, when every run declared one (the same), it was
    measured at a size at least that large, and the target is too; else None."""
    caps = {r.reads_rows_at_most for rs in by_size.values() for r in rs}
    if len(caps) != 1:
        return None
    cap = next(iter(caps))
    if cap is None or target < cap or max(by_size, default=0) < cap:
        return None
    return int(cap)


def _point_noise(stats: dict, keys: list, seed_sd: float) -> float:
    """The noise of one measured point: the test rows' sampling error and the seed noise."""
    if not stats or not keys:
        return 0.0
    n = len(keys)
    st = next(iter(stats.values()))
    # macro-F1: a bound (a proportion's standard error is at most 0.5 / sqrt(n))
    row_se = 0.5 / np.sqrt(n) if st.kind == "macro_f1" else float(np.mean([np.std(v) for v in st.vals])) / np.sqrt(n)
    return float(np.sqrt(row_se**2 + seed_sd**2))


def _parametric_noise(
    by_size: dict, sizes: list[int], measured: np.ndarray, metric: str, seed_sd: float
) -> np.ndarray | None:
    """For records that kept no per-row metrics (older runs): each point's standard error from its
    test size, ``sqrt(q (1 - q) / n)`` (a proportion's; for macro-F1 and generation metrics in [0, 1]
    a bound), with the seed noise for one seed or the seeds' own spread; None without test sizes."""
    out = []
    for n, q in zip(sizes, measured):
        counts = [r.eval.get("test_examples") for r in by_size[n]]
        if not all(counts):
            return None
        row_var = (0.25 if metric == "macro_f1" else q * (1 - q)) / float(np.mean(counts))
        k = len(by_size[n])
        seed_var = (
            0.0
            if not n
            else (seed_sd**2 if k == 1 else float(np.var([_quality([r], metric) for r in by_size[n]], ddof=1)) / k)
        )
        out.append(np.sqrt(row_var / k + seed_var))
    return np.array(out)


def _quality(records: list[RunRecord], metric: str) -> float:
    return float(np.mean([r.ranked_quality(metric) for r in records]))


def fit_all(
    records: list,
    target: int,
    metric: str,
    *,
    confidence: float = CONFIDENCE,
    plot: bool = False,
    calibrated: bool = True,
) -> dict[str, CurveFit]:
    """Every strategy's fit from the grid's records (one per run); ``calibrated``: extrapolations'
    optimistic bounds widened to the fastest improvement measured on this data (:func:`calibrate`)."""
    records = records_of(records)
    by: dict[str, dict[int, list[RunRecord]]] = {}
    for r in records:
        by.setdefault(r.strategy, {}).setdefault(r.train_size, []).append(r)
    labels = None
    if metric == "macro_f1":
        labels = sorted({p["reference"] for r in records for p in r.get("predictions") or []}) or None
    calibration = calibrate(by, target, metric, labels=labels, confidence=confidence) if calibrated else {}
    out = {}
    for s, sizes in sorted(by.items()):
        ns = [n for n in sizes if n]
        grid = None
        if plot and ns:
            lo_n = min(ns)
            grid = sorted(set(np.unique(np.geomspace(lo_n, max(target, lo_n), 24).round().astype(int)).tolist()))
        out[s] = fit_curve(
            s,
            sizes,
            target,
            metric,
            labels=labels,
            confidence=confidence,
            plot_sizes=grid,
            calibration=calibration.get(_kind(sizes)),
        )
    return out
