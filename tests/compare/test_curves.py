"""Learning-curve fits: bounds that hold the truth, flat where nothing is learned, measured wins."""

import numpy as np

from adaptlab.compare.curves import calibrate, fit_all, fit_curve

from .synthetic import rec


def _draw(q, n=400, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random(n) < q).astype(int).tolist()


def _truth(n):
    return 0.92 - 0.9 * n**-0.5


def test_zero_shot_is_flat_and_a_measured_target_is_not_extrapolated():
    fits = fit_all(
        [
            rec("zero_shot", 0, 0.5, right=_draw(0.5)),
            rec("lora", 16, 0.6, right=_draw(0.6)),
            rec("lora", 256, 0.8, right=_draw(0.8, seed=1)),
        ],
        256,
        "accuracy",
    )
    z, lo = fits["zero_shot"], fits["lora"]
    assert z.measured_at_target and z.lo <= z.point <= z.hi and z.hi - z.lo < 0.15
    assert lo.measured_at_target and not lo.extrapolated and lo.lo <= lo.point <= lo.hi


def test_a_measurement_near_the_top_of_the_scale_keeps_its_interval_inside_the_scale():
    # The demo's hybrid, 118 of 120 right at 360, one seed: a seed's noise on top of the resampled
    # rows once gave "interval 0.937-1.025" for an accuracy.
    right = [1] * 118 + [0] * 2
    f = fit_curve(
        "hybrid",
        {16: [rec("hybrid", 16, 0.6, right=_draw(0.6, n=120))], 360: [rec("hybrid", 360, 118 / 120, right=right)]},
        360,
        "accuracy",
    )
    assert f.measured_at_target and f.hi <= 1.0 and f.lo < f.point <= f.hi
    assert f.hi > f.point  # still an interval, not the point


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
    by = {
        n: [rec("lora", n, float(np.mean(d)), right=d)]
        for n, d in (
            (16, _draw(_truth(16), seed=2)),
            (64, _draw(_truth(64), seed=3)),
            (256, _draw(_truth(256), seed=4)),
        )
    }
    f = fit_curve("lora", by, 1000, "accuracy", plot_sizes=[16, 256, 1000])
    # The 256-example draw came out 5 points under the truth (0.8125 vs 0.864): the central fit is
    # pulled down with it, and the band, which carries row and seed noise and every exponent the
    # noise allows, still holds the truth.
    assert f.lo <= _truth(1000) <= f.hi and f.lo <= f.point <= f.hi
    assert f.band["n"] == [16, 256, 1000] and all(lo <= hi for lo, hi in zip(f.band["lo"], f.band["hi"]))
    # Deterministic: the same records give the same bounds (a resumed race decides the same).
    again = fit_curve("lora", by, 1000, "accuracy", plot_sizes=[16, 256, 1000])
    assert (again.lo, again.hi) == (f.lo, f.hi)


def test_a_rise_the_curve_could_not_see_widens_that_kinds_extrapolations():
    # LoRA flat from 16 to 256, then a jump at 1000 that its own two-point band did not allow.
    lora = {
        16: [rec("lora", 16, 0.33, right=_draw(0.33))],
        256: [rec("lora", 256, 0.40, right=_draw(0.40, seed=1))],
        1000: [rec("lora", 1000, 0.72, right=_draw(0.72, seed=2))],
    }
    full = {
        16: [rec("full", 16, 0.31, right=_draw(0.31, seed=3))],
        256: [rec("full", 256, 0.44, right=_draw(0.44, seed=4))],
    }
    few = {
        16: [rec("few_shot", 16, 0.13, right=_draw(0.13, seed=5))],
        256: [rec("few_shot", 256, 0.12, right=_draw(0.12, seed=6))],
    }
    records = [r for by in (lora, full, few) for rs in by.values() for r in rs]
    cal = calibrate({"lora": lora, "full": full, "few_shot": few}, 1000, "accuracy")
    assert set(cal) == {"gradient"} and cal["gradient"].strategy == "lora" and cal["gradient"].sizes == (256, 1000)
    q0, q1 = cal["gradient"].quality
    assert abs((1 - q0) * (256 / 1000) ** cal["gradient"].rate - (1 - q1)) < 1e-9  # the rate reproduces the rise
    plain = fit_all(records, 1000, "accuracy", calibrated=False)
    fits = fit_all(records, 1000, "accuracy")
    # Full's truth at 1000 on Banking77 was 0.714: outside the power law's band, inside the calibrated one.
    assert plain["full"].hi < 0.714 <= fits["full"].hi and fits["full"].calibration == cal["gradient"]
    assert fits["full"].lo == plain["full"].lo and fits["full"].point == plain["full"].point  # only widened
    # A prompt strategy is not widened by a trained one's jump; a measured point is not widened at all.
    assert fits["few_shot"].hi == plain["few_shot"].hi and fits["few_shot"].calibration is None
    assert (fits["lora"].lo, fits["lora"].hi) == (plain["lora"].lo, plain["lora"].hi)
    # A rise the band allowed calibrates nothing.
    steady = {n: [rec("lora", n, _truth(n), right=_draw(_truth(n), seed=n))] for n in (16, 256, 1000)}
    assert calibrate({"lora": steady}, 1000, "accuracy") == {}


