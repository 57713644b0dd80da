"""``adaptlab improve TASK``: the next version from the champion's recipe plus its feedback, behind a gate.

1. The champion (``TASK@prod`` unless told) names its recipe: strategy, configs, and how its
   training rows were made (:func:`adaptlab.data.named.recipe_for`). The rows are made again; a
   changed fingerprint is reported (the data moved since).
2. The task's feedback (:func:`adaptlab.serving.feedback.feedback_rows`) becomes rows: corrections
   and confirmed answers as supervised rows, answers rated down without a correction as rows with
   a rejected answer (a penalty on it; for a classifier, on the rejected label). Personal data in
   them is refused unless redacted (``--redact``) or allowed (``--allow-personal-data``).
3. A share of the answered feedback rows is held back (by request id, so a rerun holds back the
   same ones); the rest joins the training rows. A correction naming a label the champion does not
   know adds it to the label set (new intents arrive this way).
4. The challenger trains with the champion's recipe (resumable: ``OUT/run`` keeps its checkpoint).
5. Champion and challenger are scored on the same held-out test rows and held-back feedback rows;
   the paired differences come with bootstrap intervals (:func:`adaptlab.compare.stats.compare_runs`).
6. The challenger is registered as ``staging`` with its lineage (parent version, rows added,
   feedback used, data fingerprint). The gate passes when it beats the champion by at least the
   margin on the held-back feedback rows (on the test rows when none are held back) and shows no
   significant loss on the held-out test rows (the upper end of the interval is not below zero).
   ``--auto-promote`` then moves ``prod`` to it; otherwise the evidence and the promote command
   are printed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from adaptlab.compare.stats import compare_runs
from adaptlab.data.named import splits_of_recipe
from adaptlab.data.records import DataError, TaskData
from adaptlab.privacy import PersonalDataError, scan_records
from adaptlab.registry import Registry, RegistryError
from adaptlab.serving.feedback import CONFIRMED, CORRECTION, RATED_DOWN, feedback_rows
from adaptlab.strategies.base import ARTIFACT_FILE, Artifact, read_artifact_meta
from adaptlab.strategies.registry import get_strategy, make_config
from adaptlab.tasks.base import get_task
from adaptlab.utils import atomic_write_json, atomic_write_text, cli_setting

STAGING = "staging"


@dataclass
class ImproveOptions:
    champion: str | None = cli_setting(
        None, "Version to improve (TASK@N or TASK@ALIAS; default TASK@prod, or the latest)."
    )
    margin: float = cli_setting(
        0.0,
        "The challenger must beat the champion by at least this much (the task's metric, on the held-back "
        "feedback rows).",
    )
    holdout: float = cli_setting(0.25, "Share of the answered feedback rows held back to judge on.")
    use_rated_down: bool = cli_setting(
        True, "Train on answers rated down without a correction (a penalty on the rejected answer)."
    )
    auto_promote: bool = cli_setting(False, "Promote the challenger to prod when it passes the gate.", "--auto-promote")
    allow_personal_data: bool = cli_setting(
        False, "Train on feedback holding personal data as it is.", "--allow-personal-data"
    )
    redact: bool = cli_setting(False, "Replace personal data in the feedback before training.", "--redact")
    data_dir: str | None = None
    confidence: float = cli_setting(
        0.95, "Confidence of the gate's paired test (no significant loss on held-out rows)."
    )
    progress: bool = True
    train_overrides: dict | None = None  # TrainConfig fields replacing the recipe's (e.g. epochs)

    def __post_init__(self):
        if not 0 <= self.holdout < 1:
            raise ValueError(f"--holdout {self.holdout}: must be in [0, 1)")
        if self.margin < 0:
            raise ValueError(f"--margin {self.margin}: must be >= 0")
        if not 0 < self.confidence < 1:
            raise ValueError(f"--confidence {self.confidence}: must be in (0, 1)")


def held_back(request_id: str, share: float) -> bool:
    """Whether a feedback row judges instead of training: a stable draw by its request id."""
    return int(hashlib.sha256(request_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < share


def recipe_of(meta: dict, ref: str) -> dict:
    recipe = meta.get("recipe")
    if not recipe:
        raise RegistryError(
            f"{ref}: no recipe saved with it (made before adaptlab saved recipes, or outside "
            f"`adaptlab train`/`compare`); train it again with `adaptlab train` and register that"
        )
    return recipe


def _training_rows(train: TaskData, rows, labels: list[str] | None, source: str) -> TaskData:
    spec = train.spec
    examples = list(train.examples) + [f.example for f in rows]
    names = None
    if spec.closed_labels:
        names = list(labels or train.labels)
        for a in (a for f in rows for a in (f.example.label, f.example.rejected) if a):
            if a not in names:
                names.append(a)
    return TaskData(
        train.task, examples, source, label_names=names, text_field=train.text_field, label_field=train.label_field
    )


def _paired(a_rows: list[dict], b_rows: list[dict], metric: str, confidence: float):
    d = compare_runs([{"predictions": a_rows}], [{"predictions": b_rows}], metric, confidence=confidence)
    return None if d is None else d.to_dict()


def _score(art: Artifact, data: TaskData) -> tuple[dict, list[dict]]:
    """The artifact's evaluation on ``data`` and, apart, its rows (for pairing)."""
    out = art.evaluate(data, rows=True)
    return out, out.pop("rows")


