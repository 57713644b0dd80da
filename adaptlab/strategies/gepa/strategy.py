"""An LM-proposed prompt optimizer: GEPA (Agrawal et al. 2025, "Reflective prompt evolution can
outperform reinforcement learning") on the ``gepa`` package, with adaptlab's evaluator.

A candidate is two texts: the **instruction** (the template's ``{instruction}`` slot) and the
**exemplars** (a JSON list of (input, answer) pairs shown before the input). Each iteration GEPA
picks a candidate from its Pareto front over the dev rows, scores it on a minibatch of train
examples, and mutates one component from what it saw:

- the instruction: the **proposer** LM reads the current instruction and the minibatch's inputs,
  outputs and feedback (wrong label and the right one; a generation's ROUGE-L and reference) and
  writes a new one (gepa's own reflection prompt, ``InstructionProposalSignature``);
- the exemplars: the examples the prompt got wrong enter the exemplar set with their right
  answers, the oldest leave (no LM call; DSPy's bootstrapping learns from successes, this from
  failures).

The child is scored on the same minibatch, and if better, on the dev rows, where it joins the front.

What a row scores: for classification, 1 for the right label and 0 for a wrong one or for an answer
that names no label (a parsed endpoint's fallback label does not count); on imbalanced train data each
right answer is weighted by its class's rarity (``metric=auto``), since a prompt that makes the model
answer the majority class (or nothing, falling back to it) otherwise wins on accuracy. Generation and
chat score the task type's ranking metric (ROUGE-L by default) per row.

Why gepa and not DSPy's MIPROv2/GEPA: DSPy optimises DSPy programs whose modules parse free-text
answers; here the evaluator must stay the task type's own (classification scores each label's
log-probability, exactly as every other strategy is scored; generation and chat use the task
metric), and gepa's ``GEPAAdapter`` takes any evaluator with per-example scores. What adaptlab adds
around it:

- **One budget for both models**: the prompted model's calls (an example scored, a calibration
  input) plus the proposer's calls, never exceeded: the search stops before an iteration that might
  not fit whole. A token cap on the proposer (``proposer_tokens``) is checked before each call.
- **Every call counted**: the proposer's calls and tokens (and, on an endpoint, its dollars) are
  in the artifact's metrics and the compare's spend.
- **Resumable**: every proposal and every (candidate, example) score is journalled in the run
  folder (JSON lines, no pickle: gepa's own ``run_dir`` state is a pickle) and replayed on a rerun of
  the same search, so a killed search continues where it stopped without paying again; the
  budget still counts replayed calls, so the rerun walks the same path.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from adaptlab.backends.base import Backend
from adaptlab.data.loading import TaskData
from adaptlab.data.splits import subsample
from adaptlab.prompts import as_instruction
from adaptlab.strategies.base import NO_LABEL
from adaptlab.strategies.prompting import PromptArtifact, PromptStrategy, pairs

JOURNAL = "gepa_journal.jsonl"
CHAT_SEED = "Reply to the user's last message as a helpful assistant would."


class _OutOfBudget(Exception):
    """Raised inside the search when the next call would pass the budget (never reached in practice:
    the stopper ends the search first; kept as the guarantee)."""


class _Journal:
    """Answers already obtained by this search, replayed on a rerun: ``key -> value`` in JSON lines.
    A line cut short by a kill is ignored."""

    def __init__(self, folder: Path | None, identity: str):
        self.path = folder / JOURNAL if folder is not None else None
        self.identity = identity
        self.entries: dict[str, object] = {}
        if self.path is not None and self.path.exists():
            lines = self.path.read_text(encoding="utf-8").splitlines()
            try:
                head = json.loads(lines[0]) if lines else {}
            except json.JSONDecodeError:
                head = {}
            if head.get("identity") == identity:
                for line in lines[1:]:
                    try:
                        e = json.loads(line)
                        self.entries[e["key"]] = e["value"]
                    except (json.JSONDecodeError, KeyError, TypeError):
                        continue
            else:  # another search's journal: start over
                self.path.unlink()
        if self.path is not None and not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps({"identity": identity}) + "\n", encoding="utf-8")
        self.loaded = set(self.entries)  # answers from an earlier run of this search
        self.replayed = 0

    def get(self, key: str):
        return self.entries.get(key)

    def put(self, key: str, value) -> None:
        self.entries[key] = value
        if self.path is not None:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps({"key": key, "value": value}) + "\n")


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


class _Search:
    """gepa's adapter (``evaluate``, ``make_reflective_dataset``), its proposal function and its
    stopper, over one budget. Data instances are indices into ``self.items`` (train, then dev)."""

    propose_new_texts = None  # the proposal goes through custom_candidate_proposer (ours)

    def __init__(
        self,
        cfg,
        backend: Backend,
        proposer: Backend,
        train: TaskData,
        dev: TaskData,
        common: dict,
        journal: _Journal,
        progress: bool,
    ):
        self.cfg, self.backend, self.proposer = cfg, backend, proposer
        self.train, self.common, self.journal = train, common, journal
        self.frame = instruction_frame(cfg, train.task, backend)
        self.clf = train.spec.closed_labels
        self.labels = train.labels if self.clf else None
        self.items = list(train.examples) + list(dev.examples)
        self.weights = class_weights(train, cfg.metric) if self.clf else {}
        self.calls = 0  # the prompted model's calls (replayed ones too: the budget walks the same path)
        self.proposer_calls = 0
        self.proposer_tokens = 0
        self.paid_calls = 0  # of those, the calls actually sent (not replayed)
        self.out_of_tokens = False
        self.trace: list[dict] = []
        self._arts: dict[str, PromptArtifact] = {}
        self._seen: set[str] = set()
        self.stopped_by: str | None = None
        self.error: Exception | None = None  # the first error a call raised: the search stops and raises it
        self._last_used, self._idle = -1, 0
        self._idle_limit = len(train) // max(1, min(cfg.minibatch, len(train))) + 2  # a pass over train
        cal = len(cfg.content_free) if cfg.calibrate else 0
        self.per_iteration = 2 * cfg.minibatch + 1 + cfg.val_examples + cal
        self.bar = None
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=cfg.budget_calls, desc="gepa", unit="call", leave=False)

    # -------------------------------------------------------------- the budget
    @property
    def used(self) -> int:
        return self.calls + self.proposer_calls

    def _spend(self, n: int, proposer: bool = False) -> None:
        if self.used + n > self.cfg.budget_calls:
            raise _OutOfBudget
        if proposer:
            self.proposer_calls += n
        else:
            self.calls += n
        if self.bar is not None:
            self.bar.update(n)

    def _first(self, key: str) -> bool:
        """Whether this search asks for ``key`` the first time (a call the budget counts, even when the
        journal has its answer from a run that was killed: so a rerun walks the same path); asking
        again for what this search already has costs nothing."""
        if key in self._seen:
            return False
        self._seen.add(key)
        self.journal.replayed += key in self.journal.loaded
        return True

    def __call__(self, state) -> bool:
        """gepa's stopper: stop before an iteration that might not fit the budget whole, when the
        proposer's token cap is reached, or when a whole pass over train found nothing to reflect
        on (every minibatch perfect: gepa skips those without a call, so the budget would not end it)."""
        if self.error is not None:
            return True
        if self.used == self._last_used:
            self._idle += 1
        else:
            self._last_used, self._idle = self.used, 0
        if self._idle > self._idle_limit:
            self.stopped_by = "converged"
        elif self.out_of_tokens:
            self.stopped_by = "proposer_tokens"
        elif self.cfg.budget_calls - self.used < self.per_iteration:
            self.stopped_by = "budget"
        return self.stopped_by is not None

    # -------------------------------------------------------------- candidates as artifacts
    def artifact(self, candidate: dict) -> PromptArtifact:
        ck = _key(candidate)
        if ck in self._arts:
            return self._arts[ck]
        t = self.frame.with_instruction(as_instruction(candidate["instruction"], self.clf), f"gepa-{len(self._arts)}")
        shown = [tuple(p) for p in json.loads(candidate.get("exemplars", "[]"))]
        rest = [p for p in pairs(self.train.examples) if p not in shown][: max(self.cfg.k, 1)]
        art = PromptArtifact(
            "gepa",
            self.backend,
            self.cfg,
            t,
            self.train.task,
            self.labels,
            exemplars=shown,
            reserve=rest,
            selection="fixed",
            k=len(shown),
            **self.common,
        )
        if self.cfg.calibrate:
            key = _key("calibration", ck)
            got = self.journal.get(key)
            self._spend(len(self.cfg.content_free) if self._first(key) else 0)
            if got is None:
                self.paid_calls += len(self.cfg.content_free)
                got = art.fit_calibration(list(self.cfg.content_free))
                self.journal.put(key, got)
            else:
                art.calibration = got
        self._arts[ck] = art
        return art

    # -------------------------------------------------------------- gepa's adapter
    def evaluate(self, batch: list[int], candidate: dict, capture_traces: bool = False):
        try:
            return self._evaluate(batch, candidate, capture_traces)
        except Exception as e:  # kept: the search stops and raises it (an endpoint's 401 must not be lost)
            self.error = self.error or e
            raise

    def _evaluate(self, batch: list[int], candidate: dict, capture_traces: bool = False):
        from gepa.core.adapter import EvaluationBatch

        art = self.artifact(candidate)
        ck = _key(candidate)
        found = {i: self.journal.get(_key("eval", ck, i)) for i in batch}
        todo = sorted({i for i, v in found.items() if v is None})
        self._spend(sum(self._first(_key("eval", ck, i)) for i in set(batch) - set(todo)))
        if todo:
            self._spend(len(todo))
            self.paid_calls += len(todo)
            for i, row in zip(todo, self._score(art, [self.items[i] for i in todo])):
                found[i] = row
                self._seen.add(_key("eval", ck, i))
                self.journal.put(_key("eval", ck, i), row)
        rows = [found[i] for i in batch]
        traces = (
            [
                {
                    "input": self.items[i].text,
                    "output": r["output"],
                    "reference": self.items[i].label,
                    "score": r["metric"],
                }
                for i, r in zip(batch, rows)
            ]
            if capture_traces
            else None
        )
        return EvaluationBatch(
            outputs=[r["output"] for r in rows], scores=[float(r["metric"]) for r in rows], trajectories=traces
        )

    def _score(self, art: PromptArtifact, examples: list) -> list[dict]:
        """Each example's output and task metric, in order (the task type's own evaluation: label
        scoring for classification, the ranking metric for generation and chat)."""
        data = self.train.with_examples(examples)
        _, detail, _ = art.spec.evaluate(art, data)
        if self.clf:  # a row per example, in order; an answer that named no label scores 0, not its fallback's
            unparsed = set(getattr(art, "last_unparsed_rows", []))
            return [
                {"output": NO_LABEL, "metric": 0.0}
                if j in unparsed
                else {"output": d["output"], "metric": float(d["metric"]) * self.weights.get(d["reference"], 1.0)}
                for j, d in enumerate(detail)
            ]
        by_input = {d["input"]: d for d in detail}  # generation and chat: a row per distinct input
        return [
            {"output": by_input[ex.text]["output"], "metric": float(by_input[ex.text]["metric"])} for ex in examples
        ]

    def make_reflective_dataset(self, candidate: dict, eval_batch, components_to_update: list[str]) -> dict:
        records = []
        for t in eval_batch.trajectories or []:
            if self.clf:
                feedback = (
                    "Correct."
                    if t["score"] > 0
                    else f"Wrong: the answer named none of the labels. The right answer is: {t['reference']}"
                    if t["output"] == NO_LABEL
                    else f"Wrong. The right answer is: {t['reference']}"
                )
            else:
                feedback = (
                    f"Score {t['score']:.2f} of 1 ({self.train.spec.metric} against the reference). "
                    f"The reference answer is: {t['reference']}"
                )
            records.append(
                {
                    "Inputs": t["input"],
                    "Generated Outputs": t["output"],
                    "Feedback": feedback,
                    "_score": t["score"],
                    "_reference": t["reference"],
                }
            )
        shown = [{k: v for k, v in r.items() if not k.startswith("_")} for r in records]
        return {c: (records if c == "exemplars" else shown) for c in components_to_update}

    # -------------------------------------------------------------- proposals
    def propose(self, candidate: dict, reflective_dataset: dict, components_to_update: list[str]) -> dict:
        try:
            return self._propose(candidate, reflective_dataset, components_to_update)
        except Exception as e:  # gepa logs a proposer's error and goes on, even with raise_on_exception
            self.error = self.error or e
            raise

    def _propose(self, candidate: dict, reflective_dataset: dict, components_to_update: list[str]) -> dict:
        out = {}
        for c in components_to_update:
            if c == "instruction":
                out[c] = self._new_instruction(candidate[c], reflective_dataset[c])
            elif c == "exemplars":
                out[c] = self._new_exemplars(candidate[c], reflective_dataset[c])
        return out

    def _new_instruction(self, current: str, records: list[dict]) -> str:
        from gepa.strategies.instruction_proposal import InstructionProposalSignature

        text = InstructionProposalSignature.prompt_renderer(
            {"current_instruction_doc": current, "dataset_with_feedback": records}
        )
        prompt = (
            text
            if getattr(self.proposer, "chat", False) or not self.proposer.has_chat_template
            else self.proposer.render_chat([{"role": "user", "content": text}])
        )
        key = _key("propose", self.cfg.proposer, prompt, self.cfg.proposer_max_tokens)
        answer = self.journal.get(key)
        if answer is None:
            est = self.proposer.count_tokens(prompt) + self.cfg.proposer_max_tokens
            if self.cfg.proposer_tokens and self.proposer_tokens + est > self.cfg.proposer_tokens:
                self.out_of_tokens = True
                return current
            self._first(key)
            self._spend(1, proposer=True)
            self.paid_calls += 1
            before = self.proposer.usage() if hasattr(self.proposer, "usage") else None
            answer = self.proposer.generate([prompt], max_new_tokens=self.cfg.proposer_max_tokens)[0]
            if before is not None:
                now = self.proposer.usage()
                tokens = (now["prompt_tokens"] - before["prompt_tokens"]) + (
                    now["completion_tokens"] - before["completion_tokens"]
                )
            else:
                tokens = self.proposer.count_tokens(prompt) + self.proposer.count_tokens(answer)
            self.journal.put(key, answer)
            self.journal.put(key + ":tokens", tokens)
        else:  # journalled (an earlier run's, or this one's for the same parent and minibatch): still a
            # proposal, so every iteration spends from the budget and a rerun walks the same path
            self._first(key)
            self._spend(1, proposer=True)
            tokens = self.journal.get(key + ":tokens") or 0
        self.proposer_tokens += int(tokens)
        new = InstructionProposalSignature.output_extractor(answer)["new_instruction"].strip()
        self.trace.append(
            {
                "step": "proposal",
                "component": "instruction",
                "proposed": new[:2000],
                "calls_used": self.used,
                "proposer_tokens": self.proposer_tokens,
            }
        )
        return new[:2000] if new else current

    def _new_exemplars(self, current: str, records: list[dict]) -> str:
        """The examples this prompt got wrong join the exemplar set with their right answers; the
        oldest leave, so at most ``k`` are shown."""
        shown = [tuple(p) for p in json.loads(current or "[]")]
        wrong = [
            (r["Inputs"], r["_reference"])
            for r in sorted(records, key=lambda r: r["_score"])
            if r["_score"] < (1e-9 if self.clf else 1.0) and (r["Inputs"], r["_reference"]) not in shown
        ]
        new = (wrong + shown)[: self.cfg.k]
        self.trace.append(
            {"step": "proposal", "component": "exemplars", "added": len(wrong[: self.cfg.k]), "calls_used": self.used}
        )
        return json.dumps([list(p) for p in new])


def instruction_frame(cfg, task: str, backend: Backend):
    """The template whose instruction evolves: the configured one, or, when the task's default has no
    ``{instruction}`` slot (generation's ``input-output``), the task's first built-in that has one.
    A conversation needs none: its instruction is the system turn."""
    import dataclasses

    from adaptlab.prompts import builtin_templates
    from adaptlab.tasks.base import get_task

    frame = cfg.template_for(task, backend)
    if "instruction" in frame.fields or get_task(task).conversation:
        return frame
    slot = next((name for name, t in builtin_templates(task).items() if "instruction" in t.fields), None)
    if cfg.template is not None or slot is None:
        raise ValueError(f"gepa: template '{frame.name}' has no {{instruction}} slot to evolve")
    return dataclasses.replace(cfg, template=slot).template_for(task, backend)


def class_weights(train: TaskData, metric: str) -> dict[str, float]:
    """What a right answer of each class scores: 1 (accuracy), or the rarest class's train count over
    its own (balanced: a row-mean then ranks prompts as balanced accuracy does, and a prompt that
    answers the majority class everywhere does not win on imbalanced data, as it did in the first
    Financial PhraseBank run: 60% "accuracy" from 199 unparsed answers falling back to 'neutral')."""
    counts: dict[str, int] = {}
    for ex in train.examples:
        counts[ex.label] = counts.get(ex.label, 0) + 1
    if metric == "auto":
        from adaptlab.compare.baselines import imbalanced  # the rule by which a compare ranks by macro-F1

        share = max(counts.values()) / len(train)
        metric = "balanced" if imbalanced({"n_labels": len(train.labels), "largest_share": share}) else "accuracy"
    if metric == "accuracy":
        return {}
    least = min(counts.values())
    return {lab: least / n for lab, n in counts.items()}


class _Quiet:
    """gepa's logger: its lines go into the search's trace, not to stdout."""

    def __init__(self, trace: list):
        self.trace = trace

    def log(self, message: str) -> None:
        self.trace.append({"step": "gepa", "message": str(message)[:500]})


class GepaStrategy(PromptStrategy):
    name = "gepa"
    scores_dev = False  # the winner's dev score comes from the search

    @classmethod
    def planned_calls(cls, config) -> int:
        return config.budget_calls

    def search(self, backend, train, dev, common) -> PromptArtifact:
        import gepa

        cfg = self.config
        if dev is None or not len(dev):
            raise ValueError("gepa needs a dev split to select on")
        frame = instruction_frame(cfg, train.task, backend)
        from adaptlab.backends.endpoints import proposer_backend, proposer_spend

        proposer = proposer_backend(cfg.proposer, backend)
        before = proposer.usage() if hasattr(proposer, "usage") else None
        val = subsample(dev, n=min(cfg.val_examples, len(dev)), seed=cfg.seed)
        identity = _key(
            cfg.__dict__,
            backend.fingerprint,
            getattr(proposer, "fingerprint", ""),
            train.task,
            [(ex.text, ex.label) for ex in train.examples],
            [(ex.text, ex.label) for ex in val.examples],
        )
        journal = _Journal(self.run_dir, identity)
        run = _Search(cfg, backend, proposer, train, val, common, journal, self.progress)
        first = cfg.val_examples + (len(cfg.content_free) if cfg.calibrate else 0)
        if cfg.budget_calls < first + run.per_iteration:
            raise ValueError(
                f"gepa: budget_calls={cfg.budget_calls} is below one iteration: scoring the seed on "
                f"{len(val)} dev rows and one proposal need {first + run.per_iteration} calls"
            )
        # A conversation's instruction is its system message (PromptArtifact.with_system).
        seed = {"instruction": cfg.instruction or frame.instruction or CHAT_SEED}
        if cfg.k > 0:
            seed["exemplars"] = "[]"
        n_train = len(train)
        try:
            result = gepa.optimize(
                seed_candidate=seed,
                trainset=list(range(n_train)),
                valset=list(range(n_train, n_train + len(val))),
                adapter=run,
                custom_candidate_proposer=run.propose,
                stop_callbacks=run,
                reflection_minibatch_size=min(cfg.minibatch, n_train),
                perfect_score=1.0,
                candidate_selection_strategy="pareto",
                module_selector="round_robin",
                logger=_Quiet(run.trace),
                seed=cfg.seed,
                raise_on_exception=True,
                display_progress_bar=False,
            )
        finally:
            if run.bar is not None:
                run.bar.close()
        if run.error is not None:  # a proposer's or the model's error (gepa itself would log it and go on)
            raise run.error
        assert run.used <= cfg.budget_calls, "gepa exceeded its call budget"
        best = result.best_idx
        art = run.artifact(result.candidates[best])
        art.template = art.template.with_instruction(art.template.instruction, f"gepa-{best}")
        art.trace = run.trace + [
            {
                "step": "candidate",
                "candidate": i,
                "parents": result.parents[i],
                "instruction": c["instruction"][:2000],
                "exemplars": len(json.loads(c.get("exemplars", "[]"))),
                "dev_metric": result.val_aggregate_scores[i],
            }
            for i, c in enumerate(result.candidates)
        ]
        usage = {"proposer": cfg.proposer, "calls": run.proposer_calls, "tokens": run.proposer_tokens}
        art.metrics["search"] = {
            "candidates": len(result.candidates),
            "calls_used": run.used,
            "row_metric": ("balanced" if run.weights else "accuracy") if run.clf else train.spec.metric,
            "model_calls": run.calls,
            "paid_calls": run.paid_calls,
            "replayed": journal.replayed,
            "budget_calls": cfg.budget_calls,
            "proposer": usage,
            "stopped_by": run.stopped_by,
            "best": {
                "candidate": best,
                "instruction": result.candidates[best]["instruction"],
                "dev_metric": result.val_aggregate_scores[best],
                "dev_examples": len(val),
            },
        }
        art.metrics["dev"] = {"metric": result.val_aggregate_scores[best], "n": len(val)}
        art.metrics["train"] = {"proposer": {**usage, **proposer_spend(cfg.proposer, proposer, before)}}
        return art
