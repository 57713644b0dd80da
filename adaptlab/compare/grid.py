"""The experiment grid: plan, estimate, schedule under a budget, run, store, resume.

Each finished run is one JSON file (``results/<run id>.json``, sections run/train/eval/cost/meta)
written atomically when the run is complete, so a killed or Ctrl-C'd grid leaves no partial result
marked done, and re-running the same command skips what is finished. Hand-written rather than
taken from an experiment tracker: the grid is small, the results must stay plain files that the
report reads alone, and the scheduler needs our cost model.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from rich.console import Console

from adaptlab.compare.baselines import ranking_metric
from adaptlab.compare.config import CompareConfig
from adaptlab.compare.costs import Estimator
from adaptlab.compare.record import RunRecord
from adaptlab.compare.schedule import AdaptivePicker
from adaptlab.compare.store import (
    RunSpec,
    claim,
    load_results,
    load_tuning,
    minutes,
    record_spent,
    release_claim,
    results_dir,
    spent_before,
    write_result,
    write_skipped,
)
from adaptlab.compare.tuning import TUNING_SHARE
from adaptlab.strategies.registry import get_strategy
from adaptlab.utils import TimeUp, atomic_write_json, machine_info, package_versions, speed_probe, time_limit

console = Console()


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).resolve().parent
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def plan(cfg: CompareConfig, n_train: int, task: str | None = None) -> list[RunSpec]:
    """strategies x train sizes x seeds; a strategy that uses no train data runs once per seed; with
    ``task``, only the strategies that support that task type (:meth:`StrategySpec.supports`)."""
    sizes = sorted({n_train if s == "all" else min(int(s), n_train) for s in cfg.train_sizes})
    out = []
    for name in cfg.strategies:
        if task is not None and not get_strategy(name).supports(task):
            continue
        for seed in range(cfg.seeds):
            if not get_strategy(name).uses_train_data:
                out.append(RunSpec(name, 0, seed))
                continue
            for n in sizes:
                out.append(RunSpec(name, n, seed))
    return out


def order_runs(todo: list[RunSpec], cost, rounds: dict[str, int]) -> list[RunSpec]:
    """The order to run ``todo`` in: by rounds, then cheapest first. A strategy's next run waits until
    every strategy has had as many runs as it has (``rounds``: runs each strategy has had), so a budget
    cuts larger sizes and second seeds, not whole strategies: one whose fit time does not grow with
    the data (prompt search) must not fill the budget with its large sizes while another has no run."""
    costs = {s.id: cost(s) for s in todo}
    round_of: dict[str, int] = {}
    for strategy in {s.strategy for s in todo}:  # a run's round: the strategy's runs so far + its rank among the rest
        mine = sorted((s for s in todo if s.strategy == strategy), key=lambda s: (costs[s.id], s.train_size, s.id))
        round_of.update({s.id: rounds.get(strategy, 0) + i for i, s in enumerate(mine)})
    return sorted(todo, key=lambda s: (round_of[s.id], costs[s.id], s.train_size, s.id))


class GridPicker:
    """The full grid: every planned run, in rounds, cheapest first; a run that will not fit the budget
    is skipped and the next one tried. Every run is measured in full."""

    light = staticmethod(lambda spec: False)
    keep = staticmethod(lambda spec: False)
    screened = staticmethod(lambda spec: False)

    tuning_order = None  # tuning goes in plan order

    def __init__(self, cfg: CompareConfig, specs: list[RunSpec], done: dict, tokens: Estimator):
        self.cfg, self.tokens = cfg, tokens
        self.todo = [s for s in specs if s.id not in done]
        self.rounds = collections.Counter(r.strategy for r in done.values())
        self.skipped: list[dict] = []

    def remaining(self, guess: float) -> float:
        return sum(self.est(s) for s in self.todo) + guess

    def est(self, spec: RunSpec) -> float:
        """Seconds of a full-grid run: its fit, and every row it scores (test, train gap, fragility)."""
        return self.tokens.seconds(spec.strategy, spec.train_size, self.tokens.scored_per_run(False))

    def next(self, done: dict, spent: float):
        """(spec, estimated seconds) of the next run, or None when the grid is through."""
        while self.todo:
            self.todo = order_runs(self.todo, self.est, self.rounds)  # re-estimated
            spec = self.todo.pop(0)
            self.rounds[spec.strategy] += 1
            guess = self.est(spec)
            if _over_budget(self.cfg, spent, guess, spec, self.skipped):
                continue
            return spec, guess
        return None

    def check_budget(self) -> None:
        pass  # the full grid runs what fits and lists the rest

    def tuning_allowance(self) -> float | None:
        """Seconds tuning may take: its share of the budget (None: no budget)."""
        return None if self.cfg.budget_seconds is None else TUNING_SHARE * self.cfg.budget_seconds

    def limit(self, spec: RunSpec, guess: float, spent: float) -> float | None:
        """Seconds ``spec`` may run: what the budget leaves (None: no budget)."""
        return None if self.cfg.budget_seconds is None else max(1.0, self.cfg.budget_seconds - spent)

    def on_cut(self, spec: RunSpec, entry: dict) -> None:
        pass

    def finalize(self, ctx, records: list[dict]) -> list[dict]:
        return records

    def finish(self, out: Path, records: list[dict]) -> None:
        pass


def _over_budget(cfg: CompareConfig, spent: float, guess: float, spec: RunSpec, skipped: list[dict]) -> bool:
    if cfg.budget_seconds is None or spent + guess <= cfg.budget_seconds:
        return False
    left = cfg.budget_seconds - spent
    if all(s["id"] != spec.id for s in skipped):
        skipped.append(
            {
                "id": spec.id,
                "estimate_s": guess,
                "left_s": left,
                "reason": f"estimated {guess:.0f} s, {max(0.0, left):.0f} s of budget left",
            }
        )
    return True


def save_config(cfg: CompareConfig, out: Path) -> None:
    """Write ``cfg`` as ``out/compare.json`` (the file every worker and a resume start from), refusing a
    folder that holds a compare of other data or another model."""
    Path(out).mkdir(parents=True, exist_ok=True)
    _check_out(cfg, Path(out))


def _check_out(cfg: CompareConfig, out: Path) -> None:
    cfg_path = out / "compare.json"
    if cfg_path.exists():
        old = json.loads(cfg_path.read_text())
        changed = sorted(k for k in ("data", "model") if old.get(k) != getattr(cfg, k))
        if changed:
            raise ValueError(
                f"{out}: holds a comparison of another {'/'.join(changed)} "
                f"({', '.join(str(old.get(k)) for k in changed)}); use another --out"
            )
    atomic_write_json(cfg_path, cfg.to_dict())


def run_compare(cfg: CompareConfig, out: Path, progress: bool = True, clock=time.monotonic) -> dict:
    """Run (or resume) the grid, or the race when ``cfg.adaptive``; returns {"finished": [...],
    "skipped": [...], "results": [...]}.

    Full grid order: in rounds, every strategy's next run before any strategy's one after it, cheap
    runs first within a round (:func:`order_runs`). Adaptive: :class:`AdaptivePicker`."""
    from adaptlab.compare.measure import prepare

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _check_out(cfg, out)
    ctx = prepare(cfg)
    done = {r.id: r for r in load_results(out)}
    specs = plan(cfg, len(ctx.splits.train), ctx.splits.task)
    planned = {s.strategy for s in specs}
    unfit = [s for s in cfg.strategies if s not in planned]
    if unfit:
        console.print(f"left out (they do not adapt to {ctx.splits.task} tasks): {', '.join(unfit)}")
    if not specs:
        from adaptlab.data.loading import DataError

        raise DataError(f"{cfg.data}: no strategy of {', '.join(cfg.strategies)} supports {ctx.splits.task} tasks")
    tokens = Estimator(cfg, ctx.profile, ctx.n_eval, ctx.n_screen, profiles=ctx.profiles)
    for r in done.values():
        tokens.observe(r)
    picker = AdaptivePicker(cfg, specs, out, tokens) if cfg.adaptive else GridPicker(cfg, specs, done, tokens)
    picker.check_budget()
    before = spent_before(out)
    t_start = clock() - before  # the budget is the compare's whole time, over every session of it
    settings = dict(cfg.strategy_settings)
    if cfg.tune:
        from adaptlab.compare.tuning import TuningBudget, run_tuning

        for rec in load_tuning(out).values():
            tokens.observe(rec)
        tuned = run_tuning(
            cfg,
            ctx,
            specs,
            out,
            TuningBudget(
                spent=lambda: clock() - t_start,
                allowance=picker.tuning_allowance,
                estimate=tokens,
                order=picker.tuning_order,
                log=lambda m: console.print(m, highlight=False, soft_wrap=True),
            ),
        )
        settings.update(tuned)
        tokens.settings.update(tuned)
        record_spent(out, clock() - t_start)
    if done:
        console.print(
            f"resuming: {len(done)} finished run(s) kept"
            + ("" if cfg.adaptive else f", {len(specs) - len(done)} to go")
            + (
                f"; {minutes(before)} of the {minutes(cfg.budget_seconds)} budget spent before"
                if cfg.budget_seconds is not None and before
                else ""
            )
        )
    live = LiveStatus(out, cfg, len(specs))
    try:
        finished = _race_or_grid(cfg, ctx, out, picker, done, specs, settings, t_start, progress, live, clock)
    except BaseException as e:
        live.write("stopped" if isinstance(e, KeyboardInterrupt) else "failed", error=f"{type(e).__name__}: {e}")
        raise
    write_skipped(out, picker.skipped)
    done = {r.id: r for r in load_results(out)}  # include what other workers finished
    live.write("running", done=len(done), phase="measuring the recommended run in full")
    records = picker.finalize(ctx, list(done.values()))
    record_spent(out, clock() - t_start)
    picker.finish(out, records)
    live.write("finished", done=len(done))
    return {"finished": finished, "skipped": picker.skipped, "results": list(done.values())}


class LiveStatus:
    """``live/status.json`` in the run folder: what a watcher (``adaptlab ui``) shows while a compare
    runs: state, runs done of planned, the run now going with its estimate, the ETA. The run now going
    logs its steps to ``live/<run id>/`` (removed when it is done). Written atomically; the folder,
    not this process, is the state, so a watcher that restarts reads it again."""

    def __init__(self, out: Path, cfg: CompareConfig, planned: int):
        self.dir = Path(out) / "live"
        self.base = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "planned": planned,
            "adaptive": bool(cfg.adaptive),
            "budget_s": cfg.budget_seconds,
            "started": time.time(),
        }

    def write(self, state: str, **fields) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.dir / "status.json", {**self.base, "state": state, "updated": time.time(), **fields})

    def run_dir(self, run_id: str) -> Path:
        return self.dir / run_id


def _race_or_grid(
    cfg, ctx, out, picker, done, specs, settings, t_start, progress, live: LiveStatus, clock=time.monotonic
) -> list[str]:
    import torch

    from adaptlab.compare.measure import run_one

    finished: list[str] = []
    live.write("running", done=len(done), phase="choosing the first run")
    # The code this process runs is the commit checked out now: read HEAD once, since commits made
    # while a long grid runs would otherwise be credited with runs they did not produce.
    commit = git_commit()
    machine = {
        **machine_info(),
        "gemm_gflops": round(ctx.probe_gflops or speed_probe(), 2),
    }  # once per worker, before any run
    while (pick := picker.next(done, clock() - t_start)) is not None:
        spec, guess = pick
        best = _best(list(done.values()))
        console.print(
            f"[bold][{len(done) + 1}/{len(specs)}][/] {spec.id}  est {guess:.0f} s, "
            + ("" if cfg.adaptive else f"grid ETA {picker.remaining(guess) / 60:.1f} min")
            + (f"  best so far: {best}" if best else ""),
            highlight=False,
            soft_wrap=True,
        )  # one line per run, also in a log file
        if (results_dir(out) / f"{spec.id}.json").exists() or not claim(out, spec.id):
            continue  # another worker finished it or is running it
        live.write(
            "running",
            done=len(done),
            eta_s=picker.remaining(guess),
            best=best,
            current={
                "id": spec.id,
                "strategy": spec.strategy,
                "train_size": spec.train_size,
                "estimate_s": guess,
                "started": time.time(),
            },
        )
        limit = picker.limit(spec, guess, clock() - t_start)
        t_run = clock()
        ended = False  # finished or cut; after an error its live folder stays (a search journals there: gepa)
        try:
            torch.manual_seed(spec.seed)
            with time_limit(limit):
                rec = run_one(
                    spec,
                    cfg,
                    ctx,
                    out,
                    progress=progress,
                    light=picker.light(spec),
                    settings=cfg.settings_for(spec.strategy, settings),
                    keep=picker.keep(spec),
                    log_dir=live.run_dir(spec.id),
                    screened=picker.screened(spec),
                )
            rec = RunRecord.of(rec)
            rec.meta.update(
                {
                    "versions": package_versions(),
                    "git_commit": commit,
                    "machine": machine,
                    "data": cfg.data,
                    "model": cfg.model,
                    "worker": f"{socket.gethostname()}:{os.getpid()}",
                }
            )
            write_result(out, rec)  # written last: marks the run done
            ended = True
        except TimeUp:
            ended = True
            took = clock() - t_run
            entry = {
                "id": spec.id,
                "estimate_s": guess,
                "left_s": limit,
                "cut": True,
                "seconds": took,
                "reason": f"cut after {took:.0f} s by its time limit ({limit:.0f} s; estimated {guess:.0f} s)",
            }
            console.print(f"  [yellow]{spec.id} cut[/]: {entry['reason']}", highlight=False, soft_wrap=True)
            picker.skipped.append(entry)
            picker.on_cut(spec, entry)
            shutil.rmtree(out / "artifacts" / spec.id, ignore_errors=True)
            continue
        finally:
            release_claim(out, spec.id)
            record_spent(out, clock() - t_start)
            if ended:
                shutil.rmtree(live.run_dir(spec.id), ignore_errors=True)
        done[spec.id] = rec
        finished.append(spec.id)
        picker.tokens.observe(rec)
        live.write("running", done=len(done), phase="choosing the next run")
    return finished


def worker_command(out: Path) -> list[str]:
    """One worker of the compare in ``out``: it starts from the saved ``compare.json`` (never from
    re-written flags), so every worker runs exactly the settings the compare was started with."""
    import sys

    out = Path(out).resolve()  # a worker elsewhere must find the same folder
    return [
        sys.executable,
        "-m",
        "adaptlab.cli",
        "compare",
        "--config",
        str(out / "compare.json"),
        "--out",
        str(out),
        "--workers",
        "1",
        "--no-progress",
    ]


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def run_workers(out: Path, workers: int) -> int:
    """Run ``workers`` workers of the compare saved in ``out`` (its compare.json) on one machine,
    sharing the cores, and wait.

    Every worker takes runs through claims, so they never run the same one; the results folder
    is the one store. On several machines, start the same command on each against a shared
    folder (``--out`` on NFS), or let Ray place the workers (:func:`run_ray_workers`).
    """
    threads = str(max(1, _cores() // workers))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "ADAPTLAB_THREADS": threads}
    procs = [subprocess.Popen(worker_command(out), env=env) for _ in range(workers)]
    return max(p.wait() for p in procs)


def run_ray_workers(out: Path, workers: int, address: str, cpus: int | None = None) -> int:
    """The same workers as :func:`run_workers`, placed by Ray: ``workers`` tasks of ``cpus`` CPUs
    each, anywhere in the cluster at ``address`` ("local" starts a Ray on this machine). Each task
    runs one worker of the compare saved in ``out``; the claims and the results folder do the rest, so
    ``--out`` must be storage every node sees, and every node needs this environment (same
    Python path, or a Ray ``runtime_env``). Why Ray only places processes: a run is minutes of
    one process's work and its results are files, so Ray's object store has nothing to carry.
    """
    try:
        import ray
    except ImportError:
        raise ValueError("--ray: ray is not installed (pip install 'ray>=2.9')") from None
    cpus = cpus or max(1, _cores() // workers)
    started = not ray.is_initialized()
    if started:
        ray.init(
            address=None if address == "local" else address,
            num_cpus=_cores() if address == "local" else None,
            include_dashboard=False,
            log_to_driver=True,
            configure_logging=False,
        )
    env = {"OMP_NUM_THREADS": str(cpus), "ADAPTLAB_THREADS": str(cpus)}

    @ray.remote(num_cpus=cpus, max_retries=0)
    def worker(cmd: list[str], extra_env: dict) -> int:
        return subprocess.run(cmd, env={**os.environ, **extra_env}).returncode

    try:
        codes = ray.get([worker.remote(worker_command(out), env) for _ in range(workers)])
    finally:
        if started:
            ray.shutdown()
    return max(codes)


def _best(records: list[RunRecord]) -> str | None:
    """The best run so far by the metric the ranking uses (macro-F1 on imbalanced labels: the
    progress line said accuracy there while the ranking said macro-F1, 0.656 against 0.283)."""
    if not records:
        return None
    metric = ranking_metric(records)[0]
    r = max(records, key=lambda r: r.ranked_quality(metric))
    return f"{r.id} {metric} {r.ranked_quality(metric):.3f}"
