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
the measurement. A strategy that uses no train data (zero-shot) is flat.

Why by hand: scipy's curve_fit gives one fit and a covariance that means little at 2-4 points; the
paired row bootstrap is what makes the bands comparable between strategies scored on the same rows.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from adaptlab.compare.stats import CONFIDENCE, RowTable, Statistic, shared_keys

C_MIN, C_MAX = 0.15, 1.5
C_GRID = np.linspace(C_MIN, C_MAX, 14)
C_OPTIMISTIC_ONE_POINT = 1.0   # error 1 - q shrinks at most like n**-1 from a single point
REPLICATES = 300
Q_MAX = 1.0
# Run-to-run noise a single seed cannot show (another train subset and initialisation, other
# exemplars): each replicate adds N(0, sd^2) to a one-seed point. The sd by kind is the RMS of the
# two-seed sample std over the cells of the committed grids, averaged over SST-2 and Banking77:
# gradient strategies 2.5 and 1.4 points -> 2.0; prompt strategies 10.9 and 4.2 -> 7.5 (which
# exemplars a few-shot prompt gets moves SST-2 by up to 12 points). Strategies with several seeds
# per size draw a seed per replicate instead; zero-shot has no seed.
SEED_NOISE = {"gradient": 0.02, "prompt": 0.075}


@dataclass
class CurveFit:
    strategy: str
    target: int
    sizes: list[int]                     # measured train sizes (0: uses no train data)
    quality: list[float]                 # measured quality at each size (mean over seeds)
    point: float                         # predicted (or measured) quality at the target
    lo: float                            # pessimistic bound at ``confidence``
    hi: float                            # optimistic bound
    measured_at_target: bool
    confidence: float = CONFIDENCE
    band: dict = field(default_factory=dict)  # {"n": [...], "lo": [...], "mid": [...], "hi": [...]} for plots
    # The bootstrap replicates at the target ("lo", "hi", "mid": one value per replicate). Replicate i
    # of every strategy resamples the same test rows, so two strategies' replicates can be subtracted
    # (paired); the race compares strategies that way.
    samples: dict = field(default_factory=dict, repr=False)

    @property
    def extrapolated(self) -> bool:
        return not self.measured_at_target and bool(self.sizes) and max(self.sizes) > 0

    def to_dict(self) -> dict:
        return {"strategy": self.strategy, "target": self.target, "sizes": self.sizes, "quality": self.quality,
                "point": self.point, "lo": self.lo, "hi": self.hi, "measured_at_target": self.measured_at_target,
                "extrapolated": self.extrapolated, "confidence": self.confidence, "band": self.band}


def _fit_c(ns: np.ndarray, qs: np.ndarray, c: float) -> tuple[float, float]:
    """Least-squares (a, b) of q = a - b n^-c with b >= 0 (a flat line at the mean when b < 0)."""
    x = ns ** -c
    if len(ns) == 1 or np.ptp(x) == 0:
        return float(qs.mean()), 0.0
    b = -float(np.polyfit(x, qs, 1)[0])
    if b <= 0:
        return float(qs.mean()), 0.0
    a = float(qs.mean() + b * x.mean())
    return a, b


def _predictors(ns: np.ndarray, qs: np.ndarray, sigma: float = 0.0, u: float = 0.5) -> dict:
    """The curves through the points ``(ns, qs)``, as functions of the sizes to predict at: "lo"
    (pessimistic), "hi" (optimistic), "mid", and "draw": one curve drawn from the plausible ones
    (``u`` in [0, 1) picks the exponent: uniform over [0, C_OPTIMISTIC_ONE_POINT] from one point, over
    [C_MIN, C_MAX] from two, over the plausible exponents from three or more), for the probability
    that a strategy is the best. The fits are made once, whatever is predicted from them.

    Three or more points: every exponent whose fit is within the noise of the best one (squared
    residuals no more than ``2 * max(1, m - 2) * sigma**2`` above the least) stays plausible, and the
    bounds are the lowest and highest of their predictions; three noisy points rarely pin c down."""
    def curve(a, b, c):
        return lambda at: np.clip(a - b * at ** -c, 0.0, Q_MAX)

    if len(ns) == 1:
        q1, n1 = float(qs[0]), float(ns[0])

        def grown(c):  # the error 1 - q shrinking like n^-c from the one point
            return lambda at: Q_MAX - (Q_MAX - q1) * np.clip(n1 / np.maximum(at, n1), 0, 1) ** c

        def flat(at):  # pessimistic and central: no gain is all that one point shows
            return np.full(len(at), q1)

        return {"lo": flat, "mid": flat, "hi": grown(C_OPTIMISTIC_ONE_POINT), "draw": grown(C_OPTIMISTIC_ONE_POINT * u)}
    if len(ns) == 2:
        cs = {"lo": C_MAX, "hi": C_MIN, "mid": float(np.sqrt(C_MIN * C_MAX)), "draw": C_MIN + u * (C_MAX - C_MIN)}
        return {w: curve(*_fit_c(ns, qs, c), c) for w, c in cs.items()}
    fits = []
    for c in C_GRID:
        a, b = _fit_c(ns, qs, c)
        fits.append((float(np.sum((qs - (a - b * ns ** -c)) ** 2)), a, b, c))
    least = min(f[0] for f in fits)
    slack = 2 * max(1, len(ns) - 2) * sigma ** 2
    plausible = [curve(a, b, c) for sse, a, b, c in fits if sse <= least + slack + 1e-12]
    best = min(fits, key=lambda f: f[0])
    return {"mid": curve(*best[1:]),
            "draw": plausible[min(int(u * len(plausible)), len(plausible) - 1)],
            "lo": lambda at: np.min([f(at) for f in plausible], axis=0),
            "hi": lambda at: np.max([f(at) for f in plausible], axis=0)}


