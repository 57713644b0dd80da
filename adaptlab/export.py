"""Export an artifact for other engines: a PEFT adapter folder, a merged transformers model, or a
llama.cpp LoRA adapter GGUF with an Ollama Modelfile (:mod:`adaptlab.export_gguf`).

- ``peft``: strategies save their adapters in PEFT's format and record where in the artifact's
  metadata (``peft``: folder, and what a PEFT export leaves out); the export copies those files
  (plus a README naming the base model) into a clean folder that ``PeftModel.from_pretrained``
  and vLLM (``--enable-lora``, LoRA only) load. An artifact whose PEFT form leaves part of it
  out (a hybrid's soft prompt on top of its LoRA) exports only with ``allow_partial``.
- ``merged``: read through the adaptation protocol: LoRA deltas added into a copy of the base
  weights, or the artifact's own weights, written as a transformers model folder (safetensors,
  config, tokenizer) that any transformers-based engine serves without adaptlab. Soft prompts
  and prefixes are not weights and cannot be merged.

No strategy is named here: what can be exported comes from the artifact itself.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
from pathlib import Path

import torch

from adaptlab.models.adaptation import Contribution
from adaptlab.models.base import DEFAULT_MODEL
from adaptlab.models.types import BaseModel
from adaptlab.strategies.base import Artifact, ArtifactError, read_artifact_meta
from adaptlab.utils import cli_setting

FORMATS = ("peft", "merged")  # and gguf: adaptlab.export_gguf
MERGED_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0")  # a merged GGUF's tensor types (adaptlab.export_gguf)
GGUF_TYPES = ("adapter", *MERGED_TYPES)
PEFT_FILES = ("adapter_config.json", "adapter_model.safetensors")


class ExportError(ValueError):
    """The artifact cannot be exported in the asked format; the message says what can."""


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """An export's settings. ``adaptlab export``'s options are these fields (``cli.config_options``),
    and :meth:`adaptlab.api.Adapted.export` takes the same names, so both check them here, once."""

    format: str = cli_setting(
        dataclasses.MISSING,
        "peft (adapter folder; vLLM --enable-lora for LoRA), merged (a transformers model with the adaptation "
        "merged) or gguf (for llama.cpp and Ollama, with a Modelfile: see --gguf-type).",
        "--format",
    )
    model: str = cli_setting(DEFAULT_MODEL, "Base model (for --format merged and gguf).")
    force: bool = cli_setting(False, "Replace OUT if it is not empty.")
    allow_partial: bool = cli_setting(False, "Hybrids: export the LoRA/full stage without its soft prompt.")
    gguf_type: str | None = cli_setting(
        None,
        "--format gguf: adapter (a LoRA next to the base GGUF; the default for a LoRA) or a merged model as "
        "f32, f16 (the default for a full fine-tune), bf16, q8_0 or q4_0.",
        "--gguf-type",
    )

    def __post_init__(self):
        if self.format not in (*FORMATS, "gguf"):
            raise ExportError(f"--format {self.format!r}: use one of {', '.join((*FORMATS, 'gguf'))}")
        if self.gguf_type is not None and self.format != "gguf":
            raise ExportError(f"--gguf-type {self.gguf_type!r}: only with --format gguf (not {self.format})")
        if self.gguf_type is not None and self.gguf_type not in GGUF_TYPES:
            raise ExportError(f"--gguf-type {self.gguf_type!r}: use one of {', '.join(GGUF_TYPES)}")

    @property
    def needs_base(self) -> bool:
        """merged and gguf read the base model's weights; peft copies the adapter's files alone."""
        return self.format != "peft"


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


def export(
    artifact_dir: str | Path,
    out: str | Path,
    fmt: str,
    base: BaseModel | None = None,
    force: bool = False,
    allow_partial: bool = False,
) -> Path:
    """Write ``artifact_dir`` as ``fmt`` into ``out``; ``base`` is needed for ``merged``."""
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}, or gguf (adaptlab.export_gguf)")
    src = Path(artifact_dir)
    meta = _meta(src)
    if meta.get("kind") == "prompt":
        raise ExportError(
            f"{src}: a {meta['strategy']} artifact is a prompt (JSON), not weights; use it as it is "
            f"with any backend, or serve it with `adaptlab serve`"
        )
    if fmt == "peft":
        return _export_peft(src, meta, Path(out), force, allow_partial)
    return _export_merged(src, meta, Path(out), base, force, allow_partial)


def _export_peft(src: Path, meta: dict, out: Path, force: bool, allow_partial: bool) -> Path:
    """Copy the PEFT files the artifact's strategy saved (where its metadata says they are)."""
    strategy, peft = meta["strategy"], meta.get("peft")
    if not peft:
        raise ExportError(f"{src}: a {strategy} artifact has no adapter; export it with --format merged")
    if peft.get("drops") and not allow_partial:
        raise ExportError(
            f"{src}: a {strategy} artifact has no single PEFT form; pass --allow-partial to export "
            f"its adapter alone ({peft['drops']} is dropped)"
        )
    files_from = src / peft["dir"]
    missing = [f for f in PEFT_FILES if not (files_from / f).is_file()]
    if missing:
        raise ExportError(f"{files_from}: missing {', '.join(missing)}")
    out = _fresh(out, force)
    for f in PEFT_FILES:
        shutil.copy2(files_from / f, out / f)
    (out / "README.md").write_text(
        f"# {strategy} adapter exported by adaptlab\n\nBase model: {meta['base_model']['name']} "
        f"(adaptlab fingerprint {meta['base_model']['fingerprint']}).\nTask: {meta['task']}"
        + (f"; labels: {', '.join(meta['labels'])}" if meta.get("labels") else "")
        + f".\nPrompt template: `{meta['template']['template']!r}`"
        + (
            ", sent as one user turn in the base model's chat template (the answer is the assistant's turn)"
            if meta["template"].get("chat_turn")
            else ""
        )
        + "\n"
    )
    return out


