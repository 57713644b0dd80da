"""``adaptlab rebase TASK --model NEW_BASE``: the task's adaptation on another base model, judged
against the serving version on the same rows and cost.

- A **hard prompt** (zero-shot, few-shot, prompt search) moves as it is: its instruction and
  exemplars are text. Its artifact is re-bound to the new base (a calibration fitted to the old
  base's label scores is dropped, and a nearest-neighbour pool is re-embedded), then re-scored.
- A **trained adaptation** is trained again with the same recipe (strategy, configs, rows) on the
  new base, or, with ``--labels distill``, on the old version's own answers to the training inputs
  (for when the labels are gone: the old adaptation teaches the new one).

Both are scored on the recipe's held-out test rows with the serving version (paired difference with
a bootstrap interval), with the cost beside the quality (prompt tokens, examples per second, fit
seconds, artifact size), and registered as ``staging`` under the new base's fingerprint, with the
old version as parent. Serving both bases at once: ``adaptlab serve --model A,B``.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from adaptlab.data.named import splits_of_recipe
from adaptlab.data.records import Example
from adaptlab.maintenance.improve import STAGING, fit_recipe, judge, recipe_of
from adaptlab.registry import Registry, RegistryError
from adaptlab.strategies.base import ARTIFACT_FILE, Artifact, artifact_bytes, read_artifact_meta
from adaptlab.strategies.registry import get_strategy
from adaptlab.tasks.base import get_task
from adaptlab.utils import atomic_write_json, atomic_write_text, cli_setting


@dataclass
class RebaseOptions:
    """``adaptlab rebase``'s settings; the fields marked with ``cli_setting`` are its options."""

    champion: str | None = cli_setting(None, "Version to rebase (TASK@N or TASK@ALIAS; default TASK@prod).")
    labels: str = cli_setting(
        "recipe",
        "recipe (train on the recipe's rows) or distill (on the old version's answers to the training inputs, "
        "when the labels are gone).",
    )
    data_dir: str | None = None
    progress: bool = True
    train_overrides: dict | None = None
    confidence: float = cli_setting(0.95, "Confidence of the paired test that judges the rebased version.")

    def __post_init__(self):
        if self.labels not in ("recipe", "distill"):
            raise ValueError(f"--labels {self.labels!r}: use recipe or distill")
        if not 0 < self.confidence < 1:
            raise ValueError(f"--confidence {self.confidence}: must be in (0, 1)")


def move_prompt(src: Path, meta: dict, new_base, folder: Path) -> Artifact:
    """A hard-prompt artifact re-bound to ``new_base``: the same text, the old base's numbers dropped."""
    from adaptlab.backends.local import LocalBackend

    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(src, folder)
    meta = dict(meta)
    meta["base_model"] = {"name": new_base.name, "fingerprint": new_base.fingerprint}
    prompt = dict(meta.get("prompt") or {})
    dropped = []
    if prompt.get("calibration") is not None:
        prompt["calibration"] = None
        dropped.append("calibration (fitted to the old base's label scores)")
    meta["prompt"] = prompt
    (folder / "pool_embeddings.safetensors").unlink(missing_ok=True)
    if prompt.get("selection") == "nearest":
        from safetensors.torch import save_file

        pool = [t for t, _ in prompt["pool"]]
        save_file(
            {"pool_embeddings": LocalBackend(new_base).embed(pool).contiguous()},
            str(folder / "pool_embeddings.safetensors"),
        )
        dropped.append("pool embeddings (recomputed with the new base)")
    meta["rebase_dropped"] = dropped
    atomic_write_json(folder / ARTIFACT_FILE, meta)
    return Artifact.load(folder, new_base)


def _cost(art: Artifact, ev: dict, folder: Path | None, fit_seconds: float | None) -> dict:
    return {
        "prompt_tokens": ev["prompt_tokens"],
        "examples_per_s": ev["examples_per_s"],
        "fit_seconds": fit_seconds,
        "artifact_bytes": artifact_bytes(folder) if folder is not None else None,
    }


def _make(meta: dict, champ_path: Path, champion: Artifact, train, dev, new_base, out: Path, opts: RebaseOptions, log):
    """The adaptation on the new base: (artifact, how, fit seconds or None)."""
    folder = out / "artifact"
    if get_strategy(meta["strategy"]).kind == "prompt":
        return move_prompt(champ_path, meta, new_base, folder), "moved", None
    rows, how = train, "retrained"
    if opts.labels == "distill" and not (folder / ARTIFACT_FILE).is_file():
        how = "distilled"
        log(f"distilling: the serving version answers the {len(train)} training inputs")
        answers = champion.predict([ex.text for ex in train.examples])
        rows = train.with_examples([Example(ex.text, a, ex.line) for ex, a in zip(train.examples, answers) if a])
    log(f"training {meta['strategy']} on {new_base.name} ({how}, {len(rows)} rows)")
    art = fit_recipe(meta, new_base, rows, dev, out, opts.train_overrides, opts.progress, log)
    if art.lineage:  # reused from a run that was killed after training
        how = art.lineage.get("how", how)
    return art, how, (art.metrics.get("train") or {}).get("train_seconds")


