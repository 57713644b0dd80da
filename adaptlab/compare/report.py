"""The report, built from the stored run JSON alone: report.md, a self-contained report.html
(plots embedded as base64 PNG), and the PNGs themselves."""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import json
from pathlib import Path

from adaptlab.compare.recommend import Constraints, recommend
from adaptlab.compare.store import load_results, load_skipped
from adaptlab.compare.summary import Row, aggregate, compared, crossovers, ppl_rise
from adaptlab.compare.tuning import tuning_rows
from adaptlab.strategies.registry import get_strategy
from adaptlab.utils import atomic_write_bytes, atomic_write_text

COLUMNS = [
    "strategy",
    "train size",
    "seeds",
    "quality",
    "second metric",
    "train s",
    "peak RSS GB",
    "trainable",
    "artifact",
    "ex/s",
    "prompt tokens",
    "$ / 1M",
    "train-test gap",
    "paraphrase spread",
    "perturbation drop",
    "ppl change",
]


def _fmt_bytes(b: int) -> str:
    return f"{b / 1e3:.1f} KB" if b < 1e6 else (f"{b / 1e6:.1f} MB" if b < 1e9 else f"{b / 1e9:.2f} GB")


def _opt(x, fmt):
    return "-" if x is None else format(x, fmt)


def columns(rows: list[Row]) -> list[str]:
    """COLUMNS with the second metric named: macro-F1 (classification) or chrF (generation)."""
    second = (
        "chrF"
        if rows and rows[0].metric == "rouge_l"
        else ("accuracy" if rows and rows[0].metric == "macro_f1" else "macro-F1")
    )
    return [second if c == "second metric" else c for c in COLUMNS]


def table_rows(rows: list[Row]) -> list[list[str]]:
    out = []
    for r in rows:
        out.append(
            [
                r.strategy,
                str(r.train_size),
                str(r.seeds),
                f"{r.quality:.3f}" + (f" ± {r.quality_std:.3f}" if r.seeds > 1 else ""),
                _opt({"rouge_l": r.chrf, "macro_f1": r.accuracy}.get(r.metric, r.macro_f1), ".3f"),
                f"{r.train_seconds:.0f}",
                f"{r.peak_rss_gb:.2f}",
                f"{r.trainable_params:,}",
                _fmt_bytes(r.artifact_bytes),
                f"{r.examples_per_s:.1f}",
                f"{r.prompt_tokens:.0f}",
                f"{r.usd_per_1m:.2f}",
                _opt(r.overfit_gap, "+.3f"),
                _opt(r.paraphrase_spread, ".3f"),
                _opt(r.perturbation_drop, "+.3f"),
                ppl_rise(r.ppl_change),
            ]
        )
    return out


SPEED_SPREAD = 1.15  # probes further apart than this: timings come from machines of different speed


def machine_speed(records: list[dict]) -> str | None:
    """One line on the machines the timings come from: the CPU and the speed probe each grid worker
    records (:func:`adaptlab.utils.speed_probe`), and a warning when the runs' probes differ by
    more than SPEED_SPREAD, since then examples/s, train time and $ / 1M compare machines as well
    as strategies. None when there is nothing to say (no run recorded a probe)."""
    probed = [m for m in (r["meta"].get("machine", {}) for r in records) if m.get("gemm_gflops")]
    if not probed:
        return None
    known = [m["gemm_gflops"] for m in probed]
    cpus = sorted({m.get("cpu_model", "?") for m in probed})
    lo, hi = min(known), max(known)
    line = (
        f"Machine speed (fp32 GEMM probe): {lo:.0f}"
        + (f"-{hi:.0f}" if hi > lo * 1.005 else "")
        + f" GFLOP/s on {', '.join(cpus)}"
    )
    if hi > lo * SPEED_SPREAD:
        line += (
            f". **The runs' machines differ in speed by {hi / lo:.1f}x: examples/s, train time and $ / 1M "
            f"compare machines as well as strategies**"
        )
    missing = len(records) - len(probed)
    if missing:
        line += f"; {missing} of {len(records)} runs are older than the probe and did not record it"
    return line + "."


