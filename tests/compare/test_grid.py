"""The grid on the tiny model: runs, measures, resumes after kill -9, respects its budget."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from adaptlab.cli import app
from adaptlab.compare import CompareConfig, load_results, parse_budget, plan, run_compare
from adaptlab.compare.config import parse_sizes
from adaptlab.compare.grid import order_runs
from adaptlab.compare.store import RunSpec

runner = CliRunner()
FAST = dict(
    model="tiny",
    test_limit=6,
    fragility_k=1,
    fragility_examples=4,
    dev_limit=4,
    epochs=1.0,
    strategy_settings={
        "prompt_search": {"budget_calls": 20, "first_round": 2, "exemplar_sets": 1, "bootstrap": 0},
        "few_shot": {"k": 2},
    },
)


def test_grid_measures_everything(tmp_path):
    cfg = CompareConfig(data="demo", strategies=["zero_shot", "few_shot", "lora"], train_sizes=[8, 16], seeds=1, **FAST)
    res = run_compare(cfg, tmp_path, progress=False)
    ids = sorted(res["finished"])
    assert ids == ["few_shot-n16-s0", "few_shot-n8-s0", "lora-n16-s0", "lora-n8-s0", "zero_shot-n0-s0"]
    r = json.loads((tmp_path / "results" / "lora-n16-s0.json").read_text())
    assert set(r) == {"run", "train", "eval", "cost", "meta", "predictions"}
    assert len(r["predictions"]) == 6 and {"input", "reference", "output", "metric"} <= set(r["predictions"][0])
    assert sum(p["metric"] for p in r["predictions"]) / 6 == pytest.approx(r["eval"]["quality"])
    assert 0 < r["eval"]["consistency"]["agreement"] <= 1 and r["eval"]["consistency"]["samples"] == 4
    assert r["train"]["trainable_params"] > 0 and r["train"]["peak_rss_bytes"] > 0
    ev = r["eval"]
    assert 0 <= ev["quality"] <= 1 and ev["test_examples"] == 6 and ev["overfit_gap"] is not None
    assert len(ev["fragility"]["paraphrases"]) == 1 and set(ev["fragility"]["perturbations"]) == {
        "lowercase",
        "uppercase",
        "typos",
        "whitespace",
        "punctuation",
    }
    assert ev["forgetting"]["weights_changed"] and ev["forgetting"]["ppl_before"] > 1
    assert r["cost"]["artifact_bytes"] > 0 and r["cost"]["usd_per_1m"] > 0
    assert r["meta"]["versions"]["torch"] and "finished" in r["meta"]
    assert r["meta"]["machine"]["gemm_gflops"] > 0 and r["meta"]["machine"]["cpu_model"]
    zs = json.loads((tmp_path / "results" / "zero_shot-n0-s0.json").read_text())
    assert zs["eval"]["forgetting"]["ppl_change"] == 0.0 and not zs["eval"]["forgetting"]["weights_changed"]
    # re-running resumes: nothing left to do
    again = run_compare(cfg, tmp_path, progress=False)
    assert again["finished"] == [] and len(again["results"]) == 5


def test_early_stopping_settings_reach_the_training_loop(tmp_path):
    """--eval-every / --patience go to every gradient run; the record says where dev peaked and that it stopped."""
    cfg = CompareConfig(
        data="demo",
        strategies=["lora"],
        train_sizes=[16],
        seeds=1,
        **{**FAST, "epochs": 4.0, "eval_every": 1, "patience": 1},
    )
    run_compare(cfg, tmp_path, progress=False)
    tr = json.loads((tmp_path / "results" / "lora-n16-s0.json").read_text())["train"]
    assert tr["stopped_early"] and tr["steps"] == tr["best_step"] + 1 < 8  # 2 steps an epoch, 4 epochs
    with pytest.raises(ValueError, match="patience=-1"):
        CompareConfig(data="demo", patience=-1)


def test_other_data_in_the_same_folder_is_refused(tmp_path):
    run_compare(CompareConfig(data="demo", strategies=["zero_shot"], train_sizes=[8], **FAST), tmp_path, progress=False)
    with pytest.raises(ValueError, match="holds a comparison of another data"):
        run_compare(CompareConfig(data="sst2", strategies=["zero_shot"], train_sizes=[8], **FAST), tmp_path)


def test_budget_skips_what_will_not_fit(tmp_path):
    cfg = CompareConfig(
        data="demo", strategies=["zero_shot", "lora", "full"], train_sizes=[8, 360], budget_seconds=1.0, **FAST
    )
    res = run_compare(cfg, tmp_path, progress=False)
    skipped = {s["id"] for s in res["skipped"]}
    assert "full-n360-s0" in skipped and all("budget left" in s["reason"] for s in res["skipped"])
    assert len(res["finished"]) + len(skipped) == len(plan(cfg, 360))
    assert json.loads((tmp_path / "skipped.json").read_text()) == res["skipped"]


def test_runs_go_in_rounds_so_a_budget_cuts_sizes_not_strategies():
    """A strategy whose cost does not grow with the data (prompt search) would otherwise take every size
    before a costlier strategy got its first run; in rounds, each strategy's smallest run comes first."""
    todo = [RunSpec(s, n, 0) for s in ("prompt_search", "soft_prompt", "lora") for n in (32, 128, 360)]
    cost = {"prompt_search": lambda n: 50, "soft_prompt": lambda n: 40 + n, "lora": lambda n: 30 + n / 2}
    order = [s.id for s in order_runs(todo, lambda s: cost[s.strategy](s.train_size), {})]
    assert order[:3] == ["lora-n32-s0", "prompt_search-n32-s0", "soft_prompt-n32-s0"]
    assert order[3:6] == ["prompt_search-n128-s0", "lora-n128-s0", "soft_prompt-n128-s0"]
    # Without rounds, cheapest-first alone would run prompt_search x3 before soft_prompt's first run.
    flat = [s.id for s in sorted(todo, key=lambda s: cost[s.strategy](s.train_size))]
    assert flat.index("prompt_search-n360-s0") < flat.index("soft_prompt-n32-s0")
    # Runs finished before a resume count: a strategy with 2 done waits for the others.
    resumed = [s.id for s in order_runs(todo, lambda s: cost[s.strategy](s.train_size), {"lora": 2})]
    assert resumed[:2] == ["prompt_search-n32-s0", "soft_prompt-n32-s0"]


