"""Synthetic run records with the same shape as the grid writes."""


def rec(
    strategy,
    size,
    quality,
    *,
    kind=None,
    seed=0,
    train_s=60.0,
    rss_gb=2.5,
    artifact=1e6,
    ex_s=10.0,
    tokens=30.0,
    spread=0.02,
    drop=0.01,
    ppl=0.01,
    gap=0.05,
    usd=None,
    params=1000,
    generation=False,
    stopped=False,
    test_n=None,
    right=None,
    baselines=None,
):
    """One run record. ``right``: per-row correctness (0/1) over a shared test set, stored as the run's
    predictions (labels 'a'/'b' alternate by row; a wrong row answers the other label)."""
    kind = kind or ("prompt" if strategy in ("zero_shot", "few_shot", "prompt_search") else "gradient")
    usd = usd if usd is not None else 1e6 / ex_s / 3600 * 0.10
    return {
        "run": {
            "id": f"{strategy}-n{size}-s{seed}",
            "strategy": strategy,
            "kind": kind,
            "train_size": size,
            "seed": seed,
            "epochs": 1.0,
            "settings": {},
        },
        "train": {
            "seconds": train_s,
            "peak_rss_bytes": int(rss_gb * 2**30),
            "trainable_params": params,
            "stopped_early": stopped,
            **({"steps": 10, "best_step": 10 if not stopped else 6} if kind == "gradient" else {"steps": 0}),
        },
        "eval": {
            **_eval(quality, generation, test_n, gap, ex_s, tokens, spread, drop, ppl),
            **({"baselines": baselines} if baselines is not None else {}),
        },
        "cost": {"artifact_bytes": int(artifact), "usd_per_1m": usd},
        "meta": {"versions": {"adaptlab": "0.1.0"}, "git_commit": "abc", "machine": {"cpu_count": 2}},
        **({"predictions": rows_of(right)} if right is not None else {}),
    }


def _eval(quality, generation, test_n, gap, ex_s, tokens, spread, drop, ppl):
    return {
        "quality": quality,
        "metric": "rouge_l" if generation else "accuracy",
        "test": {"rouge_l": quality, "chrf": quality - 0.02, "exact_match": 0.0}
        if generation
        else {"accuracy": quality, "macro_f1": quality - 0.01, **({"n": test_n} if test_n else {})},
        "train_quality": quality + gap,
        "overfit_gap": gap,
        "examples_per_s": ex_s,
        "prompt_tokens": tokens,
        "seconds": 10.0,
        "scored_examples": 100,
        "fragility": {"paraphrase_spread": spread, "perturbation_drop": drop},
        "forgetting": {"ppl_change": ppl, "second_task_change": 0.0},
    }


def rows_of(right, labels=("a", "b")):
    """Prediction rows for a per-row correctness list (reference labels alternate a, b, a, ...)."""
    out = []
    for i, ok in enumerate(right):
        ref = labels[i % len(labels)]
        wrong = labels[(i + 1) % len(labels)]
        out.append(
            {"id": i, "input": f"text {i}", "reference": ref, "output": ref if ok else wrong, "metric": float(ok)}
        )
    return out


def grid():
    """A plausible comparison: prompts flat, training rising with data."""
    out = [rec("zero_shot", 0, 0.40, tokens=120, artifact=2e3, ex_s=20)]
    for n, fs, lo, fu in ((16, 0.55, 0.50, 0.48), (64, 0.58, 0.70, 0.72), (256, 0.60, 0.85, 0.87)):
        out.append(rec("few_shot", n, fs, tokens=400, artifact=5e3, ex_s=8, train_s=1))
        out.append(rec("lora", n, lo, tokens=25, artifact=3e6, ex_s=25, train_s=n * 0.5))
        out.append(
            rec("full", n, fu, tokens=25, artifact=1.07e9, ex_s=25, train_s=n * 2, rss_gb=6, ppl=0.4, stopped=n == 256)
        )
    return out
