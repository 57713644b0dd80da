"""One matrix over every registered gradient strategy, on the tiny model (seconds)."""

import pytest
import torch

from adaptlab.data.loading import Example, TaskData
from adaptlab.models.base import FingerprintMismatch
from adaptlab.models.registry import list_models, resolve_model
from adaptlab.models.tiny import build_tiny
from adaptlab.strategies import Artifact, ArtifactError, get_strategy, list_strategies, make_config
from adaptlab.training import TrainConfig

WORDS = [("apple", "fruit"), ("pear", "fruit"), ("plum", "fruit"), ("kale", "veg"), ("leek", "veg"), ("okra", "veg")]
DATA = TaskData(
    "classification",
    [Example(f"item {w}", lab, i + 1) for i, (w, lab) in enumerate(WORDS)],
    "mem",
    label_names=["fruit", "veg"],
)
TEXTS = [ex.text for ex in DATA.examples]
# Tiny random models need bigger steps than the real one; the strategies' defaults are for Gemma.
TINY_LR = {"soft_prompt": 0.3, "full": 3e-3, "lora": 1e-2, "hybrid": 1e-2, "prefix": 1e-1}
GRADIENT = list_strategies("gradient")

# gepa on the tiny model: its own proposer ("self"), a few short proposals
GEPA = {"budget_calls": 30, "val_examples": 3, "minibatch": 2, "k": 1, "proposer_max_tokens": 12}


# Every architecture a tiny test model is registered for (models/known.py): the real base model's
# family and the second family's (SmolLM2); a new one joins the matrix by its registration.
ARCHS = [resolve_model(n).tiny_arch for n in list_models() if resolve_model(n).tiny_arch]


def fit(name, steps, base=None, arch="gemma", **cfg):
    base = base or build_tiny(arch=arch)
    strat = get_strategy(name).strategy_cls(make_config(name, **({"prompt_lr": 0.3} if name == "hybrid" else {})))
    tc = TrainConfig(
        max_steps=steps,
        batch_size=3,
        lr=TINY_LR[name],
        warmup_ratio=0.0,
        schedule="constant",
        checkpoint_every=0,
        **cfg,
    )
    return base, strat.fit(base, DATA, None, tc, progress=False)


def test_registry_lists_every_strategy_folder():
    assert {"lora", "soft_prompt", "prefix", "full", "hybrid"} <= set(GRADIENT)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", GRADIENT)
def test_fit_two_steps_and_count(name, arch):
    _, art = fit(name, 2, arch=arch)
    tr = art.metrics["train"]
    assert tr["steps"] == 2 + (2 if name == "hybrid" else 0)
    assert tr["trainable_params"] > 0 and tr["peak_rss_bytes"] > 0 and tr["examples_per_s"] > 0
    assert set(art.predict(TEXTS)) <= {"fruit", "veg"}


@pytest.mark.parametrize("name", GRADIENT)
def test_loss_decreases_on_a_memorisable_set(name):
    _, art = fit(name, 20)
    tr = art.metrics["train"]
    first = tr["stage1"]["initial_loss"] if name == "hybrid" else tr["initial_loss"]
    assert tr["final_loss"] < 0.6 * first, tr
    if name == "hybrid":  # the stage-2 prompt improves on the frozen stage-1 model
        assert tr["stage2"]["final_loss"] < tr["stage2"]["initial_loss"]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", GRADIENT)
def test_save_load_identical_predictions_and_fingerprint_refusal(name, arch, tmp_path):
    base, art = fit(name, 5, arch=arch)
    before = art.scores(TEXTS)
    folder = art.save(tmp_path / name)
    again = Artifact.load(folder, base)
    assert torch.allclose(again.scores(TEXTS), before, atol=1e-5)
    assert again.predict(TEXTS) == art.predict(TEXTS)
    # predict() runs the top-1 search; it must answer what every label's score says.
    assert art.predict(TEXTS) == [art.labels[i] for i in before.argmax(1).tolist()]
    with pytest.raises(FingerprintMismatch, match="was made for base model"):
        Artifact.load(folder, build_tiny(seed=1, arch=arch))


