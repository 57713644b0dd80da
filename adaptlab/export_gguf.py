"""A LoRA as a llama.cpp adapter GGUF next to the base GGUF, a merged model as one GGUF, and an
Ollama ``Modelfile`` for either.

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

A merged model (``gguf_type`` f32, f16, bf16, q8_0 or q4_0: full fine-tunes, or a LoRA added into
the base weights) is the base GGUF with every tensor rewritten from the merged weights: its
metadata (architecture, tokenizer, chat template) is copied key by key from the packaged base
GGUF, so the file is what llama.cpp's ``convert_hf_to_gguf.py`` would give the merged model, with
that converter's two changes to the numbers: Gemma's RMS norm weights are stored plus one
(llama.cpp multiplies by the weight, Gemma by one plus it), and Llama q/k rows are permuted. Norms
and other 1-D tensors stay f32, as the converter keeps them. Quantizing is the ``gguf`` package's
own (its numpy Q8_0/Q4_0 match llama.cpp's reference quantizers); the K-quants have no writer
there, so they are left to llama.cpp's ``llama-quantize`` on the f16 file.

Soft prompts and prefixes have no llama.cpp form (they are not weights); the export says so and
names the nearest strategy that has one.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from adaptlab.export import GGUF_TYPES, MERGED_TYPES, ExportError, _fresh, _meta, merged_model
from adaptlab.models.types import BaseModel
from adaptlab.strategies.base import Artifact, ArtifactError

ADAPTER_FILE = "adapter.gguf"
MERGED_FILE = "model.gguf"
# --gguf-type: "adapter" (a LoRA next to the base GGUF) or a merged model in one of these types.
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


def _copy_metadata(reader, writer, skip: set[str]) -> None:
    """Every key of ``reader`` (a GGUF) into ``writer``, with its own value type, except ``skip``."""
    import gguf

    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name in skip or not field.types:
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        if sub == gguf.GGUFValueType.ARRAY:
            raise ExportError(f"--format gguf: the base GGUF's {field.name} is a nested array, not copied here")
        writer.add_key_value(field.name, field.contents(), vtype, sub_type=sub)


def _gguf_array(w: np.ndarray, qtype) -> tuple[np.ndarray, object]:
    """(data, raw type for the writer) of one tensor: 1-D tensors stay f32, rows that do not fill
    whole quantization blocks fall back to f16 (both as llama.cpp's converter does)."""
    import gguf

    if w.ndim == 1 or qtype == gguf.GGMLQuantizationType.F32:
        return w.astype(np.float32), None
    if qtype == gguf.GGMLQuantizationType.F16:
        return w.astype(np.float16), None
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    if w.shape[-1] % block:
        return w.astype(np.float16), None
    return gguf.quants.quantize(w.astype(np.float32), qtype), qtype


def write_merged(path: Path, template: Path, model, arch: str, qtype_name: str, name: str) -> None:
    """``model``'s weights as a GGUF laid out like ``template`` (the base's GGUF): same keys, same
    tensor names and order, each tensor from the merged weights in ``qtype_name``."""
    import gguf

    cfg = model.config
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch], cfg.num_hidden_layers)
    state = model.state_dict()
    by_gguf = {}
    for hf in state:
        g = names.get_name(hf, try_suffixes=(".weight", ".bias"))
        if g is not None:
            by_gguf.setdefault(g, hf)  # a tied head maps to token_embd too: the embedding comes first
    qtype = gguf.GGMLQuantizationType[qtype_name.upper()]
    reader = gguf.GGUFReader(str(template))
    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH[arch]])
    _copy_metadata(reader, writer, {"general.architecture", "general.file_type", "general.name"})
    writer.add_name(name)
    writer.add_file_type(gguf.LlamaFileType["ALL_F32" if qtype_name == "f32" else f"MOSTLY_{qtype_name.upper()}"])
    for t in reader.tensors:
        hf = by_gguf.get(t.name)
        if hf is None:
            raise ExportError(f"--format gguf: the base GGUF's tensor {t.name} has no weight in the model")
        w = state[hf].detach().float().cpu().numpy()
        if arch == "GEMMA3" and t.name.endswith("norm.weight"):
            w = w + 1.0  # llama.cpp's RMS norm multiplies by the weight; Gemma's by (1 + weight)
        if arch == "LLAMA" and t.name.endswith(("attn_q.weight", "attn_k.weight")):
            heads = cfg.num_attention_heads if "attn_q" in t.name else cfg.num_key_value_heads
            w = llama_permute(w, heads)
        expected = [int(x) for x in reversed(t.shape)]
        if list(w.shape) != expected:
            raise ExportError(f"--format gguf: {t.name} is {list(w.shape)} in the model, {expected} in the base GGUF")
        data, raw = _gguf_array(np.ascontiguousarray(w), qtype)
        writer.add_tensor(t.name, data, raw_dtype=raw)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def modelfile(art: Artifact, arch: str, base_path: Path | str | None, base_name: str, adapter: bool = True) -> str:
    """An Ollama Modelfile: the base (or the merged model), the adapter, the task's prompt inside the
    chat format, the stops."""
    turn, stop = CHAT[arch]
    text = "{{ .Prompt }}"
    prompt = art.template.render(text, art.label_set) if not art.spec.conversation else text
    template = turn.replace("{{ .Prompt }}", prompt) if art.template.chat_turn or art.spec.conversation else prompt
    lines = [
        f"# {art.strategy} on {base_name}, exported by adaptlab (task: {art.task})",
        f"FROM {base_path if base_path is not None else '<the GGUF of ' + base_name + '>'}",
        *([f"ADAPTER ./{ADAPTER_FILE}"] if adapter else []),
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


def _template_gguf(base: BaseModel, template: Path | None, tmp: Path) -> Path:
    if template is not None:
        return Path(template)
    found = base_gguf(base, tmp)
    if found is None:
        raise ExportError(
            f"--format gguf: {base.name} has no GGUF of its own to take the tokenizer and metadata from; "
            f"a merged GGUF needs one"
        )
    return found


def export_gguf(
    src: Path,
    out: Path,
    base: BaseModel,
    force: bool = False,
    with_base: bool = True,
    gguf_type: str | None = None,
    allow_partial: bool = False,
    template: Path | None = None,
) -> Path:
    """``src`` as ``OUT/adapter.gguf`` (+ the base GGUF) for a LoRA, or as ``OUT/model.gguf`` (merged,
    ``gguf_type`` one of MERGED_TYPES), with ``OUT/Modelfile``. ``gguf_type`` None: an adapter for a
    LoRA, f16 for weights of its own. ``template``: the GGUF to copy the layout from (default: the
    base model's packaged file)."""
    if gguf_type is not None and gguf_type not in GGUF_TYPES:
        raise ExportError(f"--gguf-type {gguf_type!r}: use one of {', '.join(GGUF_TYPES)}")
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
    not_weights = [
        w for w, present in (("a soft prompt", c.soft is not None), ("a prefix", c.prefix is not None)) if present
    ]
    has_weights = c.model is not None or bool(c.lora)
    if not has_weights or (not_weights and not allow_partial):
        raise ExportError(
            f"{src}: a {meta['strategy']} artifact holds {' and '.join(not_weights) or 'no weights'}, which has no "
            f"llama.cpp form (llama.cpp runs weights and LoRA adapters only); the nearest strategy that has one is "
            f"lora (train it on the same data, or take the LoRA from the same compare), or serve this one with "
            f"`adaptlab serve`" + ("; --allow-partial exports its weights alone" if has_weights else "")
        )
    if gguf_type is None:
        gguf_type = "adapter" if c.model is None else "f16"
    if gguf_type == "adapter" and c.model is not None:
        raise ExportError(
            f"{src}: a {meta['strategy']} artifact has weights of its own, not a LoRA: use --gguf-type "
            f"{' or '.join(MERGED_TYPES)} for a merged GGUF"
        )
    cfg_type = base.model.config.model_type
    if cfg_type not in ARCHS:
        raise ExportError(f"--format gguf: no llama.cpp architecture known for {cfg_type!r}")
    arch = ARCHS[cfg_type]
    out = _fresh(out, force)
    name = f"adaptlab {meta['strategy']} {meta['task']}"
    if gguf_type == "adapter":
        arch_name, tensors, alpha = adapter_tensors(base, c)
        write_adapter(out / ADAPTER_FILE, arch_name, tensors, alpha, name)
        base_path = base_gguf(base, out) if with_base else None
        (out / "Modelfile").write_text(modelfile(art, arch, base_path, base.name))
        return out
    with tempfile.TemporaryDirectory() as tmp:
        source = _template_gguf(base, template, Path(tmp))
        write_merged(out / MERGED_FILE, source, merged_model(base, c), arch, gguf_type, name)
    (out / "Modelfile").write_text(modelfile(art, arch, f"./{MERGED_FILE}", base.name, adapter=False))
    return out
