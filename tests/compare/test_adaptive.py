"""The race on simulated strategies whose true learning curves are known, and on the tiny model."""

import json
import zlib

import numpy as np

from adaptlab.compare.adaptive import race
from adaptlab.compare.grid import RunSpec

from .synthetic import rec

SIZES = [16, 64, 256, 1000]
TRUTH = {  # quality at n: a - b n^-c, a few shapes seen in the committed grids
    "zero_shot": lambda n: 0.54,
    "few_shot": lambda n: 0.78,
    "prompt_search": lambda n: 0.70 + 0.0 * n,
    "prefix": lambda n: 0.86 - 0.6 * n ** -0.3,
    "soft_prompt": lambda n: 0.90 - 1.2 * n ** -0.45,
    "lora": lambda n: 0.93 - 0.5 * n ** -0.4,
    "full": lambda n: 0.905 - 0.5 * n ** -0.4,
}


def _specs():
    out = []
    for s in TRUTH:
        out += [RunSpec(s, 0, 0)] if s == "zero_shot" else [RunSpec(s, n, 0) for n in SIZES]
    return out


def _run(spec, n_rows=500):
    """A run's record: per-row correctness drawn from the strategy's true quality at its size."""
    q = TRUTH[spec.strategy](max(spec.train_size, 1))
    seed = zlib.crc32(spec.id.encode())
    right = (np.random.default_rng(seed).random(n_rows) < q).astype(int).tolist()
    return rec(spec.strategy, spec.train_size, float(np.mean(right)), right=right, train_s=spec.train_size * 0.3)


def _simulate(limit=40):
    specs, records, order = _specs(), [], []
    for _ in range(limit):
        state = race(records, specs, cost=lambda s: s.train_size)
        if state.decided:
            return state, order
        spec = state.candidates[0][0]
        order.append(spec.id)
        records.append(_run(spec))
    raise AssertionError(f"not decided after {limit} runs: {order}")


def test_the_race_finds_the_true_winner_with_a_fraction_of_the_runs():
    state, order = _simulate()
    assert state.leader == "lora" and state.fits["lora"].measured_at_target
    assert len(order) < len(_specs()) * 0.7, order  # 15 of 25
    # Round one ran every strategy once, cheapest first (zero-shot's 0 examples first).
    assert order[0] == "zero_shot-n0-s0" and {o.split("-")[0] for o in order[:7]} == set(TRUTH)
    # What was dropped says why, with the numbers.
    assert state.dropped and all("optimistic" in why and "pessimistic" in why for why in state.dropped.values())
    assert "zero_shot" in state.dropped and "prompt_search" in state.dropped
    # Decided at 95%: LoRA, measured at 1000, is the best in at least 95% of the resampled curves.
    assert state.sure and state.p_best["lora"] >= 0.95
    # Second points go far from the first (the largest size below the target), not to the next rung.
    assert not any(o.endswith("-n64-s0") for o in order)
    assert len(order) <= 15


def test_the_race_is_a_function_of_the_finished_runs():
    """A killed and resumed race makes the same decisions: the state is recomputed from results alone."""
    _, first = _simulate()
    _, second = _simulate()
    assert first == second
    specs = _specs()
    records = [_run(s) for s in specs if s.id in first[:9]]
    a = race(records, specs, cost=lambda s: s.train_size)
    b = race(list(reversed(records)), specs, cost=lambda s: s.train_size)
    assert [s.id for s, _ in a.candidates] == [s.id for s, _ in b.candidates]


