"""Automatic prompt optimisation under a budget of model calls.

Candidates are (instruction, exemplar set) pairs: the built-in instruction paraphrases plus the
user's, crossed with no exemplars, a few random class-balanced sets, and one *bootstrapped* set
(train examples the model already labels correctly with the largest margin, the classification
analogue of DSPy's BootstrapFewShot). MIPRO-style joint search over both, with successive halving
instead of a Bayesian surrogate: every round scores the surviving candidates on the next slice of
dev (16, 32, 64, ... examples in total, same examples for all), keeps the better half, and
stops when one is left, dev is used up, or the next round would exceed the call budget. The
budget is never exceeded: a round that does not fit whole is shortened to what fits.

Written here rather than taken from DSPy: DSPy optimises LM programs through free-text answers
and a proposer LM; label scoring (exact log-probabilities of each label) is both cheaper and a
sharper signal, and the 270M model is too small to propose instructions.
"""

from __future__ import annotations

import dataclasses
import math
import random
from pathlib import Path

from adaptlab.backends.base import Backend
from adaptlab.data.loading import TaskData
from adaptlab.evaluation.text_metrics import rouge_l
from adaptlab.prompts import default_template, instruction_paraphrases, load_template
from adaptlab.strategies.prompting import PromptArtifact, PromptStrategy, pairs, select_balanced, select_random


class _Budget:
    def __init__(self, backend: Backend, limit: int):
        self.backend, self.limit, self.start = backend, limit, backend.calls

    @property
    def used(self) -> int:
        return self.backend.calls - self.start

    @property
    def left(self) -> int:
        return self.limit - self.used


