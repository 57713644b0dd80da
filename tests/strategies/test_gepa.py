"""gepa: the LM-proposed prompt optimizer's mechanism on a scripted proposer and a rule-following
"model" (what a proposal changes is visible in the scores), its one budget over both models, the
proposer's token cap, resuming a killed search from its journal, the proposer over HTTP with its
spend and response cache, braces in proposals, and a conversation's instruction as its system turn."""

from __future__ import annotations

import json

import pytest
import torch

from adaptlab.backends.base import Backend
from adaptlab.backends.endpoints import _OPEN, EndpointError, EndpointSpec, ResponseCache
from adaptlab.data.loading import Example, TaskData
from adaptlab.strategies import Artifact, get_strategy, make_config
from tests.backends.test_endpoints import fake_endpoint

FRUIT = {"apple", "pear", "plum", "fig", "kiwi", "lime"}
WORDS = ["apple", "pear", "plum", "fig", "kiwi", "lime", "kale", "leek", "okra", "corn", "bean", "pea"]


def _data(prefix: str, split: str) -> TaskData:
    rows = [Example(f"{prefix} {w}", "fruit" if w in FRUIT else "veg", i + 1) for i, w in enumerate(WORDS)]
    return TaskData("classification", rows, split, label_names=["fruit", "veg"])


TRAIN, DEV = _data("item", "train"), _data("a", "dev")


class Rule(Backend):
    """A "model" that knows fruit only when its instruction says fruit is sweet or an exemplar shows
    what fruit is (its own input is never its exemplar), and otherwise answers veg."""

    name = fingerprint = "rule"

    def score(self, prompts, label_texts):
        self.calls += len(prompts)
        out = torch.zeros(len(prompts), len(label_texts))
        for r, p in enumerate(prompts):
            word = p.rsplit("Text:", 1)[-1].split("\n")[0].split()[-1]
            fruit = word in FRUIT and ("sweet" in p or "Category: fruit" in p)
            out[r, [t.strip() for t in label_texts].index("fruit" if fruit else "veg")] = 1.0
        return out

    def count_tokens(self, text):
        return len(text.split())


class Scripted(Backend):
    """A proposer that answers from a script (the last answer repeats), keeping every prompt."""

    name = fingerprint = "scripted"

    def __init__(self, answers, fail_at: int | None = None):
        super().__init__()
        self.answers, self.fail_at, self.prompts = list(answers), fail_at, []

    def generate(self, prompts, max_new_tokens=64, num_beams=1, stop=None, sampling=None):
        if self.fail_at is not None and len(self.prompts) + 1 >= self.fail_at:
            raise RuntimeError("killed")
        self.prompts += prompts
        self.calls += len(prompts)
        return [self.answers[min(len(self.prompts) - 1, len(self.answers) - 1)] for _ in prompts]

    def count_tokens(self, text):
        return len(text.split())


@pytest.fixture()
def scripted(monkeypatch):
    def use(answers, fail_at=None, name="scripted"):
        p = Scripted(answers, fail_at)
        monkeypatch.setitem(_OPEN, name, (EndpointSpec(name, "http://127.0.0.1:9"), p))
        return p

    return use


def fit(model, run_dir=None, **cfg):
    config = make_config("gepa", **{"proposer": "scripted", "val_examples": 12, "minibatch": 3, "k": 0, **cfg})
    return get_strategy("gepa").strategy_cls(config).fit(model, TRAIN, DEV, run_dir=run_dir, progress=False)


SWEET = "Here it is:\n```\nFruit is sweet. Answer with one of: {labels}.\n```"


def test_a_proposed_instruction_that_fixes_the_failures_wins(scripted):
    proposer = scripted(["```\nBe careful.\n```", SWEET])
    art = fit(Rule(), budget_calls=200)
    s = art.metrics["search"]
    assert art.template.instruction == "Fruit is sweet. Answer with one of: {labels}."
    assert s["best"]["dev_metric"] == 1.0 and art.metrics["dev"]["metric"] == 1.0
    assert art.predict([ex.text for ex in DEV.examples]) == [ex.label for ex in DEV.examples]
    # the proposer read the current instruction and the minibatch's failures with the right answers
    first = proposer.prompts[0]
    assert "Classify the text into one of these categories: {labels}." in first
    assert "Wrong. The right answer is: fruit" in first and "## Generated Outputs" in first
    seed_score = next(t["dev_metric"] for t in art.trace if t["step"] == "candidate" and t["candidate"] == 0)
    assert seed_score == 0.5 and s["candidates"] >= 2
    assert s["proposer"]["calls"] == len(proposer.prompts) >= 2
    assert art.metrics["train"]["proposer"]["calls"] == s["proposer"]["calls"]


