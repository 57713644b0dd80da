"""The engine in process against this machine's roofline, measured in one run (issue 37).

    python bench/engine.py --out docs/results/engine

For each weight kind (``adaptlab.models.fastweights``: fp32, fp32-packed, bf16-head, bf16, int8):
- decode: greedy tokens/s of Gemma 3 270M at batch 1, 16 and 32 (E2E inputs, 16 new tokens, best
  of two timed runs after one untimed), as a fraction of the decode limit of that kind
  (``adaptlab.models.roofline``, measured at the start of the run; the limit of the same work: the
  prompts' first pass, then one decode step per token), and how its greedy texts agree
  with fp32's (rows equal at batch 32) and with its own one-at-a-time answers (8 rows);
- mixed LoRA decode: 8 and 32 adaptations (ranks 4/8/16 on q/k/v/o, random deltas: speed only),
  each row another, packed per layer (this engine) against one hook term per adapter (before);
- classification scoring: rows/s of label scoring (``score_labels``, the compare's scorer) with
  the demo's 12 labels, Banking77's 77 and a 150-label set written here, as a fraction of the
  forward limit for the positions it ran, and the labels that agree with fp32's.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from adaptlab.data.demo import as_task_data
from adaptlab.data.named import load_task
from adaptlab.evaluation.scoring import score_labels
from adaptlab.models import fastweights, roofline
from adaptlab.models.adaptation import AdaptedLM, Contribution, LoraDelta
from adaptlab.models.base import load_base
from adaptlab.models.decoding import greedy
from adaptlab.models.label_tree import LabelTrie
from adaptlab.models.runtime import PlainLM, common_prefix, encode_labels, encode_prompts
from adaptlab.prompts import DEFAULT_CLASSIFICATION
from adaptlab.utils import machine_info, package_versions, set_torch_threads

KINDS = ("fp32", "fp32-packed", "bf16-head", "bf16", "int8")
NEW = 16


def best_of(fn, runs: int = 2):
    fn()
    best, out = float("inf"), None
    for _ in range(runs):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def work_limit(machine, shape, prompts, outs, kind: str) -> float:
    """The fastest this generation can be: the prompts' positions through the layers (the head on
    one position a row), then a decode step per token after the first."""
    steps = max(len(o) for o in outs)
    first = roofline.forward_limit(machine, shape, sum(len(p) for p in prompts), len(prompts), kind).seconds
    return first + max(steps - 1, 0) * roofline.decode_limit(machine, shape, len(prompts), kind).seconds


def decode_rows(base, machine, shape, prompts) -> list[dict]:
    rows, texts = [], {}
    for kind in KINDS:
        lm = PlainLM(fastweights.inference_model(base.model, kind))
        for b in (1, 16, 32):
            secs, out = best_of(lambda lm=lm, b=b: greedy(lm, base.tokenizer, prompts[:b], NEW, "cpu"))
            tokens = sum(len(o) for o in out)
            limit = tokens / work_limit(machine, shape, prompts[:b], out, kind)
            row = {"kind": kind, "batch": b, "seconds": round(secs, 3), "tokens": tokens}
            row |= {"tokens_per_s": round(tokens / secs, 1), "limit_tokens_per_s": round(limit, 1)}
            row["fraction_of_limit"] = round(tokens / secs / limit, 3)
            if b == 32:
                texts[kind] = out
                alone = [greedy(lm, base.tokenizer, [p], NEW, "cpu")[0] for p in prompts[:8]]
                row["same_as_alone"] = f"{sum(a == o for a, o in zip(alone, out))}/8"
            rows.append(row)
            print(json.dumps(row), flush=True)
    for row in rows:
        if row["batch"] == 32:
            row["same_as_fp32"] = f"{sum(a == b for a, b in zip(texts[row['kind']], texts['fp32']))}/32"
    return rows


def random_loras(model, n: int, seed: int = 0) -> list[Contribution]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        r = (4, 8, 16)[i % 3]
        deltas = {}
        for name, mod in model.named_modules():
            if name.endswith(("q_proj", "k_proj", "v_proj", "o_proj")):
                a = torch.randn(r, mod.in_features, generator=g) * 0.01
                deltas[name] = LoraDelta(a, torch.randn(mod.out_features, r, generator=g) * 0.01, 2.0)
        out.append(Contribution(lora=deltas))
    return out


def lora_rows(base, machine, shape, prompts, kind: str) -> list[dict]:
    rows = []
    model = fastweights.inference_model(base.model, kind)
    for n, b in ((8, 16), (32, 32)):
        loras = random_loras(base.model, n)
        before: list = []
        for packed in (False, True):
            AdaptedLM.pack_lora = packed

            def run(b=b, loras=loras, n=n):
                lm = AdaptedLM(model, [loras[i % n] for i in range(b)])
                return greedy(lm, base.tokenizer, prompts[:b], NEW, "cpu")

            secs, out = best_of(run)
            tokens = sum(len(o) for o in out)
            limit = tokens / work_limit(machine, shape, prompts[:b], out, kind)
            row = {"kind": kind, "adapters": n, "batch": b, "lora": "packed" if packed else "per adapter"}
            row |= {"seconds": round(secs, 3), "tokens_per_s": round(tokens / secs, 1)}
            row["fraction_of_limit"] = round(tokens / secs / limit, 3)
            if packed:
                row["same_as_per_adapter"] = f"{sum(a == o for a, o in zip(before, out))}/{b}"
            before = out
            rows.append(row)
            print(json.dumps(row), flush=True)
    AdaptedLM.pack_lora = True
    return rows


def quality_rows(base, folder: Path, rows: int = 64, new: int = 32) -> list[dict]:
    """What each weight kind costs on a task metric: E2E test rows through 8 trained generation
    LoRAs (each row another, the served path: ``mixed_lm`` + ``generate_rows``, batches of 16),
    greedy, ROUGE-L against the row's reference, and texts equal to fp32's."""
    from adaptlab.data.splits import subsample
    from adaptlab.evaluation.text_metrics import rouge_l
    from adaptlab.serving.adapters import from_artifact
    from adaptlab.serving.engine import encode_rows, generate_rows, mixed_lm
    from adaptlab.strategies.base import Artifact

    folders = sorted(p for p in folder.iterdir() if p.is_dir())[:8] if folder.is_dir() else []
    if not folders:
        print(f"quality: no trained LoRAs under {folder} (bench/serving_field.py trains them): skipped")
        return []
    tok = base.tokenizer
    ads = [from_artifact(Artifact.load(f, base), f.name, f.name, base) for f in folders]
    examples = subsample(load_task("e2e_nlg").test, n=rows, seed=1).examples
    per_row = [ads[i % len(ads)] for i in range(rows)]
    ids = encode_rows(tok, per_row, [e.text for e in examples], 512)
    out, ref = [], None
    for kind in KINDS:
        model = fastweights.inference_model(base.model, kind)
        texts = []
        for s in range(0, rows, 16):
            lm = mixed_lm(model, per_row[s : s + 16])
            texts += [
                tok.decode(d.tokens, skip_special_tokens=True).strip()
                for d in generate_rows(lm, tok, ids[s : s + 16], [new] * len(ids[s : s + 16]))
            ]
        ref = texts if ref is None else ref
        score = sum(rouge_l(t, e.label) for t, e in zip(texts, examples)) / rows
        row = {"kind": kind, "adapters": len(ads), "rows": rows, "rougeL": round(score, 4)}
        row["same_as_fp32"] = f"{sum(a == b for a, b in zip(texts, ref))}/{rows}"
        out.append(row)
        print(json.dumps(row), flush=True)
    for row in out:
        row["delta_vs_fp32"] = round(row["rougeL"] - out[0]["rougeL"], 4)
    return out


def label_sets() -> dict[str, tuple[list[str], list[str], list[str] | None]]:
    demo = as_task_data("test")
    bank = load_task("banking77").test
    rng = random.Random(0)
    words = [
        "account",
        "card",
        "payment",
        "refund",
        "order",
        "address",
        "password",
        "plan",
        "device",
        "alarm",
        "reward",
        "transfer",
        "fee",
        "limit",
    ]
    verbs = ["change", "check", "cancel", "dispute", "report", "activate", "close", "open", "update", "verify"]
    many = sorted({f"{rng.choice(verbs)}_{rng.choice(words)}_{rng.choice(words)}" for _ in range(400)})[:150]
    return {
        "demo (12 labels)": ([e.text for e in demo.examples[:64]], demo.labels, [e.label for e in demo.examples[:64]]),
        "Banking77 (77 labels)": (
            [e.text for e in bank.examples[:64]],
            bank.labels,
            [e.label for e in bank.examples[:64]],
        ),
        "150 labels (written here)": ([e.text for e in bank.examples[64:128]], many, None),
    }


def scoring_rows(base, machine, shape) -> list[dict]:
    rows = []
    tok = base.tokenizer
    for name, (texts, labels, gold) in label_sets().items():
        prompts = [DEFAULT_CLASSIFICATION.render(t, labels) for t in texts]
        label_texts = DEFAULT_CLASSIFICATION.label_texts(labels)
        trie = LabelTrie(encode_labels(tok, label_texts), "cpu")
        ids = encode_prompts(tok, prompts, 1024)
        shared = len(common_prefix(ids)[: min(len(p) for p in ids) - 1])  # score_labels runs it once
        shared = shared if shared >= 8 else 0
        # the shared start once, each prompt's rest, every label tree node per row
        positions = shared + sum(len(p) - shared for p in ids) + len(texts) * trie.n
        heads = len(texts) * (1 + trie.n)
        ref = None
        for kind in ("fp32", "fp32-packed", "bf16-head", "bf16", "fp32-packed top-1"):
            weights, top1 = kind.split(" ")[0], kind.endswith("top-1")
            model = fastweights.inference_model(base.model, weights)
            seen = []  # LM-head rows: the top-1 search runs through the model exactly the nodes it projects
            hook = model.get_output_embeddings().register_forward_hook(
                lambda m, i, o, seen=seen: seen.append(len(i[0]))
            )
            try:
                secs, scores = best_of(
                    lambda m=model, p=prompts, lt=label_texts, t1=top1: score_labels(
                        m, tok, p, lt, batch_size=8, top1=t1
                    ),
                    runs=1,
                )
            finally:
                hook.remove()
            if top1:  # its own work: the prompts, and the nodes it reached (through the body and the head)
                nodes = sum(seen) - len(texts)
                limit = roofline.forward_limit(
                    machine, shape, positions - len(texts) * trie.n + nodes, sum(seen), weights
                ).seconds
            else:
                limit = roofline.forward_limit(machine, shape, positions, heads, weights).seconds
            pred = scores.argmax(1)
            ref = pred if ref is None else ref
            row = {"labels": name, "kind": kind, "rows": len(texts), "seconds": round(secs, 2)}
            row |= {"rows_per_s": round(len(texts) / secs, 2), "limit_rows_per_s": round(len(texts) / limit, 2)}
            row["fraction_of_limit"] = round(limit / secs, 3)
            row["labels_as_fp32"] = f"{int((pred == ref).sum())}/{len(texts)}"
            if gold is not None:  # zero-shot accuracy of the base model: what the kind costs on the metric
                row["accuracy"] = round(sum(labels[int(i)] == g for i, g in zip(pred, gold)) / len(gold), 4)
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def table(rows: list[dict], cols: list[str]) -> list[str]:
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    return out + ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]


def report(rec: dict) -> str:
    m = rec["machine"]
    lines = [
        "# The engine against this machine's roofline (in process)",
        "",
        f"Command: `{rec['command']}`  ",
        f"Machine: {rec['host']['cpu_model']}, {m['threads']} threads; {rec['date']}; "
        f"torch {rec['versions'].get('torch')}, transformers {rec['versions'].get('transformers')}  ",
        f"Roofline measured in the same run: fp32 {m['gflops']['fp32']} GFLOP/s, "
        + ", ".join(f"{k} {v}" for k, v in m["gflops"].items() if k != "fp32")
        + f" GFLOP/s; memory read {m['bandwidth_gbs']} GB/s. {rec['beside']}  ",
        "Sections measured in this run: "
        + ", ".join(rec.get("sections_run", ["decode", "lora", "scoring"]))
        + " (any other section is from the previous run, against that run's roofline).",
        "",
        f"## Decode (Gemma 3 270M, E2E inputs, {NEW} greedy tokens, base model)",
        "",
        *table(
            rec["decode"],
            [
                "kind",
                "batch",
                "tokens_per_s",
                "limit_tokens_per_s",
                "fraction_of_limit",
                "same_as_fp32",
                "same_as_alone",
            ],
        ),
        "",
        "## Mixed LoRA decode (each row another adaptation)",
        "",
        *table(
            rec["lora"],
            ["kind", "adapters", "batch", "lora", "tokens_per_s", "fraction_of_limit", "same_as_per_adapter"],
        ),
        "",
        "## Classification scoring (score_labels, 64 rows, batch 8)",
        "",
        "Every label's score, and (`top-1`) the exact top-1 search a compare's predictions use: its limit is "
        "that of the work it does (the label-tree nodes it reaches, each through the body and the head).",
        "",
        *table(
            rec["scoring"],
            ["labels", "kind", "rows_per_s", "limit_rows_per_s", "fraction_of_limit", "labels_as_fp32", "accuracy"],
        ),
        "",
        "## Quality of each kind on a task metric (E2E, 8 trained LoRAs, each row another, 32 greedy tokens)",
        "",
        *table(rec.get("quality", []), ["kind", "adapters", "rows", "rougeL", "delta_vs_fp32", "same_as_fp32"]),
        "",
        *rec.get("notes", []),
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="docs/results/engine")
    ap.add_argument("--beside", default="Nothing else ran on the cores.")
    ap.add_argument("--summarize", action="store_true", help="Rewrite the Markdown from the JSON only.")
    ap.add_argument(
        "--loras",
        type=Path,
        default=Path("runs/bench_serving_field/gemma-3-270m-generate"),
        help="Trained generation LoRAs for the quality rows (bench/serving_field.py writes them).",
    )
    ap.add_argument("--only", default="decode,lora,scoring,quality", help="Sections to run (the rest kept from --out).")
    a = ap.parse_args()
    out = Path(a.out)
    if a.summarize:
        rec = json.loads(out.with_suffix(".json").read_text())
        notes = out.parent / (out.name + "_notes.md")
        rec["notes"] = notes.read_text().splitlines() if notes.exists() else []
        out.with_suffix(".md").write_text(report(rec))
        return
    set_torch_threads()
    torch.set_grad_enabled(False)
    base = load_base("gemma-3-270m")
    machine = roofline.measure()
    shape = roofline.model_shape(base.model, base.name)
    print(json.dumps(machine.to_dict()), flush=True)
    e2e = load_task("e2e_nlg").test.examples
    texts = [f"Describe the restaurant in one sentence: {e.text}\nDescription:" for e in e2e[:32]]
    prompts = encode_prompts(base.tokenizer, texts, 512)
    rec = {
        "command": "python bench/engine.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"),
        "host": machine_info(),
        "versions": package_versions(),
        "beside": a.beside,
        "machine": machine.to_dict(),
        "model": {"name": shape.name, "layer_params": shape.layer_params, "head_params": shape.head_params},
        "auto": fastweights.resolve("auto", base.model),
    }
    only = set(a.only.split(","))
    rec["sections_run"] = [k for k in ("decode", "lora", "scoring", "quality") if k in only]
    if out.with_suffix(".json").exists():  # sections not run this time keep their last numbers
        old = json.loads(out.with_suffix(".json").read_text())
        rec |= {k: old[k] for k in ("decode", "lora", "scoring", "quality") if k in old and k not in only}
    if "decode" in only:
        rec["decode"] = decode_rows(base, machine, shape, prompts)
    if "lora" in only:
        rec["lora"] = lora_rows(base, machine, shape, prompts, "fp32") + lora_rows(
            base, machine, shape, prompts, rec["auto"]
        )
    if "scoring" in only:
        rec["scoring"] = scoring_rows(base, machine, shape)
    if "quality" in only:
        rec["quality"] = quality_rows(base, a.loras)
    notes = out.parent / (out.name + "_notes.md")
    rec["notes"] = notes.read_text().splitlines() if notes.exists() else []
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(rec, indent=1))
    out.with_suffix(".md").write_text(report(rec))
    print(report(rec))


if __name__ == "__main__":
    main()