def test_budget_and_size_parsing():
    assert parse_budget("30m") == 1800 and parse_budget("1h30m") == 5400 and parse_budget("90s") == 90
    assert parse_budget("600") == 600 and parse_budget(None) is None
    with pytest.raises(ValueError, match="use e.g. 30m"):
        parse_budget("soon")
    assert parse_sizes("16,64,all") == [16, 64, "all"]
    with pytest.raises(ValueError, match="'-3' is not a positive integer"):
        parse_sizes("16,-3")
    with pytest.raises(ValueError, match="unknown nope"):
        CompareConfig(data="demo", strategies=["nope"])


def test_grid_resumes_after_kill(tmp_path):
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "adaptlab.cli",
        "compare",
        "--data",
        "demo",
        "--model",
        "tiny",
        "--out",
        str(out),
        "--strategies",
        "zero_shot,few_shot",
        "--train-sizes",
        "8,16",
        "--test-limit",
        "6",
        "--fragility-k",
        "1",
        "--fragility-examples",
        "4",
        "--epochs",
        "1",
        "--set",
        "few_shot.k=2",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 300
    while time.time() < deadline and len(list((out / "results").glob("*.json"))) < 1 and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = {p.name: p.stat().st_mtime_ns for p in (out / "results").glob("*.json")}
    assert first and not list((out / "results").glob("*.tmp"))
    for p in (out / "results").glob("*.json"):
        json.loads(p.read_text())  # every file marked done is complete
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resuming" in r.stdout
    after = {p.name: p.stat().st_mtime_ns for p in (out / "results").glob("*.json")}
    assert len(after) == 3 and all(after[k] == v for k, v in first.items())  # finished runs were not redone
    assert (out / "report" / "report.html").exists()


def test_cli_recommend_and_report(tmp_path):
    cfg = CompareConfig(data="demo", strategies=["zero_shot", "lora"], train_sizes=[8], **FAST)
    run_compare(cfg, tmp_path, progress=False)
    r = runner.invoke(app, ["report", str(tmp_path)])
    assert r.exit_code == 0 and (tmp_path / "report" / "report.md").exists()
    r = runner.invoke(app, ["recommend", str(tmp_path), "--weights-accessible", "no"])
    assert r.exit_code == 0 and "Recommended: zero_shot" in r.output and "excluded lora" in r.output
    r = runner.invoke(app, ["recommend", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "not a compare run folder" in r.output
    assert len(load_results(tmp_path)) == 2


def test_claims_are_exclusive_and_stale_ones_are_taken_over(tmp_path):
    import socket

    from adaptlab.compare.store import claim, claims_dir, release_claim

    assert claim(tmp_path, "lora-n8-s0") and not claim(tmp_path, "lora-n8-s0")
    release_claim(tmp_path, "lora-n8-s0")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (claims_dir(tmp_path) / "x.claim").write_text(
        json.dumps({"pid": dead.pid, "host": socket.gethostname(), "time": time.time()})
    )
    assert claim(tmp_path, "x")  # its worker is gone
    (claims_dir(tmp_path) / "y.claim").write_text(
        json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "time": time.time()})
    )
    assert not claim(tmp_path, "y")  # its worker is alive


