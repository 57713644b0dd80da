"""Export an artifact for other engines: a PEFT adapter folder, or a merged transformers model.

- ``peft``: LoRA, soft prompt and prefix artifacts are already saved in PEFT's format; the
  export copies those files (plus a README naming the base model) into a clean folder that
  ``PeftModel.from_pretrained`` and vLLM (``--enable-lora``, LoRA only) load. A hybrid whose first
  stage is LoRA exports that LoRA adapter only when ``allow_partial``; the soft prompt on top has
  no PEFT form that composes with it.
- ``merged``: LoRA merged into the base weights (PEFT's ``merge_and_unload``), or a full
  fine-tune's own weights, written as a transformers model folder (safetensors, config,
  tokenizer) that any transformers-based engine serves without adaptlab. Soft prompts and
  prefixes are not weights and cannot be merged.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from adaptlab.models.base import BaseModel
from adaptlab.strategies.base import Artifact, ArtifactError, read_artifact_meta

FORMATS = ("peft", "merged")
PEFT_FILES = ("adapter_config.json", "adapter_model.safetensors")


class ExportError(ValueError):
    """The artifact cannot be exported in the asked format; the message says what can."""


def _meta(folder: Path) -> dict:
    try:
        return read_artifact_meta(folder)
    except ArtifactError as e:
        raise ExportError(str(e)) from None


def _fresh(out: Path, force: bool) -> Path:
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not force:
            raise ExportError(f"{out} exists and is not empty; pass --force to replace it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def export(artifact_dir: str | Path, out: str | Path, fmt: str, base: BaseModel | None = None,
           force: bool = False, allow_partial: bool = False) -> Path:
    """Write ``artifact_dir`` as ``fmt`` into ``out``; ``base`` is needed for ``merged``."""
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
    src = Path(artifact_dir)
    meta = _meta(src)
    strategy = meta["strategy"]
    stage1 = meta.get("strategy_config", {}).get("stage1") if strategy == "hybrid" else None
    stage2 = meta.get("strategy_config", {}).get("stage2") if strategy == "hybrid" else None
    if meta.get("kind") == "prompt":
        raise ExportError(f"{src}: a {strategy} artifact is a prompt (JSON), not weights; use it as it is with any "
                          f"backend, or serve it with `adaptlab serve`")
    if fmt == "peft":
        if strategy in ("lora", "soft_prompt", "prefix"):
            files_from = src
        elif strategy == "hybrid" and stage1 == "lora":
            if stage2 == "soft_prompt" and not allow_partial:
                raise ExportError(f"{src}: hybrid LoRA + soft prompt has no single PEFT form; pass "
                                  f"--allow-partial to export the LoRA stage alone (its soft prompt is dropped)")
            files_from = src / "stage1"
        else:
            raise ExportError(f"{src}: a {strategy} artifact has no adapter; export it with --format merged")
        missing = [f for f in PEFT_FILES if not (files_from / f).is_file()]
        if missing:
            raise ExportError(f"{files_from}: missing {', '.join(missing)}")
        out = _fresh(Path(out), force)
        for f in PEFT_FILES:
            shutil.copy2(files_from / f, out / f)
        (out / "README.md").write_text(
            f"# {strategy} adapter exported by adaptlab\n\nBase model: {meta['base_model']['name']} "
            f"(adaptlab fingerprint {meta['base_model']['fingerprint']}).\nTask: {meta['task']}"
            + (f"; labels: {', '.join(meta['labels'])}" if meta.get("labels") else "")
            + f".\nPrompt template: `{meta['template']['template']!r}`\n")
        return out

    if strategy in ("soft_prompt", "prefix") or (strategy == "hybrid" and stage2 == "soft_prompt"
                                                   and not allow_partial):
        raise ExportError(f"{src}: a {strategy} artifact is not weights and cannot be merged; export it with "
                          f"--format peft" + (" or pass --allow-partial to merge its LoRA/full stage alone"
                                               if strategy == "hybrid" else ""))
    if base is None:
        raise ExportError("--format merged needs the base model")
    try:
        art = Artifact.load(src, base)
    except ArtifactError as e:
        raise ExportError(str(e)) from None
    module = art.module.stage1 if hasattr(art.module, "stage1") else art.module
    from adaptlab.strategies.gradient import release

    if hasattr(module, "peft"):  # LoRA: merge into a private copy, never into the shared base
        from adaptlab.strategies.full.strategy import private_copy
        from peft import get_peft_model, set_peft_model_state_dict
        from adaptlab.strategies.lora.strategy import _peft_config
        from peft.utils import get_peft_model_state_dict

        state = module._state if module._state is not None else get_peft_model_state_dict(module._active())
        state = {k: v.clone() for k, v in state.items()}
        release(base)
        model = get_peft_model(private_copy(base), _peft_config(module.cfg))
        set_peft_model_state_dict(model, state)
        model = model.merge_and_unload()
    else:
        model = module.model
    out = _fresh(Path(out), force)
    model.save_pretrained(out, safe_serialization=True)
    base.tokenizer.save_pretrained(out)
    (out / "adaptlab_export.json").write_text(json.dumps(
        {"from": str(src), "strategy": strategy, "task": meta["task"], "labels": meta.get("labels"),
         "template": meta["template"], "base_model": meta["base_model"]}, indent=2))
    return out