def test_second_seeds_run_only_where_the_winner_is_still_open():
    # Two seeds planned: the race spends the second only at the target, on strategies it cannot tell apart.
    specs = [RunSpec(st, n, seed) for st in ("lora", "full") for n in (16, 256) for seed in (0, 1)]
    rows = [1] * 85 + [0] * 15
    state = race([rec("lora", 16, 0.85, right=rows), rec("full", 16, 0.85, right=rows)], specs)
    assert state.candidates and all(s.seed == 0 for s, _ in state.candidates)
    tied = [rec(st, n, 0.85, right=rows) for st in ("lora", "full") for n in (16, 256)]
    state = race(tied, specs)
    assert not state.sure and [s.id for s, _ in state.candidates][:1] in (["lora-n256-s1"], ["full-n256-s1"])
    assert "another seed" in state.candidates[0][1]


def test_adaptive_compare_on_the_tiny_model_decides_resumes_and_reports(tmp_path):
    from adaptlab.compare import CompareConfig, run_compare
    from adaptlab.compare.report import build_report

    cfg = CompareConfig(data="demo", model="tiny", strategies=["zero_shot", "few_shot", "lora"],
                        train_sizes=[8, 16, 32], test_limit=24, fragility_k=1, fragility_examples=8,
                        forgetting=False, consistency_examples=0, adaptive=True, tune=True, dev_limit=16,
                        strategy_settings={"few_shot": {"k": 2}})
    out = tmp_path / "race"
    result = run_compare(cfg, out, progress=False)
    race_file = json.loads((out / "race.json").read_text())
    assert race_file["decision"].startswith(("decided at 95%", "not decided"))
    assert race_file["runs"] == len(result["results"]) < 7
    assert {x["id"] for x in race_file["not_run"]} | {r["run"]["id"] for r in result["results"]} == {
        "zero_shot-n0-s0", *(f"{s}-n{n}-s0" for s in ("few_shot", "lora") for n in (8, 16, 32))}
    # Every run is scored on the test rows only, but the recommended one is then measured in full from
    # its kept artifact (the others' artifacts are gone: --keep-artifacts small keeps the winner's
    # few-MB adapter only if it is one); rows carry ids for pairing.
    from adaptlab.compare.recommend import Constraints, recommend

    winner = recommend(result["results"], Constraints()).winner
    for r in result["results"]:
        full = r["run"]["strategy"] == winner and r["run"]["train_size"] in (0, 32)
        assert r["eval"]["light"] is not full and bool(r["eval"].get("finalized")) is full
        assert (r["eval"]["fragility"] is not None) is full and (r["eval"]["overfit_gap"] is not None) is (
            full and r["run"]["train_size"] > 0)
        assert [p["id"] for p in r["predictions"]] == list(range(24))
        assert r["eval"]["baselines"]["test_n"] == 24
    again = run_compare(cfg, out, progress=False)  # resumed: nothing new to run, same decision
    assert again["finished"] == [] and json.loads((out / "race.json").read_text())["decision"] == race_file["decision"]
    report = (build_report(out) / "report.md").read_text()
    assert "## The race (adaptive compare)" in report and race_file["decision"] in report
    assert "baselines on the 24 test rows: majority class" in report
    # Tuning: lora's defaults and 3 variants, few_shot's nearest selection (its k was set by the user,
    # so k is not searched), fitted at 8 examples on dev; every measured run uses the kept variant.
    tuned = {f.stem: json.loads(f.read_text()) for f in (out / "results" / "tuning").glob("*.json")}
    assert set(tuned) == {"lora-n8-s0-t0", "lora-n8-s0-t1", "lora-n8-s0-t2", "lora-n8-s0-t3",
                          "few_shot-n8-s0-t0", "few_shot-n8-s0-t1"}
    assert tuned["few_shot-n8-s0-t1"]["run"]["settings"] == {"k": 2, "selection": "nearest"}
    kept = max((t for t in tuned.values() if t["run"]["strategy"] == "lora"),
               key=lambda t: (t["dev"]["quality"], -t["run"]["variant"]))
    assert all(r["run"]["settings"] == kept["run"]["settings"] for r in result["results"]
               if r["run"]["strategy"] == "lora")
    assert "## Tuning: what was tried" in report and "lr=0.003" in report
