"""A LoRA as a llama.cpp adapter GGUF next to the base GGUF, and an Ollama ``Modelfile``.

The adapter file is what llama.cpp's ``convert_lora_to_gguf.py`` writes: ``general.type =
adapter``, ``adapter.type = lora``, ``adapter.lora.alpha``, and per adapted weight two tensors
named after the base GGUF's tensor (``blk.3.attn_q.weight.lora_a`` of shape (r, in) and
``.lora_b`` of shape (out, r)). Names come from the ``gguf`` package's own map of Hugging Face
names to GGUF names, so they are the ones llama.cpp's converter gives the base weights. For a
Llama-architecture base, llama.cpp's converter reorders the rows of ``q_proj`` and ``k_proj``
(rotary halves interleaved); the same order is applied to ``lora_b`` of those projections.

Written here with the ``gguf`` package rather than by running llama.cpp's converter: the converter
needs a PEFT folder *and* the Hugging Face base model's ``config.json`` and files, while adaptlab
already holds the deltas and the base's architecture; the tensor naming is the ``gguf`` package's.

Soft prompts and prefixes have no llama.cpp form (they are not weights); the export says so and
names the formats that do carry them. Full fine-tunes need a merged GGUF, which is not built yet.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from adaptlab.export import ExportError, _fresh, _meta
from adaptlab.models.types import BaseModel
from adaptlab.strategies.base import Artifact, ArtifactError

ADAPTER_FILE = "adapter.gguf"
# Hugging Face model_type -> the gguf package's architecture (and llama.cpp's).
ARCHS = {"gemma3_text": "GEMMA3", "gemma3": "GEMMA3", "llama": "LLAMA"}
# Chat formats Ollama's TEMPLATE needs (Go templates), by the gguf architecture; the answer ends at `stop`.
CHAT = {
    "GEMMA3": ("<start_of_turn>user\n{{ .Prompt }}<end_of_turn>\n<start_of_turn>model\n", "<end_of_turn>"),
    "LLAMA": ("<|im_start|>user\n{{ .Prompt }}<|im_end|>\n<|im_start|>assistant\n", "<|im_end|>"),
}


def llama_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """The row order llama.cpp's converter gives a Llama q/k projection (rotary halves interleaved)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def adapter_tensors(base: BaseModel, contribution) -> tuple[str, dict[str, np.ndarray], float]:
    """(gguf architecture, GGUF tensor name -> array, alpha) for a LoRA contribution."""
    import gguf

    cfg = base.model.config
    arch = ARCHS.get(cfg.model_type)
    if arch is None:
        raise ExportError(f"--format gguf: no llama.cpp architecture known for {cfg.model_type!r}")
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch], cfg.num_hidden_layers)
    out, alphas = {}, set()
    for module, d in contribution.lora.items():
        gname = names.get_name(module + ".weight", try_suffixes=(".weight",))
        if gname is None:
            raise ExportError(f"--format gguf: {module} has no GGUF tensor name for {arch}")
        a = d.a.detach().float().cpu().numpy()
        b = d.b.detach().float().cpu().numpy()
        if arch == "LLAMA" and module.endswith(("q_proj", "k_proj")):
            heads = cfg.num_attention_heads if module.endswith("q_proj") else cfg.num_key_value_heads
            b = llama_permute(b, heads)
        out[f"{gname}.lora_a"], out[f"{gname}.lora_b"] = np.ascontiguousarray(a), np.ascontiguousarray(b)
        alphas.add(round(d.scale * a.shape[0], 6))
    if len(alphas) != 1:
        raise ExportError(f"--format gguf: llama.cpp takes one alpha per adapter, these deltas have {sorted(alphas)}")
    return gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH[arch]], out, alphas.pop()


