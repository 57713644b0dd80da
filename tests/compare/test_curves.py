"""Learning-curve fits: bounds that hold the truth, flat where nothing is learned, measured wins."""

import numpy as np

from adaptlab.compare.curves import fit_all, fit_curve

from .synthetic import rec


def _draw(q, n=400, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random(n) < q).astype(int).tolist()


def _truth(n):
    return 0.92 - 0.9 * n ** -0.5


def test_zero_shot_is_flat_and_a_measured_target_is_not_extrapolated():
    fits = fit_all([rec("zero_shot", 0, 0.5, right=_draw(0.5)), rec("lora", 16, 0.6, right=_draw(0.6)),
                    rec("lora", 256, 0.8, right=_draw(0.8, seed=1))], 256, "accuracy")
    z, lo = fits["zero_shot"], fits["lora"]
    assert z.measured_at_target and z.lo <= z.point <= z.hi and z.hi - z.lo < 0.15
    assert lo.measured_at_target and not lo.extrapolated and lo.lo <= lo.point <= lo.hi


def test_one_point_is_pessimistically_flat_and_optimistically_open():
    f = fit_curve("lora", {16: [rec("lora", 16, 0.6)]}, 1000, "accuracy")
    assert f.extrapolated and f.lo == 0.6 and f.point == 0.6 and f.hi > 0.95


def test_two_points_bracket_the_curve_between_levelled_off_and_still_climbing():
    recs = {16: [rec("lora", 16, _truth(16))], 64: [rec("lora", 64, _truth(64))]}
    f = fit_curve("lora", recs, 1000, "accuracy")
    assert f.lo <= _truth(1000) <= f.hi and f.lo >= _truth(64) - 1e-9 and f.hi < 1.0
    # A strategy that did not improve stays where it was: both bounds at its level.
    flat = fit_curve("few", {16: [rec("few_shot", 16, 0.6)], 64: [rec("few_shot", 64, 0.58)]}, 1000, "accuracy")
    assert abs(flat.lo - 0.59) < 1e-9 and abs(flat.hi - 0.59) < 1e-9


def test_three_noisy_points_predict_the_truth_inside_the_band():
    by = {n: [rec("lora", n, float(np.mean(d)), right=d)] for n, d in
          ((16, _draw(_truth(16), seed=2)), (64, _draw(_truth(64), seed=3)), (256, _draw(_truth(256), seed=4)))}
    f = fit_curve("lora", by, 1000, "accuracy", plot_sizes=[16, 256, 1000])
    # The 256-example draw came out 5 points under the truth (0.8125 vs 0.864): the central fit is
    # pulled down with it, and the band, which carries row and seed noise and every exponent the
    # noise allows, still holds the truth.
    assert f.lo <= _truth(1000) <= f.hi and f.lo <= f.point <= f.hi
    assert f.band["n"] == [16, 256, 1000] and all(lo <= hi for lo, hi in zip(f.band["lo"], f.band["hi"]))
    # Deterministic: the same records give the same bounds (a resumed race decides the same).
    again = fit_curve("lora", by, 1000, "accuracy", plot_sizes=[16, 256, 1000])
    assert (again.lo, again.hi) == (f.lo, f.hi)
