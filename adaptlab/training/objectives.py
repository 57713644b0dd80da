"""The losses the one training loop calls (a task type chooses one: :meth:`TaskSpec.objective`).

- :class:`TokenNLL`: the mean negative log-likelihood of the target tokens (supervised rows), plus,
  for rows marked ``negative`` (an answer rated down without a correction), the *unlikelihood*
  ``-log(1 - p(answer | input))`` of the whole answer (Welleck et al., 2019). For a classifier that
  is "a penalty on the rejected label": it pushes probability off the label users said was wrong
  and onto the others, and it vanishes once the model no longer gives that label.
- :class:`DPO`: ``-log sigmoid(beta * ((log pi(c) - log ref(c)) - (log pi(r) - log ref(r))))`` per
  pair (Rafailov et al., 2023), as TRL's ``DPOTrainer`` with ``loss_type="sigmoid"``.
- :class:`KTO`: per completion ``w_D (1 - sigmoid(beta * (log-ratio - z)))`` if desirable and
  ``w_U (1 - sigmoid(beta * (z - log-ratio)))`` if not, with ``z`` the batch's estimate of
  KL(pi || ref) from mismatched (prompt, completion) pairs, detached and clipped at 0 (Ethayarajh
  et al., 2024), as TRL's ``KTOTrainer``.

The reference of both preference losses is the base model itself: adaptations never change it
(:class:`adaptlab.models.adaptation.AdapterModule` holds it apart), so the reference costs no
copy. Its log-probabilities do not change either, so each is computed once per completion and
kept (TRL's ``precompute_ref_log_probs``, done lazily here). Written here rather than by running
TRL's trainers because the loop's target-only LM head (Gemma's 262k vocabulary) is what makes
training fast on a CPU; ``tests/training/test_objectives.py`` checks the losses against TRL's on
the same batch, and ``bench/preference.py`` compares the speed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from adaptlab.models.runtime import PlainLM, per_row_sum, target_logprobs
from adaptlab.training.batching import Encoded, collate

# (input_ids, attention_mask, target_mask) -> (rows (M,), log p (M,)) of the target tokens.
LogProbs = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class PreferenceEncoded:
    """A prompt with a wanted completion, an unwanted one, or both (a pair)."""

    prompt: list[int]
    chosen: list[int] | None = None
    rejected: list[int] | None = None

    def __post_init__(self):
        if not self.chosen and not self.rejected:
            raise ValueError("a preference row needs a chosen or a rejected completion")

    def __len__(self) -> int:  # for length bucketing: the longer of the two sequences
        return len(self.prompt) + max(len(self.chosen or ()), len(self.rejected or ()))

    @property
    def paired(self) -> bool:
        return bool(self.chosen) and bool(self.rejected)

    def completions(self) -> list[tuple[list[int], bool]]:
        """(completion ids, desirable) for each completion of the row: chosen first."""
        return [(c, d) for c, d in ((self.chosen, True), (self.rejected, False)) if c]

    @property
    def n_targets(self) -> int:
        return len(self.completions())


class Objective:
    """A loss over a micro-batch of items. ``weight(item)`` is what an item adds to the step's
    normaliser (target tokens for the NLL, loss terms for the preference losses), so a step with
    gradient accumulation is the mean over every item of the step."""

    name = ""
    uses_reference = False

    def bind(self, items: list, reference: torch.nn.Module | None, pad_id: int, device) -> None:
        self.items, self.pad_id, self.device = items, pad_id, device
        self.reference = PlainLM(reference) if reference is not None else None
        if self.uses_reference and self.reference is None:
            raise ValueError(f"{self.name}: needs a reference model (the base model behind an adaptation)")
        self._ref_cache: dict = {}

    def weight(self, item) -> int:
        raise NotImplementedError

    def loss_sum(self, logprobs: LogProbs, idx: list[int]) -> tuple[torch.Tensor, int]:
        """The sum of the loss terms of items ``idx`` (to be divided by the step's total weight) and
        the tokens the forward pass read."""
        raise NotImplementedError

    # ------------------------------------------------------------------ shared by the preference losses
    def _batch(self, rows: list[Encoded]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device) for k, v in collate(rows, self.pad_id).items()}

    def _sequence_logps(self, logprobs: LogProbs, batch) -> torch.Tensor:
        rows, logp = logprobs(batch["input_ids"], batch["attention_mask"], batch["target_mask"])
        return per_row_sum(rows, logp, batch["input_ids"].shape[0])

    @torch.no_grad()
    def _reference_logps(self, keys: list, rows: list[Encoded]) -> torch.Tensor:
        """The reference's summed log-probabilities of ``rows``, each computed once and kept by key."""
        todo = [i for i, k in enumerate(keys) if k not in self._ref_cache]
        if todo:
            batch = self._batch([rows[i] for i in todo])
            values = (
                target_logprobs(self.reference, batch["input_ids"], batch["attention_mask"], batch["target_mask"])
                .float()
                .tolist()
            )
            self._ref_cache.update({keys[i]: v for i, v in zip(todo, values)})
        return torch.tensor([self._ref_cache[k] for k in keys], device=self.device)


class TokenNLL(Objective):
    """Supervised rows: token-mean NLL; negative rows: the unlikelihood of the whole answer."""

    name = "nll"

    def weight(self, item: Encoded) -> int:
        return item.n_targets

    def loss_sum(self, logprobs, idx):
        items = [self.items[i] for i in idx]
        batch = self._batch(items)
        rows, logp = logprobs(batch["input_ids"], batch["attention_mask"], batch["target_mask"])
        negative = torch.tensor([it.negative for it in items], device=logp.device)
        if not bool(negative.any()):
            return -logp.sum(), int(batch["attention_mask"].sum())
        neg_tok = negative[rows]
        loss = -logp[~neg_tok].sum()
        seq = per_row_sum(rows, logp, len(items))
        unlikely = -log1mexp(seq[negative])
        # Each negative row weighs as many tokens as its answer has, as a supervised row would.
        n_tok = torch.tensor(
            [items[i].n_targets for i in negative.nonzero().flatten().tolist()], dtype=logp.dtype, device=logp.device
        )
        return loss + (unlikely * n_tok).sum(), int(batch["attention_mask"].sum())


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, accurate at both ends (Maechler, 2012): log1p(-exp(x)) where
    exp(x) is small, log(-expm1(x)) where it is near 1. x is clipped just below 0 (p = 1 exactly
    would make the penalty infinite)."""
    x = x.clamp(max=-1e-6)
    return torch.where(x < -0.6931, torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


class DPO(Objective):
    name = "dpo"
    uses_reference = True

    def __init__(self, beta: float = 0.1):
        self.beta = beta

    def bind(self, items, reference, pad_id, device):
        unpaired = sum(not it.paired for it in items)
        if unpaired:
            raise ValueError(
                f"dpo: {unpaired} of {len(items)} preference rows are not pairs (chosen and "
                f"rejected); use preference_loss='kto' for unpaired rows"
            )
        super().bind(items, reference, pad_id, device)

    def weight(self, item) -> int:
        return 1

    def loss_sum(self, logprobs, idx):
        items = [self.items[i] for i in idx]
        rows = [Encoded(it.prompt, it.chosen) for it in items] + [Encoded(it.prompt, it.rejected) for it in items]
        batch = self._batch(rows)
        policy = self._sequence_logps(logprobs, batch)
        keys = [(i, True) for i in idx] + [(i, False) for i in idx]
        ratio = policy - self._reference_logps(keys, rows)
        n = len(items)
        losses = dpo_losses(ratio[:n], ratio[n:], self.beta)
        return losses.sum(), int(batch["attention_mask"].sum())


def dpo_losses(chosen_ratio: torch.Tensor, rejected_ratio: torch.Tensor, beta: float) -> torch.Tensor:
    return -F.logsigmoid(beta * (chosen_ratio - rejected_ratio))


class KTO(Objective):
    name = "kto"
    uses_reference = True

    def __init__(self, beta: float = 0.1, desirable_weight: float = 1.0, undesirable_weight: float = 1.0):
        self.beta, self.w_d, self.w_u = beta, desirable_weight, undesirable_weight

    def weight(self, item) -> int:
        return item.n_targets

    def loss_sum(self, logprobs, idx):
        # One row per completion; the KL rows pair each prompt with the next row's completion in the
        # micro-batch (TRL cycles completions by one the same way).
        comps = [(i, j, c, d) for i in idx for j, (c, d) in enumerate(self.items[i].completions())]
        rows = [Encoded(self.items[i].prompt, c) for i, _, c, _ in comps]
        kl_rows = [Encoded(self.items[comps[k][0]].prompt, comps[(k + 1) % len(comps)][2]) for k in range(len(comps))]
        batch = self._batch(rows + kl_rows)
        policy = self._sequence_logps(logprobs, batch)
        n = len(rows)
        ratio = policy[:n] - self._reference_logps([(i, j) for i, j, _, _ in comps], rows)
        kl_keys = [("kl", comps[k][0], comps[(k + 1) % n][0], comps[(k + 1) % n][1]) for k in range(n)]
        kl = (policy[n:].detach() - self._reference_logps(kl_keys, kl_rows)).mean().clamp(min=0)
        if n == 1:  # no other completion to pair with: the "mismatch" is the row itself, whose log-ratio
            kl = torch.zeros((), device=ratio.device)  # would cancel its own gradient (TRL refuses batch size 1)
        desirable = torch.tensor([d for *_, d in comps], device=ratio.device)
        losses = kto_losses(ratio, desirable, kl, self.beta, self.w_d, self.w_u)
        return losses.sum(), int(batch["attention_mask"].sum())


def kto_losses(
    ratio: torch.Tensor, desirable: torch.Tensor, kl: torch.Tensor, beta: float, w_d: float = 1.0, w_u: float = 1.0
) -> torch.Tensor:
    return torch.where(
        desirable, w_d * (1 - torch.sigmoid(beta * (ratio - kl))), w_u * (1 - torch.sigmoid(beta * (kl - ratio)))
    )


OBJECTIVES = {"nll": TokenNLL, "dpo": DPO, "kto": KTO}