def gate(on_feedback: dict | None, on_test: dict | None, margin: float) -> dict:
    """The promotion rule, with the reason in words."""
    judge, where = (on_feedback, "held-back feedback rows") if on_feedback else (on_test, "held-out test rows")
    if judge is None:
        return {"passed": False, "reason": "nothing to judge on: no held-back feedback rows and no test rows"}
    wins = judge["diff"] > 0 and judge["diff"] >= margin
    loss = on_test is not None and on_test["hi"] < 0
    if wins and not loss:
        reason = f"the challenger wins by {judge['diff']:+.3f} on the {where} (margin {margin:.3f})"
        if on_test is not None:
            reason += (
                f", and the held-out test rows show no significant loss ({on_test['diff']:+.3f}, "
                f"interval {on_test['lo']:+.3f} to {on_test['hi']:+.3f})"
            )
    elif not wins:
        reason = f"the challenger does not win by the margin on the {where}: {judge['diff']:+.3f} (margin {margin:.3f})"
    else:
        reason = (
            f"a significant loss on the held-out test rows: {on_test['diff']:+.3f} "
            f"(interval {on_test['lo']:+.3f} to {on_test['hi']:+.3f})"
        )
    return {"passed": bool(wins and not loss), "reason": reason, "judged_on": where, "margin": margin}


def fit_recipe(
    meta: dict, base, rows: TaskData, dev, out: Path, overrides: dict | None, progress: bool, log
) -> Artifact:
    """The recipe's strategy and configs fitted on ``rows``, in ``out/run`` (resumable); a finished
    artifact already in ``out/artifact`` is loaded instead (a rerun after a kill trains nothing twice)."""
    from adaptlab.training.config import TrainConfig

    folder = out / "artifact"
    if (folder / ARTIFACT_FILE).is_file():
        log(f"reusing the adaptation trained before in {folder}")
        return Artifact.load(folder, base)
    config = make_config(meta["strategy"], **meta["strategy_config"])
    tc = meta.get("train_config")
    tc = TrainConfig.from_dict({**tc, **(overrides or {})}) if tc else None
    strategy = get_strategy(meta["strategy"]).strategy_cls(config)
    return strategy.fit(base, rows, dev, tc, run_dir=out / "run", resume=True, progress=progress)