def test_records_without_rows_get_noise_from_their_test_size_and_points_keep_their_draws():
    # Older records kept no per-row metrics: the bands still carry the test rows' and the seed's noise.
    old = {
        16: [{**rec("lora", 16, 0.6), "eval": {**rec("lora", 16, 0.6)["eval"], "test_examples": 400}}],
        256: [{**rec("lora", 256, 0.8), "eval": {**rec("lora", 256, 0.8)["eval"], "test_examples": 400}}],
    }
    f = fit_curve("lora", old, 1000, "accuracy")
    assert f.hi - f.lo > 0.05 and len(f.samples["draw"]) > 1
    # Measuring another size does not change the draws of a measured one (a resumed race decides the same).
    one = {1000: [rec("lora", 1000, 0.8, right=_draw(0.8))]}
    two = {**one, 256: [rec("lora", 256, 0.7, right=_draw(0.7, seed=1))]}
    assert np.array_equal(
        fit_curve("lora", one, 1000, "accuracy").samples["hi"], fit_curve("lora", two, 1000, "accuracy").samples["hi"]
    )


def _capped(r, cap):
    r["train"]["reads_rows_at_most"] = cap
    return r


def test_a_strategy_that_reads_a_fixed_number_of_rows_is_flat_past_them_not_extrapolated():
    # few-shot reads 8 rows (4 exemplars and 4 reserve) from any train set: measured at 64, its
    # quality at 1000 is another draw of the same distribution, not a learning curve to extrapolate.
    flat = fit_curve("few_shot", {64: [_capped(rec("few_shot", 64, 0.6, right=_draw(0.6)), 8)]}, 1000, "accuracy")
    open_ = fit_curve("few_shot", {64: [rec("few_shot", 64, 0.6, right=_draw(0.6))]}, 1000, "accuracy")
    assert flat.flat_past == 8 and not flat.extrapolated and not flat.measured_at_target
    assert abs(flat.point - 0.6) < 1e-9 and flat.lo < 0.6 < flat.hi
    # the band is the measurement's with the seed noise of another draw (7.5 points): about +-16
    assert flat.hi < 0.8 and open_.hi > 0.95
    m = float(np.median(flat.samples["mid"]))  # symmetric about its draws: no gain assumed either way
    assert abs((flat.hi - m) - (m - flat.lo)) < 0.03 and abs(flat.samples["hi"] - flat.samples["lo"]).max() == 0
    # measured below its row count, or with a target below it, it is a curve as before
    small = fit_curve("few_shot", {4: [_capped(rec("few_shot", 4, 0.6, right=_draw(0.6)), 8)]}, 1000, "accuracy")
    assert small.flat_past is None and small.extrapolated and small.hi > 0.95


def test_prompt_strategies_declare_the_rows_they_read():
    from adaptlab.strategies.few_shot.config import FewShotConfig
    from adaptlab.strategies.few_shot.strategy import FewShotStrategy
    from adaptlab.strategies.lora.strategy import LoraStrategy
    from adaptlab.strategies.prompt_search.config import PromptSearchConfig
    from adaptlab.strategies.prompt_search.strategy import PromptSearchStrategy

    assert FewShotStrategy.reads_rows_at_most(FewShotConfig(k=4)) == 8
    assert FewShotStrategy.reads_rows_at_most(FewShotConfig(k=4, selection="nearest", pool_size=300)) == 300
    assert LoraStrategy.reads_rows_at_most(None) is None
    # prompt search: 3 balanced sets of 4, 4 reserve, 64 bootstrapped: flat from 256, not from 64
    assert PromptSearchStrategy.reads_rows_at_most(PromptSearchConfig()) == 80
    assert PromptSearchStrategy.reads_rows_at_most(PromptSearchConfig(k=0)) == 1
