"""The preference losses against TRL's own trainers on the same batch, and the unlikelihood penalty.

TRL builds and tokenizes its batch; the same token ids go through adaptlab's objective with a
LoRA holding the same weights (PEFT's state dict read by adaptlab's LoRA), the base model as the
reference in both. The losses agree to float precision.
"""

from __future__ import annotations

import copy
import json
import math
import warnings

import pytest
import torch

from adaptlab.models.runtime import pad_id, target_token_logprobs
from adaptlab.strategies.lora.strategy import LoraModule
from adaptlab.strategies.registry import make_config
from adaptlab.training.batching import Encoded
from adaptlab.training.objectives import DPO, KTO, PreferenceEncoded, TokenNLL

trl = pytest.importorskip("trl", reason="TRL is in the test extra")
datasets = pytest.importorskip("datasets")

LORA = dict(r=4, alpha=8.0, dropout=0.0, target_modules=["q_proj", "v_proj"])


def _trainer(kind, tiny, rows, tmp_path):
    from peft import LoraConfig as PeftLoraConfig

    peft_cfg = PeftLoraConfig(
        r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"
    )
    common = dict(
        output_dir=str(tmp_path), per_device_train_batch_size=4, report_to=[], beta=0.1, use_cpu=True, max_length=64
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "dpo":
            cfg, cls = trl.DPOConfig(**common), trl.DPOTrainer
        else:
            cfg, cls = trl.KTOConfig(**common), trl.KTOTrainer
        tr = cls(
            model=copy.deepcopy(tiny.model),
            args=cfg,
            train_dataset=datasets.Dataset.from_list(rows),
            processing_class=tiny.tokenizer,
            peft_config=peft_cfg,
        )
    torch.manual_seed(0)
    with torch.no_grad():  # a LoRA away from the base, so the log-ratios are not zero
        for n, p in tr.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.3)
    return tr


def _same_lora(tr, tiny) -> LoraModule:
    from peft import get_peft_model_state_dict

    state = get_peft_model_state_dict(tr.model)
    return LoraModule.from_peft_state(tiny, make_config("lora", **LORA), state, "trl").eval()


def _split(ids, att, comp):
    keep = att.bool()
    return ids[keep & ~comp.bool()].tolist(), ids[comp.bool()].tolist()


def _loss(objective, items, module, tiny):
    objective.bind(items, tiny.model, pad_id(tiny.tokenizer), "cpu")
    total, _ = objective.loss_sum(lambda i, a, t: target_token_logprobs(module, i, a, t), list(range(len(items))))
    return float(total) / sum(objective.weight(it) for it in items)


def test_dpo_loss_matches_trl(tiny, tmp_path):
    rows = [{"prompt": f"question {i}", "chosen": " yes", "rejected": " no thanks"} for i in range(4)]
    tr = _trainer("dpo", tiny, rows, tmp_path)
    batch = next(iter(tr.get_train_dataloader()))  # [chosen rows..., rejected rows...]
    tr.model.eval()
    with torch.no_grad():
        theirs = float(tr.compute_loss(tr.model, batch))
    n = batch["input_ids"].shape[0] // 2
    items = []
    for r in range(n):
        p, c = _split(batch["input_ids"][r], batch["attention_mask"][r], batch["completion_mask"][r])
        p2, rej = _split(batch["input_ids"][n + r], batch["attention_mask"][n + r], batch["completion_mask"][n + r])
        assert p == p2
        items.append(PreferenceEncoded(p, c, rej))
    with torch.no_grad():
        ours = _loss(DPO(beta=0.1), items, _same_lora(tr, tiny), tiny)
    assert abs(theirs - math.log(2)) > 1e-3  # the LoRA moved the policy off the reference
    assert ours == pytest.approx(theirs, abs=1e-5)


def test_kto_loss_matches_trl(tiny, tmp_path):
    rows = [
        {"prompt": f"question {i}", "completion": " yes" if i % 2 else " no thanks", "label": bool(i % 2)}
        for i in range(4)
    ]
    tr = _trainer("kto", tiny, rows, tmp_path)
    batch = next(iter(tr.get_train_dataloader()))
    tr.model.eval()
    with torch.no_grad():
        theirs = float(tr.compute_loss(tr.model, batch))
    items = []
    for r in range(batch["input_ids"].shape[0]):
        p, c = _split(batch["input_ids"][r], batch["attention_mask"][r], batch["completion_mask"][r])
        wanted = bool(batch["label"][r])
        items.append(PreferenceEncoded(p, c if wanted else None, None if wanted else c))
    with torch.no_grad():
        ours = _loss(KTO(beta=0.1), items, _same_lora(tr, tiny), tiny)
    assert ours == pytest.approx(theirs, abs=1e-5)


