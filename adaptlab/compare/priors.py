"""Which strategies are likely to win at the user's data size, before anything is measured.

Read off the committed full grids on Gemma 3 270M (means of their seeds, the largest size each):

| grid (labels)                       | size | first            | then                          | prompts' best |
|-------------------------------------|------|------------------|-------------------------------|---------------|
| SST-2 (2), compare_sst2             | 1000 | hybrid .896      | lora .894, full .872          | prompt_search .777 |
| Banking77 (77), compare_banking77   | 1000 | hybrid .725      | lora .717, full .714          | prompt_search .191 |
| ViGGO (generation), compare_viggo   | 256  | hybrid .424      | lora .416, full .361          | few_shot .295 |
| demo-chat (SmolLM2), compare_demo_chat | 180 | lora .281     | hybrid .273, prefix .249      | few_shot .235 |
| ViGGO (SmolLM2), compare_viggo_smollm2 | 256 | lora .363     | hybrid .359, soft_prompt .310 | few_shot .297 |

At 16-32 examples the gaps close (SST-2 at 16: full .833, lora .833, few_shot .829; ViGGO at 32:
full .302, few_shot and prompt_search .294), and soft prompt and prefix trail until a few hundred
examples (prefix .013 at 16 on Banking77). So: LoRA is the likely winner at every size (first or
within a point of first in every grid, and an adapter); hybrid and full its closest rivals; from
about 100 examples the other trained strategies come next, below it the prompts do.

The race uses this order only where nothing is measured yet: to reserve time for the likely
winner's run at the target, to order the first round and the tuning, and to say what a strategy
that did not run would have been up against. Measurements replace it as soon as they exist.
"""

from __future__ import annotations

LIKELY = ["lora", "hybrid", "full"]                        # first at the target in every committed grid
LARGE = ["soft_prompt", "prefix", "few_shot", "prompt_search", "zero_shot"]   # from ~100 examples
SMALL = ["few_shot", "prompt_search", "soft_prompt", "prefix", "zero_shot"]   # below that
SMALL_TARGET = 100


def prior_order(strategies: list[str], target: int) -> list[str]:
    """``strategies`` from the likeliest winner at ``target`` examples to the least likely (a strategy
    the grids never measured goes after the known ones, in its given order)."""
    known = LIKELY + (SMALL if target < SMALL_TARGET else LARGE)
    rank = {s: i for i, s in enumerate(known)}
    return sorted(strategies, key=lambda s: (rank.get(s, len(known)), strategies.index(s)))


def likely_winner(strategies: list[str], target: int) -> str:
    return prior_order(strategies, target)[0]
