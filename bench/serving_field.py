"""Serving measured the way S-LoRA, Punica and dLoRA measure it: N LoRA adaptations of one base
model, request popularity, Poisson arrivals, against one adaptation at a time, PEFT's own
mixed-adapter batches, and a ceiling.

    python bench/serving_field.py --out docs/results/serving_field
    python bench/serving_field.py --model tiny --cls-data demo --gen-data demo --adapters 8 \\
        --requests 24 --out /tmp/serving_field_tiny        # smoke run

What runs (in process: the engines are timed, not HTTP; ``bench/serving.py`` covers the server):
- N in ``--adapters`` (8, 32) LoRA adaptations, ranks 4/8/16 in turn on q/k/v/o, each trained
  ``--train-steps`` steps on its own slice of the training rows (their quality does not matter, only
  that their weights differ);
- popularity: ``distinct`` (request i goes to adaptation i mod N: every batch is all different
  adaptations), ``uniform`` (drawn uniformly), ``zipf`` (drawn with P(k) ~ 1/k, the power law
  S-LoRA uses);
- arrivals: all at once (``inf``, the throughput ceiling of each system), or Poisson at each rate
  of ``--rates`` (requests/s);
- classification (label scoring, ``--cls-data``) and generation (``--max-new`` greedy tokens,
  ``--gen-data``).

Systems, each fed the same requests:
- ``mixed``: adaptlab's serving core, mixed batches + the static-lead cache (the server default);
- ``one at a time``: the same core in its ``swap`` mode: each adaptation's rows run alone through
  the artifact's own code path, as a server without mixed batches does;
- ``peft``: PEFT's mixed-adapter batches (``adapter_names=...``, one per row) on a copy of the
  base model with all N adapters loaded, batched by the same max batch and wait: ``generate`` for
  generation; for classification each (prompt, label) pair as one sequence with its full logits, as
  a PEFT user scores labels (PEFT has no label scoring of its own);
- ``ceiling``: adaptlab's core on the same traffic with every request sent to one adaptation.

Reported per run: requests/s, generated tokens/s, time to first token (TTFT) p50/p99 (the first
streamed token; a classifier answers in one pass, so its TTFT is its latency; ``one at a time``
does not stream, so its TTFT is its latency too), latency p50/p99, and, against the same rows run
one adaptation at a time, how many outputs are the same. Ratios: mixed / ceiling and mixed / one at a
time, at N = 32 distinct (targets 0.8x and 3x).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import copy
import os
import queue
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

from adaptlab.data.named import load_task
from adaptlab.data.splits import subsample
from adaptlab.models.base import load_base, resolve_device
from adaptlab.serving.adapters import from_artifact
from adaptlab.serving.service import ServeConfig, Service, Work
from adaptlab.strategies import get_strategy, make_config
from adaptlab.strategies.base import Artifact
from adaptlab.training import TrainConfig
from adaptlab.utils import atomic_write_json, atomic_write_text, machine_info, package_versions, provenance_lines

RANKS = (4, 8, 16)


# ------------------------------------------------------------------ adaptations and traffic
def train_loras(base, data, n: int, folder: Path, steps: int, seed: int) -> list[Path]:
    """N LoRA artifacts (reused when already in ``folder``), each trained on its own slice of ``data``."""
    out = []
    rows = data.examples
    for i in range(n):
        dest = folder / f"lora-{i:02d}"
        if not (dest / "adaptlab_artifact.json").exists():
            part = data.with_examples([rows[(i * 8 + j) % len(rows)] for j in range(16)])
            cfg = make_config("lora", r=RANKS[i % len(RANKS)], alpha=2.0 * RANKS[i % len(RANKS)])
            strat = get_strategy("lora").strategy_cls(cfg)
            tc = TrainConfig(max_steps=steps, batch_size=4, seed=seed + i, checkpoint_every=0, lr=1e-3)
            t0 = time.perf_counter()
            strat.fit(base, part, None, tc, progress=False).save(dest)
            print(f"trained {dest.name} (r={cfg.r}) in {time.perf_counter() - t0:.1f} s", flush=True)
        out.append(dest)
    return out


def traffic(n: int, adapters: int, popularity: str, rate: float | None, seed: int) -> list[tuple[float, int, int]]:
    """(arrival second, adaptation index, input index) for ``n`` requests."""
    rng = np.random.default_rng(seed)
    if popularity == "distinct":
        which = np.arange(n) % adapters
    elif popularity == "uniform":
        which = rng.integers(0, adapters, n)
    elif popularity == "zipf":
        p = 1.0 / np.arange(1, adapters + 1)
        which = rng.permutation(adapters)[rng.choice(adapters, n, p=p / p.sum())]
    else:
        raise ValueError(f"popularity {popularity!r}: use distinct, uniform or zipf")
    arrivals = np.zeros(n) if rate is None else np.cumsum(rng.exponential(1.0 / rate, n))
    return [(float(t), int(a), i) for i, (t, a) in enumerate(zip(arrivals, which))]


# ------------------------------------------------------------------ systems
class AdaptlabSystem:
    """adaptlab's serving core (mixed batches, or ``swap``: one adaptation at a time)."""

    def __init__(self, base, artifacts: list[Artifact], batching: str, max_batch: int, max_wait_ms: float):
        self.service = Service(base, None, ServeConfig(max_batch=max_batch, max_wait_ms=max_wait_ms, batching=batching))
        self.adapters = []
        for i, art in enumerate(artifacts):
            ad = from_artifact(art, f"lora-{i:02d}", f"key-{i:02d}", base)
            if batching == "swap":
                ad.artifact = art
            self.adapters.append(ad)

    def submit(self, op: str, adapter: int, text: str, max_new: int, first) -> cf.Future:
        return self.service.submit(Work(op, self.adapters[adapter], text, max_new=max_new, on_token=first))

    def close(self) -> None:
        self.service.close()


