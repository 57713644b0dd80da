"""The local transformers model as a backend, through adaptlab's shared-prefix label scorer."""

from __future__ import annotations

import torch

from adaptlab.backends.base import Backend
from adaptlab.evaluation.generation import generate
from adaptlab.evaluation.scoring import score_labels
from adaptlab.models.decoding import Sampling
from adaptlab.models.runtime import (
    as_lm,
    encode_prompts,
    has_chat_template,
    module_device,
    pad_id,
    render_chat,
    right_pad,
    target_logprobs,
)
from adaptlab.training.batching import Encoded, collate


class LocalBackend(Backend):
    """A base model, or an adapted module on it (for "fine-tuned model + few-shot prompt").

    ``module`` defaults to the plain base model; ``fingerprint`` is the base model's, so a
    prompt artifact made here loads on the same base and nowhere else.
    """

    supports_scores = True

    def __init__(
        self,
        base,
        module: torch.nn.Module | None = None,
        batch_size: int = 16,
        max_prompt_tokens: int = 2048,
        generate_batch_size: int | None = None,
    ):
        super().__init__()
        self.base = base
        self.module = module if module is not None else base.model
        self.tokenizer = base.tokenizer
        self.batch_size = batch_size
        self.generate_batch_size = generate_batch_size or batch_size
        self.max_prompt_tokens = max_prompt_tokens
        self.name = f"local:{base.name}"
        self.fingerprint = base.fingerprint

    def _count(self, prompts: list[str]) -> None:
        self.calls += len(prompts)
        self.prompt_tokens += sum(self.count_tokens(p) for p in prompts)

    @property
    def has_chat_template(self) -> bool:
        return has_chat_template(self.tokenizer)

    def render_chat(self, messages: list[dict]) -> str:
        """The conversation in the base model's own chat template."""
        return render_chat(self.tokenizer, messages)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text)["input_ids"])

    @torch.no_grad()
    def _scores(self, prompts: list[str], label_texts: list[str], top1: bool) -> torch.Tensor:
        self._count(prompts)
        if hasattr(self.module, "eval"):
            self.module.eval()
        return score_labels(
            self.module,
            self.tokenizer,
            prompts,
            label_texts,
            batch_size=self.batch_size,
            max_prompt_tokens=self.max_prompt_tokens,
            top1=top1,
        )

    def score(self, prompts: list[str], label_texts: list[str]) -> torch.Tensor:
        return self._scores(prompts, label_texts, top1=False)

    def best(self, prompts: list[str], label_texts: list[str]) -> list[int]:
        """The exact top-1 search: the same answers as ``score(...).argmax``, most labels unscored."""
        return self._scores(prompts, label_texts, top1=True).argmax(dim=1).tolist()

    @torch.no_grad()
    def continuation_logprobs(self, prompts: list[str], continuations: list[str]) -> list[tuple[float, int]]:
        """(summed log-probability, tokens) of each continuation after its prompt (an answer to judge)."""
        self._count(prompts)
        if hasattr(self.module, "eval"):
            self.module.eval()
        prompt_ids = encode_prompts(self.tokenizer, prompts, self.max_prompt_tokens)
        items = [
            Encoded(p, self.tokenizer(c, add_special_tokens=False)["input_ids"] or [self.tokenizer.eos_token_id])
            for p, c in zip(prompt_ids, continuations)
        ]
        order = sorted(range(len(items)), key=lambda i: len(items[i]))
        out: list[tuple[float, int]] = [(0.0, 0)] * len(items)
        device = module_device(self.module)
        for s in range(0, len(order), self.batch_size):
            rows = order[s : s + self.batch_size]
            b = {k: v.to(device) for k, v in collate([items[i] for i in rows], pad_id(self.tokenizer)).items()}
            sums = target_logprobs(self.module, b["input_ids"], b["attention_mask"], b["target_mask"])
            for i, v in zip(rows, sums.tolist()):
                out[i] = (v, len(items[i].target))
        return out

    @torch.no_grad()
    def generate(
        self,
        prompts: list[str],
        max_new_tokens: int = 64,
        num_beams: int = 1,
        stop: list[str] | None = None,
        sampling: Sampling | None = None,
    ) -> list[str]:
        self._count(prompts)
        return generate(
            self.module,
            self.tokenizer,
            prompts,
            max_new_tokens=max_new_tokens,
            num_beams=num_beams,
            batch_size=self.generate_batch_size,
            max_prompt_tokens=self.max_prompt_tokens,
            sampling=sampling,
            stop=stop,
        )

    @torch.no_grad()
    def embed(self, texts: list[str], batch_size: int = 32) -> torch.Tensor:
        """Mean-pooled last hidden states of the base model: (N, H), L2-normalised."""
        self.calls += len(texts)
        lm = as_lm(self.module)
        device = module_device(self.module)
        ids = encode_prompts(self.tokenizer, texts, 256)
        out = torch.empty(len(texts), lm.hf_model().config.hidden_size)
        order = sorted(range(len(texts)), key=lambda i: len(ids[i]))
        for s in range(0, len(order), batch_size):
            rows = order[s : s + batch_size]
            x, att = right_pad([ids[i] for i in rows], pad_id(self.tokenizer), device)
            h = lm.hidden(x, att).float()  # (B, T, H)
            m = att.unsqueeze(-1).float()
            if x.shape[1] > 1 and self.tokenizer.bos_token_id is not None:
                m[:, 0] = (x[:, 0] != self.tokenizer.bos_token_id).float().unsqueeze(-1)  # BOS carries no content
            pooled = (h * m).sum(1) / m.sum(1)  # (B, H)
            out[rows] = torch.nn.functional.normalize(pooled, dim=-1).cpu()
        return out
