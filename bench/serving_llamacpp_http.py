"""adaptlab's server and llama.cpp's own server (``llama-server``) on the same HTTP traffic: the base
model alone, and N LoRA adaptations with each request for a different one.

    python bench/serving_llamacpp_http.py --out docs/results/serving_llamacpp_http

The LoRAs are ``bench/serving_field.py``'s generation LoRAs (E2E, ranks 4/8/16 on q/k/v/o of
Gemma 3 270M), exported with ``adaptlab export --format gguf`` for llama.cpp. Both servers get the
same prompts (each adaptation's own rendered prompt), greedy, ``--max-tokens`` new tokens, from
``--concurrency`` clients on loopback, and are timed from the first request to the last answer:
- adaptlab: ``adaptlab serve`` (fp32, mixed batches + the static-lead cache), each request naming
  its registered adaptation;
- llama.cpp: ``llama-server`` built from the llama.cpp vendored by llama-cpp-python's source
  distribution (``llamacpp_kit.llama_server_binary``), the packaged Q4_K_M base with every adapter
  loaded (``--lora`` each, ``--lora-init-without-apply``), ``--parallel`` slots with continuous
  batching; each request picks its adapter with ``"lora": [{"id": i, "scale": 1}]``. llama.cpp
  does not batch requests with different LoRA configurations together (its README says so).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from llamacpp_kit import PACKAGES, llama_server_binary, meta  # noqa: E402
from serving import Server, fire, free_port, percentile, wait_up  # noqa: E402


class LlamaServer(Server):
    """``llama-server`` started like :class:`serving.Server` (and stopped the same way)."""

    def __init__(
        self,
        binary: Path,
        base: Path,
        adapters: list[Path],
        parallel: int,
        ctx_per_slot: int,
        extra: list[str] | None = None,
    ):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [
            str(binary),
            "-m",
            str(base),
            "--port",
            str(self.port),
            "--host",
            "127.0.0.1",
            "-np",
            str(parallel),
            "-c",
            str(parallel * ctx_per_slot),
            "-t",
            str(len(os.sched_getaffinity(0))),  # one thread per core it may use (taskset: half speed)
            "--log-disable",
        ]
        for a in adapters:
            cmd += ["--lora", str(a)]
        if adapters:
            cmd.append("--lora-init-without-apply")
        cmd += extra or []
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        wait_up(self.proc, self.url + "/health", 300, lambda: " ".join(cmd))


def measure(url: str, jobs: list[dict], concurrency: int, tokens_of) -> dict:
    fire(url, jobs[: min(len(jobs), concurrency)], concurrency)  # warm-up: every slot / lead once
    results, wall = fire(url, jobs, concurrency)
    ok = [r for r in results if r["status"] == 200]
    tokens = sum(tokens_of(r["body"]) for r in ok)
    lat = [r["seconds"] for r in ok]
    return {
        "requests": len(jobs),
        "ok": len(ok),
        "wall_s": wall,
        "requests_per_s": len(ok) / wall,
        "tokens_per_s": tokens / wall,
        "generated_tokens": tokens,
        "latency_p50_s": percentile(lat, 50),
        "latency_mean_s": sum(lat) / len(lat),  # closed loop: clients / requests per second (Little's law)
        "latency_p99_s": percentile(lat, 99),
    }


def scenarios_for(names, which_of, texts, prompts_of, max_tokens: int) -> dict:
    """(adaptlab's requests, llama-server's requests) per traffic: the base alone, then N LoRAs with
    each request for another (``which_of[N]``: the adapter of each request)."""
    out = {
        "base alone": (
            [
                {
                    "path": "/v1/completions",
                    "body": {"model": "base", "prompt": p, "max_tokens": max_tokens, "temperature": 0},
                }
                for p in prompts_of[0]
            ],
            [
                {"path": "/completion", "body": {"prompt": p, "n_predict": max_tokens, "temperature": 0}}
                for p in prompts_of[0]
            ],
        )
    }
    for n, which in which_of.items():
        ours = [
            {
                "path": "/v1/completions",
                "body": {"model": names[w], "prompt": t, "max_tokens": max_tokens, "temperature": 0},
            }
            for w, t in zip(which, texts)
        ]
        theirs = [
            {
                "path": "/completion",
                "body": {"prompt": p, "n_predict": max_tokens, "temperature": 0, "lora": [{"id": w, "scale": 1.0}]},
            }
            for w, p in zip(which, prompts_of[n])
        ]
        out[f"{n} LoRAs, each request another"] = (ours, theirs)
    return out


def _mean(row: dict) -> str:
    return f"{row['latency_mean_s']:.2f}" if "latency_mean_s" in row else "-"  # rows before the column


def _frac(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def texts_of(results: list[dict]) -> list[str | None]:
    return [r["body"]["choices"][0]["text"] if r["status"] == 200 else None for r in results]


WORKER = "@worker"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--loras", type=Path, default=Path("runs/bench_serving_field/gemma-3-270m-generate"))
    ap.add_argument("--adapters", default="8,32", help="LoRA counts, comma-separated")
    ap.add_argument(
        "--weights",
        default="fp32,auto",
        help="adaptlab serve --weights kinds, comma-separated; KIND@worker: batches on a worker thread (before 7934e07)",
    )
    ap.add_argument("--data", default="e2e_nlg")
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--parallel", type=int, default=8, help="llama-server slots")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--beside", default="Nothing else ran on the cores.")
    ap.add_argument("--out", type=Path, default=Path("docs/results/serving_llamacpp_http"))
    a = ap.parse_args()
    from adaptlab.data.named import load_task
    from adaptlab.data.splits import subsample
    from adaptlab.export_gguf import base_gguf, export_gguf
    from adaptlab.models import fastweights, roofline
    from adaptlab.models.base import load_base
    from adaptlab.registry import Registry
    from adaptlab.strategies.base import Artifact
    from adaptlab.utils import provenance_lines, set_torch_threads

    set_torch_threads()
    binary = llama_server_binary()
    base = load_base("gemma-3-270m")
    machine = roofline.measure()
    shape = roofline.model_shape(base.model, base.name)
    # ``KIND@worker``: the same server with its batches on a worker thread, as before 7934e07 (serve_on_a_worker.py)
    kinds = {w: fastweights.resolve(w.removesuffix(WORKER), base.model) for w in a.weights.split(",")}
    counts = [int(n) for n in a.adapters.split(",")]
    folders = sorted(p for p in a.loras.iterdir() if (p / "adaptlab_artifact.json").exists())[: max(counts)]
    if len(folders) < max(counts):
        raise SystemExit(f"{a.loras}: {len(folders)} LoRA artifacts, {max(counts)} asked; run bench/serving_field.py")
    arts = [Artifact.load(f, base) for f in folders]
    texts = [e.text for e in subsample(load_task(a.data).test, n=a.requests, seed=0).examples]
    which_of = {n: [i % n for i in range(a.requests)] for n in counts}
    prompts_of = {n: [arts[w].prompts([t])[0] for w, t in zip(which, texts)] for n, which in which_of.items()}
    prompts_of[0] = prompts_of[counts[0]]  # the base alone gets the first scenario's rendered prompts
    names = [f"lora-{i:02d}" for i in range(len(arts))]
    rows = []
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        reg = Registry(d / "registry")
        for name, folder in zip(names, folders):
            reg.register(folder, name)
        adapters = [export_gguf(f, d / n, base, with_base=False) / "adapter.gguf" for n, f in zip(names, folders)]
        (d / "base").mkdir()
        base_path = base_gguf(base, d / "base")
        del base
        scenarios = scenarios_for(names, which_of, texts, prompts_of, a.max_tokens)
        for flag, kind in kinds.items():
            weights, on_worker = flag.removesuffix(WORKER), flag.endswith(WORKER)
            launcher = [sys.executable, str(Path(__file__).with_name("serve_on_a_worker.py"))] if on_worker else None
            server = Server(
                "gemma-3-270m", d / "registry", "mixed", 32, 20.0, preload=names, weights=weights, launcher=launcher
            )
            engine = f"adaptlab serve (--weights {weights}: {kind})" + (
                ", batches on a worker thread" if on_worker else ""
            )
            try:
                for scenario, (ours, _) in scenarios.items():
                    r = measure(
                        server.url, ours, a.concurrency, lambda b: b.get("usage", {}).get("completion_tokens", 0)
                    )
                    if scenario != "base alone":  # every answer against the same request alone on this server
                        alone, _ = fire(server.url, ours, 1)
                        crowd, _ = fire(server.url, ours, a.concurrency)
                        same = sum(x == y and x is not None for x, y in zip(texts_of(alone), texts_of(crowd)))
                        r["same_as_alone"] = f"{same}/{len(ours)}"
                    rows.append({"engine": engine, "scenario": scenario, "kind": kind, **r})
                    print(engine, scenario, f"{r['tokens_per_s']:.1f} tok/s", r.get("same_as_alone", ""), flush=True)
            finally:
                server.stop()
        llama = LlamaServer(binary, base_path, adapters, a.parallel, 512)
        try:
            for scenario, (_, theirs) in scenarios.items():
                r = measure(llama.url, theirs, a.concurrency, lambda b: b.get("tokens_predicted", 0))
                rows.append({"engine": f"llama-server (Q4_K_M, {a.parallel} slots)", "scenario": scenario, **r})
                print(rows[-1]["engine"], scenario, f"{r['tokens_per_s']:.1f} tok/s", flush=True)
        finally:
            llama.stop()
        shutil.rmtree(d / "base", ignore_errors=True)
    for r in rows:  # against the decode limit of the kind served, at the clients' batch
        lim = a.concurrency / roofline.decode_limit(machine, shape, a.concurrency, r.get("kind", "fp32")).seconds
        r["fraction_of_limit"] = r["tokens_per_s"] / lim if "kind" in r else None
        theirs = next(x for x in rows if x["engine"].startswith("llama") and x["scenario"] == r["scenario"])
        r["vs_llama_server"] = r["tokens_per_s"] / theirs["tokens_per_s"]
    report = meta(
        requests=a.requests,
        concurrency=a.concurrency,
        max_tokens=a.max_tokens,
        adapters=counts,
        llama_server_slots=a.parallel,
        roofline=machine.to_dict(),
        beside=a.beside,
        rows=rows,
    )
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    md = [
        "# Serving anchor over HTTP: adaptlab serve and llama.cpp's llama-server",
        "",
        *provenance_lines(report, PACKAGES),
        "",
        f"{a.requests} generation requests (E2E inputs, greedy, {a.max_tokens} new tokens), {a.concurrency} "
        f"concurrent clients on loopback; LoRAs (ranks 4/8/16 on q/k/v/o) round-robin in the LoRA scenarios. "
        f"Roofline measured in the same run: fp32 {machine.gflops['fp32']} GFLOP/s, bf16 "
        f"{machine.gflops.get('bf16', '-')} GFLOP/s, memory {machine.bandwidth_gbs} GB/s; the fraction is of the "
        f"decode limit at batch {a.concurrency} for the weights served. {a.beside}",
        "",
        "| engine | traffic | tokens/s | x llama-server | of limit | requests/s | latency p50 / mean / p99 s | ok | same as alone |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    md += [
        f"| {r['engine']} | {r['scenario']} | {r['tokens_per_s']:.1f} | {r['vs_llama_server']:.2f} | "
        f"{_frac(r['fraction_of_limit'])} | {r['requests_per_s']:.2f} | "
        f"{r['latency_p50_s']:.2f} / {_mean(r)} / {r['latency_p99_s']:.2f} | {r['ok']}/{r['requests']} | {r.get('same_as_alone', '-')} |"
        for r in rows
    ]
    notes = a.out.parent / (a.out.name + "_notes.md")  # the reading, written by hand, kept across runs
    if notes.exists():
        md += ["", notes.read_text().rstrip()]
    a.out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
