"""What the server keeps of a loaded artifact: the parts that act per request row.

Every kind reduces to some of: a prompt renderer (hard prompts, templates, exemplars), a
calibration, virtual-token embeddings (soft prompt), per-layer key/value prefixes, LoRA
matrices, or a private set of weights (full fine-tunes). The first five can differ from row to
row of one forward pass (see :mod:`adaptlab.serving.engine`); private weights cannot, so such
rows are batched only with rows on the same weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from adaptlab.models.base import BaseModel

BASE_WEIGHTS = "base"


@dataclass
class ServingAdapter:
    name: str                                   # "task@version" or the base model's name
    key: str                                    # digest of the artifact ("base" for the plain model)
    task_type: str | None                       # "classification" | "generation" | None (plain base)
    labels: list[str] | None
    label_texts: list[str] | None
    render: Callable[[list[str]], list[str]]    # inputs -> prompts
    calibrate: Callable[[torch.Tensor], torch.Tensor] | None = None  # (N, L) raw -> calibrated scores
    soft: torch.Tensor | None = None            # (P, H) virtual-token embeddings
    prefix: torch.Tensor | None = None          # (layers * 2, kv_heads, P, head_dim), keys/values interleaved
    lora: dict[str, tuple[torch.Tensor, torch.Tensor, float]] = field(default_factory=dict)  # module -> (A, B, s)
    weights: str = BASE_WEIGHTS                 # BASE_WEIGHTS or the key of private weights
    model: torch.nn.Module | None = None        # the private weights (full fine-tunes)
    decoding: dict = field(default_factory=lambda: {"max_new_tokens": 64})
    kind: str = "base"
    artifact: object = None                     # the loaded artifact itself (kept only by the swap baseline)
    lead: object = None                         # engine.Lead: the static lead's keys/values, once built
    lead_built: bool = False                    # build_lead ran (lead may still be None: nothing to keep)

    @property
    def soft_len(self) -> int:
        return 0 if self.soft is None else self.soft.shape[0]

    @property
    def prefix_len(self) -> int:
        return 0 if self.prefix is None else self.prefix.shape[2]

    @property
    def nbytes(self) -> int:
        n = sum(t.numel() * t.element_size() for t in (self.soft, self.prefix) if t is not None)
        n += sum(a.numel() * a.element_size() + b.numel() * b.element_size() for a, b, _ in self.lora.values())
        if self.model is not None:
            n += sum(p.numel() * p.element_size() for p in self.model.parameters())
        if self.lead is not None:
            n += self.lead.nbytes
        return n


def plain_adapter(base: BaseModel, name: str | None = None) -> ServingAdapter:
    """The unadapted base model: prompts pass through as they are."""
    return ServingAdapter(name=name or base.name, key=BASE_WEIGHTS, task_type=None, labels=None, label_texts=None,
                          render=lambda texts: list(texts))


def _lora_parts(lora_module) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
    """PEFT state dict keys ``base_model.model.<module>.lora_A.weight`` -> {module: (A, B, alpha / r)}."""
    from peft.utils import get_peft_model_state_dict

    cfg = lora_module.cfg
    state = lora_module._state
    if state is None:
        state = get_peft_model_state_dict(lora_module._active())
    scale = cfg.alpha / cfg.r
    out: dict[str, list] = {}
    for key, value in state.items():
        name = key.removeprefix("base_model.model.")
        for part, slot in ((".lora_A.weight", 0), (".lora_B.weight", 1)):
            if name.endswith(part):
                out.setdefault(name[: -len(part)], [None, None])[slot] = value.detach().clone()
    missing = [m for m, (a, b) in out.items() if a is None or b is None]
    if missing:
        raise ValueError(f"LoRA state is missing A or B for {', '.join(missing)}")
    return {m: (a, b, scale) for m, (a, b) in out.items()}


def _prefix_kv(prefix_module) -> torch.Tensor:
    flat = prefix_module.flat_prefix().detach()                                    # (P, L*2*kv*hd)
    P = flat.shape[0]
    return flat.view(P, prefix_module.layers * 2, prefix_module.kv_heads, prefix_module.head_dim).permute(1, 2, 0, 3)


def from_artifact(artifact, base: BaseModel, name: str, key: str) -> ServingAdapter:
    """Reduce a loaded artifact (``Artifact`` or ``PromptArtifact``) to its per-row parts.

    The artifact's modules are not used to serve: LoRA layers PEFT injected while loading are
    taken out of the shared base model again (``release``) so that every row of a batch sees the
    unmodified base weights plus its own adapter only.
    """
    from adaptlab.strategies.full.strategy import FullModule
    from adaptlab.strategies.gradient import release
    from adaptlab.strategies.hybrid.strategy import HybridModule
    from adaptlab.strategies.lora.strategy import LoraModule
    from adaptlab.strategies.prefix.strategy import PrefixModule
    from adaptlab.strategies.prompting import PromptArtifact
    from adaptlab.strategies.soft_prompt.strategy import SoftPromptModule

    labels = artifact.labels if artifact.task == "classification" else None
    label_texts = artifact.template.label_texts(labels) if labels else None
    common = dict(name=name, key=key, task_type=artifact.task, labels=labels, label_texts=label_texts,
                  decoding=dict(artifact.decoding or {"max_new_tokens": 64}), kind=artifact.strategy)
    if isinstance(artifact, PromptArtifact):
        calibrate = artifact.calibrate if artifact.calibration is not None else None
        return ServingAdapter(render=artifact.prompts, calibrate=calibrate, **common)

    template = artifact.template
    if artifact.task == "classification":
        render = lambda texts: [template.render(t, labels) for t in texts]  # noqa: E731
    else:
        render = lambda texts: [template.render(t) for t in texts]  # noqa: E731
    module = artifact.module
    parts: dict = {}
    stage1 = module.stage1 if isinstance(module, HybridModule) else module
    if isinstance(module, HybridModule):
        parts["soft"] = module.prompt.prompt.detach().clone()
    if isinstance(stage1, SoftPromptModule):
        parts["soft"] = stage1.prompt.detach().clone()
    elif isinstance(stage1, PrefixModule):
        parts["prefix"] = _prefix_kv(stage1).clone()
    elif isinstance(stage1, LoraModule):
        parts["lora"] = _lora_parts(stage1)
    elif isinstance(stage1, FullModule):
        parts["model"] = stage1.model
        parts["weights"] = key
    elif stage1 is not base.model:
        raise ValueError(f"{name}: cannot serve a {type(stage1).__name__}")
    release(base)
    return ServingAdapter(render=render, **common, **parts)
