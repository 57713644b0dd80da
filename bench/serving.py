"""Serving benchmark: 8 adaptations of one base model under concurrent load, on loopback.

    python bench/serving.py --out docs/results/serving
    python bench/serving.py --model tiny --data demo --requests 64 --out /tmp/serving_tiny   # smoke run

Part 1 (throughput): the same requests (round-robin over 8 adaptations: 2 LoRA, 2 soft prompts,
2 prefixes, a few-shot prompt, a zero-shot prompt) sent by ``--concurrency`` client threads to
``adaptlab serve`` started three times, once per batching mode:
- ``mixed``: requests for different adaptations share one forward pass, and each adaptation's
  static prompt start is kept as keys/values (the server's default);
- ``mixed-nocache``: the same without that prompt cache (``--no-prompt-cache``), to show what
  each part is worth;
- ``swap``: one adaptation at a time through its own artifact code path (each request group
  runs alone, with only its own adaptation applied), the way a server without mixed batches
  works.
Reports requests/s, p50/p99 latency, the ratio, and whether both modes gave the same labels.

Part 2 (bounded load test, mixed mode): ``--load-requests`` requests (classification on every
adaptation plus short completions on the base model) at ``--load-concurrency``; counts lost
requests and 5xx answers, and samples the server's RSS once a second to show it stays flat after
warm-up. Stops by itself.

The adaptations are trained briefly (``--train-steps``): their quality does not matter here,
only that their weights are real. Trained artifacts are kept in ``runs/bench_serving/`` and
reused by later runs.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import requests

from adaptlab.data.named import load_task
from adaptlab.data.splits import subsample
from adaptlab.models.base import load_base, resolve_device
from adaptlab.registry import Registry
from adaptlab.strategies import get_strategy, make_config
from adaptlab.training import TrainConfig
from adaptlab.utils import atomic_write_json, atomic_write_text, machine_info, package_versions, provenance_lines

ADAPTATIONS = [  # (task name, strategy, config overrides)
    ("lora-a", "lora", {"r": 8}),
    ("lora-b", "lora", {"r": 4, "target_modules": ["q_proj", "v_proj"]}),
    ("soft-a", "soft_prompt", {"n_tokens": 20}),
    ("soft-b", "soft_prompt", {"n_tokens": 10}),
    ("prefix-a", "prefix", {"n_tokens": 16}),
    ("prefix-b", "prefix", {"n_tokens": 8}),
    ("fewshot", "few_shot", {"k": 4}),
    ("zeroshot", "zero_shot", {}),
]


def train_adaptations(base, train, dev, folder: Path, steps: int, seed: int) -> dict[str, Path]:
    out = {}
    for i, (name, strategy, overrides) in enumerate(ADAPTATIONS):
        dest = folder / name
        if (dest / "adaptlab_artifact.json").exists():
            out[name] = dest
            continue
        strat = get_strategy(strategy).strategy_cls(make_config(strategy, **overrides))
        t0 = time.perf_counter()
        art = strat.fit(
            base,
            train,
            None,
            TrainConfig(max_steps=steps, batch_size=8, seed=seed + i, checkpoint_every=0),
            progress=False,
        )
        art.save(dest)
        print(f"trained {name} ({strategy}) in {time.perf_counter() - t0:.0f} s", flush=True)
        out[name] = dest
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(
        self,
        model: str,
        registry: Path,
        mode: str,
        max_batch: int,
        max_wait_ms: float,
        device: str = "auto",
        prompt_cache: bool = True,
        preload: list[str] | None = None,
        weights: str = "fp32",
        launcher: list[str] | None = None,  # what runs ``serve ...``; default ``python -m adaptlab.cli``
    ):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [
            *(launcher or [sys.executable, "-m", "adaptlab.cli"]),
            "serve",
            "--model",
            model,
            "--registry",
            str(registry),
            "--port",
            str(self.port),
            "--no-auth",
            "--batching",
            mode,
            "--max-batch",
            str(max_batch),
            "--max-wait-ms",
            str(max_wait_ms),
            "--max-new-tokens",
            "32",
            "--device",
            device,
            "--preload",
            ",".join(preload or [a[0] for a in ADAPTATIONS]),
            "--prompt-cache" if prompt_cache else "--no-prompt-cache",
            "--weights",
            weights,
        ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wait_up(self.proc, self.url + "/healthz", 600, lambda: self.proc.stdout.read())
        self.ps = psutil.Process(self.proc.pid)

    def rss(self) -> int:
        return self.ps.memory_info().rss

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def wait_up(proc: subprocess.Popen, health_url: str, seconds: float, why=lambda: "") -> None:
    """Until ``health_url`` answers 200; a server that exits first, or never answers, is an error."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {why()}")
        try:
            if requests.get(health_url, timeout=1).ok:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"{health_url} did not answer in {seconds:.0f} s")


