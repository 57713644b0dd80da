"""`adaptlab export --format gguf`: a LoRA as a llama.cpp adapter GGUF, a merged model as one GGUF
(f32/f16/q8_0 ...), and an Ollama Modelfile.

The engine itself (llama.cpp) is not installed here, so the file is checked with the `gguf`
package's reader: llama.cpp's adapter keys, one lora_a/lora_b pair per adapted weight under the
base GGUF's tensor names, shapes and values equal to adaptlab's deltas (Llama q/k rows in llama.cpp's
order). With the real Gemma 3 270M (slow), every adapter tensor names a tensor of the packaged base
GGUF with the matching shape, and a merged GGUF keeps the packaged file's keys and tensor layout.
A tiny model has no GGUF of its own: the merged tests write it one (`_template`) to copy from.
(`bench/gguf_check.py` runs the files in llama.cpp itself: docs/results/gguf_check*.md.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from adaptlab.cli import app
from adaptlab.export import ExportError
from adaptlab.export_gguf import export_gguf, llama_permute, write_merged
from adaptlab.models.tiny import build_tiny
from adaptlab.strategies.base import Artifact
from tests.serving.kit import FOOD, build

gguf = pytest.importorskip("gguf")


def _read(path):
    r = gguf.GGUFReader(str(path))
    kv = {f.name: f.contents() for f in r.fields.values() if not f.name.startswith("GGUF.")}
    return kv, {t.name: np.array(t.data).reshape([int(x) for x in reversed(t.shape)]) for t in r.tensors}


@pytest.mark.parametrize("arch", ["gemma", "llama"])
def test_lora_as_a_llama_cpp_adapter(tmp_path, arch):
    base = build_tiny(arch=arch)
    folder = build(base, "lora", "lora", FOOD, {"r": 4, "alpha": 8.0}, tmp_path)
    with torch.no_grad():  # a LoRA away from zero, so the values are checked
        art = Artifact.load(folder, base)
        for p in art.module.lora_B.values():
            p.normal_(0, 0.1)
        art.save(folder)
    out = export_gguf(folder, tmp_path / "gguf", base)
    kv, tensors = _read(out / "adapter.gguf")
    assert kv["general.type"] == "adapter" and kv["adapter.type"] == "lora" and kv["adapter.lora.alpha"] == 8.0
    assert kv["general.architecture"] == ("gemma3" if arch == "gemma" else "llama")
    c = Artifact.load(folder, base).contribution()
    assert len(tensors) == 2 * len(c.lora)
    layer0 = "blk.0.attn_q.weight"
    d = c.lora["model.layers.0.self_attn.q_proj"]
    b = d.b.detach().numpy()
    if arch == "llama":
        b = llama_permute(b, base.model.config.num_attention_heads)
    assert np.allclose(tensors[layer0 + ".lora_a"], d.a.detach().numpy())
    assert np.allclose(tensors[layer0 + ".lora_b"], b)
    text = (out / "Modelfile").read_text()
    assert "ADAPTER ./adapter.gguf" in text and 'PARAMETER stop "' in text and "{{ .Prompt }}" in text
    assert "FROM <the GGUF of tiny" in text  # a tiny model has no GGUF of its own


def test_what_has_no_llama_cpp_form_says_so(tmp_path):
    base = build_tiny()
    soft = build(base, "soft", "soft_prompt", FOOD, {"n_tokens": 3}, tmp_path)
    with pytest.raises(ExportError, match="a soft_prompt artifact holds a soft prompt, which has no llama.cpp form"):
        export_gguf(soft, tmp_path / "x", base)
    r = CliRunner().invoke(
        app, ["export", str(soft), "--format", "gguf", "--out", str(tmp_path / "y"), "--model", "tiny"]
    )
    assert r.exit_code == 2 and "the nearest strategy that has one is lora" in r.output
    full = build(base, "full", "full", FOOD, {}, tmp_path)
    with pytest.raises(ExportError, match="weights of its own, not a LoRA: use --gguf-type f32 or f16"):
        export_gguf(full, tmp_path / "z", base, gguf_type="adapter")
    with pytest.raises(ExportError, match="--gguf-type 'q3_k'"):
        export_gguf(full, tmp_path / "z", base, gguf_type="q3_k")
    with pytest.raises(ExportError, match="tiny.* has no GGUF of its own .* a merged GGUF needs one"):
        export_gguf(full, tmp_path / "z", base)
    assert not (tmp_path / "z" / "model.gguf").exists()


def _template(base, path):
    """A GGUF for a tiny model, as llama.cpp's converter lays one out: keys (a string array among
    them, as a tokenizer's), then the weights under GGUF names (norms plus one for Gemma)."""
    model, arch = base.model, {"gemma3_text": "GEMMA3", "llama": "LLAMA"}[base.model.config.model_type]
    w = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH[arch]])
    w.add_name("tiny base")
    w.add_block_count(model.config.num_hidden_layers)
    w.add_token_list(["<pad>", "a", "b"])
    w.add_token_scores([0.0, -1.0, -2.0])
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch], model.config.num_hidden_layers)
    seen = set()
    for hf, t in model.state_dict().items():
        g = names.get_name(hf, try_suffixes=(".weight", ".bias"))
        if g is not None and g not in seen:
            seen.add(g)
            w.add_tensor(g, np.zeros(t.shape, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _lora(base, tmp_path):
    folder = build(base, "lora", "lora", FOOD, {"r": 4, "alpha": 8.0}, tmp_path)
    with torch.no_grad():
        art = Artifact.load(folder, base)
        for p in art.module.lora_B.values():
            p.normal_(0, 0.1)
        art.save(folder)
    return folder


@pytest.mark.parametrize("arch", ["gemma", "llama"])
def test_merged_gguf_holds_the_merged_weights_in_the_base_layout(tmp_path, arch):
    from adaptlab.export import merged_model

    base = build_tiny(arch=arch)
    folder = _lora(base, tmp_path)
    template = _template(base, tmp_path / "base.gguf")
    out = export_gguf(folder, tmp_path / "f32", base, gguf_type="f32", template=template)
    kv, tensors = _read(out / "model.gguf")
    assert kv["tokenizer.ggml.tokens"] == ["<pad>", "a", "b"] and kv["tokenizer.ggml.scores"] == [0.0, -1.0, -2.0]
    assert kv["general.file_type"] == 0 and kv["general.name"] == "adaptlab lora classification"
    assert [t.name for t in gguf.GGUFReader(str(out / "model.gguf")).tensors] == [
        t.name for t in gguf.GGUFReader(str(template)).tensors
    ]
    merged = merged_model(base, Artifact.load(folder, base).contribution()).state_dict()
    q = merged["model.layers.0.self_attn.q_proj.weight"].numpy()
    if arch == "llama":
        q = llama_permute(q, base.model.config.num_attention_heads)
    assert np.allclose(tensors["blk.0.attn_q.weight"], q)
    assert not np.allclose(q, base.model.state_dict()["model.layers.0.self_attn.q_proj.weight"].numpy()[: len(q)])
    norm = merged["model.layers.0.input_layernorm.weight"].numpy()
    assert np.allclose(tensors["blk.0.attn_norm.weight"], norm + (1.0 if arch == "gemma" else 0.0))
    text = (out / "Modelfile").read_text()
    assert "FROM ./model.gguf" in text and "ADAPTER" not in text

    out8 = export_gguf(folder, tmp_path / "q8", base, gguf_type="q8_0", template=template)
    r = gguf.GGUFReader(str(out8 / "model.gguf"))
    t = next(t for t in r.tensors if t.name == "blk.0.attn_q.weight")
    assert t.tensor_type == gguf.GGMLQuantizationType.Q8_0
    back = gguf.quants.dequantize(t.data, t.tensor_type).reshape(q.shape)
    assert np.abs(back - q).max() <= np.abs(q).max() / 127 + 1e-6  # within one Q8_0 step
    norms = [t for t in r.tensors if t.name.endswith("norm.weight")]
    assert norms and all(t.tensor_type == gguf.GGMLQuantizationType.F32 for t in norms)  # 1-D stays f32


def test_full_fine_tune_merges_as_f16_by_default_and_the_cli_takes_the_type(tmp_path, monkeypatch):
    base = build_tiny()
    full = build(base, "full", "full", FOOD, {}, tmp_path)
    template = _template(base, tmp_path / "base.gguf")
    out = export_gguf(full, tmp_path / "f16", base, template=template)
    r = gguf.GGUFReader(str(out / "model.gguf"))
    assert {t.tensor_type for t in r.tensors if len(t.shape) == 2} == {gguf.GGMLQuantizationType.F16}
    import adaptlab.export_gguf as eg

    monkeypatch.setattr(eg, "base_gguf", lambda base, out: template)  # the tiny model's "packaged" GGUF
    lora = _lora(base, tmp_path)
    args = ["export", str(lora), "--format", "gguf", "--out", str(tmp_path / "cli"), "--model", "tiny"]
    r = CliRunner().invoke(app, args + ["--gguf-type", "q4_0"])
    assert r.exit_code == 0, r.output
    types = {t.tensor_type for t in gguf.GGUFReader(str(tmp_path / "cli" / "model.gguf")).tensors}
    assert gguf.GGMLQuantizationType.Q4_0 in types
    r = CliRunner().invoke(app, args + ["--gguf-type", "q5_k", "--force"])
    assert r.exit_code == 2 and "--gguf-type 'q5_k': use one of adapter, f32, f16" in r.output


@pytest.mark.parametrize(
    "name,shape,error",
    [
        ("blk.0.attn_q.weight", (3, 5), r"blk.0.attn_q.weight is \[\d+, \d+\] in the model, \[3, 5\] in the base GGUF"),
        ("blk.99.attn_q.weight", (3, 5), "the base GGUF's tensor blk.99.attn_q.weight has no weight in the model"),
    ],
)
def test_write_merged_refuses_a_template_that_does_not_fit(tmp_path, name, shape, error):
    base = build_tiny(arch="gemma")
    w = gguf.GGUFWriter(str(tmp_path / "t.gguf"), "gemma3")
    w.add_tensor(name, np.zeros(shape, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ExportError, match=error):
        write_merged(tmp_path / "x.gguf", tmp_path / "t.gguf", base.model, "GEMMA3", "f32", "x")


def test_llama_permute_is_llama_cpps_row_order():
    w = np.arange(8 * 3).reshape(8, 3)  # 2 heads of 4 rows: halves [0,1],[2,3] interleaved -> 0,2,1,3
    p = llama_permute(w, 2)
    assert [int(r[0]) // 3 for r in p] == [0, 2, 1, 3, 4, 6, 5, 7]


@pytest.mark.slow
def test_gemma_adapter_names_tensors_of_the_packaged_base_gguf(tmp_path):
    from adaptlab.models.base import load_base

    base = load_base("gemma-3-270m")
    from adaptlab.strategies.registry import get_strategy, make_config

    config = make_config("lora", r=4, target_modules=["q_proj", "v_proj", "down_proj"])
    module = get_strategy("lora").strategy_cls(config).build(base, FOOD, None)
    from adaptlab.strategies.gradient import WeightsArtifact

    art = WeightsArtifact(
        "lora", base, module, config, config.template_for("classification", "lora", base), "classification", FOOD.labels
    )
    art.save(tmp_path / "art")
    out = export_gguf(tmp_path / "art", tmp_path / "gguf", base)
    _, adapter = _read(out / "adapter.gguf")
    shapes = {t.name: [int(x) for x in reversed(t.shape)] for t in gguf.GGUFReader(str(out / "base.gguf")).tensors}
    for name, arr in adapter.items():
        stem = name.rsplit(".", 1)[0]
        assert stem in shapes, name
        out_dim, in_dim = shapes[stem]
        assert arr.shape == ((4, in_dim) if name.endswith("lora_a") else (out_dim, 4)), name
    assert f"FROM {out / 'base.gguf'}" in (out / "Modelfile").read_text()


@pytest.mark.slow
def test_gemma_merged_gguf_keeps_the_packaged_files_keys_and_layout(tmp_path):
    from adaptlab.export_gguf import base_gguf
    from adaptlab.models.base import load_base

    base = load_base("gemma-3-270m")
    full = tmp_path / "art"
    from adaptlab.strategies.registry import get_strategy, make_config

    config = make_config("lora", r=2, target_modules=["q_proj"])
    module = get_strategy("lora").strategy_cls(config).build(base, FOOD, None)
    from adaptlab.strategies.gradient import WeightsArtifact

    WeightsArtifact(
        "lora", base, module, config, config.template_for("classification", "lora", base), "classification", FOOD.labels
    ).save(full)
    out = export_gguf(full, tmp_path / "gguf", base, gguf_type="q8_0")
    packaged = gguf.GGUFReader(str(base_gguf(base, tmp_path / "src")))
    mine = gguf.GGUFReader(str(out / "model.gguf"))
    assert [(t.name, list(t.shape)) for t in mine.tensors] == [(t.name, list(t.shape)) for t in packaged.tensors]
    skip = {"general.name", "general.file_type"}
    theirs = {f.name: f.contents() for f in packaged.fields.values() if not f.name.startswith("GGUF.")}
    ours = {f.name: f.contents() for f in mine.fields.values() if not f.name.startswith("GGUF.")}
    assert {k: v for k, v in ours.items() if k not in skip} == {k: v for k, v in theirs.items() if k not in skip}
    norm = next(t for t in mine.tensors if t.name == "output_norm.weight")
    ref = next(t for t in packaged.tensors if t.name == "output_norm.weight")
    assert np.allclose(norm.data, ref.data, atol=1e-6)  # the +1 of Gemma's norms, as the converter stores them
