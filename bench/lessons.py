"""What the committed full grids teach about which kind of adaptation leads at which data size, as
data for the compare's tie-breaks (``adaptlab/compare/lessons.json``):

    python bench/lessons.py        # reads docs/results/compare_*/results, writes adaptlab/compare/lessons.json

For each committed grid (every strategy x size x seed run, no race) and each train size it measured,
the rank of each family (prompt-only, learned prompt, adapter, full weights: what a strategy changes,
its registry entry) by its best strategy's mean quality there. The compare uses these ranks only to
break ties between candidates before anything is measured (:func:`adaptlab.compare.lessons.tie_order`);
every decision after a first measurement rests on the measurements.
"""

from __future__ import annotations

import datetime
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from adaptlab.compare.store import load_results  # noqa: E402
from adaptlab.strategies.registry import get_strategy  # noqa: E402
from adaptlab.utils import atomic_write_json  # noqa: E402

OUT = ROOT / "adaptlab" / "compare" / "lessons.json"


def grid_rows(folder: Path) -> list[dict]:
    """One row per measured train size of the grid in ``folder``: the families' ranks there."""
    records = [r for r in load_results(folder) if "@" not in r["run"]["strategy"]]
    by = {}
    for r in records:
        by.setdefault((r["run"]["strategy"], r["run"]["train_size"]), []).append(r["eval"]["quality"])
    zero = {s: statistics.fmean(q) for (s, n), q in by.items() if n == 0}
    sizes = sorted({n for (_, n) in by if n})
    rows = []
    for n in sizes:
        best: dict[str, float] = {}
        for (s, m), q in by.items():
            if m not in (n, 0) or (m == 0 and s not in zero):
                continue
            fam = get_strategy(s).changes
            best[fam] = max(best.get(fam, 0.0), statistics.fmean(q))
        ranked = sorted(best, key=lambda f: -best[f])
        rows.append(
            {
                "grid": folder.name,
                "train_size": n,
                "rank": {f: i + 1 for i, f in enumerate(ranked)},
                "quality": {f: round(best[f], 4) for f in ranked},
            }
        )
    return rows


def main() -> None:
    rows = []
    for folder in sorted((ROOT / "docs" / "results").glob("compare_*")):
        if (folder / "results").is_dir() and not (folder / "race.json").exists():
            rows += grid_rows(folder)
    atomic_write_json(
        OUT,
        {
            "command": "python bench/lessons.py",
            "made": datetime.date.today().isoformat(),
            "source": "docs/results/compare_*/results (full grids)",
            "rows": rows,
        },
    )
    for r in rows:
        print(f"{r['grid']:>24} n={r['train_size']:<5} " + " > ".join(r["rank"]))
    print(f"wrote {OUT.relative_to(ROOT)} ({len(rows)} rows)")


if __name__ == "__main__":
    main()