def fire(url: str, jobs: list[dict], concurrency: int) -> tuple[list[dict], float]:
    """Send every job once from ``concurrency`` threads; returns per-job results and wall seconds."""
    session = threading.local()

    def one(job):
        s = getattr(session, "s", None) or requests.Session()
        session.s = s
        t0 = time.perf_counter()
        try:
            r = s.post(url + job["path"], json=job["body"], timeout=600)
            body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
            return {"status": r.status_code, "seconds": time.perf_counter() - t0, "body": body}
        except requests.RequestException as e:
            return {"status": 0, "seconds": time.perf_counter() - t0, "error": str(e)}

    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, jobs))
    return results, time.perf_counter() - t0


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def classify_jobs(texts: list[str], n: int) -> list[dict]:
    return [
        {
            "path": "/v1/classify",
            "body": {"model": ADAPTATIONS[i % len(ADAPTATIONS)][0], "input": texts[i % len(texts)]},
        }
        for i in range(n)
    ]


def common_args(ap: argparse.ArgumentParser, data: str, requests_: int, concurrency: int, work: str, out: str) -> None:
    """The options both serving benchmarks take."""
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda")
    ap.add_argument("--data", default=data)
    ap.add_argument("--train-size", type=int, default=128)
    ap.add_argument("--train-steps", type=int, default=16)
    ap.add_argument("--requests", type=int, default=requests_)
    ap.add_argument("--concurrency", type=int, default=concurrency)
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--max-wait-ms", type=float, default=20.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default=work)
    ap.add_argument("--out", default=out)


