"""Architecture facts are read from a config in one place, with each architecture's defaults."""

from adaptlab.models.arch import FULL_ATTENTION, arch_facts
from adaptlab.models.tiny import build_tiny


def test_gemma_and_llama_facts_from_their_configs():
    gemma = arch_facts(build_tiny(arch="gemma").model)
    cfg = build_tiny(arch="gemma").model.config
    assert gemma.sliding_window == cfg.sliding_window and gemma.per_kind_masks
    assert gemma.layer_types == tuple(cfg.layer_types) and gemma.logit_softcap == cfg.final_logit_softcapping
    assert gemma.kv_shape == (cfg.num_hidden_layers, cfg.num_key_value_heads, cfg.head_dim)
    llama = build_tiny(arch="llama").model.config
    facts = arch_facts(llama)
    assert facts.layer_types == (FULL_ATTENTION,) * llama.num_hidden_layers and not facts.per_kind_masks
    assert facts.logit_softcap is None
    assert facts.head_dim == (getattr(llama, "head_dim", None) or llama.hidden_size // llama.num_attention_heads)


def test_a_config_without_the_optional_fields_gets_the_defaults():
    class Plain:  # what an older or smaller architecture's config may hold, and no more
        num_attention_heads, num_hidden_layers, hidden_size = 4, 3, 64

    facts = arch_facts(Plain())
    assert facts.kv_shape == (3, 4, 16) and facts.sliding_window is None and facts.logit_softcap is None
    assert facts.layer_types == (FULL_ATTENTION,) * 3 and not facts.per_kind_masks
