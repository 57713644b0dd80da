import random

import pytest
import torch

from adaptlab.evaluation.metrics import accuracy, classification_metrics, macro_f1
from adaptlab.evaluation.scoring import predict_labels, score_labels, score_labels_naive, target_logprobs
from adaptlab.prompts import DEFAULT_CLASSIFICATION, PromptTemplate, TemplateError, verbalize


def reference(model, tok, prompt, label):
    ids = tok(prompt).input_ids
    lab = tok(label, add_special_tokens=False).input_ids
    full = torch.tensor([ids + lab])
    with torch.no_grad():
        lp = model(full).logits.log_softmax(-1)[0]
    return sum(lp[len(ids) + k - 1, t].item() for k, t in enumerate(lab))


def test_label_scores_equal_full_forward_pass(tiny):
    prompts = ["Text: great\nLabel:", "Text: a much longer input sentence here\nLabel:"]
    labels = [" positive", " negative", " no opinion at all"]  # multi-token labels, various lengths
    scores = score_labels(tiny.model, tiny.tokenizer, prompts, labels, batch_size=4)
    assert scores.shape == (2, 3)
    for i, p in enumerate(prompts):
        for j, lab in enumerate(labels):
            assert scores[i, j].item() == pytest.approx(reference(tiny.model, tiny.tokenizer, p, lab), abs=1e-4)


def test_only_target_positions_reach_the_lm_head(tiny):
    seen = []
    head = tiny.model.get_output_embeddings()
    h = head.register_forward_hook(lambda m, i, o: seen.append(i[0].shape))
    try:
        ids = torch.tensor([[2, 70, 71, 72, 73, 74]])
        tgt = torch.tensor([[False, False, False, False, True, True]])
        target_logprobs(tiny.model, ids, torch.ones_like(ids), tgt)
    finally:
        h.remove()
    assert seen == [torch.Size([2, 64])]  # 2 label tokens projected, not 6 positions


def test_predictions_are_always_valid_labels(tiny):
    out = predict_labels(tiny.model, tiny.tokenizer, ["a", "b", "c"], ["x", "y"], [" x", " y"])
    assert set(out.predictions) <= {"x", "y"} and out.scores.shape == (3, 2) and out.prompt_tokens > 0


def test_metrics():
    gold, pred = ["a", "a", "b", "c"], ["a", "b", "b", "b"]
    assert accuracy(gold, pred) == 0.5
    # F1: a = 2/3, b = 2/3 (tp 1, fp 2, fn 0 -> 2/4=0.5?) computed explicitly below
    f1_a = 2 * 1 / (2 * 1 + 0 + 1)
    f1_b = 2 * 1 / (2 * 1 + 2 + 0)
    f1_c = 0.0
    assert macro_f1(gold, pred) == pytest.approx((f1_a + f1_b + f1_c) / 3)
    assert classification_metrics(gold, pred)["n"] == 4
    with pytest.raises(ValueError):
        accuracy(["a"], [])


def test_templates():
    assert verbalize("order_status") == "order status"
    p = DEFAULT_CLASSIFICATION.render("hi", ["order_status", "refund"])
    assert "order status, refund" in p and p.endswith("Category:")
    with pytest.raises(TemplateError, match=r"unknown placeholder\(s\) \{txt\}"):
        PromptTemplate("bad", "Text: {txt}")
    with pytest.raises(TemplateError, match="must contain"):
        PromptTemplate("bad", "no slot here")
    with pytest.raises(TemplateError, match="needs the label list"):
        PromptTemplate("t", "{labels} {text}").render("x", [])
    with pytest.raises(TemplateError, match="malformed template"):
        PromptTemplate("t", "{text")


def test_cached_scoring_equals_naive_with_shared_label_prefixes(tiny):
    prompts = ["a", "Text: longer prompt here\nLabel:", "mid length prompt:"]
    labels = [" card arrival", " card linking", " card", " cash", " x"]  # shared first tokens, 1..13 tokens
    fast = score_labels(tiny.model, tiny.tokenizer, prompts, labels, batch_size=2, rows_per_pass=3)
    slow = score_labels_naive(tiny.model, tiny.tokenizer, prompts, labels, batch_size=4)
    assert torch.allclose(fast, slow, atol=1e-4)


def test_cached_scoring_projects_each_label_prefix_once(tiny):
    calls = []
    head = tiny.model.get_output_embeddings()
    h = head.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    try:
        score_labels(tiny.model, tiny.tokenizer, ["p"], [" ab", " ac", " b"], batch_size=1)
    finally:
        h.remove()
    # tokens: " "=first for all labels (1 projection), then prefixes (" ",), (" ","a") -> "a" and "b"/"c"
    # distinct contexts after the first token: (" ",) and (" ", "a") = 2 projections
    assert calls == [1, 2]