def prepare(args):
    """Train (or reuse) the 8 adaptations and register them afresh: (splits, tokenizer, registry folder)."""
    work = Path(args.work) / f"{args.model}-{args.data}"
    splits = load_task(args.data, seed=args.seed)
    train = subsample(splits.train, n=args.train_size, seed=args.seed)
    base = load_base(args.model, device=resolve_device(args.device))
    folders = train_adaptations(base, train, splits.dev, work / "artifacts", args.train_steps, args.seed)
    tokenizer = base.tokenizer
    del base
    reg_dir = work / "registry"
    shutil.rmtree(reg_dir, ignore_errors=True)
    reg = Registry(reg_dir)
    for name, folder in folders.items():
        reg.register(folder, name)
    return splits, tokenizer, reg_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common_args(ap, "sst2", 256, 32, "runs/bench_serving", "docs/results/serving")
    ap.add_argument("--load-requests", type=int, default=600)
    ap.add_argument("--load-concurrency", type=int, default=48)
    args = ap.parse_args()

    splits, _, reg_dir = prepare(args)
    texts = [ex.text for ex in subsample(splits.dev, n=min(400, len(splits.dev)), seed=args.seed).examples]

    meta = {
        "command": "python " + " ".join(sys.argv),
        "machine": machine_info(),
        "versions": package_versions(),
        "model": args.model,
        "data": args.data,
        "adaptations": [a[:2] for a in ADAPTATIONS],
        "requests": args.requests,
        "concurrency": args.concurrency,
        "max_batch": args.max_batch,
        "max_wait_ms": args.max_wait_ms,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    jobs = classify_jobs(texts, args.requests)
    modes = {}
    labels = {}
    for mode in ("swap", "mixed-nocache", "mixed"):
        server = Server(
            args.model,
            reg_dir,
            mode.split("-")[0],
            args.max_batch,
            args.max_wait_ms,
            args.device,
            prompt_cache=mode != "mixed-nocache",
        )
        try:
            fire(server.url, classify_jobs(texts, 2 * len(ADAPTATIONS)), 4)  # warm-up: every adapter once
            results, wall = fire(server.url, jobs, args.concurrency)
        finally:
            server.stop()
        ok = [r for r in results if r["status"] == 200]
        lat = [r["seconds"] for r in ok]
        labels[mode] = [r["body"]["data"][0]["label"] if r["status"] == 200 else None for r in results]
        modes[mode] = {
            "requests": len(results),
            "ok": len(ok),
            "wall_s": wall,
            "requests_per_s": len(ok) / wall,
            "p50_s": percentile(lat, 50),
            "p99_s": percentile(lat, 99),
        }
        print(mode, json.dumps(modes[mode]), flush=True)
    same = sum(a == b for a, b in zip(labels["mixed"], labels["swap"]))
    same_nocache = sum(a == b for a, b in zip(labels["mixed-nocache"], labels["swap"]))
    ratio = modes["mixed"]["requests_per_s"] / modes["swap"]["requests_per_s"]
    ratio_nocache = modes["mixed-nocache"]["requests_per_s"] / modes["swap"]["requests_per_s"]

    # Part 2: bounded load test on the mixed server.
    server = Server(args.model, reg_dir, "mixed", args.max_batch, args.max_wait_ms, args.device)
    samples: list[tuple[float, int]] = []
    stop = threading.Event()

    def sample():
        t0 = time.perf_counter()
        while not stop.is_set():
            samples.append((time.perf_counter() - t0, server.rss()))
            time.sleep(1.0)

    try:
        load = classify_jobs(texts, args.load_requests)
        for i in range(0, len(load), 10):  # one request in ten is a short completion on the base model
            load[i] = {
                "path": "/v1/completions",
                "body": {"model": "base", "prompt": texts[i % len(texts)], "max_tokens": 8},
            }
        fire(server.url, classify_jobs(texts, 2 * len(ADAPTATIONS)), 4)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        results, wall = fire(server.url, load, args.load_concurrency)
        stop.set()
        sampler.join()
        metrics_text = requests.get(server.url + "/metrics", timeout=10).text
    finally:
        server.stop()
    statuses: dict[str, int] = {}
    for r in results:
        statuses[str(r["status"])] = statuses.get(str(r["status"]), 0) + 1
    warm = [rss for t, rss in samples if t >= 0.2 * wall] or [rss for _, rss in samples]
    lat = [r["seconds"] for r in results if r["status"] == 200]
    load_out = {
        "requests": len(results),
        "statuses": statuses,
        "lost": sum(r["status"] == 0 for r in results),
        "server_errors": sum(r["status"] >= 500 for r in results),
        "wall_s": wall,
        "requests_per_s": len(lat) / wall,
        "p50_s": percentile(lat, 50),
        "p99_s": percentile(lat, 99),
        "rss_mb_after_warmup_min": min(warm) / 2**20,
        "rss_mb_after_warmup_max": max(warm) / 2**20,
        "rss_samples": len(samples),
        "batch_rows_hist": [ln for ln in metrics_text.splitlines() if ln.startswith("adaptlab_batch_rows_")],
    }
    print("load", json.dumps({k: v for k, v in load_out.items() if k != "batch_rows_hist"}), flush=True)

    out = Path(args.out)
    record = {
        "meta": meta,
        "throughput": modes,
        "ratio": ratio,
        "ratio_without_prompt_cache": ratio_nocache,
        "same_labels": same,
        "same_labels_without_prompt_cache": same_nocache,
        "compared": len(jobs),
        "load_test": load_out,
    }
    atomic_write_json(out.with_suffix(".json"), record)
    m, s, mn = modes["mixed"], modes["swap"], modes["mixed-nocache"]
    md = [
        f"## Serving: 8 adaptations of {args.model} on one server ({args.data})",
        "",
        *provenance_lines(meta),
        f"Adaptations: {', '.join(f'{n} ({s_})' for n, s_ in meta['adaptations'])}. {args.requests} classify "
        f"requests, round-robin over them, {args.concurrency} concurrent clients on loopback; max batch "
        f"{args.max_batch}, max wait {args.max_wait_ms:g} ms.",
        "",
        "| mode | requests/s | p50 latency | p99 latency | ok |",
        "|---|---|---|---|---|",
        f"| swap (one adaptation at a time) | {s['requests_per_s']:.2f} | {s['p50_s']:.2f} s | {s['p99_s']:.2f} s | "
        f"{s['ok']}/{s['requests']} |",
        f"| mixed batches, no prompt cache | {mn['requests_per_s']:.2f} | {mn['p50_s']:.2f} s | "
        f"{mn['p99_s']:.2f} s | {mn['ok']}/{mn['requests']} |",
        f"| mixed batches + prompt cache (default) | {m['requests_per_s']:.2f} | {m['p50_s']:.2f} s | {m['p99_s']:.2f} s | "
        f"{m['ok']}/{m['requests']} |",
        "",
        f"**Ratio mixed / swap: {ratio:.2f}x** ({ratio_nocache:.2f}x without the prompt cache). Same label as "
        f"swap on {same}/{len(jobs)} requests ({same_nocache}/{len(jobs)} without the cache).",
        "",
        "### Bounded load test (mixed mode)",
        "",
        f"{load_out['requests']} requests (9 in 10 classify over the 8 adaptations, 1 in 10 an 8-token completion "
        f"on the base model), {args.load_concurrency} concurrent clients, {wall:.0f} s: "
        f"statuses {statuses}, lost {load_out['lost']}, 5xx {load_out['server_errors']}; "
        f"{load_out['requests_per_s']:.2f} requests/s, p50 {load_out['p50_s']:.2f} s, p99 {load_out['p99_s']:.2f} s. "
        f"Server RSS after warm-up: {load_out['rss_mb_after_warmup_min']:.0f}-"
        f"{load_out['rss_mb_after_warmup_max']:.0f} MB over {len(samples)} one-second samples.",
    ]
    atomic_write_text(out.with_suffix(".md"), "\n".join(md) + "\n")
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
