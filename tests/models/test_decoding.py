"""Sampling: the same seed gives the same text wherever the row runs, stop texts and end-of-turn
tokens end a row, logprobs are the model's, and bad parameters are refused by name."""

import pytest
import torch

from adaptlab.evaluation.generation import generate
from adaptlab.models.decoding import Sampling, decode, end_ids
from adaptlab.models.runtime import as_lm
from adaptlab.models.tiny import build_tiny, build_tiny_tokenizer

PROMPTS = ["hello", "a much longer prompt here", "xyz"]


@pytest.fixture(scope="module")
def tiny():
    return build_tiny()


def _ids(tok, texts):
    return [tok(t)["input_ids"] for t in texts]


def test_same_seed_same_text_and_a_row_does_not_depend_on_its_batch(tiny):
    s = Sampling(temperature=1.5, seed=7)
    alone = generate(tiny.model, tiny.tokenizer, PROMPTS[:1], max_new_tokens=12, sampling=s)
    again = generate(tiny.model, tiny.tokenizer, PROMPTS[:1], max_new_tokens=12, sampling=s)
    assert alone == again
    lm = as_lm(tiny.model)
    ids = _ids(tiny.tokenizer, PROMPTS)
    batch = decode(lm, tiny.tokenizer, ids, 12, "cpu", sampling=[s, Sampling(temperature=1.0, seed=3), Sampling()])
    single = decode(lm, tiny.tokenizer, ids[:1], 12, "cpu", sampling=[s])
    assert batch[0].tokens == single[0].tokens
    others = {
        tuple(
            generate(
                tiny.model, tiny.tokenizer, PROMPTS[:1], max_new_tokens=12, sampling=Sampling(temperature=1.5, seed=k)
            )[0]
        )
        for k in range(4)
    }
    assert len(others) > 1  # a high temperature on a random model: different seeds, different texts


def test_top_k_one_and_temperature_zero_are_greedy(tiny):
    greedy = generate(tiny.model, tiny.tokenizer, PROMPTS, max_new_tokens=8)
    assert (
        generate(
            tiny.model, tiny.tokenizer, PROMPTS, max_new_tokens=8, sampling=Sampling(temperature=1.0, top_k=1, seed=0)
        )
        == greedy
    )
    assert generate(tiny.model, tiny.tokenizer, PROMPTS, max_new_tokens=8, sampling=Sampling(temperature=0)) == greedy
    nucleus = generate(
        tiny.model, tiny.tokenizer, PROMPTS, max_new_tokens=8, sampling=Sampling(temperature=1.0, top_p=1e-6, seed=0)
    )
    assert nucleus == greedy  # the smallest set reaching top_p is the single best token


def test_stop_text_ends_the_row_and_is_cut(tiny):
    full = generate(tiny.model, tiny.tokenizer, ["hello"], max_new_tokens=16)[0]
    assert len(full) > 4
    stop = full[3:5]
    cut = generate(tiny.model, tiny.tokenizer, ["hello"], max_new_tokens=16, stop=[stop])[0]
    assert cut == full[: full.index(stop)].strip() and stop not in cut
    d = decode(as_lm(tiny.model), tiny.tokenizer, _ids(tiny.tokenizer, ["hello"]), 16, "cpu", stops=[[stop]])[0]
    assert d.finish == "stop" and len(d.tokens) < 16


def test_end_of_turn_tokens_end_a_row():
    tok = build_tiny_tokenizer()
    assert end_ids(tok) == {tok.eos_token_id}
    tok.add_special_tokens({"additional_special_tokens": ["<end_of_turn>", "<|im_end|>"]})
    ids = end_ids(tok)
    assert tok.convert_tokens_to_ids("<end_of_turn>") in ids and tok.convert_tokens_to_ids("<|im_end|>") in ids


