"""Probe: does the greedy screen's bound hold on real decode steps? (`engine_notes.md`: "on 512 E2E
decode steps the bound held on every row with 16 candidates; the largest bf16 error was a tenth of
the bound").

    python bench/probe_greedy_screen.py

Greedy-decodes 32 E2E prompts 16 tokens on Gemma 3 270M (fp32-packed), keeps each step's hidden
states, and prints the largest bf16 head error relative to ``||x|| * ||w_v||`` (against
``fastweights.screen_eps``) and, for the top K = 8..64 bf16 candidates, the share of rows whose
candidates reach past twice the bound (rows the screen decides without the full head).
"""

import torch

from adaptlab.data.named import load_task
from adaptlab.data.splits import subsample
from adaptlab.models import fastweights as fw
from adaptlab.models.base import load_base
from adaptlab.models.decoding import decode
from adaptlab.models.runtime import PlainLM, encode_prompts, project
from adaptlab.utils import set_torch_threads

set_torch_threads()
base = load_base("gemma-3-270m")
model = fw.inference_model(base.model, "fp32-packed")
tok = base.tokenizer
texts = [e.text for e in subsample(load_task("e2e_nlg").test, n=64, seed=0).examples]
lm = PlainLM(model)
seen = []
greedy = lm.greedy
lm.greedy = lambda h: seen.append(h.clone()) or greedy(h)
decode(lm, tok, encode_prompts(tok, texts[:32], 512), 16, "cpu")
X = torch.cat(seen)
W = base.model.get_output_embeddings().weight.detach()
full = project(model, X)
approx = fw._packed_product(X.to(torch.bfloat16), fw._pack(W.to(torch.bfloat16)), None).float()
rel = (approx - full).abs() / (X.norm(dim=1, keepdim=True) * W.norm(dim=1).unsqueeze(0))
eps = fw.screen_eps(W.shape[1])
print(f"{len(X)} decode rows; largest relative bf16 error {rel.max().item():.5f}, bound {eps:.5f}")
reach = 2 * eps * X.norm(dim=1) * W.norm(dim=1).max()
for k in (8, 16, 32, 64):
    top = approx.topk(k, dim=-1).values
    held = (top[:, -1] < top[:, 0] - reach).float().mean().item()
    print(f"top {k}: the bound decides {100 * held:.1f}% of rows")