def curve_table(rows: list[Row]) -> tuple[list[str], list[list[str]]]:
    """Quality by strategy (rows) and train size (columns), mean ± std over seeds, the best mean
    of each column in bold: the learning curves as numbers, and how many seeds each cell has."""
    sizes = sorted({r.train_size for r in rows if r.train_size})
    seeds = max((r.seeds for r in rows), default=1)
    best = {n: max((r.quality for r in rows if r.train_size == n), default=None) for n in sizes}
    cell = {(r.strategy, r.train_size): r for r in rows}
    out = []
    for strat in dict.fromkeys(r.strategy for r in rows):  # in the order aggregate() gives
        line = [strat]
        zero = cell.get((strat, 0))
        for n in sizes:
            r = cell.get((strat, n)) or (zero if n == sizes[0] else None)
            if r is None:
                line.append("")
                continue
            txt = f"{r.quality:.3f}" + (f" ± {r.quality_std:.3f}" if r.seeds > 1 else "")
            if r.seeds < seeds and r.train_size:
                txt += f" ({r.seeds} of {seeds} seeds)"
            if r.train_size == 0:
                txt += " (no training data)"
            elif r.quality == best[n]:
                txt = f"**{txt}**"
            line.append(txt)
        out.append(line)
    return ["strategy"] + [str(n) for n in sizes], out


FIT_COLUMNS = [
    "strategy",
    "train size",
    "train quality - test quality",
    "best dev at step",
    "stopped early",
    "general-text ppl change",
    "second-task accuracy change",
]


def fit_rows(rows: list[Row]) -> list[list[str]]:
    """Overfitting and forgetting per strategy x size: the train-test gap, where the dev score peaked
    (the weights each run keeps) and whether early stopping fired, and what the base model lost."""
    out = []
    for r in rows:
        if r.train_size == 0:
            continue  # nothing was fitted
        peak = "-" if r.best_step is None or not r.steps else f"{r.best_step:.0f} of {r.steps:.0f}"
        out.append(
            [
                r.strategy,
                str(r.train_size),
                _opt(r.overfit_gap, "+.3f"),
                peak,
                "-" if r.kind == "prompt" else f"{r.stopped_early} of {r.seeds}",
                ppl_rise(r.ppl_change),
                "-" if r.second_task_change is None else f"{100 * r.second_task_change:+.1f} pts",
            ]
        )
    return out