def test_logprobs_are_the_models(tiny):
    lm = as_lm(tiny.model)
    ids = _ids(tiny.tokenizer, ["hello"])
    d = decode(lm, tiny.tokenizer, ids, 3, "cpu", sampling=[Sampling(logprobs=2)])[0]
    assert len(d.logprobs) == len(d.tokens) == 3
    first = d.logprobs[0]
    with torch.no_grad():
        ref = torch.log_softmax(tiny.model(torch.tensor(ids)).logits[0, -1].float(), -1)
    assert abs(first["logprob"] - ref[d.tokens[0]].item()) < 1e-4
    assert len(first["top"]) == 2 and first["top"][0][0] == d.tokens[0]  # greedy: the best is the one chosen


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"temperature": 3}, "temperature=3"),
        ({"temperature": -1}, "temperature=-1"),
        ({"top_p": 0}, "top_p=0"),
        ({"top_k": -2}, "top_k=-2"),
        ({"logprobs": 30}, "logprobs=30"),
    ],
)
def test_bad_sampling_is_refused_by_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Sampling(**kwargs)


def test_beams_do_not_sample(tiny):
    with pytest.raises(ValueError, match="num_beams > 1"):
        generate(tiny.model, tiny.tokenizer, PROMPTS, num_beams=2, sampling=Sampling(temperature=1.0))


def test_chat_rendering_keeps_a_bos_the_tokenizer_does_not_add():
    from adaptlab.models.runtime import adds_bos, render_chat

    tok = build_tiny_tokenizer()
    assert adds_bos(tok)
    msgs = [{"role": "user", "content": "hi"}]
    assert render_chat(tok, msgs) == "user: hi\nassistant:"  # no template: a plain transcript
    tok.chat_template = "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    assert render_chat(tok, msgs) == "[user] hi\n"  # BOS left to the tokenizer
    tok.bos_token = "<unk>"  # a BOS the tokenizer never adds
    assert not adds_bos(tok) and render_chat(tok, msgs) == "<unk>[user] hi\n"


def test_prefill_groups_split_rows_only_where_padding_costs_more_than_a_pass():
    from adaptlab.models.decoding import prefill_groups

    assert prefill_groups([30, 31, 29, 30]) == [[2, 0, 3, 1]]  # similar lengths: one pass
    assert prefill_groups([10, 100, 12, 11, 98], per_pass=32) == [[0, 3, 2], [4, 1]]
    assert prefill_groups([5]) == [[0]]


def test_a_batch_prefilled_in_groups_decodes_as_one_pass_and_as_each_row_alone(tiny):
    """Rows of very different lengths, with a soft prompt, a prefix and a LoRA row among them: the
    merged first passes continue exactly as one padded pass and as each row on its own."""
    from adaptlab.models.adaptation import AdaptedLM, Contribution, LoraDelta
    from adaptlab.models.decoding import prefill_groups

    g = torch.Generator().manual_seed(0)
    m = tiny.model
    H, L = m.config.hidden_size, m.config.num_hidden_layers
    q = m.get_submodule("model.layers.0.self_attn.q_proj")
    rows = [
        Contribution(),
        Contribution(soft=torch.randn(3, H, generator=g)),
        Contribution(prefix=torch.randn(2 * L, 1, 4, 32, generator=g)),
        Contribution(
            lora={
                "model.layers.0.self_attn.q_proj": LoraDelta(
                    torch.randn(2, q.in_features, generator=g), torch.randn(q.out_features, 2, generator=g), 1.0
                )
            }
        ),
    ]
    ids = [[2] + list(range(70, 73)), [2] + list(range(70, 110)), [2, 81, 82], [2] + list(range(90, 130))]
    assert len(prefill_groups([len(x) for x in ids])) == 2
    tok = tiny.tokenizer
    grouped = [d.tokens for d in decode(AdaptedLM(m, rows), tok, ids, 10, "cpu")]

    class OnePass:  # the same model without ``subset``: decode runs one padded first pass
        def __init__(self, lm):
            self.lm, self.n_virtual = lm, lm.n_virtual

        def __getattr__(self, name):
            if name == "subset":
                raise AttributeError(name)
            return getattr(self.lm, name)

    one = [d.tokens for d in decode(OnePass(AdaptedLM(m, rows)), tok, ids, 10, "cpu")]
    alone = [decode(AdaptedLM(m, [c]), tok, [x], 10, "cpu")[0].tokens for c, x in zip(rows, ids)]
    assert grouped == one == alone