def test_unlikelihood_pushes_the_rejected_label_down(tiny):
    """A negative row's term is -log(1 - p(answer)); its gradient lowers p(answer)."""
    tok = tiny.tokenizer
    prompt = tok("Text: fine\nCategory:")["input_ids"]
    answer = tok(" good", add_special_tokens=False)["input_ids"]
    module = LoraModule(
        tiny.model,
        make_config("lora", **LORA),
        [n for n, m in tiny.model.named_modules() if n.endswith(("q_proj", "v_proj"))],
    )
    with torch.no_grad():
        for p in module.lora_B.values():
            p.normal_(0, 0.1)
    logprobs = lambda i, a, t: target_token_logprobs(module, i, a, t)  # noqa: E731
    opt = torch.optim.SGD(module.parameters(), lr=0.5)
    pos, neg = [Encoded(prompt, answer)], [Encoded(prompt, answer, negative=True)]
    obj = TokenNLL()
    obj.bind(pos, None, pad_id(tok), "cpu")
    for _ in range(40):  # first make the answer likely, as a served answer is
        opt.zero_grad()
        obj.loss_sum(logprobs, [0])[0].backward()
        opt.step()
    with torch.no_grad():
        seq = float(logprobs(*_collated(neg, tok))[1].sum())
    assert math.exp(seq) > 0.2
    obj.bind(neg, None, pad_id(tok), "cpu")
    loss, _ = obj.loss_sum(logprobs, [0])
    assert float(loss.detach()) == pytest.approx(-math.log(1 - math.exp(seq)) * len(answer), rel=1e-4)
    opt.zero_grad()
    loss.backward()
    opt.step()
    with torch.no_grad():
        after = float(logprobs(*_collated(neg, tok))[1].sum())
    assert after < seq - 0.1


def _collated(items, tok):
    from adaptlab.training.batching import collate

    b = collate(items, pad_id(tok))
    return b["input_ids"], b["attention_mask"], b["target_mask"]


def test_dpo_refuses_unpaired_rows(tiny):
    with pytest.raises(ValueError, match="not pairs"):
        DPO().bind([PreferenceEncoded([2, 5], [6], None)], tiny.model, 0, "cpu")


def test_preference_rows_round_trip(tmp_path):
    from adaptlab.data.loading import load_file, write_jsonl

    p = tmp_path / "p.jsonl"
    rows = [
        {"prompt": "a", "chosen": "x", "rejected": "y"},
        {"prompt": "b", "completion": "z", "label": False},
        {"prompt": "b", "completion": "w", "label": True},
    ]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = load_file(p)
    assert data.task == "preference"
    assert [(e.label, e.rejected) for e in data.examples] == [("x", "y"), ("", "z"), ("w", None)]
    assert data.spec.pairs(data) == [("a", "x", "y"), ("b", "w", "z")]
    out = tmp_path / "out.jsonl"
    write_jsonl(out, data)
    assert [json.loads(line) for line in out.read_text().splitlines()] == rows


@pytest.mark.parametrize(
    "row, message",
    [
        ({"prompt": "a", "chosen": "x"}, "missing field 'rejected'"),
        ({"prompt": "a", "completion": "x", "label": "maybe"}, "field 'label' must be true or false"),
        ({"prompt": "", "chosen": "x", "rejected": "y"}, "field 'prompt' is empty"),
        (
            {
                "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
                "chosen": "x",
                "rejected": "y",
            },
            "ending with the user's turn",
        ),
    ],
)
def test_bad_preference_rows_name_line_and_field(tmp_path, row, message):
    from adaptlab.data.loading import DataError, load_file

    p = tmp_path / "p.jsonl"
    good = (
        {"prompt": "ok", "chosen": "x", "rejected": "y"}
        if "prompt" in row
        else {"messages": [{"role": "user", "content": "hi"}], "chosen": "x", "rejected": "y"}
    )
    p.write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(DataError, match=rf"p.jsonl:2: .*{message}"):
        load_file(p)