def consistency_rows(rows: list[Row], records: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Consistency under sampling per strategy x size (empty when no run measured it)."""
    measured = [r for r in rows if r.agreement is not None or r.pairwise_similarity is not None]
    if not measured:
        return [], []
    c = next(x["eval"]["consistency"] for x in records if x["eval"].get("consistency"))
    head = f"{c['samples']} samples at temperature {c['temperature']:g}"
    if measured[0].agreement is not None:
        return (
            ["strategy", "train size", f"agreement ({head})"],
            [[r.strategy, str(r.train_size), f"{r.agreement:.3f}"] for r in measured],
        )
    return (
        ["strategy", "train size", f"pairwise ROUGE-L ({head})", "ROUGE-L spread per input"],
        [
            [r.strategy, str(r.train_size), _opt(r.pairwise_similarity, ".3f"), _opt(r.metric_spread, ".3f")]
            for r in measured
        ],
    )


def _clip(text: str, n: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def gallery(records: list[dict], best: dict[str, Row], winner: str | None, k: int) -> list[dict]:
    """Sections of the before/after gallery: for the first ``k`` test inputs, the reference, the
    zero-shot (base model) output and each strategy's (its compared run, first seed) with the
    per-row metric; then the recommended strategy's ``k`` worst rows, not only its best.
    Each section: {"title", "note", "cols", "rows"}."""
    runs = {}
    for r in sorted(records, key=lambda r: r["run"]["seed"]):
        row = best.get(r["run"]["strategy"])
        if r.get("predictions") and row is not None and r["run"]["train_size"] == row.train_size:
            runs.setdefault(r["run"]["strategy"], r["predictions"])
    if not runs or not k:
        return []
    order = sorted(runs, key=lambda s: (get_strategy(s).uses_train_data, -(best[s].quality)))
    out = []
    for i, row in enumerate(runs[order[0]][:k]):
        out.append(
            {
                "title": f"Input {i + 1}",
                "note": f"{_clip(row['input'], 300)} — reference: {_clip(row['reference'])}",
                "cols": ["strategy", "output", "metric"],
                "rows": [
                    [s, _clip(runs[s][i]["output"]), f"{runs[s][i]['metric']:.2f}"]
                    for s in order
                    if i < len(runs[s]) and runs[s][i]["input"] == row["input"]
                ],
            }
        )
    if winner in runs:
        worst = sorted(runs[winner], key=lambda r: r["metric"])[:k]
        out.append(
            {
                "title": f"{winner}'s worst {len(worst)} test rows",
                "note": "",
                "cols": ["input", "reference", "output", "metric"],
                "rows": [
                    [_clip(r["input"], 120), _clip(r["reference"], 80), _clip(r["output"], 120), f"{r['metric']:.2f}"]
                    for r in worst
                ],
            }
        )
    return out


GALLERY_NOTE = (
    "Each strategy at the train size it is ranked at (first seed): its output for the same test inputs "
    "and the per-row metric (accuracy: 1 or 0; generation: ROUGE-L)."
)


def gallery_md(sections: list[dict]) -> list[str]:
    if not sections:
        return []
    md = ["", "## Before and after: the same test inputs", "", GALLERY_NOTE]
    for sec in sections:
        md += ["", f"**{sec['title']}.** {sec['note']}", ""] + _md_table(sec["cols"], sec["rows"])
    return md


def prows_conf(rec) -> float:
    return rec.paired[0]["confidence"] if rec.paired else 0.95


def paired_rows(rec) -> tuple[list[str], list[list[str]]]:
    """The leader against each measured runner-up on their shared test rows."""
    lead = rec.winner
    cols = ["leader", "runner-up", "difference (points)", "interval", "rows", "McNemar p", "verdict"]
    out = []
    for p in rec.paired:
        if p["a"] != lead:
            continue
        verdict = "leader better" if p["lo"] > 0 else "runner-up better" if p["hi"] < 0 else "not significant"
        out.append(
            [
                p["a"],
                p["b"],
                f"{100 * p['diff']:+.1f}",
                f"[{100 * p['lo']:+.1f}, {100 * p['hi']:+.1f}]",
                str(p["n"]),
                "-" if p.get("p_mcnemar") is None else f"{p['p_mcnemar']:.3g}",
                verdict,
            ]
        )
    return cols, out


def race_rows(race: dict) -> tuple[list[str], list[list[str]], list[dict]]:
    """Each strategy in the race: what was measured, the prediction at the target and its status."""
    cols = [
        "strategy",
        "measured at",
        f"{race['metric']} at {race['target']}",
        "bounds",
        "best in (share of resampled curves)",
        "status",
    ]
    out = []
    p_best = race.get("p_best") or {}
    for s, f in sorted(race["fits"].items(), key=lambda kv: -kv[1]["point"]):
        status = (
            "leader"
            if s == race["leader"]
            else f"dropped: {race['dropped'][s]}"
            if s in race["dropped"]
            else "still in"
        )
        out.append(
            [
                s,
                ", ".join(str(n) for n in f["sizes"]) or "-",
                f"{f['point']:.3f}"
                + (
                    " (measured)"
                    if f["measured_at_target"]
                    else f" (flat: reads at most {f['flat_past']} train rows)"
                    if f.get("flat_past")
                    else " (predicted)"
                ),
                f"{f['lo']:.3f}-{f['hi']:.3f}",
                f"{100 * p_best[s]:.0f}%" if s in p_best else "-",
                status,
            ]
        )
    return cols, out, race.get("not_run", [])


def calibration_lines(race: dict) -> list[str]:
    """What the race's extrapolations were widened to (:func:`adaptlab.compare.curves.calibrate`)."""
    cals = race.get("calibration")
    if cals is None:
        return []  # a race.json written before calibration
    if not cals:
        return [
            (
                "Calibration: the learning-curve bands held for every strategy measured at the target and at a "
                "smaller size, so no extrapolation was widened."
            )
        ]
    return [
        f"Calibration ({c['kind']} strategies): {c['strategy']} went from {c['quality'][0]:.3f} at "
        f"{c['sizes'][0]} to {c['quality'][1]:.3f} at {c['sizes'][1]} examples, past what its learning curve "
        f"allowed (error shrinking like n^-{c['rate']:.2f}); every extrapolated {c['kind']} strategy's "
        f"optimistic bound was widened to that rate."
        for c in cals
    ]


def _md_table(cols: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)] + ["| " + " | ".join(r) + " |" for r in rows]


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


