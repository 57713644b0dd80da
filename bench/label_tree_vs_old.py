"""Label tree scorer vs the per-label cache-copy scorer it replaced, on 8 Banking77 prompts (77 labels).

    git show 8caf886:adaptlab/evaluation/scoring.py > /tmp/scoring_old.py
    python bench/label_tree_vs_old.py

Prints seconds per example for both, and the largest score difference against the old scorer
and against the naive one-pass-per-label reference (first 2 prompts).
"""

import importlib.util
import sys
import time

import torch

from adaptlab.data.named import load_task
from adaptlab.evaluation import scoring as new
from adaptlab.models.base import load_base
from adaptlab.prompts import DEFAULT_CLASSIFICATION as T

spec = importlib.util.spec_from_file_location("old", "/tmp/scoring_old.py")
old = importlib.util.module_from_spec(spec)
sys.modules["old"] = old
spec.loader.exec_module(old)
torch.set_num_threads(2)
s = load_task("banking77")
b = load_base("gemma-3-270m")
ex = s.test.examples[:8]
labels = s.train.labels
prompts = [T.render(e.text, labels) for e in ex]
lt = T.label_texts(labels)
with torch.no_grad():
    t0 = time.time()
    a = new.score_labels(b.model, b.tokenizer, prompts, lt, batch_size=8)
    t1 = time.time()
    o = old.score_labels(b.model, b.tokenizer, prompts, lt, batch_size=8)
    t2 = time.time()
    n = new.score_labels_naive(b.model, b.tokenizer, prompts[:2], lt, batch_size=16)
print(
    "new s/ex",
    (t1 - t0) / 8,
    "old s/ex",
    (t2 - t1) / 8,
    "maxdiff new-old",
    (a - o).abs().max().item(),
    "maxdiff new-naive",
    (a[:2] - n).abs().max().item(),
    "argmax same",
    (a.argmax(1) == o.argmax(1)).all().item(),
    "prompt tokens",
    len(b.tokenizer(prompts[0])["input_ids"]),
)
