"""A compare's scoring time per run, before and after the engine work (issue 37: "the same compare
commands, before and after, scoring seconds per run; target: half").

    python bench/compare_scoring.py e2e --before 8526401 --out docs/results/compare_scoring_e2e

Runs the same ``adaptlab compare`` command (full grid, no budget: every run is made) twice, one
after the other: with the code at ``--before`` (a git worktree made for it, removed after) and with
the code of this checkout. Each run's training and evaluation seconds come from its record
(``eval.seconds``: scoring the test rows, for generation tasks decoding them); the table gives both
and their ratio per run, and checks that each run's quality is the same before and after (the
engine changes must not move a number). ``--reuse BEFORE_DIR AFTER_DIR`` summarizes two run folders
the same commands made instead of running them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adaptlab.utils import atomic_write_json, atomic_write_text, machine_info, package_versions  # noqa: E402

JOBS = {
    # E2E generation (decoding 100 test rows per run) with a prompt-only pair and a trained run
    "e2e": [
        "--data",
        "e2e_nlg",
        "--strategies",
        "zero_shot,few_shot,lora",
        "--train-sizes",
        "64",
        "--test-limit",
        "100",
        "--fragility-k",
        "0",
        "--consistency-examples",
        "0",
        "--no-forgetting",
        "--keep-artifacts",
        "none",
        "--no-progress",
    ],
    # Banking77 classification (77 labels, 140 label-trie nodes; 385 test rows per run): a
    # prompt-only pair and two trained runs, at the sizes dependable_answers.py's job used
    "banking77": [
        "--data",
        "banking77",
        "--strategies",
        "zero_shot,few_shot,lora,soft_prompt",
        "--train-sizes",
        "256",
        "--test-limit",
        "385",
        "--fragility-k",
        "0",
        "--consistency-examples",
        "0",
        "--no-forgetting",
        "--keep-artifacts",
        "none",
        "--no-progress",
    ],
}


def compare_command(job: str, out: Path) -> list[str]:
    return [sys.executable, "-m", "adaptlab.cli", "compare", *JOBS[job], "--out", str(out)]


def run_at(code: Path, job: str, out: Path) -> float:
    """Run the job with the package at ``code``; its wall seconds."""
    t = time.perf_counter()
    # The named datasets beside this checkout (the worktree for --before lives elsewhere)
    data = os.environ.get("ADAPTLAB_DATA_DIR", str(ROOT.parent / "shared" / "datasets"))
    env = {**os.environ, "PYTHONPATH": str(code), "ADAPTLAB_DATA_DIR": data}
    subprocess.run(compare_command(job, out), cwd=code, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def runs_of(folder: Path) -> dict[str, dict]:
    out = {}
    for f in sorted((folder / "results").glob("*.json")):
        r = json.loads(f.read_text())
        out[r["run"]["id"]] = {
            "train_s": round(float(r["train"].get("seconds", 0.0)), 1),
            "eval_s": round(float(r["eval"]["seconds"]), 1),
            "quality": r["eval"]["quality"],
            "metric": r["eval"].get("metric"),
        }
    return out


def table(before: dict, after: dict) -> list[dict]:
    rows = []
    for rid in sorted(before.keys() & after.keys()):
        b, a = before[rid], after[rid]
        rows.append(
            {
                "run": rid,
                "eval_s_before": b["eval_s"],
                "eval_s_after": a["eval_s"],
                "eval_speedup": round(b["eval_s"] / max(a["eval_s"], 1e-9), 2),
                "train_s_before": b["train_s"],
                "train_s_after": a["train_s"],
                "quality_before": b["quality"],
                "quality_after": a["quality"],
                "same_quality": abs(b["quality"] - a["quality"]) < 1e-9,
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("job", choices=sorted(JOBS))
    ap.add_argument("--before", default="8526401", help="The commit before the engine work.")
    ap.add_argument("--reuse", nargs=2, type=Path, metavar=("BEFORE_DIR", "AFTER_DIR"))
    ap.add_argument("--wall", nargs=2, type=float, metavar=("BEFORE_S", "AFTER_S"), help="With --reuse.")
    ap.add_argument("--beside", default="nothing")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "compare_scoring_e2e")
    a = ap.parse_args()
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout
    if a.reuse:
        before_dir, after_dir = a.reuse
        wall = list(a.wall) if a.wall else [None, None]
    else:
        tmp = Path(tempfile.mkdtemp())
        tree = tmp / "before"
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), a.before], cwd=ROOT, check=True)
        try:
            before_dir, after_dir = tmp / "runs-before", tmp / "runs-after"
            wall = [run_at(tree, a.job, before_dir), run_at(ROOT, a.job, after_dir)]
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)
    rows = table(runs_of(before_dir), runs_of(after_dir))
    total_b = sum(r["eval_s_before"] for r in rows)
    total_a = sum(r["eval_s_after"] for r in rows)
    report = {
        "command": f"python bench/compare_scoring.py {a.job} --before {a.before}",
        "compare": "adaptlab compare " + " ".join(JOBS[a.job]) + " --out DIR",
        "before": a.before,
        "after": head.strip(),
        "date": datetime.date.today().isoformat(),
        "machine": machine_info(),
        "versions": package_versions(),
        "beside": a.beside,
        "wall_s": wall,
        "eval_s_total": [round(total_b, 1), round(total_a, 1)],
        "rows": rows,
    }
    atomic_write_json(a.out.with_suffix(".json"), report)
    ratio = total_b / max(total_a, 1e-9)
    md = [
        f"# A compare's scoring time per run, before ({a.before}) and after ({head.strip()}) the engine work",
        "",
        f"Command: `{report['command']}`; each side runs `{report['compare']}`.  ",
        f"Machine: {report['machine']['cpu_model']}, {report['machine']['cpu_count']} cores; {report['date']}. "
        f"Beside it on the cores: {a.beside}.",
        "",
        "| run | scoring s before | after | faster | train s before / after | quality before / after |",
        "|---|---|---|---|---|---|",
        *(
            f"| {r['run']} | {r['eval_s_before']} | {r['eval_s_after']} | {r['eval_speedup']}x | "
            f"{r['train_s_before']} / {r['train_s_after']} | {r['quality_before']:.4f} / {r['quality_after']:.4f}"
            f"{'' if r['same_quality'] else ' (**differs**)'} |"
            for r in rows
        ),
        f"| **all runs** | {total_b:.1f} | {total_a:.1f} | {ratio:.2f}x | | |",
    ]
    if wall[0] is not None:
        md += ["", f"Whole command: {wall[0] / 60:.1f} min before, {wall[1] / 60:.1f} min after."]
    notes = a.out.parent / (a.out.name + "_notes.md")  # the reading, written by hand, kept across runs
    if notes.exists():
        md += ["", notes.read_text().rstrip()]
    atomic_write_text(a.out.with_suffix(".md"), "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
