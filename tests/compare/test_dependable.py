"""Issue 26: the adaptive compare keeps its budget, answers at the user's size, and decides the same on
any machine: simulated runs on the tiny model's plan, with a fake clock at two speeds."""

import json

import pytest

from adaptlab.compare import CompareConfig, run_compare
from adaptlab.compare.costs import FIXED_SECONDS, Estimator, screen_rows
from adaptlab.utils import TimeUp, check_deadline, time_limit

from .test_adaptive import _run

STRATEGIES = ["zero_shot", "few_shot", "soft_prompt", "lora", "full"]


def _cfg(budget, strategies=None):
    return CompareConfig(
        data="demo",
        model="tiny",
        strategies=strategies or STRATEGIES,
        train_sizes=[16, 64, 256, "all"],
        test_limit=48,
        fragility_k=0,
        forgetting=False,
        consistency_examples=0,
        adaptive=True,
        tune=False,
        budget_seconds=budget,
    )


def _fake(monkeypatch, speed, clock, cut=()):
    """run_one replaced by a run whose quality follows the known curves and whose time is its token
    estimate at ``speed`` (1: as estimated, 0.5: a machine at half speed), on a fake clock."""
    import adaptlab.compare.measure as measure

    def run_one(
        spec, cfg, ctx, out, progress=True, light=False, settings=None, keep=False, log_dir=None, screened=False
    ):
        if spec.id in cut:
            raise TimeUp("time limit reached")
        rows = ctx.n_screen if screened else ctx.n_eval
        est = Estimator(cfg, ctx.profile, ctx.n_eval, ctx.n_screen)
        # Fitting and scoring each take their prior estimate at ``speed``, so the rates a compare learns
        # from these records are the machine's speed, as on a real machine.
        w = est.work(spec.strategy, spec.train_size, rows)
        fit = sum(est.fit_prior(spec.strategy, w)) / speed
        score = est._prior_seconds("eval", w.score) / speed
        clock[0] += est.seconds(spec.strategy, spec.train_size, rows) / speed
        r = _run(spec)
        r["train"]["seconds"], r["eval"]["seconds"], r["eval"]["scored_examples"] = fit, score, rows
        r["eval"].update(light=True, screened=screened)
        r["meta"] = {"started": "2026-12-02T10:00:00+0000", "finished": "2026-12-02T10:00:01+0000"}
        return r

    monkeypatch.setattr(measure, "run_one", run_one)
    # The machine's probe is measured per compare and varies by tens of percent between calls; these
    # tests compare budgets across compares, so it is fixed (the fake runs take their time from it).
    monkeypatch.setattr("adaptlab.utils.speed_probe", lambda *a, **k: 200.0)


def _compare(tmp_path, monkeypatch, speed, budget, name, cut=(), strategies=None):
    clock = [0.0]
    _fake(monkeypatch, speed, clock, cut)
    out = tmp_path / name
    result = run_compare(_cfg(budget, strategies), out, progress=False, clock=lambda: clock[0])
    return result, json.loads((out / "race.json").read_text()), clock[0]


def test_the_same_compare_decides_the_same_at_two_speeds(tmp_path, monkeypatch):
    fast, race_fast, _ = _compare(tmp_path, monkeypatch, 1.0, 1e6, "fast")
    slow, race_slow, _ = _compare(tmp_path, monkeypatch, 0.5, 1e6, "slow")
    assert fast["finished"] == slow["finished"] and len(fast["finished"]) >= 6
    assert race_fast["decision"].split(" after")[0] == race_slow["decision"].split(" after")[0]
    # Round one first: every candidate's first look, cheapest first (no candidate goes first by its name).
    assert fast["finished"][0] == "zero_shot-n0-s0"
    assert sorted(r.split("-")[0] for r in fast["finished"][:5]) == sorted(STRATEGIES)