def halving_rounds(n: int, first: int, dev_rows: int | None, left, cal: int):
    """The successive halving's rounds, one schedule for the search and for its cost: yields
    ``(alive, done, want, cal)`` per round, the ``alive`` best candidates scored on dev rows
    ``done:want`` (and ``cal`` calibration calls each, in the first round). Each round doubles the rows
    and halves the candidates, until one is left or dev (``dev_rows``; None: unknown, unbounded) is
    used up. ``left()`` gives the calls left when a round is planned (the caller spends them): a
    round it cannot pay for in full is shortened for all alike, and a first round that cannot give
    each candidate one row keeps the candidates it can score."""
    cap = dev_rows if dev_rows else math.inf
    alive, done, target, rnd = n, 0, first, 0
    while alive:
        c = cal if rnd == 0 else 0
        want = min(target, cap)
        if alive * (want - done + c) > left():
            want = min(done + max(0, (left() - alive * c) // alive), cap)
        if want <= done:
            afford = left() // (1 + c)
            if rnd == 0 and 1 <= afford < alive:
                alive = afford
                continue
            return
        yield alive, done, int(want), c
        if alive == 1 or want >= cap:
            return
        alive, done, target, rnd = math.ceil(alive / 2), int(want), int(want) * 2, rnd + 1


class PromptSearchStrategy(PromptStrategy):
    name = "prompt_search"
    scores_dev = False  # the winner's dev score comes from the search: no calls beyond the budget

    @classmethod
    def planned_calls(cls, config) -> int:
        return config.budget_calls

    @classmethod
    def planned_extra_work(cls, config, task: str, train_rows: int | None = None, dev_rows: int | None = None):
        """Each candidate (instruction x exemplar set) encodes its own prompt start once per slice of
        dev it scores in the successive halving (:meth:`_race`, followed here step by step within the
        call budget; ``dev_rows``, when known, ends it as the dev split does), and the bootstrap and
        the calibration score rows against every label. Counted because the call count alone priced
        Banking77's search at 135 s where it took 265 s: its 30 candidates encoded their 426-token
        starts 59 times, and the bootstrap scored 64 rows against 77 labels."""
        from adaptlab.tasks import get_task

        clf = get_task(task).closed_labels
        sets = (1 if config.zero_shot_candidate or config.k == 0 else 0) + (config.exemplar_sets if config.k else 0)
        boot = 0
        if config.k and config.bootstrap and clf:
            boot = min(config.bootstrap, config.budget_calls // 4, train_rows or config.bootstrap)
        sets += 1 if boot else 0
        fields = load_template(config.template or default_template(task), task).fields
        cands = len(cls(config).instructions(task)) * sets if "instruction" in fields else sets
        cal = len(config.content_free) if config.calibrate and clf else 0
        left = [config.budget_calls - boot]
        slices = calibrated = 0
        for alive, done, want, c in halving_rounds(cands, config.first_round, dev_rows, lambda: left[0], cal):
            left[0] -= alive * (want - done + c)
            slices, calibrated = slices + alive, calibrated + alive * c
        return slices, boot + calibrated

    @classmethod
    def reads_rows_at_most(cls, config) -> int:
        # from train: each random class-balanced exemplar set, the k reserve exemplars and the rows
        # the bootstrap scores (a random sample; classification only, counted always); the successive
        # halving scores the dev split, whose size does not follow the train size
        return 1 if config.k == 0 else (config.exemplar_sets + 1) * config.k + config.bootstrap

    def instructions(self, task: str) -> list[str]:
        cfg = self.config
        out = instruction_paraphrases(task) if cfg.builtin_instructions else []
        out += cfg.instructions
        if cfg.instructions_file:
            path = Path(cfg.instructions_file)
            if not path.exists():
                raise ValueError(f"{path}: instructions file not found")
            out += [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        seen: set[str] = set()
        return [i for i in out if not (i in seen or seen.add(i))]

    def search(self, backend, train, dev, common) -> PromptArtifact:
        if dev is None or not len(dev):
            raise ValueError("prompt_search needs a dev split to select on")
        budget = _Budget(backend, self.config.budget_calls)
        trace: list[dict] = []
        cands, n_instructions, n_sets = self._candidates(backend, train, budget, trace, common)
        dev_ex = list(dev.examples)
        random.Random(self.config.seed).shuffle(dev_ex)
        self._race(cands, dev_ex, budget, trace)
        assert budget.used <= self.config.budget_calls, "prompt_search exceeded its call budget"
        scored = [c for c in cands if c["n"]]
        best = max(scored, key=lambda c: (c["n"], c["score"] / c["n"], -c["id"]))
        art = best["art"]
        art.template = dataclasses.replace(art.template, name=f"search-{best['id']}")
        art.trace = trace
        art.metrics["search"] = {
            "candidates": len(cands),
            "instructions": n_instructions,
            "exemplar_sets": n_sets,
            "calls_used": budget.used,
            "budget_calls": self.config.budget_calls,
            "best": {
                "candidate": best["id"],
                "instruction": best["instruction"],
                "exemplars": best["set"],
                "dev_metric": best["score"] / best["n"],
                "dev_examples": best["n"],
            },
        }
        art.metrics["dev"] = {"metric": best["score"] / best["n"], "n": best["n"]}  # calibrated already if asked
        return art

    def _candidates(self, backend, train: TaskData, budget: _Budget, trace: list, common: dict):
        """(instruction, exemplar set) candidates: no exemplars, random balanced sets and, budget
        allowing, a bootstrapped set. Returns (candidates, instruction count, exemplar set count)."""
        cfg = self.config
        frame = cfg.template_for(train.task, backend)
        clf = train.spec.closed_labels
        labels = train.labels if clf else None
        instructions = self.instructions(train.task) if "instruction" in frame.fields else [frame.instruction]

        def make(instr: str, exemplars, name: str) -> PromptArtifact:
            t = frame.with_instruction(instr, name) if "instruction" in frame.fields else frame
            rest = [p for p in pairs(train.examples) if p not in exemplars][: max(cfg.k, 1)]
            return PromptArtifact(
                self.name,
                backend,
                cfg,
                t,
                train.task,
                labels,
                exemplars=exemplars,
                reserve=rest,
                selection="fixed",
                k=len(exemplars),
                **common,
            )

        sets: list[tuple[str, list]] = []
        if cfg.zero_shot_candidate or cfg.k == 0:
            sets.append(("none", []))
        if cfg.k > 0:
            select = select_balanced if clf else select_random
            for s in range(cfg.exemplar_sets):
                sets.append((f"balanced-{s}", pairs(select(train, cfg.k, cfg.seed + s))))
            if cfg.bootstrap and clf and backend.supports_scores:
                n = min(cfg.bootstrap, len(train), budget.left // 4)
                if n >= 1:
                    boot = self._bootstrap(make(instructions[0], [], "bootstrap"), train, n, cfg)
                    trace.append({"step": "bootstrap", "train_scored": n, "kept": len(boot), "calls_used": budget.used})
                    if boot:
                        sets.append(("bootstrap", boot))
        cands = [
            {
                "id": c,
                "instruction": ins,
                "set": name,
                "art": make(ins, ex, f"cand-{c}"),
                "score": 0.0,
                "n": 0,
                "calibrated": False,
            }
            for c, (ins, (name, ex)) in enumerate((i, s) for i in instructions for s in sets)
        ]
        return cands, len(instructions), len(sets)

    def _race(self, cands: list[dict], dev_ex: list, budget: _Budget, trace: list) -> None:
        """Successive halving (:func:`halving_rounds`): score the survivors on the next slice of dev,
        keep the better half."""
        cfg = self.config
        cal_cost = len(cfg.content_free) if cfg.calibrate else 0
        alive = cands
        for rnd, (n, done, want, _) in enumerate(
            halving_rounds(len(cands), cfg.first_round, len(dev_ex), lambda: budget.left, cal_cost)
        ):
            alive = alive[:n]  # the better half of the last round (or what the budget can score)
            for c in alive:
                if cfg.calibrate and not c["calibrated"]:
                    c["art"].fit_calibration(list(cfg.content_free))
                    c["calibrated"] = True
                c["score"] += self._score(c["art"], dev_ex[done:want])
                c["n"] = want
            alive.sort(key=lambda c: (-c["score"] / c["n"], c["id"]))
            for c in alive:
                trace.append(
                    {
                        "step": f"round-{rnd}",
                        "candidate": c["id"],
                        "instruction": c["instruction"],
                        "exemplars": c["set"],
                        "dev_examples": c["n"],
                        "metric": c["score"] / c["n"],
                        "calls_used": budget.used,
                    }
                )
        if cands and not any(c["n"] for c in cands):
            raise ValueError(
                f"prompt_search: budget_calls={cfg.budget_calls} cannot score a single "
                f"candidate (bootstrap and calibration used {budget.used})"
            )

    @staticmethod
    def _score(art: PromptArtifact, part) -> float:
        """Sum of the per-example metric (accuracy or ROUGE-L) of ``art`` on ``part``."""
        if art.spec.closed_labels:
            pred = art.predict([ex.text for ex in part])
            return float(sum(p == ex.label for p, ex in zip(pred, part)))
        out = art.predict([ex.text for ex in part])
        return float(sum(rouge_l(o, ex.label) for o, ex in zip(out, part)))

    def _bootstrap(self, art: PromptArtifact, train: TaskData, n: int, cfg) -> list[tuple[str, str]]:
        """Train examples the prompt already gets right, most confident first, one per class in turn."""
        sample = select_random(train, n, cfg.seed + 101)
        raw = art.raw_scores([ex.text for ex in sample])  # (n, L)
        top2 = raw.topk(min(2, raw.shape[1]), dim=1)
        idx = {lab: i for i, lab in enumerate(art.labels)}
        right = []
        for r, ex in enumerate(sample):
            if top2.indices[r, 0].item() == idx[ex.label]:
                margin = (top2.values[r, 0] - top2.values[r, -1]).item()
                right.append((margin, ex))
        right.sort(key=lambda m: -m[0])
        by_class: dict[str, list] = {}
        for _, ex in right:
            by_class.setdefault(ex.label, []).append(ex)
        out = []
        depth = 0
        while len(out) < cfg.k and any(depth < len(v) for v in by_class.values()):
            for lab in list(by_class):
                if depth < len(by_class[lab]) and len(out) < cfg.k:
                    out.append(by_class[lab][depth])
            depth += 1
        random.Random(cfg.seed).shuffle(out)
        return pairs(out)
