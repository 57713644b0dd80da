import pytest
import torch

from adaptlab.evaluation.generation import chrf, generate, generation_metrics
from adaptlab.evaluation.text_metrics import rouge_l


def hf_greedy(model, tok, prompt, n):
    ids = tok(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=n,
            do_sample=False,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
    return tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()


def test_greedy_matches_transformers_generate_in_a_padded_batch(tiny):
    prompts = ["hello there", "a much longer prompt than the first one", "x"]
    ours = generate(tiny.model, tiny.tokenizer, prompts, max_new_tokens=7, batch_size=3)
    assert ours == [hf_greedy(tiny.model, tiny.tokenizer, p, 7) for p in prompts]


def test_beam_one_equals_greedy_and_beams_score_at_least_as_well(tiny):
    p = ["the cat sat on"]
    greedy = generate(tiny.model, tiny.tokenizer, p, max_new_tokens=5)
    beam = generate(tiny.model, tiny.tokenizer, p, max_new_tokens=5, num_beams=4, length_penalty=0.0)

    def logprob(text):
        from adaptlab.evaluation.scoring import score_labels_naive

        return score_labels_naive(tiny.model, tiny.tokenizer, p, [text])[0, 0].item()

    # With no length penalty, beam search maximises the summed log-prob: never worse than greedy
    # when both produce continuations of the same length.
    if len(tiny.tokenizer(beam[0]).input_ids) == len(tiny.tokenizer(greedy[0]).input_ids):
        assert logprob(beam[0]) >= logprob(greedy[0]) - 1e-4
    with pytest.raises(ValueError, match="num_beams=0"):
        generate(tiny.model, tiny.tokenizer, p, num_beams=0)


def test_rouge_and_exact_match():
    assert rouge_l("the cat sat", "the cat sat") == 1.0
    assert rouge_l("cat the", "the cat") == pytest.approx(0.5)
    assert rouge_l("", "x") == 0.0
    m = generation_metrics(["a b", "c"], [["a b", "zz"], ["d"]])
    assert m["exact_match"] == 0.5 and m["n"] == 2
    with pytest.raises(ValueError, match="no predictions"):
        generation_metrics([], [])


def test_chrf_counts_every_reference():
    # Identical text scores 1; text sharing no character scores 0.
    assert chrf(["the cat sat"], [["the cat sat"]]) == pytest.approx(1.0)
    assert chrf(["xyz"], [["abc"]]) == pytest.approx(0.0)
    # A second reference that matches lifts the score to 1 (inputs may have different numbers of references).
    assert chrf(["the cat sat", "dog"], [["a cat sat down", "the cat sat"], ["dog"]]) == pytest.approx(1.0)
    # Hand-computed: "ab" vs "abc". Character 1-grams P=1, R=2/3; 2-grams P=1, R=1/2; higher orders
    # have no hypothesis n-grams and are left out. chrF averages P and R over the orders, then takes
    # F-beta with beta=2: P=1, R=7/12, F = 5PR / (4P + R) = 35/55.
    assert chrf(["ab"], [["abc"]]) == pytest.approx(35 / 55, abs=1e-6)
    m = generation_metrics(["the cat sat"], [["the cat sat"]])
    assert m["chrf"] == pytest.approx(1.0)