METRIC_NAMES = {
    "accuracy": "accuracy",
    "macro_f1": "macro-F1",
    "rouge_l": "ROUGE-L",
    "preference_accuracy": "preference accuracy",
}


def plots(rows: list[Row], fits: dict | None = None, metric: str | None = None) -> dict[str, bytes]:
    """Learning curves (with each fitted curve's band out to the target size where the strategy was
    not measured there: an extrapolation drawn as one), quality vs cost, fragility; every axis names
    ``metric``, the one the ranking uses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    metric = METRIC_NAMES.get(metric or (rows[0].metric if rows else ""), metric or "quality")
    # Learning curves.
    fig, ax = plt.subplots(figsize=(7, 4.2))
    sizes = sorted({r.train_size for r in rows if r.train_size})
    for strat in sorted({r.strategy for r in rows}):
        pts = sorted((r for r in rows if r.strategy == strat), key=lambda r: r.train_size)
        if len(pts) == 1 and pts[0].train_size == 0 and sizes:  # zero-shot: flat line
            ax.axhline(pts[0].quality, linestyle="--", color="grey", label=f"{strat}")
            continue
        line = ax.errorbar(
            [r.train_size for r in pts],
            [r.quality for r in pts],
            yerr=[r.quality_std for r in pts],
            marker="o",
            capsize=3,
            label=strat,
        )
        band = (fits or {}).get(strat, {}).get("band") or {}
        if band and (fits or {})[strat].get("extrapolated"):
            color = line[0].get_color()
            past = [i for i, n in enumerate(band["n"]) if n >= max(r.train_size for r in pts)]
            if past:
                ns = [band["n"][i] for i in past]
                ax.plot(ns, [band["mid"][i] for i in past], linestyle=":", color=color)
                ax.fill_between(
                    ns, [band["lo"][i] for i in past], [band["hi"][i] for i in past], color=color, alpha=0.12
                )
    target = next((f["target"] for f in (fits or {}).values() if f.get("extrapolated")), None)
    if target:
        ax.axvline(target, color="black", linewidth=0.8, linestyle="--")
        ax.annotate(
            f"ranked at {target}", (target, ax.get_ylim()[0]), fontsize=7, xytext=(-60, 4), textcoords="offset points"
        )
    if sizes and min(sizes) > 0:
        ax.set_xscale("log", base=2)
    ax.set_xlabel("train examples")
    ax.set_ylabel(metric)
    ax.set_title(f"Learning curves: {metric} (mean ± std over seeds; dotted: predicted, with its band)")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    out["learning_curves.png"] = _png(fig)
    plt.close(fig)
    # Quality vs cost with the Pareto front.
    by_strategy, size = compared(rows)  # the rows the recommendation ranks
    best = list(by_strategy.values())
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for ax, key, label in (
        (axes[0], "train_seconds", "train time (s)"),
        (axes[1], "usd_per_1m", "$ per 1M predictions"),
    ):
        xs = [max(getattr(r, key), 1e-3) for r in best]
        ax.scatter(xs, [r.quality for r in best])
        for r, x in zip(best, xs):
            ax.annotate(r.strategy, (x, r.quality), fontsize=8, xytext=(3, 3), textcoords="offset points")
        front = _pareto([(x, r.quality) for x, r in zip(xs, best)])
        if len(front) > 1:
            ax.plot(*zip(*front), color="tab:red", linewidth=1, label="Pareto front")
            ax.legend(fontsize=8)
        if max(xs) > 10 * min(xs):  # log only where the costs span orders of magnitude (else unreadable ticks)
            ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    fig.suptitle(
        f"{metric} vs cost at {size} train examples"
        if size is not None
        else f"{metric} vs cost (each strategy at its largest train size)"
    )
    out["pareto.png"] = _png(fig)
    plt.close(fig)
    # Fragility bars.
    fr = [r for r in best if r.paraphrase_spread is not None]
    if fr:
        fig, ax = plt.subplots(figsize=(7, 3.8))
        x = range(len(fr))
        ax.bar([i - 0.2 for i in x], [r.paraphrase_spread for r in fr], width=0.4, label="paraphrase spread")
        ax.bar([i + 0.2 for i in x], [r.perturbation_drop or 0 for r in fr], width=0.4, label="worst perturbation drop")
        ax.set_xticks(list(x), [r.strategy for r in fr], rotation=20)
        ax.set_ylabel(f"{metric} points (fraction)")
        ax.set_title("Fragility: wording and input perturbations")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, axis="y")
        out["fragility.png"] = _png(fig)
        plt.close(fig)
    return out


def _pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not beaten by any cheaper-or-equal point of higher-or-equal quality, by cost."""
    front, best_q = [], float("-inf")
    for x, q in sorted(points, key=lambda p: (p[0], -p[1])):
        if q > best_q:
            front.append((x, q))
            best_q = q
    return front


