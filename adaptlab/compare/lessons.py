"""Tie-breaks from what the committed full grids measured (``lessons.json``, written by
``python bench/lessons.py``): the rank of each family of adaptation (what a strategy changes: prompt
text, learned prompt vectors, an adapter, the weights) at small and large train sizes.

Used only where the measurements say nothing yet: to order candidates whose estimated first looks
cost the same, and the race's leader among predictions that tie exactly. No candidate gets time or
an earlier run for its name or family; costs and measurements decide those (:mod:`.schedule`).
"""

from __future__ import annotations

import json
import statistics
from functools import lru_cache
from pathlib import Path

from adaptlab.strategies.registry import get_strategy

SMALL = 100  # train sizes below this are "small": the committed grids show prompts close the gap there


@lru_cache(maxsize=1)
def _rows() -> tuple:
    path = Path(__file__).with_name("lessons.json")
    try:
        return tuple(json.loads(path.read_text()).get("rows", []))
    except (OSError, ValueError):
        return ()


def family_rank(target: int) -> dict[str, float]:
    """Each family's mean rank over the committed grids' sizes on the same side of SMALL as ``target``."""
    rows = [r for r in _rows() if (r["train_size"] < SMALL) == (target < SMALL)] or list(_rows())
    ranks: dict[str, list[int]] = {}
    for r in rows:
        for fam, k in r["rank"].items():
            ranks.setdefault(fam, []).append(k)
    return {f: statistics.fmean(v) for f, v in ranks.items()}


def tie_order(candidates: list[str], target: int) -> list[str]:
    """``candidates`` by their family's rank in the committed grids (best first), else as given."""
    rank = family_rank(target)
    worst = max(rank.values(), default=0.0) + 1
    return sorted(candidates, key=lambda c: (rank.get(get_strategy(c).changes, worst), candidates.index(c)))