def _save(art: Artifact, folder: Path, moved: bool, recipe: dict, lineage: dict, test_eval: dict) -> None:
    art.recipe, art.lineage = recipe, lineage
    art.metrics["test"] = test_eval
    if not moved:
        art.save(folder)
        return
    m = json.loads((folder / ARTIFACT_FILE).read_text())  # a moved prompt keeps its rewritten metadata
    m.update(metrics={**(m.get("metrics") or {}), "test": test_eval}, recipe=recipe, lineage=lineage)
    atomic_write_json(folder / ARTIFACT_FILE, m)


def rebase(
    registry: Registry,
    task: str,
    model: str,
    out: str | Path,
    opts: RebaseOptions | None = None,
    base=None,
    new_base=None,
    log=print,
) -> dict:
    """Make, judge and register ``task``'s adaptation on base model ``model``; returns the evidence
    (also ``OUT/rebase.json`` and ``OUT/rebase.md``)."""
    from adaptlab.models.base import load_base
    from adaptlab.models.types import check_fingerprint

    opts = opts or RebaseOptions()
    out = Path(out)
    champ = registry.resolve(opts.champion or task)
    meta = read_artifact_meta(champ.path)
    recipe = recipe_of(meta, champ.ref)
    spec = get_task(meta["task"])
    base = base or load_base(meta["base_model"]["name"])
    check_fingerprint(meta["base_model"]["fingerprint"], base.fingerprint, f"{champ.ref}'s base model")
    new_base = new_base or load_base(model)
    if new_base.fingerprint == base.fingerprint:
        raise RegistryError(f"{champ.ref} is already on {new_base.name} ({new_base.fingerprint[:12]})")
    splits, train = splits_of_recipe(recipe, opts.data_dir)
    champion = Artifact.load(champ.path, base)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    art, how, fit_seconds = _make(meta, champ.path, champion, train, splits.dev, new_base, out, opts, log)
    scores, evals = judge(champion, art, {"test": splits.test}, spec.metric, opts.confidence)
    old_ev, new_ev = evals["test"]
    lineage = {
        "kind": "rebase",
        "base_model": new_base.name,
        "from_base": base.name,
        "how": how,
        "data_fingerprint": recipe["fingerprint"],
    }
    folder = out / "artifact"
    _save(art, folder, how == "moved", recipe, lineage, new_ev)
    entry = registry.register(
        folder, task, alias=STAGING, parent=champ.version, lineage=lineage, note=f"rebase onto {new_base.name} ({how})"
    )
    champ_fit = (meta.get("metrics") or {}).get("train", {}).get("train_seconds")
    evidence = {
        "task": task,
        "metric": spec.metric,
        "champion": champ.ref,
        "rebased": entry.ref,
        "strategy": meta["strategy"],
        "how": how,
        "from_base": base.name,
        "to_base": new_base.name,
        "test_rows": len(splits.test),
        "quality": {
            "champion": scores["test"]["champion"],
            "rebased": scores["test"]["challenger"],
            "paired": scores["test"]["paired"],
        },
        "cost": {
            "champion": _cost(champion, old_ev, champ.path, champ_fit),
            "rebased": _cost(art, new_ev, folder, fit_seconds),
        },
        "seconds": time.perf_counter() - t0,
        "dropped": read_artifact_meta(folder).get("rebase_dropped", []),
        "promote_command": f"adaptlab registry promote {task} {entry.version}",
    }
    atomic_write_json(out / "rebase.json", evidence)
    atomic_write_text(out / "rebase.md", to_markdown(evidence))
    return evidence


def to_markdown(ev: dict) -> str:
    m, q, c = ev["metric"], ev["quality"], ev["cost"]
    p = q["paired"]
    diff = "-" if p is None else f"{p['diff']:+.3f} ({p['lo']:+.3f} to {p['hi']:+.3f})"

    def row(name, base, qv, cost):
        fit = "-" if cost["fit_seconds"] is None else f"{cost['fit_seconds']:.0f}"
        size = "-" if cost["artifact_bytes"] is None else f"{cost['artifact_bytes'] / 1e6:.2f}"
        return (
            f"| {name} | {base} | {qv:.3f} | {cost['prompt_tokens']:.0f} | {cost['examples_per_s']:.1f} | "
            f"{fit} | {size} |"
        )

    lines = [
        f"# rebase {ev['task']}: {ev['champion']} on {ev['from_base']} -> {ev['rebased']} on {ev['to_base']}",
        "",
        f"{ev['strategy']}, {ev['how']}; {ev['test_rows']} test rows of the recipe.",
        "",
        f"| version | base | {m} | prompt tokens | examples/s | fit s | artifact MB |",
        "|---|---|---|---|---|---|---|",
        row(ev["champion"], ev["from_base"], q["champion"], c["champion"]),
        row(ev["rebased"], ev["to_base"], q["rebased"], c["rebased"]),
        "",
        f"Rebased minus champion: {diff} (paired, 95% bootstrap interval).",
        f"Registered as staging; to serve it: `{ev['promote_command']}` (with `adaptlab serve --model "
        f"{ev['from_base']},{ev['to_base']}` serving both bases).",
    ]
    if ev["dropped"]:
        lines.append("Dropped when moving: " + "; ".join(ev["dropped"]) + ".")
    return "\n".join(lines) + "\n"
