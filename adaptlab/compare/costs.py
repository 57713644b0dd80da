"""What a run costs, from the token counts of the user's own rows: the work first, then the seconds.

A run's **work** (GFLOP) is counted from the data and the strategy's config, never from a clock:
each scored row's prompt tokens (the template around the input, k exemplars for few-shot, the
virtual tokens of a soft prompt), its label tree (the distinct label-token prefixes the top-1 search
reaches, each through the decoder and the 262k-row LM head) or, for generation, its expected answer length;
training adds forward and backward over prompt + target for every example and epoch, and the dev
checks. The decoder's cost per token and the LM head's per row come from the model's own shape.

**Seconds** are the work divided by a rate: before any run, the machine's measured matrix-product
speed (:func:`adaptlab.utils.speed_probe`) times the efficiency a run reaches on it; after runs,
the rate this compare measured, per strategy and phase (train, scoring), and for a strategy not run
yet the measured-to-prior ratio pooled over the ones that did the same sort of work, training or
scoring (a prompt strategy's fit scores dev rows), its own kind first (so a machine at half speed is
seen after its first run). The order of runs is decided on work alone (:meth:`Estimator.work`), so the
same command gives the same plan on any machine; the clock only says how far a budget reaches.

Why by hand: no library estimates a fine-tuning or scoring run from its token counts, and the
scheduler needs exactly this split of work (deterministic) and rate (measured).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from adaptlab.compare.config import CompareConfig
from adaptlab.compare.record import RunRecord
from adaptlab.strategies.registry import get_strategy, list_strategies, make_config, split_candidate, split_lr
from adaptlab.tasks.base import get_task

# The probe's GFLOP/s times this is a run's rate in the work counted here (above 1: the count is an
# upper bound; label-tree rows share a KV cache, batches amortise the weights). Measured on a 2-core
# VM with Gemma 3 270M on the demo task (bench/dependable_answers.py's calibration, issue 26's note):
# scoring took 0.123-0.144 of the seconds a rate of 0.2 x probe predicts for zero-shot, few-shot,
# LoRA, soft prompt and full; training 0.076-0.078 of 0.1 x probe for LoRA and soft prompt. Only used
# until this compare has measured runs of its own.
EFFICIENCY = {"train": 1.25, "eval": 1.5}
FIXED_SECONDS = {"gradient": 4.0, "prompt": 1.0}  # set-up, saving the artifact, dev bookkeeping
BACKWARD = 2.0  # backward over activations ~ 2x the forward (weights' gradients: full adds 1x)
# Share of the label-tree nodes the exact top-1 search runs through the model and projects (3-13 of
# 132 on Banking77): it runs a node only when it projects it (label_tree.NodeStates).
HEAD_SHARE = 0.15
SAMPLE_ROWS = 200  # rows tokenized to measure the data
# Decoding runs one token per step for a batch of rows: small products, far below the rate of
# scoring a whole prompt at once (E2E on the same VM: 1.7 s per row for zero-shot's 64 rows).
DECODE_EFFICIENCY = 0.3
# A hosted candidate's seconds are its calls times the seconds one call takes at the endpoint's
# concurrency: this prior until the compare has timed a run there (a hosted small model answers in
# about a second; a local llama.cpp server on these 2 cores in 0.3-2 s).
CALL_SECONDS_PRIOR = 1.0
ATTENTION = 1e-4  # attention's share of a token's cost per context token (Gemma 3 270M: 4 x 18 x 640 / 0.2e9 ~ 2e-4, halved by the sliding window)


@dataclass
class Profile:
    """Token counts of the user's rows and the model's cost per token, all a run's work is built from."""

    task: str
    n_labels: int
    input_tokens: float  # mean tokens of one input (test rows)
    train_prompt_extra: float  # tokens the gradient strategies' template adds after an input (per row)
    prompt_extra: float  # tokens the hard-prompt default template adds after an input (per row)
    shared_prefix: float  # tokens before the input (instruction, label list): encoded once per call
    exemplar_tokens: float  # tokens of one rendered exemplar (input + answer)
    target_tokens: float  # mean tokens of an answer (label verbalization or target text)
    label_nodes: int  # distinct label-token prefixes (classification; 0 for generation)
    gen_tokens: float  # expected generated tokens per row (generation and chat)
    tok_gflop: float  # decoder forward per token
    head_gflop: float  # LM head per projected row
    probe_gflops: float = 0.0  # the machine's measured matrix-product speed

    def to_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def model_shape(model) -> tuple[float, float]:
    """(GFLOP per decoder token, GFLOP per LM-head row) of a causal LM: 2 x its non-embedding
    parameters, and 2 x vocab x hidden (Gemma's 262k-row head is most of the cost of a scored row)."""
    emb = model.get_input_embeddings().weight
    vocab, hidden = emb.shape
    params = sum(p.numel() for p in model.parameters())
    return 2.0 * max(params - vocab * hidden, hidden * hidden) / 1e9, 2.0 * vocab * hidden / 1e9


