import json
import os

import pytest
import torch

from adaptlab.models import base as mb
from adaptlab.models.base import (
    FingerprintMismatch,
    ModelError,
    check_fingerprint,
    load_base,
    materialize,
    model_info,
    save_base,
)
from adaptlab.models.tiny import build_tiny


def logits(b, text="hello world"):
    ids = b.tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        return b.model(ids).logits


def test_tiny_is_deterministic_and_small(tiny):
    again = build_tiny()
    assert again.fingerprint == tiny.fingerprint
    assert torch.equal(logits(again), logits(tiny))
    assert build_tiny(seed=1).fingerprint != tiny.fingerprint
    info = model_info(tiny)
    assert info["parameters"] < 200_000 and info["vocab_size"] == 260 and info["context_length"] == 1024
    assert tiny.tokenizer("ab").input_ids == [2, 68, 69]  # <bos> then bytes


def test_tiny_round_trip_through_saved_folder(tiny, tmp_path):
    folder = save_base(tiny, tmp_path / "tiny")
    assert not list(folder.glob("*.bin")) and list(folder.glob("*.safetensors"))
    loaded = load_base(str(folder))
    assert loaded.fingerprint == tiny.fingerprint
    assert torch.allclose(logits(loaded), logits(tiny))
    # A modified copy is refused instead of silently loaded.
    (folder / "model.safetensors").write_bytes(b"truncated")
    with pytest.raises(ModelError, match="do not match adaptlab_model.json"):
        load_base(str(folder))


def test_loading_a_saved_folder_draws_no_library_bar_and_leaves_the_setting_as_it_was(tiny, tmp_path, capfd):
    from transformers.utils import logging as hf_logging

    folder = save_base(tiny, tmp_path / "tiny")
    before = hf_logging.is_progress_bar_enabled()
    hf_logging.enable_progress_bar()
    try:
        capfd.readouterr()
        load_base(str(folder))
        assert "Loading weights" not in capfd.readouterr().err
        assert hf_logging.is_progress_bar_enabled()  # the user's setting, restored
    finally:
        if not before:
            hf_logging.disable_progress_bar()


def _builder(tiny, crash=False):
    def build(tmp):
        if crash:
            (tmp / "model.safetensors").write_bytes(b"\0" * 100)  # half-written weights
            raise KeyboardInterrupt("simulated crash mid-write")
        mb.save_pretrained_files(tiny.model, tiny.tokenizer, tmp)
        return tiny.model, tiny.tokenizer

    return build


def test_cache_write_is_atomic_and_rebuilds_after_crash(tiny, tmp_cache):
    root = tmp_cache / "models"
    with pytest.raises(KeyboardInterrupt):
        materialize("m", "f" * 64, _builder(tiny, crash=True), {"name": "m"}, root=root)
    assert not (root / f"m-{'f' * 12}").exists()
    assert list(root.glob(".tmp-*")) == []
    folder, built = materialize("m", "f" * 64, _builder(tiny), {"name": "m"}, root=root)
    assert built is not None and (folder / "adaptlab_model.json").exists()
    folder2, built2 = materialize("m", "f" * 64, _builder(tiny, crash=True), {"name": "m"}, root=root)
    assert folder2 == folder and built2 is None  # a cache hit never calls the builder


def test_killed_builder_leftovers_are_ignored_and_cleaned(tiny, tmp_cache):
    root = tmp_cache / "models"
    dead = root / ".tmp-m-999999-deadbeef"  # pid 999999 does not exist
    dead.mkdir(parents=True)
    (dead / "model.safetensors").write_bytes(b"partial")
    folder, built = materialize("m", "a" * 64, _builder(tiny), {"name": "m"}, root=root)
    assert built is not None and not dead.exists()


def test_tampered_cache_entry_is_rebuilt(tiny, tmp_cache):
    root = tmp_cache / "models"
    folder, _ = materialize("m", "b" * 64, _builder(tiny), {"name": "m"}, root=root)
    with open(folder / "model.safetensors", "r+b") as f:
        f.truncate(10)
    folder2, built = materialize("m", "b" * 64, _builder(tiny), {"name": "m"}, root=root)
    assert built is not None and (folder2 / "model.safetensors").stat().st_size > 10
    meta = json.loads((folder2 / "adaptlab_model.json").read_text())
    assert meta["fingerprint"] == "b" * 64 and "torch" in meta["versions"]


def test_fingerprint_mismatch_is_refused():
    check_fingerprint("abc", "abc", "artifact x")
    with pytest.raises(
        FingerprintMismatch, match="made for base model 111111111111 but the loaded base model is 222222222222"
    ):
        check_fingerprint("1" * 64, "2" * 64, "artifact x")
    assert mb.make_fingerprint("s", "float32") != mb.make_fingerprint("s", "bfloat16")


def test_pickle_weights_folder_is_converted_once_into_the_cache(tiny, tmp_path, tmp_cache):
    folder = tmp_path / "bin_model"
    save_base(tiny, folder)
    from safetensors.torch import load_file

    state = load_file(folder / "model.safetensors")
    os.remove(folder / "model.safetensors")
    os.remove(folder / "adaptlab_model.json")
    torch.save(state, folder / "pytorch_model.bin")
    b = load_base(str(folder))
    assert b.path.parent == tmp_cache / "models" and list(b.path.glob("*.safetensors"))
    # adapters name the folder the base can be loaded from (not the deleted one it was built in)
    from adaptlab.strategies import make_config
    from adaptlab.strategies.lora.strategy import peft_lora_config

    assert peft_lora_config(make_config("lora"), b).base_model_name_or_path == str(b.path)
    assert torch.allclose(logits(b), logits(tiny), atol=1e-6)
    assert load_base(str(folder)).fingerprint == b.fingerprint


@pytest.mark.parametrize(
    "arg, message",
    [
        ("no-such-model", "unknown model 'no-such-model'"),
    ],
)
def test_bad_model_names(arg, message):
    with pytest.raises(ModelError, match=message):
        load_base(arg)


def test_bad_files_and_dtype(tmp_path):
    p = tmp_path / "w.pt"
    p.write_bytes(b"x")
    with pytest.raises(ModelError, match="must be .gguf"):
        load_base(str(p))
    with pytest.raises(ModelError, match="no config.json"):
        load_base(str(tmp_path))
    with pytest.raises(ModelError, match="unknown dtype 'int3'"):
        load_base("tiny", dtype="int3")