def test_exemplars_evolve_from_the_examples_the_prompt_got_wrong(scripted):
    scripted(["```\nBe careful.\n```"])  # the instruction never helps: only the exemplars can
    art = fit(Rule(), budget_calls=200, k=4)
    evolved = [t for t in art.trace if t["step"] == "candidate" and t["exemplars"]]
    assert evolved, "no candidate took exemplars in"
    train_pairs = {(ex.text, ex.label) for ex in TRAIN.examples}
    assert art.exemplars and all(tuple(p) in train_pairs for p in art.exemplars)
    assert all(label == "fruit" for _, label in art.exemplars)  # the seed answered veg: fruit rows were wrong
    assert art.metrics["dev"]["metric"] > 0.5


@pytest.mark.parametrize("budget", [45, 61, 90, 150])
def test_one_budget_over_both_models_is_never_exceeded(scripted, budget):
    proposer = scripted(["```\nBe careful.\n```"])
    model = Rule()
    art = fit(model, budget_calls=budget, k=2)
    s = art.metrics["search"]
    assert s["calls_used"] == s["model_calls"] + s["proposer"]["calls"] <= budget
    assert model.calls + proposer.calls == s["paid_calls"] <= budget
    if s["stopped_by"] == "budget":  # only when a whole iteration would not fit
        assert budget - s["calls_used"] < 2 * 3 + 1 + 12
    else:  # or when every minibatch of a pass over train was answered right
        assert s["stopped_by"] == "converged" and s["best"]["dev_metric"] == 1.0


def test_a_budget_below_one_iteration_is_a_clear_error(scripted):
    scripted(["x"])
    with pytest.raises(ValueError, match=r"budget_calls=20 is below one iteration: .* need 31 calls"):
        fit(Rule(), budget_calls=20)


def test_the_proposer_token_cap_stops_the_search_before_it_is_passed(scripted):
    scripted(["```\nBe careful.\n```"])
    art = fit(Rule(), budget_calls=400, proposer_tokens=900)
    s = art.metrics["search"]
    assert s["stopped_by"] == "proposer_tokens" and 0 < s["proposer"]["tokens"] <= 900
    assert s["calls_used"] < 400


def test_a_killed_search_resumes_from_its_journal_without_paying_again(scripted, tmp_path):
    script = ["```\nBe careful.\n```", "```\nStill careful.\n```", "```\nCareful again.\n```", SWEET]
    scripted(script)
    whole = fit(Rule(), run_dir=tmp_path / "whole", budget_calls=150)
    assert whole.template.instruction.startswith("Fruit is sweet")
    scripted(script, fail_at=3)  # killed at its third proposal
    with pytest.raises(RuntimeError, match="killed"):
        fit(Rule(), run_dir=tmp_path / "run", budget_calls=150)
    assert len((tmp_path / "run" / "gepa_journal.jsonl").read_text().splitlines()) > 10
    model, proposer = Rule(), scripted(script[2:])  # it answers the proposals not journalled as before
    resumed = fit(model, run_dir=tmp_path / "run", budget_calls=150)
    a, b = whole.metrics["search"], resumed.metrics["search"]
    assert resumed.template.instruction == whole.template.instruction
    assert resumed.exemplars == whole.exemplars
    assert (b["candidates"], b["calls_used"], b["best"]) == (a["candidates"], a["calls_used"], a["best"])
    assert b["replayed"] > 0 and b["paid_calls"] == a["paid_calls"] - b["replayed"]
    assert len(proposer.prompts) == a["proposer"]["calls"] - 2  # two proposals were journalled
    assert model.calls + len(proposer.prompts) == b["paid_calls"]
    # another search (here: another budget) in the same folder starts over
    other = fit(Rule(), run_dir=tmp_path / "run", budget_calls=120)
    assert other.metrics["search"]["replayed"] == 0


