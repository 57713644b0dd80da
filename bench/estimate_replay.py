"""Replay the compare's cost model over a finished compare's records, in the order they ran: each
run's estimate from the rates of the runs before it, beside the seconds it took.

    python bench/estimate_replay.py RUN_DIR     # a compare's run folder (compare.json, race.json, results/)

What it is for: checking a change to ``adaptlab.compare.costs`` on compares that already ran, without
running them again (the Banking77 rows of 2026-12-07: prompt search's first look 135 s estimated,
265 s fitted; LoRA at 1000, 548 s estimated, 352 s taken).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from adaptlab.compare.config import CompareConfig  # noqa: E402
from adaptlab.compare.costs import Estimator, Profile  # noqa: E402
from adaptlab.compare.store import load_results  # noqa: E402


def main(run: Path) -> None:
    race = json.loads((run / "race.json").read_text())
    cfg = CompareConfig.load(run / "compare.json")
    est = Estimator(cfg, Profile(**race["profile"]), race.get("test_rows") or 0, race.get("screen_rows") or 0)
    print(f"{'run':28s} {'estimate s':>10s} {'fit s':>7s} {'score s':>7s} {'fit GFLOP':>10s} {'score GFLOP':>11s}")
    for rec in sorted(load_results(run), key=lambda r: r.meta["started"]):
        w = est.work(rec.strategy, rec.train_size, rec.scored_rows)
        e = est.seconds(rec.strategy, rec.train_size, rec.scored_rows)
        print(
            f"{rec.id:28s} {e:10.0f} {rec.fit_seconds or 0:7.0f} {rec.score_seconds or 0:7.0f} "
            f"{w.fit:10.0f} {w.score:11.0f}"
        )
        est.observe(rec)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
