"""A stated cost model that turns measured speed into money per 1M predictions.

Assumption (overridable): the job runs on a machine like the one measured, rented at
``price_per_hour`` dollars, fully busy. Cost per 1M predictions = 1e6 / (examples per second)
seconds of that machine. Prompt tokens per 1M predictions are reported too: with an API priced per
token, that number times the price is the bill, and it is where few-shot prompts cost most.
"""

from __future__ import annotations

DEFAULT_PRICE_PER_HOUR = 0.10  # USD; a 2-vCPU cloud instance, order of magnitude


def cost_per_million(
    examples_per_s: float, prompt_tokens: float, price_per_hour: float = DEFAULT_PRICE_PER_HOUR
) -> dict:
    hours = 1e6 / max(examples_per_s, 1e-9) / 3600
    return {
        "usd_per_1m": hours * price_per_hour,
        "machine_hours_per_1m": hours,
        "prompt_tokens_per_1m": prompt_tokens * 1e6,
        "price_per_hour": price_per_hour,
    }