def test_shared_prompt_prefix_is_encoded_once_and_exact(tiny):
    # 150 shared tokens: longer than the tiny model's 64-token sliding window, so the
    # repeated cache of a sliding-window layer is exercised too.
    instruction = "Classify the ticket into one of: " + ", ".join(f"label{i}" for i in range(15)) + ".\n"
    prompts = [instruction + f"Text: {t}\nLabel:" for t in ("hi", "a longer ticket text", "x y z")]
    labels = [" label1", " label12", " other"]
    fast = score_labels(tiny.model, tiny.tokenizer, prompts, labels, batch_size=2)
    slow = score_labels_naive(tiny.model, tiny.tokenizer, prompts, labels)
    assert torch.allclose(fast, slow, atol=1e-4)
    seen = []
    body = tiny.model.model
    h = body.register_forward_hook(
        lambda m, i, kw, o: seen.append((kw.get("input_ids") if kw.get("input_ids") is not None else i[0]).shape),
        with_kwargs=True,
    )
    try:
        score_labels(tiny.model, tiny.tokenizer, prompts, labels, batch_size=3)
    finally:
        h.remove()
    assert seen[0][0] == 1 and seen[0][1] > 100  # the shared prefix: one row, once
    assert all(s[1] < 40 for s in seen[1:])  # everything after: only the per-prompt rest and labels


def _head_rows(model, fn):
    rows = []
    h = model.get_output_embeddings().register_forward_hook(lambda m, i, o: rows.append(i[0].shape[0]))
    try:
        out = fn()
    finally:
        h.remove()
    return out, sum(rows)


@pytest.mark.parametrize("seed", range(6))
def test_top1_search_finds_the_full_scoring_argmax(tiny, seed):
    """Exact branch and bound: the same best label as scoring every label, with its exact score,
    on random label sets with shared prefixes, single-token labels and labels that are prefixes of
    others; labels that cannot win are -inf."""
    rng = random.Random(seed)
    words = [
        "card",
        "card arrival",
        "card linking",
        "cash",
        "top up",
        "top up limits",
        "x",
        "pin blocked",
        "exchange rate",
        "exchange via app",
        "age",
        "age limit",
        "lost or stolen card",
        "refund",
    ]
    labels = [" " + w for w in rng.sample(words, rng.randint(2, len(words)))]
    prompts = [
        f"Text: {rng.choice(['hi', 'my card is late', 'how do I top up', 'what rate'])} {i}\nLabel:" for i in range(5)
    ]
    full = score_labels(tiny.model, tiny.tokenizer, prompts, labels, batch_size=3)
    top = score_labels(tiny.model, tiny.tokenizer, prompts, labels, batch_size=3, top1=True, rows_per_pass=4)
    assert torch.equal(top.argmax(1), full.argmax(1))
    kept = torch.isfinite(top)
    assert torch.allclose(top[kept], full[kept], atol=1e-4)
    best = full.max(1, keepdim=True).values.expand_as(full)
    assert (full[~kept] < best[~kept]).all()  # only labels that lose are left out


def test_top1_search_projects_fewer_rows_on_a_peaked_model(tiny):
    """With one label far ahead (a trained model's usual case), the search stops after its path."""
    labels = [" card arrival", " card linking", " cash withdrawal", " top up limits", " exchange via app"]
    prompts = ["Text: a\nLabel:"] * 4
    full, n_full = _head_rows(tiny.model, lambda: score_labels(tiny.model, tiny.tokenizer, prompts, labels))
    top, n_top = _head_rows(tiny.model, lambda: score_labels(tiny.model, tiny.tokenizer, prompts, labels, top1=True))
    assert torch.equal(top.argmax(1), full.argmax(1))
    assert n_top <= n_full  # never more projections than full scoring on this set
    # Force a peaked distribution: boost the best label's tokens in the head and count again.
    head = tiny.model.get_output_embeddings()
    ids = tiny.tokenizer(labels[2], add_special_tokens=False).input_ids
    saved = head.weight.data.clone()
    try:
        head.weight.data[ids] *= 25.0
        full, n_full = _head_rows(tiny.model, lambda: score_labels(tiny.model, tiny.tokenizer, prompts, labels))
        top, n_top = _head_rows(
            tiny.model, lambda: score_labels(tiny.model, tiny.tokenizer, prompts, labels, top1=True)
        )
    finally:
        head.weight.data.copy_(saved)
    assert torch.equal(top.argmax(1), full.argmax(1)) and torch.isfinite(top).sum(1).max() < len(labels)
    assert n_top < n_full