def test_a_tight_budget_reaches_less_far_along_the_same_path_and_still_measures_the_winner(tmp_path, monkeypatch):
    from adaptlab.compare.recommend import Constraints, recommend

    full, _, _ = _compare(tmp_path, monkeypatch, 1.0, 1e6, "full")
    for speed in (1.0, 0.5):
        res, race_file, spent = _compare(tmp_path, monkeypatch, speed, 90.0, f"tight{speed}")
        ran = res["finished"]
        # The runs made are the full path's, in its order, except the reserved run at the target,
        # which is made once the next run no longer fits.
        path = [r for r in full["finished"] if r in ran]
        assert ran[: len(path)] == path or ran[:-1] == [r for r in path if r != ran[-1]]
        assert spent <= 90.0 * 1.05
        best = recommend(res["results"], Constraints())
        assert best.target == 360 and not best.ranked[0]["predicted"]
        assert any(r["run"]["strategy"] == best.winner and r["run"]["train_size"] in (0, 360) for r in res["results"])
        # Every strategy that never ran is named with why and what its first run would have cost.
        ran_strategies = {r.split("-")[0] for r in ran}
        assert {n["strategy"] for n in race_file["never_run"]} == set(STRATEGIES) - ran_strategies
        assert all(n["estimate_s"] > 0 and n["why"] for n in race_file["never_run"])
        assert "None" not in race_file["decision"]
    # The report leads with where the answer stands: the decision, the target size, what never ran.
    from adaptlab.compare.report import build_report

    md = (build_report(tmp_path / "tight0.5") / "report.md").read_text()
    head = md.split("## Recommendation")[0]
    assert "## Where this answer stands" in head and "Decision: not decided" in head
    assert "Target size: 360 training examples" in head and "Ranked by accuracy" in head
    assert all(f"Never run: {n['strategy']}" in head for n in race_file["never_run"])


def test_a_budget_that_cannot_fit_the_winner_at_the_target_says_so_at_the_start(tmp_path, monkeypatch):
    _fake(monkeypatch, 1.0, [0.0])
    with pytest.raises(
        ValueError,
        match=r"--budget 0\.1 min cannot fit a first look at all 5 candidates and the "
        r"winner's run at 360 examples: .*use --budget \d+m or more",
    ):
        run_compare(_cfg(6.0), tmp_path / "small", progress=False)
    assert not (tmp_path / "small" / "results").exists() or not list((tmp_path / "small" / "results").glob("*.json"))


def test_a_run_that_overruns_is_cut_listed_and_not_tried_again(tmp_path, monkeypatch):
    res, race_file, _ = _compare(tmp_path, monkeypatch, 1.0, 1e6, "cut", cut={"soft_prompt-n16-s0"})
    assert "soft_prompt-n16-s0" not in res["finished"]
    [entry] = [s for s in res["skipped"] if s["id"] == "soft_prompt-n16-s0"]
    assert entry["cut"] and "cut after" in entry["reason"]
    never = {n["strategy"]: n for n in race_file["never_run"]}
    assert "cut after" in never["soft_prompt"]["why"]
    # Resumed: the cut run is remembered, not tried again.
    again, _, _ = _compare(tmp_path, monkeypatch, 1.0, 1e6, "cut")
    assert again["finished"] == []


def test_time_limit_and_screen_size():
    with time_limit(None):
        check_deadline()
    with time_limit(0.0), pytest.raises(TimeUp):
        check_deadline()
    check_deadline()  # outside: no limit
    # 8 points at 95% on accuracy rows: 3.84 * 0.25 / 0.0064 = 150; generation rows vary less.
    assert screen_rows("classification", 500) == 151 and screen_rows("classification", 100) == 100
    assert screen_rows("generation", 500) == 64


def test_the_reserved_run_is_tried_when_its_estimate_grew_past_the_time_left(tmp_path, monkeypatch):
    """AG News, k=16, three strategies at 15m: tuning measured slower rates, the reserved LoRA run was
    re-estimated at 825 s with 749 s left, and the compare ended with no run at all. With most of its
    estimate left it is tried (its time limit still ends it at the budget's end); with too little, not."""
    from adaptlab.compare.schedule import AdaptivePicker

    seen = {}

    def check_budget(self):  # lets any budget start, holding nothing back during round one
        seen["picker"] = self
        self.first_est = {c: self.seconds(self.first_look(c)) for c in self.candidates()}
        self.held_at_start = 0.0

    monkeypatch.setattr(AdaptivePicker, "check_budget", check_budget)
    res, _, _ = _compare(tmp_path, monkeypatch, 1.0, 1e6, "probe")
    firsts = sum(
        r["train"]["seconds"] + r["eval"]["seconds"] + FIXED_SECONDS[r["run"]["kind"]]
        for r in res["results"]
        if r["run"]["id"] in res["finished"][:5]
    )
    # Just after round one (the same path at any budget), what the leader's run is estimated at and
    # what stays held for its final measurements.
    res, _, _ = _compare(tmp_path, monkeypatch, 1.0, firsts + 1.0, "probe2")
    [skip] = [s for s in res["skipped"] if s["id"] == "lora-n360-s0"]
    est, held = skip["estimate_s"], skip["reserved_s"]
    res, _, _ = _compare(tmp_path, monkeypatch, 1.0, firsts + held + 0.9 * est, "most")
    # After round one, a run at the target: a candidate whose run there fits stands in for the leader
    # (test_every_candidate); with none that fits, the leader's own run is tried.
    assert res["finished"][5].endswith("-n360-s0"), res["finished"]
    monkeypatch.setattr(AdaptivePicker, "_stand_in", lambda self, done, spent, lead: None)
    res, _, _ = _compare(tmp_path, monkeypatch, 1.0, firsts + held + 0.9 * est, "most_alone")
    assert res["finished"][5:6] == ["lora-n360-s0"]
    res, _, _ = _compare(tmp_path, monkeypatch, 1.0, firsts + held + 0.5 * est, "little")
    assert "lora-n360-s0" not in res["finished"] and "lora-n360-s0" in [s["id"] for s in res["skipped"]]