def test_pickled_weights_are_refused(tmp_path):
    base, art = fit("soft_prompt", 1)
    folder = art.save(tmp_path / "a")
    torch.save({"x": torch.zeros(1)}, folder / "extra.bin")
    with pytest.raises(ArtifactError, match="refusing pickled weights \\(extra.bin\\)"):
        Artifact.load(folder, base)
    with pytest.raises(ArtifactError, match="not an adaptlab artifact"):
        Artifact.load(tmp_path, base)
    (folder / "extra.bin").unlink()
    (folder / "stage1").mkdir()
    torch.save({"x": torch.zeros(1)}, folder / "stage1" / "model.pt")  # a subfolder is checked too
    with pytest.raises(ArtifactError, match="refusing pickled weights \\(stage1/model.pt\\)"):
        Artifact.load(folder, base)


def _weights(model):
    return {n: t.detach().clone() for n, t in model.state_dict().items()}


def test_adaptations_share_one_base_that_never_changes():
    """Training, using, saving and loading every strategy leaves the shared base model bit-identical,
    with no hook, module or attribute of ours left on it; interleaved use needs no bookkeeping."""
    base = build_tiny()
    before = _weights(base.model)
    modules_before = [n for n, _ in base.model.named_modules()]
    arts = {name: fit(name, 4, base=base)[1] for name in GRADIENT}
    scores = {name: art.scores(TEXTS) for name, art in arts.items()}
    for name in reversed(GRADIENT):  # any order, any number of times
        assert torch.allclose(arts[name].scores(TEXTS), scores[name], atol=1e-6), name
    after = _weights(base.model)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert [n for n, _ in base.model.named_modules()] == modules_before
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in base.model.modules())
    assert not any(p.requires_grad for p in base.model.parameters())
    assert not [k for k in vars(base.model) if "adaptlab" in k]


@pytest.mark.parametrize("arch", ARCHS)
def test_peft_loads_our_lora_and_prompt_files(arch, tmp_path):
    from peft import PeftModel

    ids = build_tiny().tokenizer(["Text: item pear\nCategory:"], return_tensors="pt")
    for name in ("lora", "soft_prompt", "prefix"):
        base, art = fit(name, 8, arch=arch)
        folder = art.save(tmp_path / name)
        ours_h = art.module.hidden(ids.input_ids, ids.attention_mask)
        ours = art.module.project(ours_h[:, -1])
        fresh = build_tiny(arch=arch)
        peft_model = PeftModel.from_pretrained(fresh.model, str(folder))
        with torch.no_grad():
            theirs = peft_model(input_ids=ids.input_ids, attention_mask=ids.attention_mask).logits[:, -1]
        assert torch.allclose(ours, theirs, atol=1e-4), name


@pytest.mark.parametrize(
    "name, overrides, message",
    [
        ("lora", {"r": 0}, "rank must be a positive integer"),
        ("lora", {"target_modules": ["qkv"]}, "unknown target module\\(s\\) qkv"),
        ("lora", {"dropout": 1.5}, "dropout=1.5"),
        ("lora", {"rank": 4}, "unknown config key\\(s\\) rank"),
        ("soft_prompt", {"n_tokens": 0}, "n_tokens=0"),
        ("prefix", {"n_tokens": -2}, "n_tokens=-2"),
        ("prefix", {"reparam_hidden": 0}, "reparam_hidden=0"),
        ("soft_prompt", {"init": "zeros"}, "init='zeros'"),
        ("hybrid", {"stage1": "prefix"}, "stage1='prefix'"),
        ("hybrid", {"r": -1}, "rank must be a positive integer"),
        ("full", {"template": "Input: {txt}"}, "unknown placeholder"),
    ],
)
def test_bad_strategy_config_fails_at_construction(name, overrides, message):
    with pytest.raises(Exception, match=message):
        make_config(name, **overrides)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"lr": -1e-3}, "lr=-0.001: must be > 0"),
        ({"batch_size": 0}, "batch_size=0"),
        ({"schedule": "exp"}, "schedule='exp'"),
        ({"warmup_ratio": 1.0}, "warmup_ratio=1.0"),
    ],
)
def test_bad_train_config_fails_at_construction(overrides, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**overrides)