def fit_curve(strategy: str, by_size: dict[int, list[dict]], target: int, metric: str, *,
              labels: list[str] | None = None, confidence: float = CONFIDENCE, replicates: int = REPLICATES,
              seed: int = 0, plot_sizes: list[int] | None = None) -> CurveFit:
    """Fit ``strategy``'s curve from its records per train size and predict its quality at ``target``."""
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
    grid = np.array(plot_sizes or [], dtype=float)
    rng_rows = np.random.default_rng(seed)  # the same row draws for every strategy: replicates pair up
    rng = np.random.default_rng([seed, zlib.crc32(strategy.encode())])
    samples = {"lo": [], "hi": [], "mid": [], "draw": []}
    band = {"lo": [], "hi": [], "mid": []}
    kind_of = next(iter(by_size.values()))[0]["run"].get("kind", "gradient") if by_size else "gradient"
    seed_sd = SEED_NOISE.get(kind_of, SEED_NOISE["gradient"])
    sigma = _point_noise(stats, keys, seed_sd)
    for _ in range(replicates if stats else 1):
        if stats:
            idx = rng_rows.integers(0, len(keys), len(keys))
            qs = np.array([stats[n](int(rng.integers(stats[n].n_seeds)), idx)
                           + (rng.normal(0, seed_sd) if stats[n].n_seeds == 1 and n else 0.0) for n in sizes])
        else:  # records without per-row metrics: the measured means, no measurement noise
            qs = measured
        if at_target:
            v = qs[sizes.index(target)] if target in by_size else qs[0]
            for w in samples:
                samples[w].append(v)
            continue
        curves = _predictors(np.array(sizes, dtype=float), qs, sigma, float(rng.random()))
        for w in samples:
            samples[w].append(float(curves[w](np.array([float(target)]))[0]))
            if len(grid) and w in band:
                band[w].append(curves[w](grid))
    tail = (1 - confidence) / 2
    point = float(measured[sizes.index(target)]) if target in by_size else (
        float(measured[0]) if sizes == [0] else float(_predictors(np.array(sizes, float), measured)["mid"](
            np.array([float(target)]))[0]))
    out = CurveFit(strategy, target, sizes, [float(q) for q in measured], point,
                   float(np.quantile(samples["lo"], tail)), float(np.quantile(samples["hi"], 1 - tail)),
                   at_target, confidence)
    out.samples = {w: np.array(v) for w, v in samples.items()}
    if len(grid) and band["mid"]:
        out.band = {"n": grid.tolist(), "lo": np.quantile(np.array(band["lo"]), tail, axis=0).tolist(),
                    "mid": np.median(np.array(band["mid"]), axis=0).tolist(),
                    "hi": np.quantile(np.array(band["hi"]), 1 - tail, axis=0).tolist()}
    return out


def _point_noise(stats: dict, keys: list, seed_sd: float) -> float:
    """The noise of one measured point: the test rows' sampling error and the seed noise."""
    if not stats or not keys:
        return 0.0
    n = len(keys)
    st = next(iter(stats.values()))
    if st.kind == "macro_f1":
        row_se = 0.5 / np.sqrt(n)   # a bound: a proportion's standard error is at most 0.5 / sqrt(n)
    else:
        row_se = float(np.mean([np.std(v) for v in st.vals])) / np.sqrt(n)
    return float(np.sqrt(row_se ** 2 + seed_sd ** 2))


def _quality(records: list[dict], metric: str) -> float:
    if metric == "macro_f1":
        return float(np.mean([r["eval"]["test"]["macro_f1"] for r in records]))
    return float(np.mean([r["eval"]["quality"] for r in records]))


def fit_all(records: list[dict], target: int, metric: str, *, confidence: float = CONFIDENCE,
            plot: bool = False) -> dict[str, CurveFit]:
    """Every strategy's fit from the grid's records (one per run)."""
    by: dict[str, dict[int, list[dict]]] = {}
    for r in records:
        by.setdefault(r["run"]["strategy"], {}).setdefault(r["run"]["train_size"], []).append(r)
    labels = None
    if metric == "macro_f1":
        labels = sorted({p["reference"] for r in records for p in r.get("predictions") or []}) or None
    out = {}
    for s, sizes in sorted(by.items()):
        ns = [n for n in sizes if n]
        grid = None
        if plot and ns:
            lo_n = min(ns)
            grid = sorted(set(np.unique(np.geomspace(lo_n, max(target, lo_n), 24).round().astype(int)).tolist()))
        out[s] = fit_curve(s, sizes, target, metric, labels=labels, confidence=confidence, plot_sizes=grid)
    return out