def profile(base, splits, test, probe_gflops: float = 0.0) -> Profile:
    """Measure the rows: tokenize up to SAMPLE_ROWS of test and train through the base's tokenizer."""
    from adaptlab.data.splits import subsample
    from adaptlab.prompts import default_template, load_template, verbalize

    tok = base.tokenizer

    def count(text: str) -> int:
        return len(tok(text, add_special_tokens=False)["input_ids"])

    task = splits.task
    rows = subsample(test, n=min(len(test), SAMPLE_ROWS), seed=0).examples if len(test) else []
    train = subsample(splits.train, n=min(len(splits.train), SAMPLE_ROWS), seed=0).examples
    mean = lambda xs: sum(xs) / len(xs) if xs else 0.0
    inputs = mean([count(ex.text) for ex in rows or train])
    labels = splits.train.label_set
    answers = [" " + verbalize(lab) for lab in labels] if labels else [ex.label for ex in train]
    answer_ids = [tok(a, add_special_tokens=False)["input_ids"] for a in answers]
    target = (
        mean([len(a) for a in answer_ids])
        if not labels
        else mean([len(answer_ids[labels.index(ex.label)]) for ex in train if ex.label in labels])
    )
    nodes = len({tuple(ids[: i + 1]) for ids in answer_ids for i in range(len(ids))}) if labels else 0
    hard = load_template(default_template(task), task)
    # The text before the input is the same for every row, and scoring encodes it once per call;
    # only what follows the input is paid per row. Measured by rendering with a marker input.
    marker = "\x00INPUT\x00"
    before, _, after = hard.render(marker, labels).partition(marker)
    prompt_extra, shared = float(count(after)), float(count(before))
    soft = get_task(task).train_frame
    train_extra = float(count(soft.partition("{text}")[2]))
    shots = [count(hard.render_example(ex.text, ex.label)) for ex in train[:32]]
    tok_g, head_g = model_shape(base.model)
    # Generation decodes up to the longest train target + 8 (strategies.base.default_decoding); a row
    # that never emits its end (zero-shot on a base model rarely does) runs to that limit, so the
    # limit is the estimate. Measured on the sample's longest target, a lower bound of the whole train's.
    gen = 0.0 if labels else float(min(256, max((len(a) for a in answer_ids), default=0) + 8))
    return Profile(
        task,
        len(labels or []),
        inputs,
        train_extra,
        prompt_extra,
        shared,
        mean(shots),
        target,
        nodes,
        float(gen),
        tok_g,
        head_g,
        probe_gflops,
    )


@dataclass
class Work:
    """GFLOP of one run: fitting (training, or a prompt search's calls) and scoring its test rows."""

    fit: float
    score: float
    dev: float = 0.0  # the part of ``fit`` that scores dev rows (a gradient fit's dev checks)

    @property
    def total(self) -> float:
        return self.fit + self.score


