"""Named base models are declared once; loading, the tokenizer, the CLI and the workbench read them."""

import pytest
from typer.testing import CliRunner

from adaptlab.models import registry
from adaptlab.models.base import ModelError, load_base, load_tokenizer
from adaptlab.models.registry import ModelSpec, Weights, list_models, register_model, resolve_model


@pytest.fixture
def fresh(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_BY_NAME", dict(registry._BY_NAME))


def test_names_and_aliases_resolve_to_one_spec():
    assert list_models()[0] == "gemma-3-270m" and list_models(tiny=False) == ["gemma-3-270m", "smollm2-135m-instruct"]
    for alias in ("default", "gemma3-270m", "google/gemma-3-270m"):
        assert resolve_model(alias).name == "gemma-3-270m"
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct").family == "llama"
    assert resolve_model("./my-model") is None


def test_the_registry_refuses_a_taken_name_a_bad_one_and_a_spec_without_weights(fresh):
    w = lambda: Weights("x", "0" * 64, lambda tmp: tmp)  # noqa: E731
    with pytest.raises(ValueError, match="'smollm2' already name"):
        register_model(ModelSpec("other", "x", aliases=("smollm2",), weights=w))
    with pytest.raises(ValueError, match="must be lowercase"):
        register_model(ModelSpec("Other", "x", weights=w))
    with pytest.raises(ValueError, match="either packaged weights or a tiny architecture"):
        register_model(ModelSpec("other", "x"))
    with pytest.raises(ValueError, match="either packaged weights or a tiny architecture"):
        register_model(ModelSpec("other", "x", weights=w, tiny_arch="llama"))


def test_a_registered_tiny_model_loads_by_its_alias_and_unknown_names_list_the_known(fresh):
    register_model(ModelSpec("tiny-test", "a test model", aliases=("tt",), tiny_arch="llama", family="llama"))
    base = load_base("tt")
    assert type(base.model).__name__ == "LlamaForCausalLM" and load_tokenizer("tt").eos_token == "<eos>"
    with pytest.raises(
        ModelError,
        match=r"not a known name \(gemma-3-270m, smollm2-135m-instruct, tiny, tiny-llama, "
        r"tiny-test\)",
    ):
        load_base("no-such-model")


def test_models_list_and_the_workbench_read_the_registry():
    from adaptlab.cli import app
    from adaptlab.ui.jobs import MODELS

    r = CliRunner().invoke(app, ["models", "list"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    for name in list_models():
        assert name in r.output
    assert "chat_template: True" in r.output and "chat_template: False" in r.output
    assert tuple(list_models()) == MODELS