def test_prefix_cache_is_exact_against_real_token_prefix():
    """A prefix holding the model's own keys/values for real tokens == running those tokens first."""
    from adaptlab.strategies.prefix.strategy import PrefixModule, cache_to_flat

    base = build_tiny()
    prefix_ids = torch.tensor([[2, 80, 81, 82, 83]])
    x = torch.tensor([[70, 71, 72], [73, 74, 0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    with torch.no_grad():
        flat = cache_to_flat(base.model.model(input_ids=prefix_ids, use_cache=True).past_key_values)
        ours = PrefixModule(base.model, flat_init=flat).hidden(x, mask)
        for r in range(2):
            n = int(mask[r].sum())
            ref = base.model.model(input_ids=torch.cat([prefix_ids[0], x[r, :n]])[None]).last_hidden_state[0, 5:]
            assert torch.allclose(ours[r, :n], ref, atol=1e-5)


def test_prefix_reparam_trains_and_saves_flat(tmp_path):
    base = build_tiny()
    strat = get_strategy("prefix").strategy_cls(make_config("prefix", reparam=True, reparam_hidden=32))
    art = strat.fit(
        base, DATA, None, TrainConfig(max_steps=5, batch_size=3, lr=1e-2, checkpoint_every=0), progress=False
    )
    assert any(n.startswith("mlp.") for n, _ in art.module.named_parameters())
    before = art.scores(TEXTS)
    again = Artifact.load(art.save(tmp_path / "p"), base)
    assert again.module.flat is not None and torch.allclose(again.scores(TEXTS), before, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", GRADIENT)
def test_cached_label_scoring_matches_naive_for_every_strategy(name, arch):
    from adaptlab.evaluation.scoring import score_labels, score_labels_naive

    base, art = fit(name, 3, arch=arch)
    prompts = [art.template.render(t) for t in TEXTS]
    labels = [" fruit", " veg", " fruity"]
    fast = score_labels(art.module, base.tokenizer, prompts, labels, batch_size=4)
    slow = score_labels_naive(art.module, base.tokenizer, prompts, labels, batch_size=5)
    assert torch.allclose(fast, slow, atol=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", GRADIENT)
def test_label_tree_matches_naive_past_the_sliding_window(name, arch):
    """Prompts of different lengths on both sides of the tiny Gemma's 64-token window (Llama: no
    window), multi-token labels."""
    from adaptlab.evaluation.scoring import score_labels, score_labels_naive

    base, art = fit(name, 2, arch=arch)
    prompts = [art.template.render("word " * n + t) for n, t in ((2, "a"), (9, "bb"), (13, "c"), (13, "d"), (30, "e"))]
    labels = [" fruit", " fruity", " fr", " veg", " vegetable stew"]
    fast = score_labels(art.module, base.tokenizer, prompts, labels, batch_size=3, rows_per_pass=7)
    slow = score_labels_naive(art.module, base.tokenizer, prompts, labels, batch_size=5)
    assert torch.allclose(fast, slow, atol=1e-4)


GEN = TaskData(
    "generation", [Example(f"name[{w}]", f"{w} is good.", i + 1) for i, w in enumerate(["ab", "cd", "ef", "gh"])], "gen"
)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", GRADIENT)
def test_generation_task_trains_decodes_and_round_trips(name, arch, tmp_path):
    base = build_tiny(arch=arch)
    strat = get_strategy(name).strategy_cls(make_config(name, **({"prompt_lr": 0.3} if name == "hybrid" else {})))
    art = strat.fit(
        base, GEN, GEN, TrainConfig(max_steps=4, batch_size=2, lr=TINY_LR[name], checkpoint_every=0), progress=False
    )
    assert art.task == "generation" and art.decoding["max_new_tokens"] >= 8
    assert art.metrics["train"]["best_dev"] is not None  # dev = minus the mean token NLL
    inputs = [ex.text for ex in GEN.examples]
    greedy = art.generate(inputs, max_new_tokens=6)
    assert len(greedy) == 4 and all(isinstance(g, str) for g in greedy)
    ev = art.evaluate(GEN)
    assert 0 <= ev["rouge_l"] <= 1 and ev["n"] == 4
    again = Artifact.load(art.save(tmp_path / name), base)
    assert again.generate(inputs, max_new_tokens=6) == greedy


def test_hybrid_fine_tuned_model_plus_few_shot_prompt(tmp_path):
    base = build_tiny()
    strat = get_strategy("hybrid").strategy_cls(make_config("hybrid", stage2="few_shot", k=2))
    tc = TrainConfig(max_steps=3, batch_size=3, lr=TINY_LR["lora"], warmup_ratio=0.0, checkpoint_every=0)
    art = strat.fit(base, DATA, DATA, tc, progress=False)
    assert art.template.template.count("Category: ") == 2 and art.template.template.endswith("Text: {text}\nCategory:")
    assert len(art.metrics["train"]["stage2"]["exemplars"]) == 2 and "dev_accuracy" in art.metrics["train"]["stage2"]
    again = Artifact.load(art.save(tmp_path / "h"), base)
    assert torch.allclose(again.scores(TEXTS), art.scores(TEXTS), atol=1e-5)
    with pytest.raises(ValueError, match="stage2='x'"):
        make_config("hybrid", stage2="x")


CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _chat_data():
    import json

    rows = []
    for i, (q, a, again, b) in enumerate(
        [
            ("order?", "number please", "A1", "sent"),
            ("refund?", "number please", "B2", "refunded"),
            ("hi", "hello", "bye", "bye now"),
        ]
    ):
        talk = [{"role": "user", "content": q}, {"role": "assistant", "content": a}, {"role": "user", "content": again}]
        rows.append(Example(json.dumps(talk), b, i + 1))
    return TaskData("chat", rows, "chat")


@pytest.mark.parametrize("name", list_strategies())
def test_chat_task_fits_evaluates_and_round_trips(name, tmp_path):
    """Conversations in the model's chat template: every strategy fits, generates, scores and reloads."""
    import json

    base = build_tiny(arch="llama")
    base.tokenizer.chat_template = CHATML
    data = _chat_data()
    spec = get_strategy(name)
    over = (
        {"prompt_lr": 0.3}
        if name == "hybrid"
        else {"k": 1}
        if name in ("few_shot",)
        else {"budget_calls": 12, "first_round": 2}
        if name == "prompt_search"
        else GEPA
        if name == "gepa"
        else {}
    )
    tc = TrainConfig(max_steps=3, batch_size=2, lr=TINY_LR.get(name), checkpoint_every=0)
    art = spec.strategy_cls(make_config(name, **over)).fit(base, data, data, tc, progress=False)
    prompt = art.prompts([data.examples[0].text])[0]
    assert prompt.startswith("<|im_start|>user\norder?<|im_end|>") or "<|im_start|>user\norder?" in prompt
    assert prompt.endswith("<|im_start|>user\nA1<|im_end|>\n<|im_start|>assistant\n")
    out = art.generate([ex.text for ex in data.examples], max_new_tokens=5)
    ev = art.evaluate(data)
    assert ev["n"] == 3 and 0 <= ev["rouge_l"] <= 1 and "embed_sim" in ev
    again = Artifact.load(art.save(tmp_path / name), base)
    assert again.generate([ex.text for ex in data.examples], max_new_tokens=5) == out
    if spec.kind == "gradient":  # both assistant turns of each conversation were targets
        from adaptlab.training.batching import encode

        items = encode(base.tokenizer, data, art.template, 256)
        assert all(len(it.extra) == 1 for it in items)
    assert json.loads(data.examples[0].text)[0]["content"] == "order?"


@pytest.mark.parametrize("name", list_strategies())
def test_single_input_task_goes_through_the_chat_template_on_an_instruction_model(name, tmp_path):
    """prompt_format=auto: on a base with a chat template a single-input prompt is one user turn and
    the answer the assistant's turn, in training, scoring, generation and after a reload."""
    base = build_tiny(arch="llama")
    base.tokenizer.chat_template = CHATML
    spec = get_strategy(name)
    over = (
        {"prompt_lr": 0.3}
        if name == "hybrid"
        else {"k": 1}
        if name == "few_shot"
        else {"budget_calls": 12, "first_round": 2}
        if name == "prompt_search"
        else GEPA
        if name == "gepa"
        else {}
    )
    tc = TrainConfig(max_steps=2, batch_size=3, lr=TINY_LR.get(name), checkpoint_every=0)
    art = spec.strategy_cls(make_config(name, **over)).fit(base, DATA, DATA, tc, progress=False)
    assert art.template.chat_turn and art.template.label_prefix == ""
    prompt = art.prompts(["item fig"])[0]
    assert prompt.startswith("<|im_start|>user\n") and prompt.endswith("Category:<|im_end|>\n<|im_start|>assistant\n")
    assert prompt.count("item fig") == 1 and art.label_texts() == ["fruit", "veg"]
    shown = len(art.exemplars_for(["item fig"])[0]) if spec.kind == "prompt" else 0
    assert prompt.count("<|im_start|>assistant\n") == shown + 1  # each exemplar a turn of its own
    if shown:
        assert (
            prompt.count("<|im_start|>user\n") == shown + 1
            and "Category:<|im_end|>\n<|im_start|>assistant\n" in prompt.split("item fig")[0]
        )
    if spec.kind == "gradient":  # trained on one-turn conversations: the target is the answer and its end-of-turn
        from adaptlab.training.batching import encode

        item = encode(base.tokenizer, DATA, art.template, 256)[0]
        assert base.tokenizer.decode(item.target).startswith("fruit<|im_end|>")
    again = Artifact.load(art.save(tmp_path / name), base)
    assert again.template.chat_turn and again.prompts(["item fig"]) == [prompt]
    assert again.predict(TEXTS) == art.predict(TEXTS)


@pytest.mark.parametrize("name", ["zero_shot", "lora"])
def test_prompt_format_plain_and_chat_without_a_template(name):
    base = build_tiny(arch="llama")
    base.tokenizer.chat_template = CHATML
    tc = TrainConfig(max_steps=1, batch_size=3, lr=TINY_LR.get(name), checkpoint_every=0)
    art = (
        get_strategy(name)
        .strategy_cls(make_config(name, prompt_format="plain"))
        .fit(base, DATA, None, tc, progress=False)
    )
    assert not art.template.chat_turn and art.prompts(["item fig"])[0].endswith("Text: item fig\nCategory:")
    with pytest.raises(ValueError, match="prompt_format=chat: the base model has no chat template"):
        get_strategy(name).strategy_cls(make_config(name, prompt_format="chat")).fit(
            build_tiny(), DATA, None, tc, progress=False
        )
    with pytest.raises(ValueError, match="prompt_format='json': use one of auto, chat, plain"):
        make_config(name, prompt_format="json")


PREF = TaskData(
    "preference",
    [Example(f"q {w}", f"{w} is good.", i + 1, rejected=f"{w} is bad.") for i, w in enumerate(["ab", "cd", "ef", "gh"])]
    + [Example("q cd", "", 5, rejected="no."), Example("q cd", "sure.", 6)],
    "pref",
)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", GRADIENT)
def test_preference_task_trains_against_the_base_and_round_trips(name, arch, tmp_path):
    """Every gradient strategy takes preference rows (KTO: some rows are unpaired) with the base as
    the reference: where an adaptation starts at the base (LoRA, full), the first step's loss is
    KTO's at the reference (0.5), and training lowers it."""
    base = build_tiny(arch=arch)
    strat = get_strategy(name).strategy_cls(make_config(name, **({"prompt_lr": 0.3} if name == "hybrid" else {})))
    art = strat.fit(
        base,
        PREF,
        PREF,
        TrainConfig(max_steps=6, batch_size=6, lr=TINY_LR[name] * 3, warmup_ratio=0.0, checkpoint_every=0),
        progress=False,
    )
    tr = art.metrics["train"]
    assert 0 <= tr["final_loss"] <= 1  # KTO's terms are in [0, 1] (weights 1)
    if name in ("lora", "full"):
        assert tr["initial_loss"] == pytest.approx(0.5, abs=1e-4) and tr["final_loss"] < tr["initial_loss"]
    ev = art.evaluate(PREF)
    assert ev["n"] == 5 and 0 <= ev["preference_accuracy"] <= 1 and tr["best_dev"] is not None
    again = Artifact.load(art.save(tmp_path / name), base)
    assert again.evaluate(PREF)["preference_accuracy"] == ev["preference_accuracy"]
    assert len(again.generate(["q ab"], max_new_tokens=4)) == 1


def test_prompt_strategies_that_do_not_fit_preference_data_say_so():
    from adaptlab.data.loading import DataError

    base = build_tiny()
    with pytest.raises(DataError, match="few_shot does not fit preference data; strategies that do: .*lora"):
        get_strategy("few_shot").strategy_cls(make_config("few_shot")).fit(base, PREF, PREF, progress=False)
    zero = get_strategy("zero_shot").strategy_cls(make_config("zero_shot")).fit(base, PREF, PREF, progress=False)
    assert zero.evaluate(PREF)["n"] == 5