def _hosted_section(records: list, rec, constraints, md: list, extra: list) -> None:
    """Hosted and local candidates in one cost model, and what the compare paid its endpoints."""
    hcols, hrows, scols, srows = _hosted(records, rec, constraints)
    if not hrows:
        return
    md += ["", "## Hosted and local: one cost model", "", HOSTED_NOTE, ""] + _md_table(hcols, hrows)
    md += ["", "What this compare paid its endpoints:", ""] + _md_table(scols, srows)
    extra += [
        ("Hosted and local: one cost model", "hosted", hcols, hrows),
        ("What this compare paid its endpoints", "spend", scols, srows),
    ]


def _race_section(race: dict, md: list, extra: list) -> None:
    """The race's table, calibration and runs not made, added to the markdown and the HTML sections."""
    rcols, rrows, not_run = race_rows(race)
    md += ["", "## The race (adaptive compare)", "", f"**{race['decision']}.**", ""] + _md_table(rcols, rrows)
    extra.append((f"The race: {race['decision']}", "race", rcols, rrows))
    cal = calibration_lines(race)
    if cal:
        md += ["", *cal]
        extra.append(
            ("Calibration of the extrapolations", "calibration", ["what the race widened"], [[c] for c in cal])
        )
    if not_run:
        md += ["", "Not run:", ""] + [f"- {x['id']}: {x['why']}" for x in not_run]
        extra.append(("Not run", "not-run", ["run", "why"], [[x["id"], x["why"]] for x in not_run]))