def _feedback(registry: Registry, task: str, meta: dict, ref: str, opts: ImproveOptions):
    """The task's feedback rows, checked for personal data before anything is trained on them, split
    into the rows held back to judge on and the rows to train on."""
    spec = get_task(meta["task"])
    rows, task_type, counts = feedback_rows(registry, task, redact=opts.redact)
    if task_type != meta["task"]:
        raise RegistryError(f"{task}: feedback is for {task_type} versions, the champion {ref} is {meta['task']}")
    found = scan_records([(i + 1, spec.record(f.example)) for i, f in enumerate(rows)], f"feedback of {task}")
    if found.total and not opts.allow_personal_data:
        first = "; ".join(found.summary(max_lines=3)[:2])
        raise PersonalDataError(
            f"feedback of {task}: {found.total} personal data finding(s) ({first}; lines count "
            f"feedback rows); pass --redact to replace them, or --allow-personal-data"
        )
    judge_rows = [f for f in rows if f.kind != RATED_DOWN and held_back(f.request_id, opts.holdout)]
    train_fb = [f for f in rows if f not in judge_rows and (opts.use_rated_down or f.kind != RATED_DOWN)]
    if not train_fb:
        raise DataError(
            f"feedback of {task}: no row left to train on ({len(rows)} rows, {len(judge_rows)} held back to judge on "
            f"with --holdout {opts.holdout:g}): collect more corrections, or pass --holdout 0 to judge on the "
            f"recipe's test rows alone"
        )
    return counts, found, judge_rows, train_fb


def judge(champion: Artifact, challenger: Artifact, parts: dict, metric: str, confidence: float):
    """Both scored on each named part (``{"test": data, ...}``): (their metric and the paired difference
    per part, and per part both evaluations in full: (champion's, challenger's))."""
    scores, evals = {}, {}
    for name, data in parts.items():
        if data is None or not len(data):
            continue
        c_ev, c_rows = _score(champion, data)
        n_ev, n_rows = _score(challenger, data)
        evals[name] = (c_ev, n_ev)
        scores[name] = {
            "rows": len(data),
            "champion": c_ev[metric],
            "challenger": n_ev[metric],
            "paired": _paired(n_rows, c_rows, metric, confidence),
        }
    return scores, evals