def test_two_workers_share_one_grid(tmp_path):
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "adaptlab.cli",
        "compare",
        "--data",
        "demo",
        "--model",
        "tiny",
        "--out",
        str(out),
        "--strategies",
        "zero_shot,few_shot,lora",
        "--train-sizes",
        "8,16",
        "--test-limit",
        "6",
        "--fragility-k",
        "1",
        "--fragility-examples",
        "4",
        "--epochs",
        "1",
        "--set",
        "few_shot.k=2",
        "--workers",
        "2",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    recs = load_results(out)
    assert sorted(x["run"]["id"] for x in recs) == [
        "few_shot-n16-s0",
        "few_shot-n8-s0",
        "lora-n16-s0",
        "lora-n8-s0",
        "zero_shot-n0-s0",
    ]
    assert len({x["meta"]["worker"] for x in recs}) == 2  # both workers did some of it
    assert list((out / "claims").iterdir()) == [] and (out / "report" / "report.html").exists()


def test_a_worker_starts_from_the_saved_config_with_the_folder_made_absolute(tmp_path, monkeypatch):
    from adaptlab.compare.grid import save_config, worker_command

    monkeypatch.chdir(tmp_path)
    cfg = CompareConfig(
        data="demo",
        strategies=["zero_shot", "lora"],
        train_sizes=[8],
        seeds=2,
        **{**FAST, "strategy_settings": {"lora": {"r": 4}}},
    )
    save_config(cfg, Path("runs/x"))
    cmd = worker_command(Path("runs/x"))
    folder = tmp_path / "runs" / "x"
    assert cmd[1:] == [
        "-m",
        "adaptlab.cli",
        "compare",
        "--config",
        str(folder / "compare.json"),
        "--out",
        str(folder),
        "--workers",
        "1",
        "--no-progress",
    ]
    again = CompareConfig.load(folder / "compare.json")  # the same settings, none re-written as flags
    assert again == cfg


def test_a_saved_config_runs_unchanged(tmp_path):
    from typer.testing import CliRunner

    from adaptlab.cli import app

    cfg = CompareConfig(data="demo", strategies=["zero_shot"], train_sizes=[8], **FAST)
    from adaptlab.compare.grid import save_config

    save_config(cfg, tmp_path / "a")
    r = CliRunner().invoke(
        app,
        ["compare", "--config", str(tmp_path / "a" / "compare.json"), "--out", str(tmp_path / "a"), "--no-progress"],
    )
    assert r.exit_code == 0, r.output
    assert [x["run"]["id"] for x in load_results(tmp_path / "a")] == ["zero_shot-n0-s0"]
    # endpoints live in the file; other options given beside it override it (tests/test_api.py)
    r = CliRunner().invoke(
        app,
        [
            "compare",
            "--config",
            str(tmp_path / "a" / "compare.json"),
            "--out",
            str(tmp_path / "a"),
            "--endpoint",
            "x=http://127.0.0.1:9/v1",
        ],
    )
    assert r.exit_code == 2 and "give the endpoints in the file (key 'endpoint')" in r.output
    (tmp_path / "bad.json").write_text('{"data": "demo", "budgt": 5}')
    r = CliRunner().invoke(app, ["compare", "--config", str(tmp_path / "bad.json"), "--out", str(tmp_path / "b")])
    assert r.exit_code == 2 and "bad.json: unknown key 'budgt' (did you mean 'budget'?)" in r.output


@pytest.mark.timeout(600)
def test_ray_places_the_workers_of_one_grid(tmp_path):
    """A local Ray runs two workers of one grid: every run once, the report built."""
    pytest.importorskip("ray")
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "adaptlab.cli",
        "compare",
        "--data",
        "demo",
        "--model",
        "tiny",
        "--out",
        str(out),
        "--strategies",
        "zero_shot,few_shot,lora",
        "--train-sizes",
        "8",
        "--test-limit",
        "6",
        "--fragility-k",
        "1",
        "--fragility-examples",
        "4",
        "--epochs",
        "1",
        "--set",
        "few_shot.k=2",
        "--workers",
        "2",
        "--ray",
        "local",
        "--ray-cpus",
        "1",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    recs = load_results(out)
    assert sorted(x["run"]["id"] for x in recs) == ["few_shot-n8-s0", "lora-n8-s0", "zero_shot-n0-s0"]
    assert list((out / "claims").iterdir()) == [] and (out / "report" / "report.html").exists()


