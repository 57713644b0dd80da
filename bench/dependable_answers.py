"""Issue 26's table: the adaptive compare on data it was not built on, at a budget, at full and half speed.

One row per compare: data, budget, CPU slowdown, target size, recommended strategy, whether it was
measured at the target, wall time against the budget, and the full grid's answer where one exists.

    python bench/dependable_answers.py fpb --budget 15m                     # one row, appended
    python bench/dependable_answers.py fpb --budget 15m --half-speed        # taskset to one core
    python bench/dependable_answers.py demo --budget 4m                     # make demo's compare
    python bench/dependable_answers.py --summarize                          # rewrite the .md from the .json

Half speed: the compare is pinned to one of the two cores (``taskset -c 0``, torch on one thread),
which halves the machine it runs on. Rows are appended to docs/results/dependable_answers.json and
the table is rewritten to docs/results/dependable_answers.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results" / "dependable_answers.json"
TABLE = ROOT / "docs" / "results" / "dependable_answers.md"

# Per dataset: the compare's arguments (everything but --budget and --out) and the committed full grid
# whose answer the row is judged against, where one exists.
JOBS = {
    "demo": (["DEMO"], None),  # `adaptlab demo --budget B`: make demo's own compare
    "fpb": (
        [
            "--data",
            "financial_phrasebank",
            "--train-sizes",
            "64,256,1000",
            "--test-limit",
            "300",
            "--fragility-k",
            "1",
            "--fragility-examples",
            "16",
            "--consistency-examples",
            "0",
        ],
        None,
    ),
    # All 3,872 train rows at a 15-minute budget: refused at the start, with the budget that would fit.
    "fpb_all": (
        [
            "--data",
            "financial_phrasebank",
            "--train-sizes",
            "64,256,all",
            "--test-limit",
            "300",
            "--fragility-k",
            "1",
            "--fragility-examples",
            "16",
            "--consistency-examples",
            "0",
        ],
        None,
    ),
    "ag_news": (
        [
            "--data",
            "ag_news",
            "--train-sizes",
            "64,256,1000",
            "--test-limit",
            "300",
            "--fragility-k",
            "1",
            "--fragility-examples",
            "16",
            "--consistency-examples",
            "0",
        ],
        None,
    ),
    "ag_news_500": (
        [
            "--data",
            "ag_news",
            "--train-sizes",
            "64,256,500",
            "--test-limit",
            "300",
            "--fragility-k",
            "1",
            "--fragility-examples",
            "16",
            "--consistency-examples",
            "0",
        ],
        None,
    ),
    "ag_news_k16": (
        [
            "--data",
            "ag_news",
            "--train-sizes",
            "64,256,1000",
            "--test-limit",
            "300",
            "--fragility-k",
            "1",
            "--fragility-examples",
            "16",
            "--consistency-examples",
            "0",
            "--set",
            "few_shot.k=16",
        ],
        None,
    ),
    # The same >1,000-token few-shot prompts where few-shot is reached: a user asking "prompt or LoRA?"
    # (in the full list above, the race spends the budget on LoRA and hybrid before any prompt).
    "ag_news_k16_prompts": (
        [
            "--data",
            "ag_news",
            "--strategies",
            "zero_shot,few_shot,lora",
            "--train-sizes",
            "64,256,1000",
            "--test-limit",
            "300",
            "--fragility-k",
            "1",
            "--fragility-examples",
            "16",
            "--consistency-examples",
            "0",
            "--set",
            "few_shot.k=16",
        ],
        None,
    ),
    "banking77": (
        [
            "--data",
            "banking77",
            "--train-sizes",
            "16,256,1000",
            "--test-limit",
            "385",
            "--fragility-k",
            "1",
            "--fragility-examples",
            "16",
            "--consistency-examples",
            "0",
        ],
        "compare_banking77",
    ),
    "e2e": (
        [
            "--data",
            "e2e_nlg",
            "--strategies",
            "zero_shot,few_shot,lora,soft_prompt",
            "--train-sizes",
            "64,256",
            "--test-limit",
            "100",
            "--fragility-k",
            "0",
            "--consistency-examples",
            "0",
        ],
        "compare_e2e",
    ),
}


def grid_answer(folder: str | None) -> str | None:
    """The committed full grid's recommendation (its strategy and the size it ranked at)."""
    if folder is None:
        return None
    from adaptlab.compare import load_results
    from adaptlab.compare.recommend import Constraints, recommend

    recs = load_results(ROOT / "docs" / "results" / folder)
    if not recs:
        return None
    best = recommend(recs, Constraints())
    return f"{best.winner} at {best.target}"


