"""Preference training speed: adaptlab's DPO in its own loop vs TRL's ``DPOTrainer`` on the same job.

The job: Gemma 3 270M, LoRA r=8 (alpha 16, dropout 0.05) on q/k/v/o against the frozen base as the
reference, DPO with beta 0.1, batch 4, one epoch over N preference pairs built from E2E (shared
data directory): the prompt is the meaning representation, ``chosen`` its reference text,
``rejected`` the reference of the next different input (a fluent text about another restaurant).
The same rendered prompt text goes to both. TRL is run as a user would: a PEFT LoRA config passed to
``DPOTrainer``, reference log-probabilities computed by disabling the adapter each step (its
default). Each side runs in its own subprocess (its own peak RSS), one after the other. Both are
then scored by adaptlab's preference accuracy on held-out pairs (TRL's adapter loaded into
adaptlab's LoRA from PEFT's state dict).

    python bench/preference.py --out docs/results/preference_vs_trl
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TEMPLATE = "Input: {text}\nOutput:"


def pairs(n: int, offset: int = 0) -> list[dict]:
    from adaptlab.data.named import load_named

    rows = load_named("e2e_nlg", "validation").examples
    firsts, seen = [], set()
    for ex in rows:
        if ex.text not in seen:
            seen.add(ex.text)
            firsts.append(ex)
    out = []
    for i in range(offset, offset + n):
        a, b = firsts[i], firsts[(i + 1) % len(firsts)]
        out.append({"prompt": a.text, "chosen": a.label, "rejected": b.label})
    return out


def task_data(rows: list[dict], name: str):
    from adaptlab.data.records import Example, TaskData

    return TaskData(
        "preference",
        [Example(r["prompt"], r["chosen"], i + 1, r["rejected"]) for i, r in enumerate(rows)],
        name,
        text_field="prompt",
        label_field="chosen",
    )


def job(side: str, n: int, n_eval: int, model: str, out: Path) -> dict:
    import torch

    from adaptlab.models.base import load_base
    from adaptlab.strategies import get_strategy, make_config
    from adaptlab.training import TrainConfig
    from adaptlab.training.loop import PeakRSS
    from adaptlab.utils import set_torch_threads

    set_torch_threads()
    base = load_base(model)
    train, held = pairs(n), pairs(n_eval, offset=n + 1)
    config = make_config(
        "lora",
        template=TEMPLATE,
        r=8,
        alpha=16.0,
        dropout=0.05,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
    )
    cfg = TrainConfig(
        epochs=1,
        batch_size=4,
        lr=2e-4,
        warmup_ratio=0.0,
        schedule="constant",
        max_grad_norm=1.0,
        seed=0,
        checkpoint_every=0,
        max_length=256,
        preference_loss="dpo",
        beta=0.1,
    )
    strategy = get_strategy("lora").strategy_cls(config)
    with PeakRSS() as rss:
        t0 = time.perf_counter()
        if side == "adaptlab":
            art = strategy.fit(base, task_data(train, "e2e-pairs"), None, cfg, progress=False)
            steps, first = art.metrics["train"]["steps"], art.metrics["train"]["initial_loss"]
        else:
            art, steps, first = trl_route(base, train, strategy, cfg, out)
        seconds = time.perf_counter() - t0
    acc = art.evaluate(task_data(held, "held-out pairs"))
    return {
        "route": side,
        "pairs": n,
        "steps": steps,
        "train_seconds": seconds,
        "seconds_per_step": seconds / steps,
        "first_loss": first,
        "peak_rss_gb": rss.peak / 2**30,
        "held_out_pairs": acc["n"],
        "preference_accuracy": acc["preference_accuracy"],
        "torch_threads": torch.get_num_threads(),
    }


def trl_route(base, train, strategy, cfg, out: Path):
    import copy
    import warnings

    from datasets import Dataset
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model_state_dict
    from trl import DPOConfig, DPOTrainer

    from adaptlab.strategies.gradient import WeightsArtifact
    from adaptlab.strategies.lora.strategy import LoraModule

    # The prompt text adaptlab's side renders, so both train on the same text.
    template = strategy.config.template_for("preference", "lora", base)
    rows = [
        {
            "prompt": template.render(r["prompt"]),
            "chosen": template.label_prefix + r["chosen"],
            "rejected": template.label_prefix + r["rejected"],
        }
        for r in train
    ]
    c = strategy.config
    peft_cfg = PeftLoraConfig(
        r=c.r, lora_alpha=c.alpha, lora_dropout=c.dropout, target_modules=list(c.target_modules), task_type="CAUSAL_LM"
    )
    args = DPOConfig(
        output_dir=str(out / "trl-run"),
        per_device_train_batch_size=cfg.batch_size,
        num_train_epochs=1,
        learning_rate=cfg.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        max_grad_norm=cfg.max_grad_norm,
        beta=cfg.beta,
        max_length=cfg.max_length,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        logging_steps=1,
        seed=0,
        dataloader_num_workers=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tr = DPOTrainer(
            model=copy.deepcopy(base.model),
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=base.tokenizer,
            peft_config=peft_cfg,
        )
        result = tr.train()
    losses = [h["loss"] for h in tr.state.log_history if "loss" in h]
    state = get_peft_model_state_dict(tr.model)
    module = LoraModule.from_peft_state(base, c, state, "trl").eval()
    art = WeightsArtifact("lora", base, module, c, template, "preference", None)
    return art, result.global_step, losses[0] if losses else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=64)
    ap.add_argument("--eval-pairs", type=int, default=100)
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--out", type=Path, default=Path("docs/results/preference_vs_trl"))
    ap.add_argument("--side", choices=["adaptlab", "trl"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.side:
        with tempfile.TemporaryDirectory() as d:
            print("RESULT " + json.dumps(job(a.side, a.pairs, a.eval_pairs, a.model, Path(d))))
        return
    results = []
    for side in ("adaptlab", "trl"):
        t0 = time.perf_counter()
        p = subprocess.run(
            [
                sys.executable,
                __file__,
                "--side",
                side,
                "--pairs",
                str(a.pairs),
                "--eval-pairs",
                str(a.eval_pairs),
                "--model",
                a.model,
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        )
        line = next((x for x in p.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            sys.exit(f"{side} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
        results.append(json.loads(line[7:]))
        print(f"{side}: {results[-1]} ({time.perf_counter() - t0:.0f} s with loading)", flush=True)
    ours, trl = results
    from adaptlab.utils import machine_info, package_versions, provenance_lines

    versions = package_versions()
    from importlib.metadata import version

    versions["trl"] = version("trl")
    summary = {
        "command": "python bench/preference.py " + " ".join(sys.argv[1:]),
        # the sides' own torch threads (one per core this process may use)
        "machine": {**machine_info(), "torch_threads": ours["torch_threads"]},
        "versions": versions,
        "date": time.strftime("%Y-%m-%d"),
        "results": results,
        "speedup_per_step": trl["seconds_per_step"] / ours["seconds_per_step"],
        "memory_ratio": trl["peak_rss_gb"] / ours["peak_rss_gb"],
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    md = [
        "# Preference training: adaptlab's DPO vs TRL's DPOTrainer",
        "",
        *provenance_lines(summary, ("torch", "transformers", "peft", "trl")),
        "Each side in its own process, one after the other.",
        "",
        "| route | pairs | steps | s/step | first loss | peak RSS GB | held-out preference accuracy |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        md.append(
            f"| {r['route']} | {r['pairs']} | {r['steps']} | {r['seconds_per_step']:.2f} | "
            f"{r['first_loss']:.4f} | {r['peak_rss_gb']:.2f} | {r['preference_accuracy']:.3f} "
            f"({r['held_out_pairs']}) |"
        )
    md += [
        "",
        f"adaptlab is {summary['speedup_per_step']:.2f}x faster per step; TRL uses "
        f"{summary['memory_ratio']:.2f}x the memory.",
    ]
    a.out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
