"""Tiny artifacts of every kind, saved to disk, for the registry and server tests."""

from __future__ import annotations

import json
from pathlib import Path

from adaptlab.data.loading import Example, TaskData
from adaptlab.strategies import get_strategy, make_config
from adaptlab.training import TrainConfig

FOOD = TaskData(
    "classification",
    [
        Example(f"item {w}", lab, i + 1)
        for i, (w, lab) in enumerate(
            [
                ("apple", "fruit"),
                ("pear", "fruit"),
                ("plum", "fruit"),
                ("kale", "veg"),
                ("leek", "veg"),
                ("okra", "veg"),
            ]
        )
    ],
    "food",
    label_names=["fruit", "veg"],
)
MOOD = TaskData(
    "classification",
    [
        Example(t, lab, i + 1)
        for i, (t, lab) in enumerate(
            [
                ("great day", "happy"),
                ("so good", "happy"),
                ("awful", "sad"),
                ("bad news", "sad"),
                ("meh", "neutral"),
                ("ok I guess", "neutral"),
            ]
        )
    ],
    "mood",
    label_names=["happy", "sad", "neutral"],
)
ECHO = TaskData("generation", [Example(f"say {w}", w, i + 1) for i, w in enumerate(["ab", "cd", "ef", "gh"])], "echo")
CHAT = TaskData(
    "chat",
    [
        Example(
            json.dumps(
                [{"role": "user", "content": q}, {"role": "assistant", "content": a}, {"role": "user", "content": u}]
            ),
            b,
            i + 1,
        )
        for i, (q, a, u, b) in enumerate(
            [("order?", "number please", "A1", "sent"), ("refund?", "number please", "B2", "refunded")]
        )
    ],
    "chat",
)
TEXTS = ["item apple", "item okra", "a plum", "great day", "awful", "hello there"]
LR = {"soft_prompt": 0.3, "full": 3e-3, "lora": 3e-2, "hybrid": 3e-2, "prefix": 1e-1}

# (name, strategy, data, config overrides)
KINDS = [
    ("zs", "zero_shot", FOOD, {}),
    ("fs", "few_shot", MOOD, {"k": 2, "calibrate": True}),
    (
        "ps",
        "prompt_search",
        FOOD,
        {"budget_calls": 30, "first_round": 3, "exemplar_sets": 1, "bootstrap": 4, "calibrate": True},
    ),
    ("gepa", "gepa", MOOD, {"budget_calls": 30, "val_examples": 3, "minibatch": 2, "k": 1, "proposer_max_tokens": 8}),
    ("soft", "soft_prompt", FOOD, {"n_tokens": 4}),
    ("soft2", "soft_prompt", MOOD, {"n_tokens": 7}),
    ("prefix", "prefix", FOOD, {"n_tokens": 3}),
    ("prefix2", "prefix", MOOD, {"n_tokens": 5}),
    ("lora", "lora", FOOD, {}),
    ("lora2", "lora", MOOD, {"r": 4, "target_modules": ["q_proj", "v_proj", "o_proj"]}),
    ("hybrid", "hybrid", MOOD, {"prompt_lr": 0.3}),
    ("hybrid-fs", "hybrid", FOOD, {"stage2": "few_shot", "k": 2}),
    ("full", "full", FOOD, {}),
    ("gen-lora", "lora", ECHO, {}),
    ("gen-soft", "soft_prompt", ECHO, {"n_tokens": 3}),
    ("gen-prefix", "prefix", ECHO, {"n_tokens": 6}),
]


def build(base, name: str, strategy: str, data: TaskData, overrides: dict, folder: Path, steps: int = 3) -> Path:
    spec = get_strategy(strategy)
    tc = TrainConfig(
        max_steps=steps, batch_size=3, lr=LR.get(strategy), warmup_ratio=0.0, schedule="constant", checkpoint_every=0
    )
    dev = data if spec.kind == "prompt" or strategy == "hybrid" else None  # searches select on dev
    art = spec.strategy_cls(make_config(strategy, **overrides)).fit(base, data, dev, tc, progress=False)
    return art.save(folder / name)


def build_all(base, folder: Path, kinds=KINDS) -> dict[str, Path]:
    return {name: build(base, name, s, d, o, folder) for name, s, d, o in kinds}
