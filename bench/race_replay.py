"""Replay the adaptive compare's race on the committed full grids: which runs would it have made, what
would it have dropped, and would any drop have been wrong?

    python bench/race_replay.py            # writes docs/results/race_replay.{json,md}

The race (:func:`adaptlab.compare.adaptive.race`) is a pure function of the finished runs, so it can
be replayed without training anything: each time it asks for a run, the full grid's own record of
that run (seed 0) is handed back, with the time it took when the grid ran it. Each grid is replayed
twice: the race as it stands (bands calibrated on the data, :func:`adaptlab.compare.curves.calibrate`)
and the race before calibration (``calibrated=False``, what produced the Banking77 adaptive result
with its two wrong drops). For each: the runs, their minutes next to the full grid's, the decision,
and every dropped strategy whose full-grid quality at the target is within the full grid's tie
tolerance of its best ("a wrong drop": it could have won or tied). No tuning fits are replayed: the
full grids ran every strategy with its defaults.

The SST-2 and Banking77 grids kept no per-row predictions (they predate them), so their bands take
the test rows' noise from the test size instead of a paired bootstrap (unpaired: wider differences).
"""

from __future__ import annotations

from adaptive_compare import (  # this folder's full-grid judgment
    RESULTS,
    calibration_line,
    grid_best,
)

from adaptlab.compare.adaptive import decision_line, race
from adaptlab.compare.store import RunSpec, compare_minutes, load_results, run_seconds
from adaptlab.utils import atomic_write_json, atomic_write_text, machine_info

GRIDS = ["sst2", "banking77", "viggo", "demo_chat"]


def seconds(rec: dict) -> float:
    """A run's own start-to-finish time (as compare_minutes counts it), else its train + eval time."""
    own = run_seconds(rec)
    if own is not None:
        return own
    return float(rec["train"].get("seconds", 0.0)) + float(rec["eval"].get("seconds", 0.0))


def replay(records: list[dict], calibrated: bool) -> dict:
    """Run the race on the grid's seed-0 records until it is decided; returns what it did."""
    by_id = {r["run"]["id"]: r for r in records if r["run"]["seed"] == 0}
    specs = [RunSpec(r["run"]["strategy"], r["run"]["train_size"], 0) for r in by_id.values()]
    specs.sort(key=lambda s: (s.strategy, s.train_size))
    cost = {s.id: seconds(by_id[s.id]) for s in specs}
    done: list[dict] = []
    order: list[dict] = []
    while True:
        state = race(done, specs, cost=lambda s: cost[s.id], calibrated=calibrated)
        if state.decided:
            break
        spec, why = state.candidates[0]
        done.append(by_id[spec.id])
        order.append({"id": spec.id, "why": why, "minutes": cost[spec.id] / 60})
    minutes = sum(x["minutes"] for x in order)
    return {
        "state": state,
        "order": order,
        "minutes": minutes,
        "decision": decision_line(state, len(order), minutes, len(specs) - len(order)),
    }


def judge(data: str) -> dict:
    folder = RESULTS / f"compare_{data}"
    records = load_results(folder)
    target = max(r["run"]["train_size"] for r in records)
    rows, best, tol, why = grid_best(records, target)
    contenders = sorted(s for s, r in rows.items() if best.quality - r.quality <= tol + 1e-9)
    out = {
        "data": data,
        "target": target,
        "metric": best.metric,
        "full_grid": {
            "runs": len(records),
            "minutes": compare_minutes(folder, records),
            "best": best.strategy,
            "quality_at_target": {s: r.quality for s, r in sorted(rows.items())},
            "tolerance": tol,
            "tolerance_why": why,
            "tied_with_best": contenders,
        },
    }
    for name, calibrated in (("calibrated", True), ("before_calibration", False)):
        r = replay(records, calibrated)
        st = r["state"]
        wrong = sorted(s for s in st.dropped if s in contenders)
        out[name] = {
            "runs": len(r["order"]),
            "minutes": r["minutes"],
            "ratio": r["minutes"] / out["full_grid"]["minutes"] if out["full_grid"]["minutes"] else None,
            "leader": st.leader,
            "leader_tied_with_best": st.leader in contenders,
            "sure": st.sure,
            "decision": r["decision"],
            "dropped": st.dropped,
            "wrong_drops": wrong,
            "calibration": [c.to_dict() for c in st.calibration],
            "order": r["order"],
        }
    return out


def markdown(results: list[dict]) -> str:
    lines = [
        "# The race replayed on the committed full grids",
        "",
        (
            "`python bench/race_replay.py` (see its docstring): the adaptive compare's race run on each full "
            "grid's own seed-0 records, as it stands (calibrated) and as it was before calibration. Minutes: "
            "the replayed runs' times when the full grid ran them, against all of the full grid's runs. A wrong "
            "drop: a dropped strategy within the full grid's tie tolerance of its best at the target."
        ),
        "",
        (
            "| data | full grid: best at target (tied) | race | runs | minutes (ratio) | leader | decided at 95% "
            "| wrong drops |"
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        f = r["full_grid"]
        for name in ("before_calibration", "calibrated"):
            x = r[name]
            lines.append(
                f"| {r['data']} | {f['best']} {f['quality_at_target'][f['best']]:.3f} at {r['target']} "
                f"({', '.join(f['tied_with_best'])}) | {name.replace('_', ' ')} | {x['runs']} of "
                f"{f['runs']} | {x['minutes']:.0f} of {f['minutes']:.0f} ({x['ratio']:.2f}) | {x['leader']} "
                f"| {'yes' if x['sure'] else 'no'} | {', '.join(x['wrong_drops']) or 'none'} |"
            )
    lines += [
        "",
        (
            "The minutes are the full grid's own: every run there measured fragility, forgetting and the "
            "train gap, which the race measures only for the recommended run, so a real adaptive compare's "
            "runs are shorter (`adaptive_compare.md`: 0.18 and 0.20 of the full grids, tuning included). "
            "On a ladder of two or three sizes (viggo: 32/64/256, demo_chat: 32/180) the race has little "
            "to skip: every strategy needs its first run, and the target is one rung away."
        ),
    ]
    for r in results:
        lines += ["", f"## {r['data']}", ""]
        for name in ("before_calibration", "calibrated"):
            x = r[name]
            lines += [f"**{name.replace('_', ' ')}**: {x['decision']}.", ""]
            lines += [f"- {calibration_line(c)}" for c in x["calibration"]]
            lines += [
                f"- dropped {s}{' (WRONG: tied with the best in the full grid)' if s in x['wrong_drops'] else ''}"
                f": {why}"
                for s, why in x["dropped"].items()
            ]
            lines += ["- runs: " + ", ".join(o["id"] for o in x["order"]), ""]
    return "\n".join(lines) + "\n"


def main() -> None:
    results = [judge(d) for d in GRIDS if (RESULTS / f"compare_{d}" / "results").is_dir()]
    for r in results:
        for x in ("before_calibration", "calibrated"):
            r[x].pop("state", None)
    atomic_write_json(RESULTS / "race_replay.json", {"machine": machine_info(), "results": results})
    md = markdown(results)
    atomic_write_text(RESULTS / "race_replay.md", md)
    print(md)


if __name__ == "__main__":
    main()