def launch(args: list[str], budget: str, half: bool, out: Path) -> tuple[subprocess.CompletedProcess, dict]:
    """Run one compare command (``["DEMO"]``: ``adaptlab demo``) into a fresh ``out``, its output kept
    beside it; returns the process and the row's common fields (command, exit, wall time, machine)."""
    if out.exists():
        shutil.rmtree(out)
    exe = str(ROOT / ".venv" / "bin" / "adaptlab")
    cmd = (
        [exe, "demo", "--budget", budget, "--out", str(out)]
        if args == ["DEMO"]
        else [exe, "compare", *args, "--budget", budget, "--out", str(out), "--no-progress"]
    )
    env = dict(os.environ)
    if half:
        cmd = ["taskset", "-c", "0", *cmd]
        env.update(OMP_NUM_THREADS="1", ADAPTLAB_THREADS="1")
    t0 = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.monotonic() - t0
    (out.parent / f"{out.name}.log").write_text(proc.stdout + proc.stderr)
    return proc, {
        "budget": budget,
        "slowdown": "half speed (taskset -c 0)" if half else "none",
        "command": " ".join(cmd[cmd.index(exe) :]).replace(str(ROOT) + "/", ""),
        "exit": proc.returncode,
        "wall_s": round(wall, 1),
        "machine": f"{platform.node()} {os.cpu_count()} cores",
    }


def run(job: str, budget: str, half: bool, out: Path) -> dict:
    args, grid = JOBS[job]
    proc, common = launch(args, budget, half, out)
    row = {"data": job, **common, "date": time.strftime("%Y-%m-%d %H:%M"), "full_grid": grid_answer(grid)}
    from adaptlab.compare.config import parse_budget

    row["budget_s"] = parse_budget(budget)
    if proc.returncode != 0:
        row["error"] = (proc.stderr or proc.stdout).strip().splitlines()[-1:]
        return row
    from adaptlab.compare import load_results
    from adaptlab.compare.recommend import Constraints, recommend

    race = json.loads((out / "race.json").read_text())
    recs = load_results(out)
    best = recommend(recs, Constraints())
    measured = any(r["run"]["strategy"] == best.winner and r["run"]["train_size"] in (0, race["target"]) for r in recs)
    row.update(
        target=race["target"],
        recommended=best.winner,
        ranked_at=best.target,
        measured_at_target=measured,
        decision=race["decision"],
        runs=race["runs"],
        compare_minutes=round(race["minutes"], 2),
        never_run=[n["strategy"] for n in race.get("never_run", [])],
        within_budget=row["wall_s"] <= 1.05 * row["budget_s"],
        quality=best.ranked[0]["quality"] if best.ranked else None,
        metric=best.metric,
    )
    return row


def summarize() -> None:
    rows = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    lines = [
        "# Dependable answers (issue 26): the adaptive compare on data it was not built on",
        "",
        "Produced by `python bench/dependable_answers.py JOB --budget B [--half-speed]`, one compare at a "
        "time (anything else that shared the 2 cores is said in the row), model Gemma 3 270M. Wall time is "
        "the whole command (model load, tuning, runs, final measurements, report). Machines: the rows up to "
        "2026-12-02 ran on a VM whose matrix-product probe read 57-64 GFLOP/s, the later ones on one that "
        "read 119-131 (the JSON's `machine` and `date`); notes in `dependable_answers_notes.md`.",
        "",
        "| data | budget | slowdown | target | recommended | measured at target | quality | wall / budget | "
        "never run | full grid | decision |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        data = r["data"] + (f" ({r['note']})" if r.get("note") else "")
        if r.get("error"):
            lines.append(
                f"| {data} | {r['budget']} | {r['slowdown']} | - | refused: {' '.join(r['error'])} | | | "
                f"{r['wall_s']:.0f} s | | {r.get('full_grid') or '-'} | |"
            )
            continue
        lines.append(
            f"| {data} | {r['budget']} | {r['slowdown']} | {r['target']} | {r['recommended']} "
            f"(at {r['ranked_at']}) | {'yes' if r['measured_at_target'] else '**no**'} | "
            f"{r['metric']} {r['quality']:.3f} | {r['wall_s'] / 60:.1f} / {r['budget_s'] / 60:.0f} min "
            f"({100 * r['wall_s'] / r['budget_s']:.0f}%) | {', '.join(r['never_run']) or '-'} | "
            f"{r.get('full_grid') or '-'} | {r['decision']} |"
        )
    TABLE.write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("job", nargs="?", choices=sorted(JOBS))
    ap.add_argument("--budget", default="15m")
    ap.add_argument("--half-speed", action="store_true")
    ap.add_argument("--summarize", action="store_true")
    a = ap.parse_args()
    if not a.summarize:
        if not a.job:
            sys.exit("name a job: " + ", ".join(sorted(JOBS)))
        out = ROOT / "runs" / "dependable" / f"{a.job}-{a.budget}{'-half' if a.half_speed else ''}"
        out.parent.mkdir(parents=True, exist_ok=True)
        row = run(a.job, a.budget, a.half_speed, out)
        rows = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
        RESULTS.write_text(json.dumps(rows + [row], indent=1) + "\n")
        print(json.dumps(row, indent=1))
    summarize()


if __name__ == "__main__":
    main()