def improve(
    registry: Registry, task: str, out: str | Path, opts: ImproveOptions | None = None, base=None, log=print
) -> dict:
    """Train, judge and register the next version of ``task``; returns the evidence (also written to
    ``OUT/improve.json`` and ``OUT/improve.md``)."""
    from adaptlab.models.base import load_base
    from adaptlab.models.types import check_fingerprint

    opts = opts or ImproveOptions()
    out = Path(out)
    champ = registry.resolve(opts.champion or task)
    if champ.task != task:
        raise RegistryError(f"--champion {opts.champion}: a version of {champ.task}, not of {task}")
    meta = read_artifact_meta(champ.path)
    recipe = recipe_of(meta, champ.ref)
    spec = get_task(meta["task"])
    counts, found, judge_rows, train_fb = _feedback(registry, task, meta, champ.ref, opts)

    # ---- the recipe's rows again, plus the feedback
    base = base or load_base(meta["base_model"]["name"])
    check_fingerprint(meta["base_model"]["fingerprint"], base.fingerprint, f"{champ.ref}'s base model")
    splits, train = splits_of_recipe(recipe, opts.data_dir)
    now = train.fingerprint()
    data_changed = now != recipe["fingerprint"]
    if data_changed:
        log(
            f"note: the rows {recipe['data']} gives now differ from the ones {champ.ref} was trained on "
            f"(fingerprint {recipe['fingerprint'][:12]} then, {now[:12]} now)"
        )
    nxt = _training_rows(train, train_fb, meta.get("labels"), f"{recipe['data']} + feedback of {task}")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        out / "train.jsonl", "".join(json.dumps(spec.record(e), ensure_ascii=False) + "\n" for e in nxt.examples)
    )
    log(
        f"the challenger: {meta['strategy']} on {len(nxt)} rows ({len(train)} of the recipe + {len(train_fb)} feedback)"
    )
    chal = fit_recipe(meta, base, nxt, splits.dev, out, opts.train_overrides, opts.progress, log)

    # ---- judged on the same rows
    held = [f.example for f in judge_rows]
    parts = {
        "test": splits.test,
        "feedback": TaskData(meta["task"], held, f"feedback of {task} (held back)", label_names=nxt.label_names)
        if held
        else None,
    }
    scores, evals = judge(Artifact.load(champ.path, base), chal, parts, spec.metric, opts.confidence)
    decision = gate(scores.get("feedback", {}).get("paired"), scores.get("test", {}).get("paired"), opts.margin)

    # ---- registered as staging, with its lineage
    lineage = {
        "kind": "improve",
        "rows_added": len(train_fb),
        "feedback": {k: sum(f.kind == k for f in train_fb) for k in (CORRECTION, CONFIRMED, RATED_DOWN)},
        "held_back": len(judge_rows),
        "data_fingerprint": nxt.fingerprint(),
        "recipe_fingerprint": recipe["fingerprint"],
        "data_changed": data_changed,
        "new_labels": [x for x in (nxt.label_names or []) if x not in (meta.get("labels") or [])],
        "redacted": opts.redact,
        "gate": decision,
    }
    chal.recipe, chal.lineage = recipe, lineage
    chal.metrics["test"] = evals["test"][1]
    chal.save(out / "artifact")
    entry = registry.register(
        out / "artifact",
        task,
        alias=STAGING,
        parent=champ.version,
        lineage=lineage,
        note=f"improve: {decision['reason']}",
    )
    promoted = bool(opts.auto_promote and decision["passed"])
    if promoted:
        registry.promote(task, entry.version)
    evidence = {
        "task": task,
        "task_type": meta["task"],
        "metric": spec.metric,
        "champion": champ.ref,
        "challenger": entry.ref,
        "strategy": meta["strategy"],
        "feedback": counts,
        "personal_data": found.to_dict(),
        "lineage": lineage,
        "scores": scores,
        "gate": decision,
        "promoted": promoted,
        "promote_command": None if promoted else f"adaptlab registry promote {task} {entry.version}",
    }
    atomic_write_json(out / "improve.json", evidence)
    atomic_write_text(out / "improve.md", to_markdown(evidence))
    return evidence


def to_markdown(ev: dict) -> str:
    m = ev["metric"]
    lines = [
        f"# improve {ev['task']}: {ev['champion']} (champion) vs {ev['challenger']} (challenger)",
        "",
        f"Strategy {ev['strategy']}; trained on the recipe's rows plus {ev['lineage']['rows_added']} feedback rows "
        f"({', '.join(f'{n} {k.replace(chr(95), chr(32))}' for k, n in ev['lineage']['feedback'].items())}); "
        f"{ev['lineage']['held_back']} feedback rows held back to judge on.",
        "",
        f"| rows | n | champion {m} | challenger {m} | difference (95% interval) |",
        "|---|---|---|---|---|",
    ]
    for name, s in ev["scores"].items():
        p = s["paired"]
        diff = "-" if p is None else f"{p['diff']:+.3f} ({p['lo']:+.3f} to {p['hi']:+.3f})"
        lines.append(f"| {name} | {s['rows']} | {s['champion']:.3f} | {s['challenger']:.3f} | {diff} |")
    g = ev["gate"]
    lines += ["", f"**Gate: {'passed' if g['passed'] else 'not passed'}**: {g['reason']}.", ""]
    if ev["lineage"]["new_labels"]:
        lines.append(f"New labels from corrections: {', '.join(ev['lineage']['new_labels'])}.")
    lines.append(
        f"Promoted to prod: {'yes' if ev['promoted'] else 'no'}"
        + ("" if ev["promoted"] else f" (to promote: `{ev['promote_command']}`)")
        + "."
    )
    return "\n".join(lines) + "\n"
