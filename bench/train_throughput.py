"""Training throughput: adaptlab's loop vs the standard HF route (transformers Trainer + PEFT).

The same job for both: Gemma 3 270M, SST-2 (from the shared data directory), 256 train
examples (stratified, seeded), batch 8, 1 epoch, same learning rate, schedule, warm-up and
clipping; LoRA r=8 on q/k/v/o and a 20-token soft prompt. The HF route is what a user would
write: PEFT model, tokenised prompt+label with prompt tokens masked to -100, ``Trainer`` with
its full-vocabulary LM loss. Each job runs in its own subprocess (so each peak RSS is its own),
alternating adaptlab / HF. Both trained adapters are scored on the full SST-2 dev set (872) by
the same label-scoring code.

    python bench/train_throughput.py --out docs/results/train_throughput
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LR = {"lora": 1e-3, "soft_prompt": 3e-2}
TEMPLATE = "Text: {text}\nCategory:"


def job(kind: str, strategy: str, n_train: int, n_dev: int, seed: int, model: str, device: str = "cpu") -> dict:
    import torch

    from adaptlab.data.named import load_named
    from adaptlab.data.splits import subsample
    from adaptlab.models.base import load_base, resolve_device
    from adaptlab.strategies import get_strategy, make_config
    from adaptlab.training import TrainConfig
    from adaptlab.training.loop import PeakRSS
    from adaptlab.utils import set_torch_threads

    set_torch_threads()
    train = subsample(load_named("sst2", "train"), n=n_train, seed=seed)
    dev = load_named("sst2", "validation")
    if n_dev:
        dev = subsample(dev, n=n_dev, seed=seed)
    base = load_base(model, device=resolve_device(device))
    spec = get_strategy(strategy)
    config = make_config(strategy, template=TEMPLATE)
    cfg = TrainConfig(
        epochs=1,
        batch_size=8,
        lr=LR[strategy],
        warmup_ratio=0.06,
        schedule="cosine",
        max_grad_norm=1.0,
        seed=seed,
        checkpoint_every=0,
    )
    with PeakRSS() as rss:
        if kind == "adaptlab":
            t0 = time.perf_counter()
            art = spec.strategy_cls(config).fit(base, train, None, cfg, progress=False)
            seconds = time.perf_counter() - t0
        else:
            seconds, art = hf_route(base, train, strategy, config, cfg)
    acc = art.evaluate(dev)["accuracy"]
    return {
        "route": kind,
        "strategy": strategy,
        "train_examples": len(train),
        "train_seconds": seconds,
        "examples_per_s": len(train) / seconds,
        "peak_rss_gb": rss.peak / 2**30,
        "dev_accuracy": acc,
        "dev_examples": len(dev),
        "torch_threads": torch.get_num_threads(),
    }


def hf_route(base, train, strategy, config, cfg):
    """transformers Trainer + PEFT, as the docs teach it; returns (train seconds, our Artifact)."""
    from peft import LoraConfig, PromptTuningConfig, PromptTuningInit, get_peft_model
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from adaptlab.prompts import PromptTemplate, verbalize
    from adaptlab.strategies.gradient import WeightsArtifact
    from adaptlab.strategies.registry import get_strategy

    tok = base.tokenizer
    tpl = PromptTemplate(strategy, config.template)
    rows = []
    for ex in train.examples:
        p = tok(tpl.render(ex.text))["input_ids"]
        t = tok(" " + verbalize(ex.label), add_special_tokens=False)["input_ids"]
        rows.append({"input_ids": p + t, "attention_mask": [1] * (len(p) + len(t)), "labels": [-100] * len(p) + t})
    model = base.model
    model.requires_grad_(False)
    if strategy == "lora":
        pc = LoraConfig(
            r=config.r,
            lora_alpha=config.alpha,
            lora_dropout=config.dropout,
            target_modules=list(config.target_modules),
            task_type="CAUSAL_LM",
        )
    else:
        # Same start as adaptlab's default: the embeddings of the label words.
        words = " ".join(verbalize(label) for label in train.labels)
        init = (
            dict(
                prompt_tuning_init=PromptTuningInit.TEXT,
                prompt_tuning_init_text=words,
                tokenizer_name_or_path=str(base.path),
            )
            if base.path
            else {}
        )
        pc = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=config.n_tokens, **init)
    pm = get_peft_model(model, pc)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=cfg.batch_size,
            num_train_epochs=cfg.epochs,
            learning_rate=cfg.lr,
            lr_scheduler_type=cfg.schedule,
            warmup_steps=round(cfg.warmup_ratio * math.ceil(len(rows) / cfg.batch_size)),
            max_grad_norm=cfg.max_grad_norm,
            weight_decay=cfg.weight_decay,
            seed=cfg.seed,
            save_strategy="no",
            report_to=[],
            logging_steps=10,
            use_cpu=base.device.type == "cpu",
            bf16=base.device.type == "cuda",
            disable_tqdm=True,
            dataloader_num_workers=0,
        )
        trainer = Trainer(
            model=pm,
            args=args,
            train_dataset=rows,
            data_collator=DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100),
        )
        t0 = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - t0
        folder = Path(out) / "adapter"
        pm.save_pretrained(folder)
        pm.unload() if strategy == "lora" else None  # PEFT changed the base model in place: undo it
        # Wrap the HF-trained adapter files as an adaptlab artifact so both are scored alike.
        module = get_strategy(strategy).strategy_cls.load_module(config, base, folder)
    art = WeightsArtifact(strategy, base, module, config, tpl, "classification", train.labels)
    return seconds, art


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-size", type=int, default=256)
    ap.add_argument("--dev-size", type=int, default=0, help="0: the full dev set (872)")
    ap.add_argument("--strategies", default="lora,soft_prompt")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default="gemma-3-270m", help="tiny: a smoke test of both routes")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda (bf16 autocast on GPU for both routes)")
    ap.add_argument("--out", default="docs/results/train_throughput")
    ap.add_argument("--job", nargs=2, metavar=("ROUTE", "STRATEGY"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.job:
        print(
            "RESULT "
            + json.dumps(
                job(args.job[0], args.job[1], args.train_size, args.dev_size, args.seed, args.model, args.device)
            )
        )
        return

    from adaptlab.utils import atomic_write_json, atomic_write_text, machine_info, package_versions

    results = []
    for strategy in args.strategies.split(","):
        for route in ("adaptlab", "hf"):  # alternating, one process each
            cmd = [
                sys.executable,
                __file__,
                "--job",
                route,
                strategy,
                "--train-size",
                str(args.train_size),
                "--dev-size",
                str(args.dev_size),
                "--seed",
                str(args.seed),
                "--model",
                args.model,
                "--device",
                args.device,
            ]
            print(f"running {route} {strategy} ...", flush=True)
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if proc.returncode != 0 or line is None:
                sys.exit(f"{route} {strategy} failed:\n{proc.stderr[-3000:]}")
            results.append(json.loads(line[7:]))
            print(json.dumps(results[-1]), flush=True)
    rows = []
    for strategy in args.strategies.split(","):
        a = next(r for r in results if r["route"] == "adaptlab" and r["strategy"] == strategy)
        h = next(r for r in results if r["route"] == "hf" and r["strategy"] == strategy)
        rows.append(
            {
                "strategy": strategy,
                "speedup": a["examples_per_s"] / h["examples_per_s"],
                "rss_ratio": a["peak_rss_gb"] / h["peak_rss_gb"],
                "dev_accuracy_gap_points": 100 * (a["dev_accuracy"] - h["dev_accuracy"]),
                "adaptlab": a,
                "hf": h,
            }
        )
    meta = {
        "command": "python " + " ".join(sys.argv),
        "machine": machine_info(),
        "versions": package_versions(),
        "date": time.strftime("%Y-%m-%d"),
    }
    out = Path(args.out)
    atomic_write_json(out.with_suffix(".json"), {"meta": meta, "comparisons": rows})
    lines = [
        "# Training throughput: adaptlab vs transformers Trainer + PEFT",
        "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['machine']['processor']}, {meta['machine']['cpu_count']} cores; {meta['date']}; "
        f"torch {meta['versions'].get('torch')}, transformers {meta['versions'].get('transformers')}, "
        f"peft {meta['versions'].get('peft')}  ",
        f"Job: {args.model}, SST-2, {args.train_size} train examples, batch 8, 1 epoch; dev = full SST-2 "
        "validation scored by the same code for both.",
        "",
        "| strategy | adaptlab ex/s | HF ex/s | speed-up | adaptlab peak RSS | HF peak RSS | adaptlab dev acc | HF dev acc |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        a, h = r["adaptlab"], r["hf"]
        lines.append(
            f"| {r['strategy']} | {a['examples_per_s']:.2f} | {h['examples_per_s']:.2f} | **{r['speedup']:.2f}x** | "
            f"{a['peak_rss_gb']:.2f} GB | {h['peak_rss_gb']:.2f} GB | {a['dev_accuracy']:.3f} | {h['dev_accuracy']:.3f} |"
        )
    atomic_write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
