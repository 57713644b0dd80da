"""Issue 36's table: does the adaptive compare measure every candidate, both sides of "prompt or
fine-tune?", and the winner at the user's size, within its budget? One row per compare:

    python bench/measured_answers.py demo --budget 15m              # one row, appended
    python bench/measured_answers.py sst2_32 --budget 10m --half-speed
    python bench/measured_answers.py --summarize                    # rewrite the .md from the .json
    python bench/measured_answers.py sst2_32 --budget 10m --rejudge # resume a finished row's compare
                                                                    # with the code now, judge it again

Each row: candidates asked and measured (and left out by the budget check, with the budget it asked
for), whether a prompt-only and a trained candidate were both measured, the recommended candidate and
whether it was measured at the target, decided or tied and the rule that decided, wall time against
the budget, the full grid's answer where one is committed, and what else ran on the cores (``--beside``).
Half speed pins the compare to one core (``taskset -c 0``). Rows go to docs/results/measured_answers.json,
the table to docs/results/measured_answers.md. The compare commands are those of
``bench/dependable_answers.py`` (same data, sizes, rows), plus the rows issue 36 names.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from dependable_answers import JOBS as EARLIER  # noqa: E402  (this folder's earlier table: same commands)
from dependable_answers import grid_answer, launch  # noqa: E402

RESULTS = ROOT / "docs" / "results" / "measured_answers.json"
TABLE = ROOT / "docs" / "results" / "measured_answers.md"
FEW = ["--fragility-k", "1", "--fragility-examples", "16", "--consistency-examples", "0"]
JOBS = {
    **{k: EARLIER[k] for k in ("demo", "fpb", "ag_news", "ag_news_500", "banking77")},
    "sst2_32": (["--data", "sst2", "--train-sizes", "16,32", "--test-limit", "300", *FEW], "compare_sst2"),
    "e2e_256": (
        [
            "--data",
            "e2e_nlg",
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
    "viggo_smollm2": (
        [
            "--data",
            "viggo",
            "--model",
            "smollm2-135m-instruct",
            "--train-sizes",
            "64,256",
            "--test-limit",
            "100",
            "--fragility-k",
            "0",
            "--consistency-examples",
            "0",
        ],
        "compare_viggo_smollm2",
    ),
    # Two local bases and an endpoint in one compare: every local strategy on each base
    # (STRATEGY@BASE) and the prompt strategies on llama.cpp's server on loopback ({endpoint} is
    # filled in when the server is up; bench/compare_hosted.py prices it as a small hosted model).
    "fpb_two_bases_endpoint": (
        [
            "--data",
            "financial_phrasebank",
            "--model",
            "gemma-3-270m,smollm2-135m-instruct",
            "--endpoint",
            "{endpoint}",
            "--train-sizes",
            "32,128",
            "--test-limit",
            "200",
            "--volume",
            "1M/month",
            "--no-forgetting",
            "--fragility-k",
            "0",
            "--consistency-examples",
            "0",
        ],
        None,
    ),
}


def run(job: str, budget: str, half: bool, out: Path, beside: str) -> dict:
    args, grid = JOBS[job]
    if "{endpoint}" in args:
        with hosted_endpoint() as endpoint:
            proc, common = launch([endpoint if a == "{endpoint}" else a for a in args], budget, half, out)
    else:
        proc, common = launch(args, budget, half, out)
    from adaptlab.compare.config import parse_budget

    row = {
        "data": job,
        **common,
        "budget_s": parse_budget(budget),
        "beside": beside,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "commit": commit(),
        "full_grid": grid_answer(grid),
    }
    if proc.returncode != 0:
        row["error"] = (proc.stderr or proc.stdout).strip().splitlines()[-1:]
        return row
    return {**row, **judge(out), **agreement(out, grid)}


def commit() -> str:
    """The code a row was measured with (rows made before the schedule fixes read differently)."""
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "adaptlab"], cwd=ROOT).returncode
    return out.stdout.strip() + ("+changes" if dirty else "")


@contextlib.contextmanager
def hosted_endpoint():
    """llama-server with SmolLM2-135M-Instruct on loopback, as bench/compare_hosted.py starts it (its
    chat template, answers parsed into labels, priced as a small hosted model); yields the
    ``--endpoint`` value."""
    from compare_hosted import hosted_gguf
    from llamacpp_kit import llama_server_binary
    from serving_llamacpp_http import LlamaServer

    name = "smollm2-135m-instruct"
    server = LlamaServer(
        llama_server_binary(), hosted_gguf(name), [], parallel=4, ctx_per_slot=2048, extra=["--alias", name]
    )
    try:
        yield f"hosted={server.url}/v1,model={name},in=0.15,out=0.6,concurrency=4,chat=true,mode=parse"
    finally:
        server.stop()


def agreement(out: Path, grid: str | None) -> dict:
    """Whether the row's answer is the committed full grid's, or inside its tie (the candidates whose
    paired interval against the grid's winner includes 0), at the same target size."""
    if grid is None:
        return {"agrees": None}
    from adaptlab.compare import load_results
    from adaptlab.compare.recommend import Constraints, recommend

    full = recommend(load_results(ROOT / "docs" / "results" / grid), Constraints())
    mine = recommend(load_results(out), Constraints())
    if full.target != mine.target:
        return {"agrees": None, "agreement": f"the grid ranks at {full.target}, this compare at {mine.target}"}
    tie = {full.winner} | {p["b"] for p in full.paired if p["a"] == full.winner and p["lo"] <= 0}
    return {
        "agrees": mine.winner in tie,
        "agreement": f"grid: {full.winner}, tied with it: {', '.join(sorted(tie - {full.winner})) or 'none'}",
    }


def judge(out: Path) -> dict:
    """What the finished compare in ``out`` measured and decided."""
    from adaptlab.compare import load_results
    from adaptlab.compare.recommend import PROMPT_MARGIN, Constraints, recommend

    race = json.loads((out / "race.json").read_text())
    cfg = json.loads((out / "compare.json").read_text())
    recs = load_results(out)
    best = recommend(recs, Constraints(volume=cfg.get("volume"), prompt_margin=cfg.get("prompt_margin", PROMPT_MARGIN)))
    asked = race.get("candidates") or sorted({r["run"]["strategy"] for r in recs})
    measured = sorted({r["run"]["strategy"] for r in recs})
    kinds = {r["run"]["kind"] for r in recs}
    at_target = any(r["run"]["strategy"] == best.winner and r["run"]["train_size"] in (0, race["target"]) for r in recs)
    # the largest size the winner itself was measured at: below the ranked size when it is recommended on a
    # smaller size's measurement (recommend's rule measured)
    sizes = [r["run"]["train_size"] for r in recs if r["run"]["strategy"] == best.winner]
    rule = next((r for r in best.fired if r in ("prompt_enough", "near_tie", "training_wins")), None)
    line = race["decision"]
    state = (
        "decided"
        if line.startswith("decided")
        else "tie resolved"
        if line.startswith("tie resolved")
        else "not decided"
    )
    return {
        "target": race["target"],
        "recommended": best.winner,
        "ranked_at": best.target,
        "measured_at_target": at_target,
        "quality": best.ranked[0]["quality"] if best.ranked else None,
        "winner_measured_at": max(sizes) if sizes else None,
        "metric": best.metric,
        "asked": asked,
        "measured": measured,
        "left_out": [x["candidate"] for x in race.get("left_out", [])],
        "both_sides": {"prompt", "gradient"} <= kinds,
        "state": state,
        "rule": rule,
        "decision": line,
        "question": _question(
            race, {r["run"]["strategy"]: r["run"]["kind"] for r in recs}.get(best.winner), state, rule
        ),
        "runs": race["runs"],
        "compare_minutes": round(race["minutes"], 2),
    }


def _question(race: dict, kind: str | None, state: str, rule: str | None) -> str:
    """Prompt or train, the product's question: answered and decided (every candidate of the other side
    dropped, or the strategy itself decided), by a rule, or open."""
    side = "prompt" if kind == "prompt" else "training"
    q = race.get("question") or {}
    if state == "decided":
        return f"{side}, decided"
    if rule == "prompt_enough" and state == "tie resolved":
        return "prompt, by rule prompt_enough"
    if q.get("decided") and q.get("answer") == side:
        return f"{side}, decided"
    return "not decided" + (f" ({', '.join(q['open'])} open)" if q.get("open") else "")


def rejudge(job: str, budget: str, half: bool) -> None:
    from adaptlab.compare import load_results

    out = ROOT / "runs" / "measured" / f"{job}-{budget}{'-half' if half else ''}"
    rows = json.loads(RESULTS.read_text())
    i = max(
        k
        for k, r in enumerate(rows)
        if r["data"] == job and r["budget"] == budget and (r["slowdown"] != "none") == half
    )
    before = {r.id for r in load_results(out)}
    cmd = rows[i]["command"].split()
    cmd[0] = str(ROOT / cmd[0])
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0 or {r.id for r in load_results(out)} != before:
        sys.exit(f"{job}: the resumed compare ran something or failed (exit {proc.returncode}); not re-judged")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout
    rows[i] = {
        **rows[i],
        **judge(out),
        **agreement(out, JOBS[job][1]),
        "rejudged": f"decision made again by commit {commit.strip()} ({time.strftime('%Y-%m-%d %H:%M')}), no run added",
    }
    RESULTS.write_text(json.dumps(rows, indent=1) + "\n")


def _recommended(r: dict) -> str:
    at = r.get("winner_measured_at")
    if at is not None and r["ranked_at"] and at not in (0, r["ranked_at"]):  # measured smaller, ranked by prediction
        return (
            f"{r['recommended']} (measured at {at}, {r['metric']} {r['quality']:.3f}; ranked at {r['ranked_at']} "
            f"by its pessimistic bound)"
        )
    return f"{r['recommended']} (at {r['ranked_at']}, {r['metric']} {r['quality']:.3f})"


def when(row: dict) -> str:
    return f"{row.get('date', '-')}" + (f" ({row['commit']})" if row.get("commit") else "")


def summarize() -> None:
    rows = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    lines = [
        "# Measured answers (issue 36): every candidate measured, both sides, the winner at the target",
        "",
        "Produced by `python bench/measured_answers.py JOB --budget B [--half-speed] [--beside TEXT]`, one "
        "compare at a time, model Gemma 3 270M unless the command names another; wall time is the whole "
        "command (model load, tuning, runs, final measurements, report). `beside`: what else ran on the 2 "
        "cores meanwhile. `run at (commit)`: when the row ended and the commit it ran with (for rows made "
        "before this column, the last commit before that time); the schedule changed between rows, so a "
        "row is only comparable with rows of the same commit or later. `prompt or train`: the product's "
        "question on its own: decided when the strategy is, or when every candidate of the side that does not "
        "lead is measured and dropped (a candidate of that side never measured keeps it open), or answered by "
        "rule prompt_enough; '-' for rows made before the column.",
        "",
        "| data | budget | slowdown | candidates measured / asked | both sides | recommended | winner measured "
        "at target | decided or tied (rule) | prompt or train | wall / budget | full grid | beside | run at (commit) | decision |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines[2:2] = _latest(rows)
    for r in rows:
        if r.get("error"):
            lines.append(
                f"| {r['data']} | {r['budget']} | {r['slowdown']} | refused: {' '.join(r['error'])} | | | "
                f"| | | {r['wall_s']:.0f} s | {r.get('full_grid') or '-'} | {r.get('beside') or 'nothing'} | {when(r)} | |"
            )
            continue
        left = f" (left out: {', '.join(r['left_out'])})" if r["left_out"] else ""
        again = f" ({r['rejudged']})" if r.get("rejudged") else ""
        grid = (r.get("full_grid") or "-") + (
            {True: " (agrees)", False: " (**disagrees**)"}.get(r.get("agrees"), "") if r.get("full_grid") else ""
        )
        lines.append(
            f"| {r['data']} | {r['budget']} | {r['slowdown']} | {len(r['measured'])} / {len(r['asked'])}{left} | "
            f"{'yes' if r['both_sides'] else '**no**'} | {_recommended(r)} | {'yes' if r['measured_at_target'] else '**no**'} | {r['state']}"
            f"{' (' + r['rule'] + ')' if r['rule'] else ''} | {r.get('question', '-')} | {r['wall_s'] / 60:.1f} / {r['budget_s'] / 60:.0f} min "
            f"({100 * r['wall_s'] / r['budget_s']:.0f}%) | {grid} | {r.get('beside') or 'nothing'} | {when(r)} | "
            f"{r['decision']}{again} |"
        )
    notes = TABLE.with_name("measured_answers_notes.md")
    tail = ["", notes.read_text().rstrip()] if notes.exists() else []
    TABLE.write_text("\n".join(lines + tail) + "\n")


def _latest(rows: list[dict]) -> list[str]:
    """Where each compare stands now: its latest row at each speed (and, when that one was refused,
    the latest the compare accepted), with the issue's targets tallied over the accepted ones."""
    latest: dict[tuple, dict] = {}
    accepted: dict[tuple, dict] = {}
    for r in rows:
        key = (r["data"], r["slowdown"])
        latest[key] = r
        if not r.get("error"):
            accepted[key] = r
    out = [
        "## Where each compare stands (its latest row at each speed; the full history follows)",
        "",
        "| data | slowdown | budget | measured / asked | both sides | winner at target | decided or tied | "
        "prompt or train | wall / budget | run at (commit) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    tally = {"full": [], "half": []}
    for key in latest:
        for r in [latest[key]] + ([accepted[key]] if latest[key].get("error") and key in accepted else []):
            if r.get("error"):
                out.append(f"| {r['data']} | {r['slowdown']} | {r['budget']} | refused | | | | | | {when(r)} |")
                continue
            tally["full" if r["slowdown"] == "none" else "half"].append(r)
            out.append(
                f"| {r['data']} | {r['slowdown']} | {r['budget']} | {len(r['measured'])} / {len(r['asked'])} | "
                f"{'yes' if r['both_sides'] else '**no**'} | {'yes' if r['measured_at_target'] else '**no**'} | "
                f"{r['state']}{' (' + r['rule'] + ')' if r['rule'] else ''} | {r.get('question', '-')} | "
                f"{r['wall_s'] / 60:.1f} / {r['budget_s'] / 60:.0f} min | {when(r)} |"
            )
    out.append("")
    for speed, rs in tally.items():
        if not rs:
            continue

        def count(ok, rs=rs) -> str:
            return f"{sum(1 for r in rs if ok(r))} of {len(rs)}"

        out.append(
            f"- At {speed} speed, over the latest accepted row of each compare: every candidate measured in "
            f"{count(lambda r: len(r['measured']) == len(r['asked']))}; both sides in "
            f"{count(lambda r: r['both_sides'])}; the winner measured at the target in "
            f"{count(lambda r: r['measured_at_target'])}; decided or a tie resolved by a rule in "
            f"{count(lambda r: r['state'] != 'not decided')}; the question (prompt or train) answered in "
            f"{count(lambda r: not str(r.get('question', '-')).startswith(('not', '-')))}; wall time within "
            f"+5% of the budget in {count(lambda r: r['wall_s'] <= 1.05 * r['budget_s'])}."
        )
    out.append("")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("job", nargs="?", choices=sorted(JOBS))
    ap.add_argument("--budget", default="15m")
    ap.add_argument("--half-speed", action="store_true")
    ap.add_argument("--beside", default="", help="what else ran on the cores meanwhile")
    ap.add_argument("--summarize", action="store_true")
    ap.add_argument(
        "--rejudge",
        action="store_true",
        help="resume the row's finished compare (nothing left to run: its decision and report are made "
        "again by the code now) and replace its judgment; runs and wall time stay the first run's",
    )
    a = ap.parse_args()
    if a.rejudge:
        rejudge(a.job, a.budget, a.half_speed)
    elif not a.summarize:
        if not a.job:
            sys.exit("name a job: " + ", ".join(sorted(JOBS)))
        out = ROOT / "runs" / "measured" / f"{a.job}-{a.budget}{'-half' if a.half_speed else ''}"
        out.parent.mkdir(parents=True, exist_ok=True)
        row = run(a.job, a.budget, a.half_speed, out, a.beside)
        rows = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
        RESULTS.write_text(json.dumps(rows + [row], indent=1) + "\n")
        print(json.dumps(row, indent=1))
    summarize()


if __name__ == "__main__":
    main()