def test_ray_missing_is_a_clear_error(tmp_path, monkeypatch):
    import builtins

    from adaptlab.compare.grid import run_ray_workers

    real = builtins.__import__
    monkeypatch.setattr(
        builtins,
        "__import__",
        lambda name, *a, **k: (_ for _ in ()).throw(ImportError(name)) if name == "ray" else real(name, *a, **k),
    )
    with pytest.raises(ValueError, match="ray is not installed"):
        run_ray_workers(tmp_path, 2, "local")


def test_runs_record_the_commit_the_grid_started_with(tmp_path, monkeypatch):
    """A commit made while a long grid runs is not the code its runs used: HEAD is read once."""
    import adaptlab.compare.grid as grid

    heads = iter(["a" * 40, "b" * 40, "c" * 40])
    monkeypatch.setattr(grid, "git_commit", lambda: next(heads))
    cfg = CompareConfig(data="demo", strategies=["zero_shot", "few_shot"], train_sizes=[8], seeds=1, **FAST)
    run_compare(cfg, tmp_path, progress=False)
    assert {r["meta"]["git_commit"] for r in load_results(tmp_path)} == {"a" * 40}


def test_one_cost_model_orders_cheap_runs_first_and_learns_from_runs():
    """The grid and the race share one cost model (compare/costs.py): token-counted work, seconds from
    the rates this compare measured."""
    from adaptlab.compare.costs import Estimator
    from adaptlab.compare.measure import prepare

    cfg = CompareConfig(data="demo", strategies=["zero_shot", "lora", "full"], **{**FAST, "model": "tiny"})
    ctx = prepare(cfg)
    est = Estimator(cfg, ctx.profile, ctx.n_eval, ctx.n_screen)
    specs = [RunSpec("full", 256, 0), RunSpec("lora", 16, 0), RunSpec("zero_shot", 0, 0), RunSpec("lora", 256, 0)]
    order = sorted(specs, key=lambda s: est.seconds(s.strategy, s.train_size, ctx.n_eval))
    assert [s.id for s in order] == ["zero_shot-n0-s0", "lora-n16-s0", "lora-n256-s0", "full-n256-s0"]
    before = est.seconds("lora", 256, ctx.n_eval)
    prior = est.seconds("lora", 16, ctx.n_eval)
    est.observe(
        {
            "run": {"strategy": "lora", "kind": "gradient", "train_size": 16, "epochs": 1.0},
            "train": {"seconds": 10 * prior},
            "eval": {"seconds": 10 * prior, "scored_examples": ctx.n_eval},
        }
    )
    assert est.seconds("lora", 256, ctx.n_eval) > 3 * before  # measured slower than the prior
    assert est.scored_per_run(True) == ctx.n_eval < est.scored_per_run(False) or not cfg.fragility_k


