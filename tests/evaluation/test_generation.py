import pytest
import torch

from adaptlab.evaluation.generation import generate, generation_metrics, rouge_l


def hf_greedy(model, tok, prompt, n):
    ids = tok(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()


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