def _export_merged(src: Path, meta: dict, out: Path, base: BaseModel | None, force: bool, allow_partial: bool) -> Path:
    """Weights of its own, or LoRA deltas added into a copy of the base weights; never the shared base."""
    strategy = meta["strategy"]
    if base is None:
        raise ExportError("--format merged needs the base model")
    try:
        art = Artifact.load(src, base)
    except ArtifactError as e:
        raise ExportError(str(e)) from None
    c = art.contribution()
    has_weights = c.model is not None or bool(c.lora)
    not_weights = [
        what for what, present in (("a soft prompt", c.soft is not None), ("a prefix", c.prefix is not None)) if present
    ]
    if not has_weights or (not_weights and not allow_partial):
        raise ExportError(
            f"{src}: a {strategy} artifact holds {' and '.join(not_weights) or 'no weights'}, which is "
            f"not weights and cannot be merged; export it with --format peft"
            + (" or pass --allow-partial to merge its weights alone" if has_weights else "")
        )
    model = merged_model(base, c)
    out = _fresh(out, force)
    model.save_pretrained(out, safe_serialization=True)
    base.tokenizer.save_pretrained(out)
    (out / "adaptlab_export.json").write_text(
        json.dumps(
            {
                "from": str(src),
                "strategy": strategy,
                "task": meta["task"],
                "labels": meta.get("labels"),
                "template": meta["template"],
                "base_model": meta["base_model"],
            },
            indent=2,
        )
    )
    return out


@torch.no_grad()
def merged_model(base: BaseModel, c: Contribution) -> torch.nn.Module:
    """A model whose weights are ``c``'s own, or the base weights plus ``B A * scale`` per LoRA target.

    By hand rather than PEFT's ``merge_and_unload`` because our LoRA deltas are not PEFT layers;
    the merge is one matrix product per target, the same sum PEFT computes.
    """
    model = copy.deepcopy(c.model if c.model is not None else base.model)
    for name, d in c.lora.items():
        lin = model.get_submodule(name)
        lin.weight += (d.b.to(lin.weight) @ d.a.to(lin.weight)) * d.scale  # (out, in)
    return model