def write_adapter(path: Path, arch_name: str, tensors: dict[str, np.ndarray], alpha: float, name: str) -> None:
    import gguf

    w = gguf.GGUFWriter(str(path), arch_name)
    w.add_type(gguf.GGUFType.ADAPTER)
    w.add_string(gguf.Keys.Adapter.TYPE, "lora")
    w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
    w.add_name(name)
    for tname, arr in tensors.items():
        w.add_tensor(tname, arr.astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def base_gguf(base: BaseModel, out: Path) -> Path | None:
    """The base model's own GGUF file for ``FROM``: the packaged file (assembled into ``out`` when
    the package ships it in parts); None for a model without one (the tiny test models)."""
    from adaptlab.models.registry import resolve_model

    spec = resolve_model(base.name)
    if spec is None or spec.weights is None:
        return None
    path = Path(spec.weights().gguf(out))
    if out in path.parents:  # assembled here: give it a plain name
        target = out / "base.gguf"
        shutil.move(str(path), target)
        shutil.rmtree(out / "_src", ignore_errors=True)
        return target
    return path


def modelfile(art: Artifact, arch: str, base_path: Path | None, base_name: str) -> str:
    """An Ollama Modelfile: the base, the adapter, the task's prompt inside the chat format, the stops."""
    turn, stop = CHAT[arch]
    text = "{{ .Prompt }}"
    prompt = art.template.render(text, art.label_set) if not art.spec.conversation else text
    template = turn.replace("{{ .Prompt }}", prompt) if art.template.chat_turn or art.spec.conversation else prompt
    lines = [
        f"# {art.strategy} on {base_name}, exported by adaptlab (task: {art.task})",
        f"FROM {base_path if base_path is not None else '<the GGUF of ' + base_name + '>'}",
        f"ADAPTER ./{ADAPTER_FILE}",
        'TEMPLATE """' + template + '"""',
        f'PARAMETER stop "{stop}"',
    ]
    stops = list((art.decoding or {}).get("stop") or [])
    limit = (art.decoding or {}).get("max_new_tokens", 64)
    if art.label_set:  # a classifier answers with a label: a few tokens, ended by a line break
        stops, limit = stops + ["\\n"], 16
    lines += [f'PARAMETER stop "{s}"' for s in stops if s != stop]
    lines.append(f"PARAMETER num_predict {limit}")
    lines.append("PARAMETER temperature 0")
    if art.label_set:
        lines.append("# answers are one of (adaptlab scores them; llama.cpp generates): " + ", ".join(art.label_set))
    return "\n".join(lines) + "\n"


def export_gguf(src: Path, out: Path, base: BaseModel, force: bool = False, with_base: bool = True) -> Path:
    """``src`` (a LoRA artifact) as ``OUT/adapter.gguf`` + ``OUT/Modelfile`` (+ the base GGUF)."""
    meta = _meta(src)
    if meta.get("kind") == "prompt":
        raise ExportError(
            f"{src}: a {meta['strategy']} artifact is a prompt, not weights: put its text in an Ollama "
            f"Modelfile's TEMPLATE, or serve it with `adaptlab serve`"
        )
    try:
        art = Artifact.load(src, base)
    except ArtifactError as e:
        raise ExportError(str(e)) from None
    c = art.contribution()
    others = [
        w
        for w, present in (
            ("a soft prompt", c.soft is not None),
            ("a prefix", c.prefix is not None),
            ("weights of its own", c.model is not None),
        )
        if present
    ]
    if others or not c.lora:
        what = ", ".join(others) or "no LoRA"
        raise ExportError(
            f"{src}: a {meta['strategy']} artifact has {what}; llama.cpp adapters carry LoRA only "
            f"(soft prompts and prefixes have no llama.cpp form): use --format peft or merged, or a "
            f"LoRA from the same compare"
        )
    arch_name, tensors, alpha = adapter_tensors(base, c)
    arch = ARCHS[base.model.config.model_type]
    out = _fresh(out, force)
    write_adapter(out / ADAPTER_FILE, arch_name, tensors, alpha, f"adaptlab {meta['strategy']} {meta['task']}")
    base_path = base_gguf(base, out) if with_base else None
    (out / "Modelfile").write_text(modelfile(art, arch, base_path, base.name))
    return out