@pytest.mark.parametrize("window", [8, 64])
def test_lazy_node_states_equal_the_whole_tree_extension(window):
    """The top-1 search runs trie nodes through the model only when it reaches them
    (:class:`NodeStates`): asked for in uneven sets per row (fillers pad the passes), every node's
    state equals the one the whole-tree extension gives, also where the prompts and the appended
    slots outgrow a sliding window (the prompt's first slots must stay visible inside it)."""
    from adaptlab.models.label_tree import LabelTrie, NodeStates, _tree_masks
    from adaptlab.models.runtime import as_lm, encode_labels, encode_prompts, pad_id, right_pad
    from adaptlab.models.tiny import build_tiny

    tiny = build_tiny(sliding_window=window)
    lm, tok = as_lm(tiny.model), tiny.tokenizer
    labels = [" card arrival", " card linking", " cash", " top up limits", " exchange via app"]
    prompts = ["Text: hi 1\nLabel:", "Text: my card is late 2\nLabel:", "Text: a\nLabel:"]
    trie = LabelTrie(encode_labels(tok, labels), "cpu")
    ids, att = right_pad(encode_prompts(tok, prompts, 1024), pad_id(tok), "cpu")
    B, N = len(prompts), trie.n
    rng = random.Random(window)
    with torch.no_grad():
        cache, cmask, _ = lm.start(ids, att)
        pos = cmask.sum(1, keepdim=True) + trie.depth.unsqueeze(0)
        masks = _tree_masks(lm, cache, cmask, window, pos, trie.anc.unsqueeze(0).expand(B, N, N))
        whole = lm.extend(trie.token.expand(B, N), masks, pos, cache)
        cache, cmask, _ = lm.start(ids, att)
        states = NodeStates(lm, trie, cache, cmask, window)
        kept = [layer.keys.shape[-2] for layer in cache.layers]
        for d in range(int(trie.depth.max()) + 1):  # parents before children, rows asking unevenly
            pairs = [(b, n) for b in range(B) for n in (trie.depth == d).nonzero().flatten().tolist()]
            rng.shuffle(pairs)
            for part in (pairs[: len(pairs) // 3], pairs[len(pairs) // 3 :]):
                if part:
                    bs, ns = torch.tensor(part).T
                    assert torch.allclose(states(bs, ns), whole[bs, ns], atol=1e-5)
    assert states.passes > int(trie.depth.max()) + 1
    assert [layer.keys.shape[-2] for layer in cache.layers] == kept  # the caller's cache is left as it was
    assert torch.allclose(states.h, whole, atol=1e-5)


def test_top1_search_runs_only_the_tree_nodes_it_projects(tiny):
    """The search runs a trie node through the model only when it projects it: on a peaked model
    (the setting where it projects fewer rows than full scoring) the model runs as many node states
    as the LM head projects node rows, fewer than the whole tree, with the full scoring's argmax."""
    import adaptlab.models.label_tree as label_tree

    labels = [" card arrival", " card linking", " cash withdrawal", " top up limits", " exchange via app"]
    prompts = ["Text: a\nLabel:"] * 4
    ids = tiny.tokenizer(labels[2], add_special_tokens=False).input_ids
    head = tiny.model.get_output_embeddings()
    saved = head.weight.data.clone()
    ran = []
    real = label_tree.NodeStates._run

    def counting(self, bs, ns):
        ran.append(len(bs))
        return real(self, bs, ns)

    try:
        head.weight.data[ids] *= 25.0
        full = score_labels(tiny.model, tiny.tokenizer, prompts, labels)
        label_tree.NodeStates._run = counting
        top, projected = _head_rows(
            tiny.model, lambda: score_labels(tiny.model, tiny.tokenizer, prompts, labels, top1=True)
        )
    finally:
        label_tree.NodeStates._run = real
        head.weight.data.copy_(saved)
    n_nodes = label_tree.LabelTrie([tiny.tokenizer(x, add_special_tokens=False).input_ids for x in labels], "cpu").n
    assert torch.equal(top.argmax(1), full.argmax(1))
    assert sum(ran) == projected - len(prompts)  # every node run is projected once (less each prompt's own row)
    assert 0 < sum(ran) < len(prompts) * n_nodes, (sum(ran), n_nodes)
