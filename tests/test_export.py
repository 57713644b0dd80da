"""Export: PEFT adapter folders load in PEFT; merged models load in plain transformers; same numbers."""

import pytest
import torch
from typer.testing import CliRunner

from adaptlab.cli import app
from adaptlab.export import ExportError, export
from adaptlab.models.tiny import build_tiny
from adaptlab.strategies import Artifact
from tests.serving.kit import FOOD, MOOD, build

IDS_TEXT = "Text: item pear\nCategory:"


def last_logits(model, tok):
    ids = tok([IDS_TEXT], return_tensors="pt")
    with torch.no_grad():
        return model(input_ids=ids.input_ids, attention_mask=ids.attention_mask).logits[:, -1]


def ours(art, tok):
    art.module.eval()
    ids = tok([IDS_TEXT], return_tensors="pt")
    with torch.no_grad():
        return art.module.project(art.module.hidden(ids.input_ids, ids.attention_mask)[:, -1])


@pytest.mark.parametrize("arch", ["gemma", "llama"])
@pytest.mark.parametrize(
    "name, strategy, overrides",
    [("lora", "lora", {}), ("soft", "soft_prompt", {"n_tokens": 3}), ("prefix", "prefix", {"n_tokens": 3})],
)
def test_peft_export_loads_in_peft(tmp_path, name, strategy, overrides, arch):
    from peft import PeftModel

    base = build_tiny(arch=arch)
    folder = build(base, name, strategy, FOOD, overrides, tmp_path)
    out = export(folder, tmp_path / "out", "peft")
    assert {p.name for p in out.iterdir()} == {"adapter_config.json", "adapter_model.safetensors", "README.md"}
    art = Artifact.load(folder, base)
    theirs = last_logits(PeftModel.from_pretrained(build_tiny(arch=arch).model, str(out)), base.tokenizer)
    assert torch.allclose(ours(art, base.tokenizer), theirs, atol=1e-4)


@pytest.mark.parametrize("arch", ["gemma", "llama"])
@pytest.mark.parametrize("name, strategy, overrides", [("lora", "lora", {}), ("full", "full", {})])
def test_merged_export_loads_in_transformers(tmp_path, name, strategy, overrides, arch):
    from transformers import AutoModelForCausalLM

    base = build_tiny(arch=arch)
    folder = build(base, name, strategy, FOOD, overrides, tmp_path)
    out = export(folder, tmp_path / "merged", "merged", base)
    merged = AutoModelForCausalLM.from_pretrained(out)
    art = Artifact.load(folder, base)
    assert torch.allclose(ours(art, base.tokenizer), last_logits(merged, base.tokenizer), atol=1e-4)
    # merging worked on a copy: the shared base model is still the plain one
    assert torch.allclose(
        last_logits(base.model, base.tokenizer), last_logits(build_tiny(arch=arch).model, base.tokenizer)
    )


def test_export_refusals_are_clear(tmp_path):
    base = build_tiny()
    soft = build(base, "soft", "soft_prompt", FOOD, {"n_tokens": 3}, tmp_path)
    full = build(base, "full", "full", FOOD, {}, tmp_path)
    zs = build(base, "zs", "zero_shot", FOOD, {}, tmp_path)
    hyb = build(base, "hyb", "hybrid", MOOD, {"prompt_lr": 0.3}, tmp_path)
    with pytest.raises(ExportError, match="cannot be merged"):
        export(soft, tmp_path / "x", "merged", base)
    with pytest.raises(ExportError, match="has no adapter"):
        export(full, tmp_path / "x", "peft")
    with pytest.raises(ExportError, match="is a prompt"):
        export(zs, tmp_path / "x", "peft")
    with pytest.raises(ExportError, match="allow-partial"):
        export(hyb, tmp_path / "x", "peft")
    assert (export(hyb, tmp_path / "h", "peft", allow_partial=True) / "adapter_config.json").exists()
    with pytest.raises(ExportError, match="not empty"):
        export(hyb, tmp_path / "h", "peft", allow_partial=True)
    with pytest.raises(ExportError, match="use one of"):
        export(soft, tmp_path / "y", "onnx")
    r = CliRunner().invoke(
        app, ["export", str(soft), "--format", "merged", "--out", str(tmp_path / "z"), "--model", "tiny"]
    )
    assert r.exit_code == 2 and "cannot be merged" in r.output
    r = CliRunner().invoke(app, ["export", str(soft), "--format", "peft", "--out", str(tmp_path / "z")])
    assert r.exit_code == 0, r.output


def test_export_settings_are_checked_once_for_the_command_and_the_api(tmp_path):
    """``adaptlab export`` and ``Adapted.export`` share ExportConfig: a bad combination is one line from
    either, writes nothing, and a good one writes what ``export`` writes."""
    import adaptlab
    from adaptlab.export import ExportConfig

    base = build_tiny()
    lora = build(base, "lora", "lora", FOOD, {}, tmp_path)
    for bad, words in (
        ({"format": "onnx"}, "--format 'onnx': use one of peft, merged, gguf"),
        ({"format": "peft", "gguf_type": "q4_0"}, "--gguf-type 'q4_0': only with --format gguf"),
        ({"format": "gguf", "gguf_type": "q3"}, "--gguf-type 'q3': use one of adapter, f32"),
    ):
        with pytest.raises(ExportError, match=words):
            ExportConfig(**bad)
    r = CliRunner().invoke(
        app, ["export", str(lora), "--format", "peft", "--gguf-type", "q4_0", "--out", str(tmp_path / "c")]
    )
    assert r.exit_code == 2 and "only with --format gguf" in r.output and len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "c").exists()

    model = adaptlab.load(lora, model=base)
    with pytest.raises(ExportError, match="only with --format gguf"):
        model.export(tmp_path / "a", "merged", gguf_type="f16")
    assert not (tmp_path / "a").exists()
    out = model.export(tmp_path / "a", "peft")
    ref = export(lora, tmp_path / "ref", "peft")
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert (out / name).read_bytes() == (ref / name).read_bytes()
    merged = model.export(tmp_path / "m", "merged")  # on the base it is loaded on
    assert (merged / "config.json").exists()