def test_tuning_asks_its_allowance_again_before_each_variant(tmp_path, monkeypatch):
    """The allowance is a callable: when the variants fitted so far make the reserved run dearer, it
    shrinks, and tuning stops there instead of eating the reserved run's time."""
    import adaptlab.compare.measure as measure
    from adaptlab.compare.measure import prepare
    from adaptlab.compare.tuning import TuningBudget, run_tuning

    cfg = CompareConfig(
        data="demo",
        model="tiny",
        strategies=["lora"],
        train_sizes=[16, "all"],
        test_limit=16,
        fragility_k=0,
        forgetting=False,
        consistency_examples=0,
        adaptive=True,
        tune=True,
    )
    clock, asked, fitted = [0.0], [], []

    class Art:
        def evaluate(self, dev):
            return {"accuracy": 0.5, "n": len(dev)}

    def fit_run(t, cfg, ctx, progress=False, settings=None):
        fitted.append(t.id)
        clock[0] += 10.0
        return Art(), None, {"seconds": 10.0}, settings

    def allowance():  # 100 s before any variant; after it (10 s spent), its rate leaves 5 s
        asked.append(clock[0])
        return 100.0 if not fitted else 5.0

    monkeypatch.setattr(measure, "fit_run", fit_run)
    from adaptlab.compare.grid import plan

    ctx = prepare(cfg)
    run_tuning(
        cfg,
        ctx,
        plan(cfg, len(ctx.splits.train)),
        tmp_path,
        TuningBudget(spent=lambda: clock[0], allowance=allowance, order=["lora"]),
    )
    assert len(fitted) == 1 and len(asked) == 2


def test_the_budget_is_the_compares_whole_time_over_every_session_of_it(tmp_path, monkeypatch):
    import adaptlab.compare.measure as measure
    from adaptlab.compare.store import spent_before

    # Run again on the folder of a compare its budget stopped (a new process: its clock starts at 0):
    # nothing new runs.
    first, _, spent = _compare(tmp_path, monkeypatch, 1.0, 25.0, "done")
    assert spent_before(tmp_path / "done") == pytest.approx(spent)
    again, _, _ = _compare(tmp_path, monkeypatch, 1.0, 25.0, "done")
    assert again["finished"] == [] and len(again["results"]) == len(first["results"])
    # A folder from before spent.json: its runs' own time (the fake runs record 1 s each).
    (tmp_path / "done" / "spent.json").unlink()
    assert spent_before(tmp_path / "done") == pytest.approx(len(first["results"]))

    # Killed after its third run and resumed: both sessions together keep the one budget.
    clock = [0.0]
    _fake(monkeypatch, 1.0, clock)
    fake, calls = measure.run_one, []

    def killed_at_four(spec, *a, **k):
        calls.append(spec.id)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return fake(spec, *a, **k)

    monkeypatch.setattr(measure, "run_one", killed_at_four)
    with pytest.raises(KeyboardInterrupt):
        run_compare(_cfg(30.0), tmp_path / "killed", progress=False, clock=lambda: clock[0])
    before = spent_before(tmp_path / "killed")
    assert 0 < before <= clock[0]
    monkeypatch.setattr(measure, "run_one", fake)
    session_two = [0.0]
    _fake(monkeypatch, 1.0, session_two)
    run_compare(_cfg(30.0), tmp_path / "killed", progress=False, clock=lambda: session_two[0])
    assert before + session_two[0] <= 30.0 * 1.05
    # A larger budget given again buys the difference (the 25 s compare left runs out).
    more = [0.0]
    _fake(monkeypatch, 1.0, more)
    res = run_compare(_cfg(400.0), tmp_path / "done", progress=False, clock=lambda: more[0])
    assert res["finished"] and spent + more[0] <= 400.0 * 1.05