def test_an_unknown_proposer_is_a_one_line_error():
    with pytest.raises(EndpointError, match="proposer 'nowhere': no endpoint of that name was opened"):
        fit(Rule(), proposer="nowhere", budget_calls=100)


def test_proposals_with_braces_are_shown_as_they_are(scripted):
    scripted(["```\nWrite {name} and {{x}} literally; sweet fruit: {labels}.\n```"])
    art = fit(Rule(), budget_calls=120)
    assert "{name}" in art.template.instruction or art.metrics["search"]["candidates"] >= 1
    prompt = art.prompts(["item fig"])[0]
    if "sweet" in art.template.instruction:
        assert "Write {name} and {{x}} literally; sweet fruit: fruit, veg." in prompt


def test_a_proposer_over_http_is_counted_priced_and_cached(monkeypatch, tmp_path):
    from adaptlab.backends.endpoints import register_open

    with fake_endpoint() as fake:
        spec = EndpointSpec("hosted", fake.url + "/v1", model="fake", price_in=2.0, price_out=8.0)
        for round_ in range(2):
            backend = spec.backend(ResponseCache(tmp_path / "r.sqlite"), backoff=0.01)
            monkeypatch.setitem(_OPEN, "hosted", (spec, backend))
            register_open(spec, backend)
            sent = fake.requests
            art = fit(Rule(), proposer="hosted", budget_calls=120)
            p = art.metrics["train"]["proposer"]
            # proposals asked again in the same search (same parent and minibatch) are answered from its
            # journal: counted in the budget, not sent
            assert 1 <= p["spend"]["calls"] <= p["calls"]
            if round_ == 0:
                assert p["spend"]["http_requests"] == p["spend"]["calls"] == fake.requests - sent
                assert p["spend"]["cost_usd"] > 0
                assert p["spend"]["cost_usd"] == pytest.approx(p["spend"]["prompt_tokens"] * 2.0 / 1e6)
            else:  # the same search again: every proposal read back from the response cache
                assert fake.requests == sent and p["spend"]["cache_hits"] == p["spend"]["calls"]
                assert p["spend"]["cost_usd"] == 0 and p["spend"]["uncached_cost_usd"] > 0


def test_a_conversation_s_instruction_is_its_system_turn(scripted, tmp_path):
    from adaptlab.models.tiny import build_tiny
    from tests.strategies.test_matrix import CHATML, _chat_data

    base = build_tiny(arch="llama")
    base.tokenizer.chat_template = CHATML
    data = _chat_data()
    scripted(["```\nAlways answer in two words.\n```"])
    config = make_config("gepa", proposer="scripted", budget_calls=60, val_examples=3, minibatch=2, k=1)
    art = get_strategy("gepa").strategy_cls(config).fit(base, data, data, progress=False)
    prompt = art.prompts([data.examples[0].text])[0]
    assert prompt.startswith(f"<|im_start|>system\n{art.template.instruction}<|im_end|>")
    assert 0 <= art.metrics["dev"]["metric"] <= 1
    again = Artifact.load(art.save(tmp_path / "g"), base)
    assert again.prompts([data.examples[0].text]) == [prompt]
    assert json.loads(data.examples[0].text)[0]["role"] == "user"  # the data itself is untouched


class Parser(Rule):
    """A model without label log-probabilities (answers are parsed): it names no label at all unless
    its instruction says fruit is sweet."""

    supports_scores = False

    def generate(self, prompts, max_new_tokens=64, num_beams=1, stop=None, sampling=None):
        self.calls += len(prompts)
        out = []
        for p in prompts:
            word = p.rsplit("Text:", 1)[-1].split("\n")[0].split()[-1]
            out.append(("fruit" if word in FRUIT else "veg") if "sweet" in p else "no idea")
        return out


