"""The maintenance loop measured on a simulated shift (Banking77, shared data directory).

1. A champion (LoRA on Gemma 3 270M, `adaptlab train`) learns 9 intents; 3 more are held out of its
   data. It is registered as prod.
2. Served traffic: Banking77 test rows of all 12 intents, answered by the champion and logged as a
   server logs them. Feedback as users give it: on a wrong answer a correction 60% of the time and
   a rating of -1 without one otherwise; on a right answer a rating of +1 30% of the time.
   A quarter of the traffic rows ("later") get no feedback: they measure the new intents.
3. `adaptlab improve` with the rated-down rows (auto-promote) and without them; a rollback; a
   challenger trained on wrong corrections (a worse one) that the gate must refuse.
4. `adaptlab rebase` of the champion onto SmolLM2-135M-Instruct, retrained and distilled.
5. Drift: windows of unshifted traffic (the 9 intents, rows the champion never saw) and shifted
   traffic (40% new intents); the false alarm rate over repeated unshifted windows.

Every step is the CLI a user runs (subprocesses, one at a time), except the simulated traffic.

    python bench/maintenance.py --out docs/results/maintenance
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
N_INTENTS, N_NEW, PER_INTENT = 12, 3, 60


def cli(*args, env) -> str:
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "adaptlab.cli", *map(str, args)], capture_output=True, text=True, env=env)
    if p.returncode != 0:
        sys.exit(f"adaptlab {' '.join(map(str, args))} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    print(f"  adaptlab {' '.join(map(str, args[:2]))}: {time.perf_counter() - t0:.0f} s", flush=True)
    return p.stdout


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def accuracy(art, rows: list[dict]) -> float | None:
    if not rows:
        return None
    pred = art.predict([r["text"] for r in rows])
    return sum(p == r["label"] for p, r in zip(pred, rows)) / len(rows)


def setup(a, rng: random.Random) -> dict:
    """The intents, the champion's rows and the traffic pools: the same for a seed, whatever phase runs."""
    bank = a.data_dir / "banking77"
    labels = json.loads((bank / "labels.json").read_text())
    chosen = rng.sample(labels, N_INTENTS)
    old, new = chosen[:-N_NEW], chosen[-N_NEW:]
    train_rows = [r for r in read(bank / "train.jsonl") if r["label"] in chosen]
    test_rows = [r for r in read(bank / "test.jsonl") if r["label"] in chosen]
    rng.shuffle(train_rows)
    champion_rows, spare = [], []
    count = {lab: 0 for lab in old}
    for r in train_rows:
        if r["label"] in count and count[r["label"]] < PER_INTENT:
            champion_rows.append(r)
            count[r["label"]] += 1
        elif r["label"] in count:
            spare.append(r)  # old intents the champion never saw: unshifted traffic for drift
    data = a.work / "champion.jsonl"
    if not data.exists():
        data.write_text("".join(json.dumps(r) + "\n" for r in champion_rows))
    rng.shuffle(test_rows)
    later = test_rows[: len(test_rows) // 4]
    served = test_rows[len(test_rows) // 4 :]
    return {
        "old": old,
        "new": new,
        "chosen": chosen,
        "champion_rows": champion_rows,
        "spare": spare,
        "test_rows": test_rows,
        "later": later,
        "served": served,
        "data": data,
    }


MEMORY = """
import gc, psutil, torch
from adaptlab.models.base import load_base
from adaptlab.utils import set_torch_threads
set_torch_threads()

def touch(b):  # loading maps the weight files; a forward pass reads every weight
    with torch.no_grad():
        b.model(**b.tokenizer(["How do I top up my card?"], return_tensors="pt"))

def rss():
    gc.collect()
    return psutil.Process().memory_info().rss / 2**30

gemma = load_base("gemma-3-270m")
touch(gemma)
one = rss()
small = load_base("smollm2-135m-instruct")
touch(small)
touch(gemma)
two = rss()
params = [sum(p.numel() * p.element_size() for p in b.model.parameters()) / 2**30 for b in (gemma, small)]
print("RSS", one, two, *params)
"""


def memory(env) -> dict:
    """Resident memory of one process holding Gemma 3 270M, then SmolLM2 as well (a forward pass each)."""
    p = subprocess.run([sys.executable, "-c", MEMORY], capture_output=True, text=True, env=env)
    line = next(x for x in p.stdout.splitlines() if x.startswith("RSS"))
    one, two, w_gemma, w_small = map(float, line.split()[1:])
    return {
        "rss_one_base_gb": one,
        "rss_both_bases_gb": two,
        "weights_gb": {"gemma-3-270m": w_gemma, "smollm2-135m-instruct": w_small},
        "second_base": "smollm2-135m-instruct",
        "how": "one process: Gemma 3 270M loaded and run once, RSS; SmolLM2 loaded too, both run once, RSS",
    }


def drift_section(a, rng, champ, base, reg, spare, test_rows, new, served) -> dict:
    """Repeated windows of unshifted and shifted traffic against the champion's reference (its
    predictions and the embeddings computed once), and `adaptlab drift` on the served log."""
    import numpy as np

    from adaptlab.data.named import splits_of_recipe
    from adaptlab.evaluation.text_metrics import minilm
    from adaptlab.maintenance.drift import MAX_REFERENCE, compare_traffic, drift_for_task, vocabulary_of

    meta_recipe = champ.recipe
    splits, train = splits_of_recipe(meta_recipe)
    held = list(splits.dev.examples) + list(splits.test.examples)
    ref_inputs = [ex.text for ex in held][:MAX_REFERENCE]
    ref_labels = champ.predict(ref_inputs)
    vocab = vocabulary_of([ex.text for ex in train.examples])
    train_inputs = [ex.text for ex in train.examples][: max(0, MAX_REFERENCE - len(ref_inputs))]
    pool_old = spare
    pool_new = [r for r in test_rows if r["label"] in new]
    texts = list({r["text"] for r in pool_old + pool_new} | set(ref_inputs) | set(train_inputs))
    emb = dict(zip(texts, minilm().embed(texts).numpy()))
    pred_of = dict(
        zip([r["text"] for r in pool_old + pool_new], champ.predict([r["text"] for r in pool_old + pool_new]))
    )
    tok = base.tokenizer

    def count(t):
        return len(tok(t, add_special_tokens=False)["input_ids"])

    def window(rows):
        ins = [r["text"] for r in rows]
        return compare_traffic(
            "bank",
            "bank@1",
            ref_inputs,
            ins,
            vocab,
            count,
            lambda ts: np.stack([emb[t] for t in ts]),
            ref_labels,
            [pred_of[t] for t in ins],
            seed=rng.randrange(10**6),
            train_inputs=train_inputs,
        )

    size = 100
    unshifted = [window(rng.sample(pool_old, size)) for _ in range(a.windows)]
    shifted = [
        window(rng.sample(pool_old, size - 40) + rng.sample(pool_new, 40)) for _ in range(max(5, a.windows // 4))
    ]
    drift = {
        "window": size,
        "reference_rows": len(ref_inputs),
        "train_rows": len(train_inputs),
        "unshifted": {
            "windows": len(unshifted),
            "alarms": sum(r.retrain for r in unshifted),
            "false_alarm_rate": sum(r.retrain for r in unshifted) / len(unshifted),
            "by_signal": {
                s.name: sum(any(d.name == s.name for d in r.drifted) for r in unshifted) for s in unshifted[0].signals
            },
        },
        "shifted": {
            "windows": len(shifted),
            "detected": sum(r.retrain for r in shifted),
            "by_signal": {
                s.name: sum(any(d.name == s.name for d in r.drifted) for r in shifted) for s in shifted[0].signals
            },
            "example": shifted[0].to_dict(),
        },
    }
    logged = drift_for_task(reg, "bank", window=len(served), base=base)  # the served log: 25% new intents
    drift["served_log"] = logged.to_dict()
    print(f"drift: {json.dumps({k: v for k, v in drift.items() if k != 'served_log'})[:600]}", flush=True)
    return drift


def rerun_drift(a, rng, env, t_start) -> None:
    """The drift and memory sections again, on a full run's work folder (its registry, champion and
    served log); the rest of the committed results stays as that run measured it."""
    from adaptlab.models.base import load_base
    from adaptlab.registry import Registry
    from adaptlab.strategies.base import Artifact
    from adaptlab.utils import set_torch_threads

    pools = setup(a, rng)
    set_torch_threads()
    base = load_base("gemma-3-270m")
    reg = Registry(a.work / "registry")
    champ = Artifact.load(reg.get("bank", 1).path, base)
    result = json.loads(a.out.with_suffix(".json").read_text())
    result["drift"] = drift_section(
        a, rng, champ, base, reg, pools["spare"], pools["test_rows"], pools["new"], pools["served"]
    )
    result["memory"] = memory(env)
    result["reruns"] = result.get("reruns", []) + [
        {
            "command": "python bench/maintenance.py " + " ".join(sys.argv[1:]),
            "date": time.strftime("%Y-%m-%d"),
            "sections": ["drift", "memory"],
            "seconds": time.perf_counter() - t_start,
        }
    ]
    a.out.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    a.out.with_suffix(".md").write_text(to_markdown(result))
    print(to_markdown(result))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "datasets")
    ap.add_argument("--work", type=Path, default=Path.home() / ".cache" / "adaptlab" / "bench-maintenance")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "maintenance")
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--windows", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--phase",
        choices=["all", "drift"],
        default="all",
        help="drift: measure the drift and memory sections again on the work folder of a full run",
    )
    a = ap.parse_args()
    t_start = time.perf_counter()
    rng = random.Random(a.seed)
    env = {**os.environ, "ADAPTLAB_REGISTRY": str(a.work / "registry"), "PYTHONPATH": str(ROOT)}
    os.environ.update(env)
    if a.phase == "drift":
        return rerun_drift(a, rng, env, t_start)
    shutil.rmtree(a.work, ignore_errors=True)
    a.work.mkdir(parents=True)
    pools = setup(a, rng)
    old, new, champion_rows, spare, test_rows = (
        pools[k] for k in ("old", "new", "champion_rows", "spare", "test_rows")
    )
    later, served, data = pools["later"], pools["served"], pools["data"]
    print(f"intents: {old} + new {new}; champion rows {len(champion_rows)}, served {len(served)}, later {len(later)}")

    # ---- 1. the champion
    t0 = time.perf_counter()
    cli("train", "--strategy", "lora", "--data", data, "--out", a.work / "champion", "--epochs", a.epochs, env=env)
    champion_s = time.perf_counter() - t0
    cli("registry", "register", a.work / "champion", "--task", "bank", "--alias", "prod", env=env)

    # ---- 2. served traffic and feedback
    from adaptlab.models.base import load_base
    from adaptlab.registry import Registry
    from adaptlab.strategies.base import Artifact
    from adaptlab.utils import set_torch_threads

    set_torch_threads()
    base = load_base("gemma-3-270m")
    reg = Registry(a.work / "registry")
    champ = Artifact.load(reg.resolve("bank@prod").path, base)
    pred = champ.predict([r["text"] for r in served])
    fb = {"correction": 0, "rated_down": 0, "confirmed": 0, "none": 0}
    for i, (r, p) in enumerate(zip(served, pred)):
        rid = f"req-{i}"
        reg.requests.log(rid, "bank", 1, "classification", r["text"], p)
        if p != r["label"]:
            if rng.random() < 0.6:
                reg.requests.add_feedback(rid, -1, r["label"])
                fb["correction"] += 1
            else:
                reg.requests.add_feedback(rid, -1)
                fb["rated_down"] += 1
        elif rng.random() < 0.3:
            reg.requests.add_feedback(rid, 1)
            fb["confirmed"] += 1
        else:
            fb["none"] += 1
    later_new = [r for r in later if r["label"] in new]
    later_old = [r for r in later if r["label"] in old]
    before = {
        "later_all": accuracy(champ, later),
        "later_new_intents": accuracy(champ, later_new),
        "later_old_intents": accuracy(champ, later_old),
        "served": sum(p == r["label"] for p, r in zip(pred, served)) / len(served),
    }
    print(f"champion: {before}; feedback {fb}", flush=True)

    # ---- 3. improve, with and without the rated-down rows; rollback; a worse challenger
    runs = {}
    for name, extra in (("with_rated_down", ["--auto-promote"]), ("without_rated_down", ["--no-use-rated-down"])):
        t0 = time.perf_counter()
        cli(
            "improve",
            "bank",
            "--out",
            a.work / f"improve-{name}",
            "--champion",
            "bank@1",
            "--epochs",
            a.epochs,
            *extra,
            env=env,
        )
        ev = json.loads((a.work / f"improve-{name}" / "improve.json").read_text())
        chal = Artifact.load(reg.resolve(ev["challenger"]).path, base)
        runs[name] = {
            "seconds": time.perf_counter() - t0,
            "challenger": ev["challenger"],
            "gate": ev["gate"],
            "promoted": ev["promoted"],
            "scores": ev["scores"],
            "lineage": ev["lineage"],
            "later_all": accuracy(chal, later),
            "later_new_intents": accuracy(chal, later_new),
            "later_old_intents": accuracy(chal, later_old),
        }
        print(f"improve {name}: {runs[name]}", flush=True)
    prod_after_improve = reg.aliases("bank")["bank"]["prod"]
    rollback = None
    if runs["with_rated_down"]["promoted"]:
        out = cli("registry", "rollback", "bank", env=env)
        rollback = {"before": prod_after_improve, "after": reg.aliases("bank")["bank"]["prod"], "output": out.strip()}
    # A worse challenger: the same traffic, but every correction names a wrong intent.
    reg_bad = Registry(a.work / "registry-bad")
    shutil.copytree(a.work / "registry", a.work / "registry-bad", dirs_exist_ok=True)
    with reg_bad.index.write() as con:
        con.execute("DELETE FROM feedback")
    for i, (r, _p) in enumerate(zip(served, pred)):
        wrong = rng.choice([x for x in pools["chosen"] if x != r["label"]])
        reg_bad.requests.add_feedback(f"req-{i}", -1, wrong)
    env_bad = {**env, "ADAPTLAB_REGISTRY": str(a.work / "registry-bad")}
    cli("registry", "promote", "bank", "1", env=env_bad)
    cli(
        "improve",
        "bank",
        "--out",
        a.work / "improve-bad",
        "--champion",
        "bank@1",
        "--epochs",
        a.epochs,
        "--auto-promote",
        env=env_bad,
    )
    bad = json.loads((a.work / "improve-bad" / "improve.json").read_text())
    runs["wrong_corrections"] = {
        "challenger": bad["challenger"],
        "gate": bad["gate"],
        "promoted": bad["promoted"],
        "scores": bad["scores"],
        "prod_after": reg_bad.aliases("bank")["bank"]["prod"],
    }
    print(f"improve on wrong corrections: {runs['wrong_corrections']}", flush=True)

    # ---- 4. rebase onto SmolLM2
    rebases = {}
    for how in ("recipe", "distill"):
        t0 = time.perf_counter()
        cli(
            "rebase",
            "bank",
            "--model",
            "smollm2-135m-instruct",
            "--out",
            a.work / f"rebase-{how}",
            "--champion",
            "bank@1",
            "--labels",
            how,
            env=env,
        )
        ev = json.loads((a.work / f"rebase-{how}" / "rebase.json").read_text())
        rebases[how] = {
            **{k: ev[k] for k in ("rebased", "how", "quality", "cost", "test_rows")},
            "wall_seconds": time.perf_counter() - t0,
        }
        print(f"rebase {how}: {rebases[how]}", flush=True)
    mem = memory(env)

    drift = drift_section(a, rng, champ, base, reg, spare, test_rows, new, served)

    result = {
        "command": "python bench/maintenance.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; nothing else running",
        "date": time.strftime("%Y-%m-%d"),
        "intents": {"old": old, "new": new},
        "rows": {"champion_data": len(champion_rows), "served": len(served), "later": len(later)},
        "champion": {"train_seconds_wall": champion_s, **before},
        "feedback": fb,
        "improve": runs,
        "rollback": rollback,
        "rebase": rebases,
        "memory": mem,
        "drift": drift,
        "wall_seconds": time.perf_counter() - t_start,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    a.out.with_suffix(".md").write_text(to_markdown(result))
    print(to_markdown(result))


def _f(x, fmt=".3f"):
    return "-" if x is None else format(x, fmt)


def to_markdown(r: dict) -> str:
    c, imp = r["champion"], r["improve"]
    lines = [
        "# Maintenance loop on a simulated shift (Banking77)",
        "",
        f"`{r['command']}` on {r['machine']}, {r['date']}; {r['wall_seconds'] / 60:.0f} min in all.",
        "",
        f"Champion: LoRA on Gemma 3 270M, {r['rows']['champion_data']} rows of 9 intents; 3 intents "
        f"({', '.join(r['intents']['new'])}) arrive only through {r['rows']['served']} served requests. Feedback: "
        + ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in r["feedback"].items())
        + ".",
        "",
        "## improve",
        "",
        "Accuracy on the later rows (no feedback given on them):",
        "",
        "| version | all | new intents | old intents | gate | promoted |",
        "|---|---|---|---|---|---|",
        f"| champion bank@1 | {_f(c['later_all'])} | {_f(c['later_new_intents'])} | {_f(c['later_old_intents'])} | - | - |",
    ]
    for name, x in imp.items():
        if name == "wrong_corrections":
            continue
        lines.append(
            f"| challenger {x['challenger']} ({name.replace('_', ' ')}) | {_f(x['later_all'])} | "
            f"{_f(x['later_new_intents'])} | {_f(x['later_old_intents'])} | "
            f"{'passed' if x['gate']['passed'] else 'refused'} | {'yes' if x['promoted'] else 'no'} |"
        )
    lines += [
        "",
        "The gate's evidence (paired on the same rows, 95% bootstrap interval):",
        "",
        "| challenger | rows | n | champion | challenger | difference |",
        "|---|---|---|---|---|---|",
    ]
    for name, x in imp.items():
        for rows, s in x["scores"].items():
            p = s["paired"]
            lines.append(
                f"| {x['challenger']} ({name.replace('_', ' ')}) | {rows} | {s['rows']} | {s['champion']:.3f} | "
                f"{s['challenger']:.3f} | {p['diff']:+.3f} ({p['lo']:+.3f} to {p['hi']:+.3f}) |"
            )
    w = imp["wrong_corrections"]
    lines += [
        "",
        f"Wrong corrections: {w['gate']['reason']}; promoted: {'yes' if w['promoted'] else 'no'} "
        f"(prod stays bank@{w['prod_after']}).",
    ]
    if r["rollback"]:
        lines.append(
            f"Rollback after the promotion: prod bank@{r['rollback']['before']} -> bank@{r['rollback']['after']}."
        )
    lines += [
        "",
        "## rebase onto SmolLM2-135M-Instruct",
        "",
        "| version | how | accuracy | difference (95%) | prompt tokens | examples/s | fit s | artifact MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    first = next(iter(r["rebase"].values()))
    cc = first["cost"]["champion"]
    lines.append(
        f"| bank@1 (Gemma 3 270M) | trained | {first['quality']['champion']:.3f} | - | {cc['prompt_tokens']:.0f} | "
        f"{cc['examples_per_s']:.1f} | {_f(cc['fit_seconds'], '.0f')} | {cc['artifact_bytes'] / 1e6:.2f} |"
    )
    for _how, x in r["rebase"].items():
        q, rc = x["quality"], x["cost"]["rebased"]
        p = q["paired"]
        lines.append(
            f"| {x['rebased']} (SmolLM2) | {x['how']} | {q['rebased']:.3f} | {p['diff']:+.3f} ({p['lo']:+.3f} to "
            f"{p['hi']:+.3f}) | {rc['prompt_tokens']:.0f} | {rc['examples_per_s']:.1f} | "
            f"{_f(rc['fit_seconds'], '.0f')} | {rc['artifact_bytes'] / 1e6:.2f} |"
        )
    m = r["memory"]
    lines += [
        "",
        f"Both bases in one process: {m['rss_one_base_gb']:.2f} GB resident with Gemma 3 270M, "
        f"{m['rss_both_bases_gb']:.2f} GB with {m['second_base']} as well ({m.get('how', '')}).",
        "",
        "## drift",
        "",
        f"Windows of {r['drift']['window']} requests against {r['drift']['reference_rows']} held-out rows "
        f"(and {r['drift'].get('train_rows', 0)} training rows for length and embedding) "
        f"(alpha 0.05 over all signals, Bonferroni):",
        "",
        "| traffic | windows | retraining due | labels | length | unknown words | embedding |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind in ("unshifted", "shifted"):
        d = r["drift"][kind]
        n = d.get("alarms", d.get("detected"))
        bs = d["by_signal"]
        lines.append(
            f"| {kind} | {d['windows']} | {n} ({n / d['windows']:.0%}) | {bs.get('labels', 0)} | "
            f"{bs.get('length', 0)} | {bs.get('unknown_words', 0)} | {bs.get('embedding', 0)} |"
        )
    lines += ["", f"`adaptlab drift` on the whole served log (25% new intents): {r['drift']['served_log']['reason']}."]
    for note in r.get("notes", []):
        lines += ["", note]
    for rerun in r.get("reruns", []):
        lines += [
            "",
            f"Sections {', '.join(rerun['sections'])} measured again on {rerun['date']} with "
            f"`{rerun['command']}` ({rerun['seconds']:.0f} s), on the same work folder.",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