class _FirstStep:
    """A logits processor that only notes when generation's first step ran (the batch's first token)."""

    def __init__(self, callbacks):
        self.callbacks, self.done = callbacks, False

    def __call__(self, input_ids, scores):
        if not self.done:
            self.done = True
            for cb in self.callbacks:
                cb(None)
        return scores


class PeftSystem:
    """PEFT's mixed-adapter batches: all N adapters loaded into one PeftModel (a copy of the base),
    each batch generated with ``adapter_names`` (one per row); batches are formed like adaptlab's
    (up to ``max_batch`` requests, waiting at most ``max_wait_ms`` after the first)."""

    def __init__(self, base, artifacts: list[Artifact], folders: list[Path], max_batch: int, max_wait_ms: float):
        from peft import PeftModel

        from adaptlab.strategies.base import read_artifact_meta

        model = copy.deepcopy(base.model)
        dirs = [f / read_artifact_meta(f)["peft"]["dir"] for f in folders]
        self.model = PeftModel.from_pretrained(model, str(dirs[0]), adapter_name="a00")
        for i, d in enumerate(dirs[1:], 1):
            self.model.load_adapter(str(d), adapter_name=f"a{i:02d}")
        self.model.eval()
        self.tok, self.artifacts = base.tokenizer, artifacts
        self.max_batch, self.max_wait = max_batch, max_wait_ms / 1000
        self.queue: queue.Queue = queue.Queue()
        self.stop = threading.Event()
        self.worker = threading.Thread(target=self._run, daemon=True)
        self.worker.start()

    def submit(self, op: str, adapter: int, text: str, max_new: int, first) -> cf.Future:
        fut: cf.Future = cf.Future()
        art = self.artifacts[adapter]
        prompt = art.prompts([text])[0]
        labels = art.label_texts() if op == "classify" else None
        self.queue.put((f"a{adapter:02d}", prompt, max_new if labels is None else labels, first, fut))
        return fut

    def _run(self) -> None:
        torch.set_grad_enabled(False)
        while not self.stop.is_set():
            try:
                items = [self.queue.get(timeout=0.05)]
            except queue.Empty:
                continue
            deadline = time.monotonic() + self.max_wait
            while len(items) < self.max_batch:
                try:
                    items.append(self.queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            try:
                self._batch(items)
            except Exception as e:  # noqa: BLE001 - every waiting caller must hear about it
                for *_, fut in items:
                    fut.set_exception(e)

    def _batch(self, items) -> None:
        if isinstance(items[0][2], list):
            self._classify(items)
            return
        self.tok.padding_side = "left"
        enc = self.tok([p for _, p, *_ in items], return_tensors="pt", padding=True, add_special_tokens=True)
        out = self.model.generate(
            **enc,
            adapter_names=[a for a, *_ in items],
            do_sample=False,
            max_new_tokens=max(m for _, _, m, *_ in items),
            logits_processor=[_FirstStep([first for *_, first, _ in items if first])],
            pad_token_id=self.tok.pad_token_id,
        )
        for (_, _, max_new, _, fut), row in zip(items, out[:, enc["input_ids"].shape[1] :]):
            ids = [int(t) for t in row[:max_new] if int(t) != self.tok.pad_token_id]
            if self.tok.eos_token_id in ids:
                ids = ids[: ids.index(self.tok.eos_token_id)]
            fut.set_result(self.tok.decode(ids, skip_special_tokens=True).strip())

    def _classify(self, items, chunk: int = 16) -> None:
        """Label scoring as a PEFT user writes it: every (prompt, label) pair as one sequence through
        the PeftModel with its row's adapter, the full logits, the label tokens' log-probabilities
        summed; ``chunk`` sequences per forward pass (the 262k-word logits of all pairs of a 32-row
        batch at once would take tens of GB)."""
        from adaptlab.models.runtime import encode_labels, encode_prompts

        pairs = []  # (item, label index, prompt ids, label ids)
        for i, (_, prompt, labels, *_rest) in enumerate(items):
            p_ids = encode_prompts(self.tok, [prompt], 1024)[0]
            for j, l_ids in enumerate(encode_labels(self.tok, labels)):
                pairs.append((i, j, p_ids, l_ids))
        scores = [torch.empty(len(labels)) for _, _, labels, *_ in items]
        pad = self.tok.pad_token_id
        for start in range(0, len(pairs), chunk):
            part = pairs[start : start + chunk]
            T = max(len(p) + len(lab) for _, _, p, lab in part)
            ids = torch.full((len(part), T), pad, dtype=torch.long)
            att = torch.zeros((len(part), T), dtype=torch.long)
            for r, (_, _, p, lab) in enumerate(part):
                ids[r, : len(p) + len(lab)] = torch.tensor(p + lab)
                att[r, : len(p) + len(lab)] = 1
            logits = self.model(input_ids=ids, attention_mask=att, adapter_names=[items[i][0] for i, *_ in part]).logits
            logp = torch.log_softmax(logits.float(), dim=-1)
            for r, (i, j, p, lab) in enumerate(part):
                pos = torch.arange(len(p) - 1, len(p) + len(lab) - 1)
                scores[i][j] = logp[r, pos, torch.tensor(lab)].sum()
        for (*_, fut), sc in zip(items, scores):
            fut.set_result(sc)

    def close(self) -> None:
        self.stop.set()
        self.worker.join(timeout=10)


# ------------------------------------------------------------------ one run
def replay(system, reqs: list[tuple[float, int, int]], texts: list[str], op: str, max_new: int, tok) -> dict:
    """Send ``reqs`` at their arrival times (non-blocking submits), wait for all; times per request."""
    recs: list[dict] = [{} for _ in reqs]
    futures = []
    t0 = time.perf_counter() + 0.02
    for (t, a, x), r in zip(reqs, recs):
        wait = t0 + t - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        r["arrival"] = t0 + t

        def first(_token, r=r):
            r.setdefault("first", time.perf_counter())

        fut = system.submit(op, a, texts[x], max_new, first if op == "generate" else None)
        fut.add_done_callback(lambda f, r=r: r.setdefault("done", time.perf_counter()))
        futures.append(fut)
    outs = [f.result(timeout=3600) for f in futures]
    end = max(r["done"] for r in recs)
    wall = end - t0
    lat = [r["done"] - r["arrival"] for r in recs]
    ttft = [r.get("first", r["done"]) - r["arrival"] for r in recs]
    if op == "classify":
        outs = [int(torch.as_tensor(s).argmax()) for s in outs]
        tokens = 0
    else:
        tokens = sum(len(tok(o, add_special_tokens=False)["input_ids"]) for o in outs)
    return {
        "requests": len(reqs),
        "wall_s": wall,
        "requests_per_s": len(reqs) / wall,
        "tokens_per_s": tokens / wall,
        "generated_tokens": tokens,
        "ttft_p50_s": pct(ttft, 50),
        "ttft_p99_s": pct(ttft, 99),
        "latency_p50_s": pct(lat, 50),
        "latency_p99_s": pct(lat, 99),
        "outputs": outs,
    }


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def run_one(make, reqs, texts, op, max_new, tok, label: str, max_batch: int) -> dict:
    system = make()
    try:
        # Warm-up, untimed: one request for every adaptation the traffic uses (each builds its static
        # lead once, as a server does when an adaptation is first served), then a full batch at once
        # (the allocator's first large batch).
        first_of = {a: (0.0, a, x) for _, a, x in reversed(reqs)}
        replay(system, list(first_of.values()), texts, op, min(max_new, 2), tok)
        replay(system, [(0.0, a, x) for _, a, x in reqs[:max_batch]], texts, op, min(max_new, 2), tok)
        out = replay(system, reqs, texts, op, max_new, tok)
    finally:
        system.close()
    print(
        f"  {label}: {out['requests_per_s']:.2f} req/s, {out['tokens_per_s']:.1f} tok/s, "
        f"TTFT p50 {out['ttft_p50_s']:.2f} s, latency p50 {out['latency_p50_s']:.2f} / p99 "
        f"{out['latency_p99_s']:.2f} s",
        flush=True,
    )
    return out


# ------------------------------------------------------------------ the plan
def plan(adapters: list[int], pops: list[str], rates: list[float], gen: bool) -> list[tuple[int, str, float | None]]:
    """(N, popularity, rate) runs: every popularity at every N all at once, and the Poisson sweep
    at the largest N under the last popularity (generation: only distinct below the largest N, it
    is slow on a CPU)."""
    runs = [(n, p, None) for n in adapters for p in pops if not (gen and n != max(adapters) and p != "distinct")]
    return runs + [(max(adapters), pops[-1], r) for r in rates]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--cls-data", default="ag_news")
    ap.add_argument("--gen-data", default="e2e_nlg")
    ap.add_argument("--adapters", default="8,32")
    ap.add_argument("--requests", type=int, default=128, help="classification requests per run")
    ap.add_argument("--gen-requests", type=int, default=48)
    ap.add_argument("--max-new", type=int, default=16)
    ap.add_argument("--rates", default="4,8,16", help="Poisson rates (requests/s) for classification")
    ap.add_argument("--gen-rates", default="1,2", help="Poisson rates (requests/s) for generation")
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--max-wait-ms", type=float, default=20.0)
    ap.add_argument("--train-steps", type=int, default=2)
    ap.add_argument("--ops", default="classify,generate")
    ap.add_argument("--popularity", default="distinct,uniform,zipf", help="generation skips uniform")
    ap.add_argument("--systems", default="mixed,one at a time,peft,ceiling")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default="runs/bench_serving_field")
    ap.add_argument("--out", default="docs/results/serving_field")
    ap.add_argument("--report-only", action="store_true", help="rewrite OUT.md from OUT.json (no run)")
    a = ap.parse_args()
    if a.report_only:
        import json

        record = json.loads(Path(a.out).with_suffix(".json").read_text())
        record["summary"] = summarize(record["runs"])
        atomic_write_json(Path(a.out).with_suffix(".json"), record)
        atomic_write_text(Path(a.out).with_suffix(".md"), report(record))
        return
    out = Path(a.out)
    partial = out.with_suffix(".partial.json")  # finished runs, so a killed benchmark resumes
    import json

    done = json.loads(partial.read_text()) if partial.exists() else {}
    base = load_base(a.model, device=resolve_device(a.device))
    ns = [int(x) for x in a.adapters.split(",")]
    systems = a.systems.split(",")
    meta = {
        "command": "python " + " ".join(sys.argv),
        "machine": machine_info(),
        "versions": package_versions(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "model": a.model,
        "max_batch": a.max_batch,
        "max_wait_ms": a.max_wait_ms,
        "max_new": a.max_new,
    }
    for op in a.ops.split(","):
        gen = op == "generate"
        data = load_task(a.gen_data if gen else a.cls_data, seed=a.seed)
        train = subsample(data.train, n=min(len(data.train), 16 * max(ns)), seed=a.seed)
        folders = train_loras(base, train, max(ns), Path(a.work) / f"{a.model}-{op}", a.train_steps, a.seed)
        arts = [Artifact.load(f, base) for f in folders]
        n_req = a.gen_requests if gen else a.requests
        texts = [ex.text for ex in subsample(data.test, n=min(n_req, len(data.test)), seed=a.seed).examples]
        rates = [float(r) for r in (a.gen_rates if gen else a.rates).split(",") if r]
        pops = [p for p in a.popularity.split(",") if not (gen and p == "uniform")]
        for n, pop, rate in plan(ns, pops, rates, gen):
            reqs = [(t, ad, i % len(texts)) for t, ad, i in traffic(n_req, n, pop, rate, a.seed)]
            print(f"{op}, N={n}, {pop}, rate {rate or 'all at once'}", flush=True)
            makers = {
                "mixed": lambda n=n, arts=arts: AdaptlabSystem(base, arts[:n], "mixed", a.max_batch, a.max_wait_ms),
                "one at a time": lambda n=n, arts=arts: AdaptlabSystem(
                    base, arts[:n], "swap", a.max_batch, a.max_wait_ms
                ),
                "peft": lambda n=n, arts=arts, folders=folders: PeftSystem(
                    base, arts[:n], folders[:n], a.max_batch, a.max_wait_ms
                ),
                "ceiling": lambda arts=arts: AdaptlabSystem(base, arts[:1], "mixed", a.max_batch, a.max_wait_ms),
            }
            for system in systems:
                if system == "ceiling" and rate is not None:
                    continue
                if rate is not None and system not in ("mixed", "peft", "one at a time"):
                    continue
                key = f"{op}|{n}|{pop}|{rate}|{system}"
                if key in done:
                    continue
                sent = [(t, 0, x) for t, _, x in reqs] if system == "ceiling" else reqs
                done[key] = run_one(makers[system], sent, texts, op, a.max_new, base.tokenizer, system, a.max_batch)
                atomic_write_json(partial, done)
    record = {"meta": meta, "runs": done, "summary": summarize(done)}
    atomic_write_json(out.with_suffix(".json"), record)
    atomic_write_text(out.with_suffix(".md"), report(record))
    print(report(record))


def summarize(runs: dict) -> list[dict]:
    """One row per (op, N, popularity, rate): each system's figures, outputs equal to one at a time, ratios."""
    groups: dict[tuple, dict] = {}
    for key, r in runs.items():
        op, n, pop, rate, system = key.split("|")
        groups.setdefault((op, int(n), pop, rate), {})[system] = r
    rows = []
    for (op, n, pop, rate), by in groups.items():
        speed = "tokens_per_s" if op == "generate" else "requests_per_s"
        ref = by.get("one at a time")
        row = {
            "op": op,
            "adapters": n,
            "popularity": pop,
            "rate": None if rate == "None" else float(rate),
            "systems": {},
        }
        for system, r in by.items():
            same = None
            if ref is not None and system not in ("one at a time", "ceiling"):
                same = sum(x == y for x, y in zip(r["outputs"], ref["outputs"]))
            row["systems"][system] = {k: v for k, v in r.items() if k != "outputs"} | {"same_as_alone": same}
        systems = ("mixed", "peft", "one at a time", "ceiling")
        row["systems"] = dict(sorted(row["systems"].items(), key=lambda kv: systems.index(kv[0])))
        mixed = by.get("mixed")
        for other, name in (("ceiling", "of_ceiling"), ("one at a time", "vs_one_at_a_time"), ("peft", "vs_peft")):
            if mixed is not None and other in by and by[other][speed] > 0:
                row[name] = mixed[speed] / by[other][speed]
        rows.append(row)
    order = {"distinct": 0, "uniform": 1, "zipf": 2}
    return sorted(rows, key=lambda r: (r["op"], r["adapters"], order.get(r["popularity"], 3), r["rate"] or 0.0))


def report(record: dict) -> str:
    meta = record["meta"]
    md = [
        "# Serving, the field's way: N LoRA adaptations, popularity, Poisson arrivals",
        "",
        *provenance_lines(meta),
        "",
        f"In-process serving cores (no HTTP), {meta['model']}, max batch {meta['max_batch']}, max wait "
        f"{meta['max_wait_ms']:g} ms; generation {meta['max_new']} greedy tokens. Speed is requests/s for "
        "classification and generated tokens/s for generation. 'same' counts outputs equal to the same "
        "request run one adaptation at a time. Ratios: mixed / ceiling and mixed / one at a time.",
        "",
    ]
    for op in ("classify", "generate"):
        rows = [r for r in record["summary"] if r["op"] == op]
        if not rows:
            continue
        unit = "tokens/s" if op == "generate" else "requests/s"
        md += [
            f"## {'Generation' if op == 'generate' else 'Classification (label scoring)'}",
            "",
            f"| N | popularity | arrivals | system | {unit} | TTFT p50 / p99 s | latency p50 / p99 s | same |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            arrivals = "all at once" if r["rate"] is None else f"Poisson {r['rate']:g}/s"
            for system, s in r["systems"].items():
                speed = s["tokens_per_s"] if op == "generate" else s["requests_per_s"]
                same = "-" if s["same_as_alone"] is None else f"{s['same_as_alone']}/{s['requests']}"
                md.append(
                    f"| {r['adapters']} | {r['popularity']} | {arrivals} | {system} | {speed:.2f} | {s['ttft_p50_s']:.2f} / {s['ttft_p99_s']:.2f} | "
                    f"{s['latency_p50_s']:.2f} / {s['latency_p99_s']:.2f} | {same} |"
                )
        md += [
            "",
            "| N | popularity | arrivals | mixed / ceiling | mixed / one at a time | mixed / PEFT |",
            "|---|---|---|---|---|---|",
        ]
        for r in rows:
            f = {k: (f"{r[k]:.2f}x" if k in r else "-") for k in ("of_ceiling", "vs_one_at_a_time", "vs_peft")}
            arrivals = "all at once" if r["rate"] is None else f"Poisson {r['rate']:g}/s"
            md.append(
                f"| {r['adapters']} | {r['popularity']} | {arrivals} | {f['of_ceiling']} | "
                f"{f['vs_one_at_a_time']} | {f['vs_peft']} |"
            )
        md.append("")
    return "\n".join(md) + "\n"


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
