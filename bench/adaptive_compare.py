"""Adaptive compare vs the committed full grid: the same recommendation at a fraction of the wall time?

    python bench/adaptive_compare.py sst2 --budget 33m
    python bench/adaptive_compare.py banking77 --budget 58m
    python bench/adaptive_compare.py --summarize          # rebuild docs/results/adaptive_compare.{json,md}

For each dataset it runs ``adaptlab compare --adaptive`` (tuning on, the default) with the strategies,
train sizes and evaluation settings of the committed full grid (``bench/compare_reports.sh``; one seed
where the grid had two), into ``docs/results/adaptive_<data>/``, resuming if that folder has runs.
Then it puts the two recommendations side by side: the winner of each, whether they agree or the
adaptive winner is inside the full grid's tie tolerance at the same size, and the wall time of each
(the sum of the runs' own start-to-finish times, plus the tuning fits for the adaptive one), with
the ratio. Target (issue 19): the same recommendation or one inside the tie tolerance in at most
20% of the full grid's wall time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from adaptlab.compare.grid import compare_minutes, load_results
from adaptlab.compare.recommend import Constraints, _tolerance, recommend
from adaptlab.compare.summary import aggregate
from adaptlab.compare.tuning import load_tuning
from adaptlab.utils import atomic_write_json, atomic_write_text, machine_info

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results"
GRIDS = {  # the committed full grids' settings (bench/compare_reports.sh), one seed
    "sst2": ["--train-sizes", "16,64,256,1000", "--test-limit", "500", "--fragility-k", "2",
             "--fragility-examples", "40", "--set", "few_shot.k=8", "--set", "prompt_search.budget_calls=400"],
    "banking77": ["--train-sizes", "16,64,256,1000", "--test-limit", "385", "--fragility-k", "1",
                  "--fragility-examples", "24", "--set", "few_shot.k=8", "--set", "prompt_search.budget_calls=400"],
}


def side_by_side(data: str) -> dict:
    full_dir, ada_dir = RESULTS / f"compare_{data}", RESULTS / f"adaptive_{data}"
    full, ada = load_results(full_dir), load_results(ada_dir)
    rf, ra = recommend(full, Constraints()), recommend(ada, Constraints())
    race = json.loads((ada_dir / "race.json").read_text()) if (ada_dir / "race.json").exists() else {}
    # Inside the full grid's tie tolerance: the adaptive winner's full-grid quality at the ranked size
    # is within the tolerance the full grid's near_tie rule used for its leader.
    rows = {r.strategy: r for r in aggregate(full) if r.train_size in (rf.target, 0)}
    lead = max(rows.values(), key=lambda r: r.quality)
    tol, why = _tolerance(lead)
    wa = ra.winner
    gap = lead.quality - rows[wa].quality if wa in rows else None
    tied = gap is not None and gap <= tol + 1e-9
    full_min, ada_min = compare_minutes(full_dir, full), compare_minutes(ada_dir, ada)
    wall = json.loads((ada_dir / "wall.json").read_text()) if (ada_dir / "wall.json").exists() else {}
    return {
        "data": data, "full_grid": {"winner": rf.winner, "target": rf.target, "runs": len(full), "minutes": full_min,
                                    "best_quality": lead.quality, "best": lead.strategy},
        "adaptive": {"winner": wa, "target": ra.target, "runs": len(ada), "tuning_fits": len(load_tuning(ada_dir)),
                     "minutes": ada_min, "process_minutes": wall.get("minutes"), "decision": race.get("decision"),
                     "winner_quality": next((x["quality"] for x in ra.ranked if x["strategy"] == wa), None),
                     "dropped": race.get("dropped", {})},
        "same_winner": wa == rf.winner,
        "inside_tolerance": tied,
        "full_grid_gap_points": None if gap is None else 100 * gap, "tolerance_points": 100 * tol, "tolerance_why": why,
        "time_ratio": ada_min / full_min if full_min else None,
        "target_met": (wa == rf.winner or tied) and ada_min <= 0.2 * full_min,
    }


def summarize() -> None:
    out = [side_by_side(d) for d in GRIDS if (RESULTS / f"adaptive_{d}" / "results").exists()]
    atomic_write_json(RESULTS / "adaptive_compare.json", {"machine": machine_info(), "results": out})
    lines = ["# Adaptive compare vs the full grid", "",
             "Produced by `python bench/adaptive_compare.py DATA --budget B` (see its docstring); rebuilt with "
             "`--summarize`. Wall time: the runs' own start-to-finish times summed (and the tuning fits for "
             "the adaptive compare), so model loading and the report are left out of both.", "",
             "| data | full grid: winner (runs, min) | adaptive: winner (runs + tuning fits, min) | same or tied | "
             "time ratio | target met |", "|---|---|---|---|---|---|"]
    for r in out:
        f, a = r["full_grid"], r["adaptive"]
        tied = "same" if r["same_winner"] else (
            f"tied ({r['full_grid_gap_points']:.1f} <= {r['tolerance_points']:.1f} points)" if r["inside_tolerance"]
            else f"no ({r['full_grid_gap_points'] if r['full_grid_gap_points'] is not None else '?'} points)")
        lines.append(f"| {r['data']} | {f['winner']} at {f['target']} ({f['runs']}, {f['minutes']:.0f}) | "
                     f"{a['winner']} at {a['target']} ({a['runs']} + {a['tuning_fits']}, {a['minutes']:.0f}) | {tied} | "
                     f"{r['time_ratio']:.2f} | {'yes' if r['target_met'] else 'no'} |")
    lines += ["", "What each comparison shows, and what it does not (Banking77's race dropped two strategies on a "
              "wrong extrapolation): " + ", ".join(f"`docs/results/adaptive_{r['data']}/README.md`" for r in out) + "."]
    for r in out:
        lines += ["", f"**{r['data']}**: {r['adaptive']['decision']}."]
        lines += [f"- dropped {s}: {why}" for s, why in r["adaptive"]["dropped"].items()]
    atomic_write_text(RESULTS / "adaptive_compare.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data", nargs="?", choices=sorted(GRIDS))
    ap.add_argument("--budget", default=None, help="e.g. 33m (20%% of SST-2's full grid)")
    ap.add_argument("--summarize", action="store_true")
    a = ap.parse_args()
    if a.data:
        out = RESULTS / f"adaptive_{a.data}"
        cmd = [str(ROOT / ".venv" / "bin" / "adaptlab"), "compare", "--adaptive", "--data", a.data,
               "--strategies", "all", "--seeds", "1", *GRIDS[a.data], "--keep-artifacts", "none", "--no-progress",
               "--out", str(out)] + (["--budget", a.budget] if a.budget else [])
        print(" ".join(cmd), flush=True)
        t0 = time.time()
        code = subprocess.call(cmd)
        prev = json.loads((out / "wall.json").read_text()) if (out / "wall.json").exists() else {"minutes": 0}
        atomic_write_json(out / "wall.json", {"minutes": prev["minutes"] + (time.time() - t0) / 60,
                                              "command": " ".join(cmd[1:])})
        if code:
            sys.exit(code)
    summarize()


if __name__ == "__main__":
    main()