@dataclass
class Estimator:
    """Work from the profile; seconds from the rates this compare measured (priors until then)."""

    cfg: CompareConfig
    prof: Profile
    n_test: int
    n_screen: int
    settings: dict = field(default_factory=dict)  # tuned settings per strategy (over cfg's own)
    _seen: dict = field(default_factory=dict)  # (strategy, phase) -> [measured s, prior s, dev prior s]
    _calls: dict = field(default_factory=dict)  # endpoint -> [measured s, calls] of its runs
    profiles: dict = field(default_factory=dict)  # several bases: base name -> its profile (else prof)

    def _prof(self, strategy: str) -> Profile:
        """The token counts and model shape of the base ``strategy``'s candidate adapts."""
        return self.profiles.get(self.cfg.base_of(strategy), self.prof)

    # -------------------------------------------------------------- work (deterministic)
    def _config(self, strategy: str, settings: dict | None = None):
        kw = (
            settings if settings is not None else {**self.cfg.settings_for(strategy), **self.settings.get(strategy, {})}
        )
        return make_config(strategy, **split_lr(strategy, kw)[0])

    def prompt_tokens(self, strategy: str, settings: dict | None = None) -> float:
        """Tokens one scored row pays for ``strategy`` beyond the prompt start all rows share (which
        scoring encodes once per call): the input, the template after it, the virtual tokens, and
        exemplars only where they differ per row (``nearest`` selection)."""
        p, sp, c = self._prof(strategy), get_strategy(strategy), self._config(strategy, settings)
        if sp.kind == "prompt":
            k = getattr(c, "k", 0) if sp.exemplars else 0
            own = k * p.exemplar_tokens if getattr(c, "selection", "") == "nearest" else 0.0
            return p.input_tokens + p.prompt_extra + own
        virtual = getattr(c, "n_tokens", 0)
        return p.input_tokens + p.train_prompt_extra + virtual

    def context_tokens(self, strategy: str, settings: dict | None = None) -> float:
        """Tokens every row attends to before its own: the shared prompt start and exemplars."""
        p, c = self._prof(strategy), self._config(strategy, settings)
        k = getattr(c, "k", 0) if get_strategy(strategy).exemplars else 0
        return p.shared_prefix + k * p.exemplar_tokens

    def row_gflop(self, strategy: str, settings: dict | None = None) -> float:
        """Scoring one row: its prompt through the decoder, then the label tree or the answer."""
        p = self._prof(strategy)
        own = self.prompt_tokens(strategy, settings)
        # Attention over the shared context: about 4 x layers x hidden FLOP per token and context
        # token (the decoder's 0.2 GFLOP per token is its projections); ATTENTION folds the shape in.
        ctx = self.context_tokens(strategy, settings)
        prompt = own * p.tok_gflop * (1 + ATTENTION * ctx)
        if get_task(p.task).closed_labels:
            return prompt + p.head_gflop + HEAD_SHARE * p.label_nodes * (p.tok_gflop + p.head_gflop)
        return prompt + p.gen_tokens * (p.tok_gflop + p.head_gflop) / DECODE_EFFICIENCY

    def work(self, strategy: str, train_size: int, rows: int, settings: dict | None = None) -> Work:
        """The GFLOP of ``strategy`` fitted on ``train_size`` examples and scored on ``rows`` test rows
        (``settings``: the strategy's settings, when not the compare's own)."""
        p, sp, c = self._prof(strategy), get_strategy(strategy), self._config(strategy, settings)
        row = self.row_gflop(strategy, settings)
        if sp.kind == "gradient":
            epochs = self.cfg.epochs_for(strategy)
            per_ex = (
                p.input_tokens + p.train_prompt_extra + getattr(c, "n_tokens", 0) + p.target_tokens
            ) * p.tok_gflop + p.target_tokens * p.head_gflop
            grad = BACKWARD + sp.weight_grad_cost  # full fine-tuning: weights' gradients and AdamW over all
            stages = 2.0 if sp.stacks else 1.0  # each stage checks dev once per epoch
            dev = stages * epochs * min(self.cfg.dev_limit, 64) * row
            fit = stages * max(1, train_size) * epochs * per_ex * (1 + grad) + dev
            return Work(fit, rows * row, dev)
        calls = sp.strategy_cls.planned_calls(c) or 0
        fit = calls * row
        # What the calls alone do not show (a search's candidates each encode their own prompt
        # start per slice they score; a bootstrap scores rows against every label): the strategy says.
        starts, full = sp.strategy_cls.planned_extra_work(c, p.task, train_rows=train_size or None)
        fit += starts * self.context_tokens(strategy, settings) * p.tok_gflop
        if get_task(p.task).closed_labels:
            fit += full * (1 - HEAD_SHARE) * p.label_nodes * (p.tok_gflop + p.head_gflop)
        if getattr(c, "selection", "") == "nearest":  # the exemplar pool is embedded once
            fit += min(train_size, getattr(c, "pool_size", 1000)) * p.input_tokens * p.tok_gflop
        return Work(fit, rows * row)

    def scored_per_run(self, light: bool = False) -> int:
        """Rows a run scores besides training: the test rows, and unless ``light`` (as the adaptive
        compare scores runs until it measures the recommended one in full) the train-gap sample,
        the fragility variants and the consistency samples."""
        if light:
            return self.n_test
        cfg = self.cfg
        frag = cfg.fragility_examples * (1 + cfg.fragility_k + 5) if cfg.fragility_k else 0
        steady = cfg.consistency_examples * (cfg.consistency_samples if not self.prof.n_labels else 1)
        return self.n_test + min(cfg.fragility_examples, 64) + frag + steady

    # -------------------------------------------------------------- seconds (measured)
    def _prior_seconds(self, phase: str, gflop: float) -> float:
        rate = max(self.prof.probe_gflops, 1.0) * EFFICIENCY[phase]
        return gflop / rate

    def _rate_factor(self, strategy: str, phase: str) -> float:
        """Measured seconds / prior seconds: this strategy's own; else pooled over the strategies of
        its kind that did the same sort of work (training, or scoring: a prompt strategy's fit scores
        dev rows), else over every strategy that did, else over everything measured. Pooling by the
        phase's name alone gave a prompt search's fit the training runs' factor (Banking77 at 20m:
        1.6x from LoRA, prefix and soft prompt's training, where zero-shot and few-shot scored at
        0.9x: estimated 334 s instead of about 190, it never ran). Training: :meth:`_train_factor`."""
        if self._work(strategy, phase) == "train":
            return self._train_factor(strategy)
        own = self._seen.get((strategy, phase))
        if own and own[1] > 0:
            return own[0] / own[1]
        work, kind = self._work(strategy, phase), get_strategy(strategy).kind
        for keep in (
            lambda s, ph: self._work(s, ph) == work and get_strategy(s).kind == kind,
            lambda s, ph: self._work(s, ph) == work,
            lambda s, ph: True,
        ):
            if any(v[1] > 0 and keep(s, ph) for (s, ph), v in self._seen.items()):
                return self._pooled(keep)
        return 1.0

    def _train_factor(self, strategy: str) -> float:
        """A gradient strategy's training rate factor, from what its fits left after their dev checks
        (priced at the scoring rate). A fit informs it in the share of its prior seconds that is
        training: a first look trains for a few seconds beside its dev checks and fixed costs (building
        the module, keeping the best state), so alone it cannot tell the training rate apart from them
        (Banking77, LoRA at 16: 10 s left after the dev checks where its run at 1000's rate predicts 4;
        taken at face value, LoRA at 1000 was estimated at 786 s, and took 352). So each fit's factor
        is weighed against an anchor with the dev checks' prior seconds: a strategy's own fits against
        the other strategies' fits pooled, those against the prior (1.0). Before any training is
        measured: the factor of what was (the machine seen through its scoring)."""
        mine = self._seen.get((strategy, "fit"))
        others = [v for (s, ph), v in self._seen.items() if self._work(s, ph) == "train" and s != strategy]
        if not mine and not others:
            return self._pooled(lambda s, ph: True)
        left, own, dev = (sum(v[i] for v in others) for i in range(3))
        anchor = (left + dev) / (own + dev) if own + dev > 0 else 1.0
        if not mine or mine[1] + mine[2] <= 0:
            return anchor
        return (mine[0] + mine[2] * anchor) / (mine[1] + mine[2])

    def _pooled(self, keep) -> float:
        """Measured over prior seconds, summed over the phases ``keep`` accepts; 1.0 if none."""
        pooled = [v for (s, ph), v in self._seen.items() if v[1] > 0 and keep(s, ph)]
        return sum(v[0] for v in pooled) / sum(v[1] for v in pooled) if pooled else 1.0

    @staticmethod
    def _work(strategy: str, phase: str) -> str:
        """The sort of work a phase of a run is: a gradient strategy's fit trains, all else scores."""
        return "train" if phase == "fit" and get_strategy(strategy).kind == "gradient" else "score"

    # -------------------------------------------------------------- hosted candidates
    def calls(self, strategy: str, rows: int, settings: dict | None = None) -> int:
        """Endpoint calls of a hosted run: its fit's planned calls (a prompt search scores dev) and
        one per scored row."""
        sp = get_strategy(strategy)
        return (sp.strategy_cls.planned_calls(self._config(strategy, settings)) or 0) + rows

    def call_seconds(self, where: str) -> float:
        """Seconds per call at endpoint ``where``: measured over its runs, else the prior at its concurrency."""
        seen = self._calls.get(where)
        if seen and seen[1] > 0:
            return seen[0] / seen[1]
        conc = next((e.get("concurrency", 1) for e in self.cfg.endpoints if e["name"] == where), 1)
        return CALL_SECONDS_PRIOR / max(1, conc)

    def seconds(self, strategy: str, train_size: int, rows: int, settings: dict | None = None) -> float:
        where = self.cfg.endpoint_of(strategy)
        if where is not None:
            return FIXED_SECONDS["prompt"] + self.calls(strategy, rows, settings) * self.call_seconds(where)
        w = self.work(strategy, train_size, rows, settings)
        own, dev = self.fit_prior(strategy, w)
        fit = own * self._rate_factor(strategy, "fit") + dev * self._rate_factor(strategy, "score")
        score = self._prior_seconds("eval", w.score) * self._rate_factor(strategy, "score")
        return FIXED_SECONDS[get_strategy(strategy).kind] + fit + score

    def fit_prior(self, strategy: str, w: Work) -> tuple[float, float]:
        """Prior seconds of a fit: (its own work, its dev checks). A gradient fit's dev checks score
        rows, at the scoring rate, not the training one: on Banking77 they are 2578 of LoRA's 3039
        GFLOP at 16 examples and 2578 of 31381 at 1000, so one rate for the whole fit, learned at 16,
        carried the scoring's slower rate to the training at 1000 (548 s estimated, 352 s taken)."""
        if get_strategy(strategy).kind != "gradient":
            return self._prior_seconds("eval", w.fit), 0.0
        return self._prior_seconds("train", w.fit - w.dev), self._prior_seconds("eval", w.dev)

    def score_seconds(self, strategy: str, rows: int) -> float:
        """Scoring ``rows`` more rows with ``strategy``'s artifact (no fit)."""
        where = self.cfg.endpoint_of(strategy)
        if where is not None:
            return rows * self.call_seconds(where)
        gflop = rows * self.row_gflop(strategy)
        return self._prior_seconds("eval", gflop) * self._rate_factor(strategy, "score")

    def observe(self, rec) -> None:
        """Learn the rates from a finished run's record (or a tuning fit's, which has no test rows)."""
        rec = RunRecord.of(rec)
        strategy, tuned = rec.strategy, "variant" in rec.run
        where = self.cfg.endpoint_of(strategy)
        if where is not None:  # hosted: seconds per call, over the fit's and the scoring's calls
            calls = (rec.train.get("endpoint") or {}).get("calls", 0) + (rec.eval.get("endpoint") or {}).get("calls", 0)
            secs = (rec.fit_seconds or 0.0) + (rec.score_seconds or 0.0)
            if calls:
                acc = self._calls.setdefault(where, [0.0, 0])
                acc[0] += secs
                acc[1] += calls
            return
        if split_candidate(strategy)[0] not in list_strategies():
            return
        rows = 0 if tuned else rec.scored_rows  # a tuning fit: its own settings, dev rows scored after the fit
        w = self.work(strategy, rec.train_size, rows, rec.run.get("settings") if tuned else None)
        score_s = rec.score_seconds
        if score_s and rows:  # first: a fit's dev checks are priced at this strategy's scoring rate
            self._add(strategy, "score", score_s, self._prior_seconds("eval", w.score))
        fit_s = rec.fit_seconds
        if fit_s is not None and w.fit > 0:
            own, dev = self.fit_prior(strategy, w)  # a gradient fit: what its dev checks leave, beside them
            self._add(strategy, "fit", max(0.0, fit_s - dev * self._rate_factor(strategy, "score")), own, dev)

    def _add(self, strategy: str, phase: str, measured: float, prior: float, dev: float = 0.0) -> None:
        acc = self._seen.setdefault((strategy, phase), [0.0, 0.0, 0.0])
        acc[0] += measured
        acc[1] += prior
        acc[2] += dev


def screen_rows(task: str, n_test: int, gap: float = 0.08, confidence: float = 0.95) -> int:
    """Test rows a screening run scores: enough that a difference of ``gap`` between two strategies
    on the same rows is outside the noise, ``n = z^2 var / gap^2``. The variance of a paired
    per-row difference is bounded by that of one row's metric when the two strategies' rows are
    positively correlated, as they are (the same hard rows); the task type gives it
    (:attr:`adaptlab.tasks.base.TaskSpec.row_variance`): 0.25 for accuracy (p(1-p) at p = 0.5),
    0.0625 for a generation metric in [0, 1] (a spread of 0.25 per row; ROUGE-L rows in the
    committed ViGGO and E2E grids spread less). At least 64 rows, at most the test set."""
    z = _z(confidence)
    var = get_task(task).row_variance
    return int(min(n_test, max(64, math.ceil(z * z * var / gap**2))))


def _z(confidence: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + confidence / 2)