def test_unparsed_answers_score_nothing_and_rare_classes_count_more(scripted):
    from adaptlab.strategies.gepa.strategy import class_weights

    veg = [ex for ex in TRAIN.examples if ex.label == "veg"]
    train = TRAIN.with_examples(veg + veg + [ex for ex in TRAIN.examples if ex.label == "fruit"][:3])
    assert class_weights(train, "auto") == {"veg": 0.25, "fruit": 1.0}  # 12 veg, 3 fruit: imbalanced
    assert class_weights(TRAIN, "auto") == {} and class_weights(TRAIN, "balanced") == {"fruit": 1.0, "veg": 1.0}
    scripted([SWEET])
    config = make_config("gepa", proposer="scripted", val_examples=12, minibatch=3, k=0, budget_calls=120)
    art = get_strategy("gepa").strategy_cls(config).fit(Parser(), train, DEV, progress=False)
    seed = next(t for t in art.trace if t["step"] == "candidate" and t["candidate"] == 0)
    # every seed answer named no label: it scores 0, though falling back to the majority class 'veg'
    # would have been right on half the dev rows
    assert seed["dev_metric"] == 0.0 and art.metrics["search"]["row_metric"] == "balanced"
    assert art.template.instruction.startswith("Fruit is sweet")


class Writer(Backend):
    """A generation "model" that copies the input's value, adding " is good." only when told to."""

    name = fingerprint = "writer"

    def generate(self, prompts, max_new_tokens=64, num_beams=1, stop=None, sampling=None):
        self.calls += len(prompts)
        out = []
        for p in prompts:
            value = p.rsplit("Input: name[", 1)[-1].split("]")[0]
            out.append(f"{value} is good." if "praise" in p else value)
        return out

    def count_tokens(self, text):
        return len(text.split())


def test_generation_scores_the_task_metric_in_a_frame_with_an_instruction(scripted):
    from tests.strategies.test_matrix import GEN

    proposer = scripted(["```\nWrite the value, then praise it.\n```"])
    config = make_config("gepa", proposer="scripted", budget_calls=80, val_examples=4, minibatch=2, k=0)
    art = get_strategy("gepa").strategy_cls(config).fit(Writer(), GEN, GEN, progress=False)
    assert (
        art.template.name.startswith("gepa") and "{instruction}" in art.template.template
    )  # "instruct", not input-output
    assert art.metrics["search"]["row_metric"] == "rouge_l"
    assert art.template.instruction == "Write the value, then praise it."
    assert art.metrics["dev"]["metric"] == 1.0 and "Score 0.50 of 1 (rouge_l" in proposer.prompts[0]
    with pytest.raises(ValueError, match="template 'input-output' has no {instruction} slot"):
        get_strategy("gepa").strategy_cls(make_config("gepa", proposer="scripted", template="input-output")).fit(
            Writer(), GEN, GEN, progress=False
        )


def test_train_with_a_proposer_on_an_endpoint(tmp_path):
    from typer.testing import CliRunner

    from adaptlab.cli import app

    with fake_endpoint() as prop:
        argv = [
            "train",
            "--strategy",
            "gepa",
            "--data",
            "demo",
            "--model",
            "tiny",
            "--out",
            str(tmp_path / "g"),
            "--train-size",
            "16",
            "--set",
            "budget_calls=50",
            "--set",
            "val_examples=4",
            "--set",
            "minibatch=2",
            "--set",
            "k=1",
            "--no-response-cache",
        ]
        r = CliRunner().invoke(app, [*argv, "--proposer", f"prop={prop.url},model=fake,in=1,out=1,mode=parse"])
        assert r.exit_code == 0, r.output
        assert "proposer calls / tokens" in r.output and prop.requests >= 1
        meta = json.loads((tmp_path / "g" / "adaptlab_artifact.json").read_text())
        assert meta["strategy_config"]["proposer"] == "prop" and meta["metrics"]["train"]["proposer"]["calls"] >= 1
        r = CliRunner().invoke(app, [*argv, "--proposer", "nowhere"])
        assert r.exit_code == 2 and "--proposer 'nowhere'" in r.output
        r = CliRunner().invoke(
            app,
            [
                "train",
                "--strategy",
                "lora",
                "--data",
                "demo",
                "--model",
                "tiny",
                "--out",
                str(tmp_path / "l"),
                "--proposer",
                "self",
            ],
        )
        assert r.exit_code == 2 and "lora asks no proposer LM" in r.output