def _report_head(records: list, cfg: dict) -> str:
    """The report's first line: data, model, runs, version, the commits that ran it, cores."""
    meta = records[0]["meta"]
    # A grid resumed over several sessions spans several commits: name the first and the last.
    by_time = sorted(records, key=lambda r: r["meta"].get("finished") or "")
    commits = list(dict.fromkeys((r["meta"].get("git_commit") or "?")[:10] for r in by_time))
    code = f"commit {commits[0]}" if len(commits) == 1 else f"{len(commits)} commits, {commits[0]} to {commits[-1]}"
    return (
        f"Data `{cfg.get('data', meta.get('data'))}`, model `{cfg.get('model', meta.get('model'))}`, "
        f"{len(records)} runs; adaptlab {meta.get('versions', {}).get('adaptlab', '?')}, {code}, "
        f"{meta.get('machine', {}).get('cpu_count', '?')} cores."
    )


def build_report(run_dir: Path, constraints: Constraints | None = None) -> Path:
    """Write report.md, report.html and the plots into ``run_dir/report`` from the stored JSON only."""
    run_dir = Path(run_dir)
    records = load_results(run_dir)
    if not records:
        raise ValueError(f"{run_dir}: no finished runs to report (expected {run_dir / 'results'}/*.json)")
    cfg = json.loads((run_dir / "compare.json").read_text()) if (run_dir / "compare.json").exists() else {}
    skipped = load_skipped(run_dir)
    constraints = constraints or Constraints()
    if constraints.volume is None and cfg.get("volume"):
        constraints = dataclasses.replace(constraints, volume=cfg["volume"])
    rec = recommend(records, constraints)
    rows = aggregate(records, rec.metric)
    pngs = plots(rows, rec.fits, rec.metric)
    race = json.loads((run_dir / "race.json").read_text()) if (run_dir / "race.json").exists() else None
    out = run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    for name, data in pngs.items():
        atomic_write_bytes(out / name, data)
    head = _report_head(records, cfg)
    speed = machine_speed(records)
    trows, cols = table_rows(rows), columns(rows)
    ccols, crows = curve_table(rows)
    metric = rows[0].metric if rows else "quality"
    state = decision_state(rec, race, cfg, records, skipped)
    md = (
        ["# adaptlab comparison report", "", head]
        + (["", speed] if speed else [])
        + ["", "## Where this answer stands", ""]
        + [f"- {x}" for x in state]
        + [
            "",
            "## Recommendation",
            "",
            rec.to_markdown(),
            "",
            f"## {metric} by train size (mean ± std over seeds; bold: best in its column)",
            "",
        ]
    )
    md += _md_table(ccols, crows)
    extra: list = []  # the HTML page's sections after the summary, in the markdown's order
    pcols, prows = paired_rows(rec)
    if prows:
        extra.append(("Paired differences on the same test rows", "paired", pcols, prows))
        md += [
            "",
            f"## Paired differences on the same test rows (leader minus each runner-up, "
            f"{100 * prows_conf(rec):.0f}% interval)",
            "",
        ] + _md_table(pcols, prows)
    if race:
        _race_section(race, md, extra)
    _hosted_section(records, rec, constraints, md, extra)
    tcols, tvals = tuning_rows(run_dir)
    if tvals:
        md += ["", "## Tuning: what was tried (on dev, at the smallest size) and what was kept", ""]
        md += _md_table(tcols, tvals)
        extra.append(("Tuning: what was tried and what was kept", "tuning", tcols, tvals))
    md += ["", "## Summary (mean over seeds; quality on the held-out test split)", ""] + _md_table(cols, trows)
    xs = crossovers(rows)
    md += ["", "## Crossovers", ""] + [
        f"- {x['strategy']} overtakes {x['over']} at {x['train_size']} examples"
        if x["train_size"] is not None
        else f"- {x['strategy']} never beats the best prompt strategy at the sizes measured"
        for x in xs
    ]
    frows = fit_rows(rows)
    if frows:
        md += ["", "## Overfitting and forgetting", ""] + _md_table(FIT_COLUMNS, frows)
    ccols_s, crows_s = consistency_rows(rows, records)
    if crows_s:
        md += ["", "## Consistency under sampling", ""] + _md_table(ccols_s, crows_s)
        extra.append(("Consistency under sampling", "consistency", ccols_s, crows_s))
    shown = gallery(records, compared(rows)[0], rec.winner, int(cfg.get("gallery_examples", 6)))
    md += gallery_md(shown)
    md += ["", "## Plots", ""] + [f"![{n}]({n})" for n in pngs]
    if skipped:
        md += ["", "## Skipped by the budget", ""] + [f"- {s['id']}: {s['reason']}" for s in skipped]
    md += ["", FOOTNOTE]
    atomic_write_text(out / "report.md", "\n".join(md) + "\n")
    curve = (
        f"{metric} by train size (mean ± std over seeds)",
        ccols,
        [[c.replace("**", "") for c in r] for r in crows],
    )
    page_head = head + (" " + speed.replace("**", "") if speed else "")
    extra += [
        (f"{g['title']}: {g['note']}" if g["note"] else g["title"], f"gallery-{i}", g["cols"], g["rows"])
        for i, g in enumerate(shown)
    ]
    atomic_write_text(
        out / "report.html", _html(page_head, rec, cols, trows, xs, pngs, skipped, frows, curve, extra, state)
    )
    return out


