"""Predicted vs measured seconds of single runs: how compare/costs.py's efficiencies were set.

    python bench/cost_calibration.py demo zero_shot@0,few_shot@32,lora@32,soft_prompt@32,full@32 120
    python bench/cost_calibration.py banking77 zero_shot@0,few_shot@32,lora@64 150
    python bench/cost_calibration.py e2e_nlg zero_shot@0,lora@32 64

Arguments: dataset, strategy@train_size list, test rows. Prints the profile of the rows, then per run
its measured fit and scoring seconds beside the prior estimate (ratio 1: the prior is right).
"""

import sys
import time

from adaptlab.utils import set_torch_threads

set_torch_threads()
from adaptlab.compare import CompareConfig
from adaptlab.compare.costs import Estimator
from adaptlab.compare.measure import prepare, run_one
from adaptlab.compare.store import RunSpec

data = sys.argv[1]
specs = sys.argv[2].split(",")
cfg = CompareConfig(
    data=data,
    strategies=["zero_shot", "few_shot", "prompt_search", "soft_prompt", "prefix", "lora", "full", "hybrid"],
    train_sizes=[32],
    test_limit=int(sys.argv[3]),
    forgetting=False,
    strategy_settings={"prompt_search": {"budget_calls": 120}},
)
ctx = prepare(cfg)
print(ctx.profile.to_dict(), "probe", ctx.probe_gflops, "screen", ctx.n_screen, flush=True)
est = Estimator(cfg, ctx.profile, ctx.n_eval, ctx.n_screen)
for sp in specs:
    s, n = sp.split("@")
    n = int(n)
    t = time.time()
    r = run_one(RunSpec(s, n, 0), cfg, ctx, "runs/cost_calibration", progress=False, light=True, screened=True)
    w = est.work(s, n, r["eval"]["scored_examples"])
    pf = est._prior_seconds("train" if r["run"]["kind"] == "gradient" else "eval", w.fit)
    ps = est._prior_seconds("eval", w.score)
    print(
        f"{r['run']['id']:22s} fit {r['train']['seconds']:7.1f}s prior {pf:8.1f} ratio {r['train']['seconds'] / max(pf, 1e-9):.3f} score {r['eval']['seconds']:6.1f}s ({r['eval']['scored_examples']} rows) prior {ps:8.1f} ratio {r['eval']['seconds'] / ps:.3f} wall {time.time() - t:.0f}",
        flush=True,
    )
