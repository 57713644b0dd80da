"""What the runtime reads of a model's architecture, read once from its transformers config.

transformers configs name the same facts differently or leave them out by architecture (Gemma 3
has sliding-window layers, per-layer attention kinds and logit soft-capping; Llama has none of
them; ``head_dim`` and ``num_key_value_heads`` are optional). This is the one place that knows the
defaults, so the label scorer, the decoder, the prefix strategy and the serving engine read
:class:`ArchFacts` instead of each probing the config with its own ``getattr``.
"""

from __future__ import annotations

from dataclasses import dataclass

FULL_ATTENTION = "full_attention"
SLIDING_ATTENTION = "sliding_attention"


@dataclass(frozen=True)
class ArchFacts:
    layers: int
    heads: int
    kv_heads: int  # grouped-query attention: fewer key/value heads than query heads
    head_dim: int
    sliding_window: int | None  # a sliding-window layer keeps only this many past positions
    layer_types: tuple[str, ...]  # each layer's attention kind (all FULL_ATTENTION when the config has none)
    per_kind_masks: bool  # the decoder takes one attention mask per kind (Gemma 3) instead of one
    logit_softcap: float | None  # logits = tanh(logits / cap) * cap (Gemma)

    @property
    def kv_shape(self) -> tuple[int, int, int]:
        """(layers, kv_heads, head_dim): the shape of one position's keys or values across layers."""
        return self.layers, self.kv_heads, self.head_dim


def arch_facts(config) -> ArchFacts:
    """The facts of a transformers decoder config (or of a model, through its ``config``)."""
    config = getattr(config, "config", config)
    heads = config.num_attention_heads
    declared = getattr(config, "layer_types", None)
    return ArchFacts(
        layers=config.num_hidden_layers,
        heads=heads,
        kv_heads=getattr(config, "num_key_value_heads", None) or heads,
        head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
        sliding_window=getattr(config, "sliding_window", None),
        layer_types=tuple(declared) if declared else (FULL_ATTENTION,) * config.num_hidden_layers,
        per_kind_masks=bool(declared),
        logit_softcap=getattr(config, "final_logit_softcapping", None) or None,
    )
