"""`adaptlab export --format gguf`: a LoRA as a llama.cpp adapter GGUF and an Ollama Modelfile.

The engine itself (llama.cpp) is not installed here, so the file is checked with the `gguf`
package's reader: llama.cpp's adapter keys, one lora_a/lora_b pair per adapted weight under the
base GGUF's tensor names, shapes and values equal to adaptlab's deltas (Llama q/k rows in llama.cpp's
order). With the real Gemma 3 270M (slow), every adapter tensor names a tensor of the packaged base
GGUF with the matching shape."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from adaptlab.cli import app
from adaptlab.export import ExportError
from adaptlab.export_gguf import export_gguf, llama_permute
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
    with pytest.raises(ExportError, match="a soft_prompt artifact has a soft prompt; llama.cpp adapters carry LoRA"):
        export_gguf(soft, tmp_path / "x", base)
    r = CliRunner().invoke(
        app, ["export", str(soft), "--format", "gguf", "--out", str(tmp_path / "y"), "--model", "tiny"]
    )
    assert r.exit_code == 2 and "use --format peft or merged" in r.output


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