FOOTNOTE = (
    "Costs assume the stated machine price (`price_per_hour` in compare.json; default $0.10/h); "
    "fragility is measured on a fixed sample of the test split; forgetting compares general-text "
    "perplexity and a second task before and after adaptation (hard prompts change no weight)."
)
HOSTED_NOTE = (
    "Every candidate on the same test rows. Local: machine time at `price_per_hour`; hosted "
    "(STRATEGY@ENDPOINT): the tokens its answers reported at the endpoint's prices. Fitting $: "
    "training time at the machine price, or a prompt search's calls to the endpoint. Break-even: "
    "predictions after which the local adaptation's training plus serving costs less than the best "
    "hosted candidate."
)


def _hosted(records: list[dict], rec, constraints) -> tuple[list, list, list, list]:
    """The hosted-vs-local table and the endpoint spend, when the compare had hosted candidates."""
    from adaptlab.compare.hosted import comparison, spend_rows

    if not any(r["run"].get("endpoint") for r in records):
        return [], [], [], []
    rows = aggregate(records, rec.metric)
    best = {}
    for r in rows:  # each candidate at the size it was ranked at (else its largest)
        if (
            r.strategy not in best
            or r.train_size == rec.target
            or (best[r.strategy].train_size != rec.target and r.train_size > best[r.strategy].train_size)
        ):
            best[r.strategy] = r
    hcols, hrows = comparison(best, constraints.volume)
    scols, srows = spend_rows(records)
    return hcols, hrows, scols, srows