def test_a_fits_dev_checks_are_priced_at_the_scoring_rate_and_a_first_look_does_not_set_the_training_rate():
    """A gradient fit's dev checks score rows: on a first look they are most of its work. Its seconds
    left after them are weighed against the training measured elsewhere by its training share, so a
    first look dominated by slow dev checks does not make the run at the target look slow (Banking77:
    LoRA at 16 made LoRA at 1000 548 s, it took 352)."""
    from adaptlab.compare.costs import FIXED_SECONDS, Estimator
    from adaptlab.compare.measure import prepare

    cfg = CompareConfig(data="demo", strategies=["lora", "full"], **{**FAST, "model": "tiny"})
    ctx = prepare(cfg)
    est = Estimator(cfg, ctx.profile, ctx.n_eval, ctx.n_screen)
    small, large = est.work("lora", 16, ctx.n_eval), est.work("lora", 1000, ctx.n_eval)
    assert 0 < small.dev == large.dev < small.fit < large.fit  # the same dev checks at any size
    own, dev = est.fit_prior("lora", small)

    def observe(strategy, size, train_factor, score_factor):
        w = est.work(strategy, size, ctx.n_eval)
        own, dev = est.fit_prior(strategy, w)
        est.observe(
            {
                "run": {"strategy": strategy, "kind": "gradient", "train_size": size, "epochs": 1.0},
                "train": {"seconds": train_factor * own + score_factor * dev},
                "eval": {"seconds": score_factor * est._prior_seconds("eval", w.score), "scored_examples": ctx.n_eval},
            }
        )

    observe("lora", 16, 1.0, 10.0)  # scoring 10x slower than its prior, training as its prior
    t_own, t_dev = est.fit_prior("lora", large)
    fit = est.seconds("lora", 1000, 0) - FIXED_SECONDS["gradient"]
    assert fit == pytest.approx(t_own + 10.0 * t_dev, rel=0.01)  # the dev checks at the scoring rate
    # Without the split the whole fit took the first look's factor: (own + 10 dev) / (own + dev).
    blended = (own + 10.0 * dev) / (own + dev)
    assert blended > 1.5 and fit < 0.8 * blended * (t_own + t_dev)
    # A first look's own training, slower than its prior, moves the rate in its share of the fit.
    est2 = Estimator(cfg, ctx.profile, ctx.n_eval, ctx.n_screen)
    est, keep = est2, est
    observe("lora", 16, 3.0, 1.0)
    share = own / (own + dev)
    assert est._train_factor("lora") == pytest.approx(share * 3.0 + (1 - share) * 1.0, rel=0.01)
    observe("full", 1000, 2.0, 1.0)  # a large fit: mostly training
    assert est._train_factor("full") > 1.8
    assert keep._train_factor("full") == pytest.approx(1.0, rel=0.01)  # only lora trained there, at its prior


def test_a_prompt_search_fit_is_estimated_from_scoring_rates_not_training_ones():
    """A prompt strategy's fit scores dev rows: before it runs, its seconds follow the rate measured
    by the prompt strategies' scoring, not by the gradient strategies' training (which pooled by the
    phase's name made it 1.6x dearer on Banking77 at 20m, and it never ran)."""
    from adaptlab.compare.costs import FIXED_SECONDS, Estimator
    from adaptlab.compare.measure import prepare

    cfg = CompareConfig(data="demo", strategies=["zero_shot", "lora", "prompt_search"], **{**FAST, "model": "tiny"})
    ctx = prepare(cfg)
    est = Estimator(cfg, ctx.profile, ctx.n_eval, ctx.n_screen)

    def search_s():  # the part that follows the rates
        return est.seconds("prompt_search", 16, ctx.n_eval) - FIXED_SECONDS["prompt"]

    before = search_s()
    assert before > 0
    w = est.work("lora", 16, ctx.n_eval)
    est.observe(  # training measured 5x slower than its prior, scoring as its prior
        {
            "run": {"strategy": "lora", "kind": "gradient", "train_size": 16, "epochs": 1.0},
            "train": {"seconds": 5 * est._prior_seconds("train", w.fit)},
            "eval": {"seconds": est._prior_seconds("eval", w.score), "scored_examples": ctx.n_eval},
        }
    )
    assert search_s() == pytest.approx(before, rel=0.01)
    zw = est.work("zero_shot", 0, ctx.n_eval)
    est.observe(  # zero-shot's scoring measured at half its prior: prompt search's fit follows it
        {
            "run": {"strategy": "zero_shot", "kind": "prompt", "train_size": 0, "epochs": 0.0},
            "train": {"seconds": 0.0},
            "eval": {"seconds": 0.5 * est._prior_seconds("eval", zw.score), "scored_examples": ctx.n_eval},
        }
    )
    assert search_s() == pytest.approx(0.5 * before, rel=0.01)


def test_the_progress_lines_best_so_far_is_by_the_metric_the_ranking_uses():
    """On imbalanced labels the ranking is by macro-F1; the progress line said accuracy (FPB: 'best so
    far 0.656' for a run whose macro-F1, the ranked number, was 0.283)."""
    from adaptlab.compare.grid import _best
    from adaptlab.compare.record import RunRecord

    base = {"n_labels": 3, "largest_share": 0.6, "largest_class": "neutral"}

    def rec(name, acc, f1):
        return RunRecord(
            run={"id": f"{name}-n32-s0", "strategy": name, "train_size": 32, "seed": 0},
            eval={"quality": acc, "metric": "accuracy", "test": {"accuracy": acc, "macro_f1": f1}, "baselines": base},
        )

    runs = [rec("lora", 0.66, 0.28), rec("few_shot", 0.50, 0.34)]
    assert _best(runs) == "few_shot-n32-s0 macro_f1 0.340"
    balanced = {**base, "largest_share": 0.34}
    for r in runs:
        r.eval["baselines"] = balanced
    assert _best(runs) == "lora-n32-s0 accuracy 0.660"