def decision_state(rec, race: dict | None, cfg: dict, records: list[dict], skipped: list[dict]) -> list[str]:
    """What a reader must know before the answer: whether the race decided, the size the answer is
    for against the user's data size, and every strategy that never ran, with why."""
    sizes = {r["run"]["train_size"] for r in records}
    target = race["target"] if race else max(sizes, default=0)
    lines = []
    if race:
        lines.append(f"Decision: {race['decision']}.")
    if rec.winner:
        at = rec.target if rec.target is not None else target
        lines.append(
            f"Target size: {target} training examples (all the train rows given); the answer is "
            f"for {at} examples, "
            + (
                "measured there."
                if not rec.ranked[0]["predicted"] and at == target
                else "**not measured at the target**: read it as provisional."
            )
        )
    metric = METRIC_NAMES.get(rec.metric, rec.metric)
    lines.append(
        f"Ranked by {metric}"
        + (
            f" on {race['test_rows']} test rows (screening runs: {race['screen_rows']})"
            if race and race.get("test_rows")
            else ""
        )
        + "."
    )
    never = (race or {}).get("never_run") or []
    ran = {r["run"]["strategy"] for r in records}
    asked = (race or {}).get("candidates") or []
    if asked:
        kinds = {r["run"]["strategy"]: r["run"]["kind"] for r in records}
        sides = [k for k, name in (("prompt", "a prompt-only"), ("gradient", "a trained")) if k in kinds.values()]
        lines.append(
            f"Candidates measured: {len(ran & set(asked))} of {len(asked)} asked"
            + (
                " (both sides of the question: a prompt-only and a trained candidate)"
                if len(sides) == 2
                else f" (only {'prompt-only' if sides == ['prompt'] else 'trained'} candidates measured)"
            )
            + "."
        )
    for n in never:
        lines.append(
            f"Never run: {n['strategy']}: {n['why']} (its first run, {n['first_run']}, estimated "
            f"{n['estimate_s']:.0f} s; at the target {n['at_target_s']:.0f} s)."
        )
    if not race:
        for st in cfg.get("strategies", []):
            if st not in ran:
                why = next((s["reason"] for s in skipped if s["id"].startswith(st + "-")), "not run")
                lines.append(f"Never run: {st}: {why}.")
    return lines


def _table(e, table_id: str, cols: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{e(c)}</th>" for c in cols)
    tb = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table id="{table_id}"><thead><tr>{th}</tr></thead><tbody>{tb}</tbody></table>'


def _html(head, rec, cols, trows, xs, pngs, skipped, frows, curve, extra=(), state=()) -> str:
    e = html.escape
    imgs = "".join(
        f'<figure><img alt="{e(n)}" src="data:image/png;base64,{base64.b64encode(d).decode()}">'
        f"<figcaption>{e(n)}</figcaption></figure>"
        for n, d in pngs.items()
    )
    recs = "".join(f"<li>{e(r)}</li>" for r in rec.reasons)
    nxt = "".join(f"<li>{e(s)}</li>" for s in rec.next_steps)
    exc = "".join(f"<li>excluded {e(x['strategy'])}: {e(x['why'])}</li>" for x in rec.excluded)
    cross = "".join(
        f"<li>{e(x['strategy'])} overtakes {e(str(x['over']))} at {x['train_size']} examples</li>"
        for x in xs
        if x["train_size"] is not None
    )
    skip = "".join(f"<li>{e(s['id'])}: {e(s['reason'])}</li>" for s in skipped)
    title = f"Recommended: {rec.winner}" if rec.winner else "No strategy meets the constraints"
    if rec.winner and any(x.startswith("Decision: not decided") for x in state):
        title += " (not decided: see where this answer stands)"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>adaptlab comparison report</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}}td:first-child,th:first-child{{text-align:left}}
img{{max-width:100%}}figure{{margin:1em 0}}</style></head><body>
<h1>adaptlab comparison report</h1><p>{e(head)}</p>
<h2 id="state">Where this answer stands</h2><ul>{"".join(f"<li>{e(x.replace('**', ''))}</li>" for x in state)}</ul>
<h2 id="recommendation">{e(title)}</h2><ul>{recs}{exc}</ul>{"<h3>What to try next</h3><ul>" + nxt + "</ul>" if nxt else ""}
<h2>{e(curve[0])}</h2>{_table(e, "curves", curve[1], curve[2])}
<h2>Summary</h2>{_table(e, "summary", cols, trows)}
<h2>Crossovers</h2><ul>{cross or "<li>none at the sizes measured</li>"}</ul>
{"<h2>Overfitting and forgetting</h2>" + _table(e, "fit", FIT_COLUMNS, frows) if frows else ""}
{"".join(f"<h3>{e(title)}</h3>" + _table(e, tid, c, r) for title, tid, c, r in extra)}
<h2>Plots</h2>{imgs}
{"<h2>Skipped by the budget</h2><ul>" + skip + "</ul>" if skip else ""}
</body></html>
"""
