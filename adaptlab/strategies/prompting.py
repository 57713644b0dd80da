"""What the hard-prompt strategies share: config fields, exemplar selection, calibration, and the
prompt artifact.

Hard-prompt strategies fit by *search*, not gradients (DSPy's ``compile``): ``fit(backend,
train, dev)`` returns a :class:`PromptArtifact`, a JSON file with the template, exemplars,
calibration vector, backend fingerprint and metrics. No weight of the model changes, so the
same strategies run on an API-only model through :class:`adaptlab.backends.OpenAIBackend`.

Contextual calibration (Zhao et al. 2021, "Calibrate Before Use"): the label distribution the
prompt gives to content-free inputs ("N/A", "", "[MASK]") measures the prompt's own bias;
dividing by it (``W = diag(p_cf)^-1``, ``b = 0``) removes it. In log space:
``calibrated = log_softmax(scores) - log p_cf``.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from adaptlab.backends import as_backend
from adaptlab.backends.base import Backend, BackendError
from adaptlab.data.loading import Example, TaskData
from adaptlab.data.splits import dev_part
from adaptlab.models.types import check_fingerprint
from adaptlab.prompts import (
    PROMPT_FORMAT_HELP,
    PromptTemplate,
    check_prompt_format,
    default_template,
    load_template,
    use_chat_turn,
    verbalize,
)
from adaptlab.strategies.base import Artifact, ArtifactError, Strategy, default_decoding
from adaptlab.strategies.registry import make_config

CONTENT_FREE = ["N/A", "", "[MASK]"]


@dataclass
class PromptConfig:
    """Fields every hard-prompt strategy config has."""

    template: str | None = field(
        default=None,
        metadata={
            "help": "Built-in template name, a template file (.json/.txt), or an inline string with {text} "
            "(default: the task type's default built-in)."
        },
    )
    calibrate: bool = field(
        default=False,
        metadata={"help": "Contextual calibration of label scores with content-free inputs (classification)."},
    )
    content_free: list[str] = field(
        default_factory=lambda: list(CONTENT_FREE), metadata={"help": "Content-free inputs for calibration."}
    )
    dev_limit: int = field(default=200, metadata={"help": "Dev examples scored for the artifact's metrics (0: none)."})
    seed: int = field(default=0, metadata={"help": "Seed for exemplar sampling and order."})
    prompt_format: str = field(default="auto", metadata={"help": PROMPT_FORMAT_HELP})

    def __post_init__(self):
        check_prompt_format(self.prompt_format, "prompt config")
        if self.calibrate and not self.content_free:
            raise ValueError("prompt config: calibrate=True needs at least one content_free input")
        if self.dev_limit < 0:
            raise ValueError(f"prompt config: dev_limit={self.dev_limit}: must be >= 0")
        if self.template is not None and not isinstance(self.template, str):
            raise ValueError("prompt config: template must be a string")

    def template_for(self, task: str, backend: Backend) -> PromptTemplate:
        template = load_template(self.template or default_template(task), task)
        return use_chat_turn(template, self.prompt_format, task, backend.has_chat_template)


# ---------------------------------------------------------------------- exemplar selection
def select_random(train: TaskData, k: int, seed: int) -> list[Example]:
    rng = random.Random(seed)
    return rng.sample(train.examples, min(k, len(train.examples)))


def select_balanced(train: TaskData, k: int, seed: int) -> list[Example]:
    """Round-robin over classes (class order and members shuffled by seed), then shuffled."""
    rng = random.Random(seed)
    by_class: dict[str, list[Example]] = {}
    for ex in train.examples:
        by_class.setdefault(ex.label, []).append(ex)
    classes = sorted(by_class)
    rng.shuffle(classes)
    for c in classes:
        rng.shuffle(by_class[c])
    out: list[Example] = []
    depth = 0
    while len(out) < min(k, len(train.examples)):
        for c in classes:
            if depth < len(by_class[c]) and len(out) < k:
                out.append(by_class[c][depth])
        depth += 1
    rng.shuffle(out)
    return out


def pairs(examples: list[Example]) -> list[tuple[str, str]]:
    return [(ex.text, ex.label) for ex in examples]


# ---------------------------------------------------------------------- the artifact
class PromptArtifact(Artifact):
    """A hard prompt: template + exemplars (fixed, or nearest neighbours from a pool) + calibration.

    ``exemplars`` are shown in every prompt; an exemplar whose input equals the evaluated input is
    swapped for one from ``reserve``, so an example is never its own exemplar. With
    ``selection == "nearest"`` each input gets the ``k`` most similar ``pool`` items instead.
    No weight of the model changes: its contribution to a forward pass is the prompt text alone.
    """

    kind = "prompt"

    def __init__(
        self,
        strategy: str,
        backend: Backend,
        config,
        template: PromptTemplate,
        task: str,
        labels: list[str] | None,
        exemplars: list[tuple[str, str]] | None = None,
        reserve: list[tuple[str, str]] | None = None,
        selection: str = "fixed",
        k: int = 0,
        pool: list[tuple[str, str]] | None = None,
        pool_embeddings: torch.Tensor | None = None,
        calibration: list[float] | None = None,
        metrics: dict | None = None,
        trace: list | None = None,
        decoding: dict | None = None,
    ):
        super().__init__(strategy, backend, config, template, task, labels, metrics, decoding)
        if not (self.spec.closed_labels or self.spec.conversation) and "stop" not in self.decoding:
            # a free-text answer in a plain prompt ends where the template would start the next example
            self.decoding = {**self.decoding, "stop": answer_stops(template)}
        self.exemplars = list(exemplars or [])
        self.reserve = list(reserve or [])
        self.selection = selection
        self.k = k
        self.pool = list(pool or [])
        self.pool_embeddings = pool_embeddings
        self.calibration = calibration
        self.trace = list(trace or [])

    @property
    def base(self):  # the loaded base model when local (for callers that share it)
        return getattr(self.backend, "base", None)

    # -------------------------------------------------------------- the adaptation protocol
    def exemplars_for(self, texts: list[str]) -> list[list[tuple[str, str]]]:
        if self.selection == "nearest":
            if not self.pool:
                return [[] for _ in texts]
            q = self.backend.embed(texts)  # (N, D)
            sims = q @ self.pool_embeddings.T  # (N, P)
            out = []
            for i, t in enumerate(texts):
                order = sims[i].argsort(descending=True).tolist()
                chosen = [self.pool[j] for j in order if self.pool[j][0] != t][: self.k]
                out.append(chosen[::-1])  # most similar last, next to the query
            return out
        out = []
        for t in texts:
            shown = list(self.exemplars)
            if any(x == t for x, _ in shown):
                spare = [r for r in self.reserve if r[0] != t and r not in shown]
                shown = [ex if ex[0] != t else (spare.pop(0) if spare else None) for ex in shown]
                shown = [ex for ex in shown if ex is not None]
            out.append(shown)
        return out

    def prompts(self, texts: list[str]) -> list[str]:
        if self.spec.conversation:
            return [
                self.template.render(self.backend.render_chat(with_exemplar_turns(self.with_system(t), ex)))
                for t, ex in zip(texts, self.exemplars_for(texts))
            ]
        labels = self.label_set
        if self.template.chat_turn:  # a chat model is shown examples as earlier turns, not inside one message
            return [
                self.backend.render_chat(self.exemplar_turns(t, labels, ex))
                for t, ex in zip(texts, self.exemplars_for(texts))
            ]
        return [self.in_turn(self.template.render(t, labels, ex)) for t, ex in zip(texts, self.exemplars_for(texts))]

    def with_system(self, conversation: str) -> list[dict]:
        """A conversation's messages, with the template's instruction (a conversation template has no
        slot for one; gepa evolves it) as the system message, before any system text of its own."""
        messages = json.loads(conversation)
        if not self.template.instruction:
            return messages
        said = self.template.instruction.format()  # "{{" is a literal brace (prompts.as_instruction)
        if messages and messages[0].get("role") == "system":
            return [{**messages[0], "content": f"{said}\n\n{messages[0]['content']}"}] + messages[1:]
        return [{"role": "system", "content": said}] + messages

    def exemplar_turns(self, text: str, labels: list[str] | None, exemplars: list[tuple[str, str]]) -> list[dict]:
        """Each exemplar as a user turn (the prompt for its input) and the assistant's answer, then the
        input's own user turn. (k exemplars in one message made SmolLM2 copy an exemplar's answer.)"""
        turns = []
        for x, y in exemplars:
            turns += [
                {"role": "user", "content": self.template.render(x, labels)},
                {"role": "assistant", "content": verbalize(y) if labels else y},
            ]
        return turns + [{"role": "user", "content": self.template.render(text, labels)}]

    @property
    def calibrated(self) -> bool:
        return self.calibration is not None

    def calibrate(self, raw: torch.Tensor) -> torch.Tensor:
        if self.calibration is None:
            return raw
        p_cf = torch.tensor(self.calibration, dtype=raw.dtype)
        return torch.log_softmax(raw, dim=-1) - torch.log(p_cf)

    def fit_calibration(self, content_free: list[str]) -> list[float]:
        """Mean label distribution over content-free inputs under this prompt: p_cf (L,)."""
        raw = self.raw_scores(content_free)
        p = torch.softmax(raw.double(), dim=-1).mean(0)
        self.calibration = [float(v) for v in p.clamp_min(1e-12)]
        return self.calibration

    # -------------------------------------------------------------- persistence
    def save_payload(self, folder: Path) -> dict:
        if self.selection == "nearest" and self.pool_embeddings is not None:
            save_file(
                {"pool_embeddings": self.pool_embeddings.contiguous()}, str(folder / "pool_embeddings.safetensors")
            )
        return {
            "prompt": {
                "selection": self.selection,
                "k": self.k,
                "exemplars": self.exemplars,
                "reserve": self.reserve,
                "pool": self.pool,
                "calibration": self.calibration,
            },
            "trace": self.trace,
        }

    @classmethod
    def from_meta(cls, folder: Path, meta: dict, model) -> PromptArtifact:
        backend = as_backend(model)
        check_fingerprint(meta["base_model"]["fingerprint"], backend.fingerprint, f"artifact {folder}")
        try:
            p = meta["prompt"]
            config = make_config(meta["strategy"], **meta["strategy_config"])
            emb = None
            if p["selection"] == "nearest":
                emb_path = folder / "pool_embeddings.safetensors"
                if not emb_path.exists():
                    raise ArtifactError(f"{folder}: nearest-neighbour prompt without pool_embeddings.safetensors")
                emb = load_file(str(emb_path))["pool_embeddings"]
            return cls(
                meta["strategy"],
                backend,
                config,
                PromptTemplate(**meta["template"]),
                meta["task"],
                meta["labels"],
                [tuple(e) for e in p["exemplars"]],
                [tuple(e) for e in p["reserve"]],
                p["selection"],
                p["k"],
                [tuple(e) for e in p["pool"]],
                emb,
                p["calibration"],
                meta.get("metrics"),
                meta.get("trace"),
                meta.get("decoding"),
            )
        except (KeyError, TypeError) as e:
            raise ArtifactError(f"{folder}: malformed prompt artifact: {e}") from None


def answer_stops(template: PromptTemplate) -> list[str]:
    """Where a hard prompt's answer ends: at the next line that starts like the input line
    (``Input:``), which is where a model that learned the pattern from the exemplars goes on with
    another made-up example. Found by the ViGGO report's gallery: without it, few-shot answers
    run on into ``Input: suggest(...) Output: ...``."""
    for line in template.template.splitlines():
        for slot in ("{input}", "{text}"):
            if slot in line:
                lead = line.split(slot)[0].replace("{examples}", "").strip()
                return [f"\n{lead}"] if lead else []
    return []


def with_exemplar_turns(messages: list[dict], exemplars: list[tuple[str, str]]) -> list[dict]:
    """A conversation with each exemplar's last user turn and its answer as earlier turns (after a
    system message, which stays first)."""
    turns = []
    for conversation, answer in exemplars:
        user = next((m for m in reversed(json.loads(conversation)) if m["role"] == "user"), None)
        if user is not None:
            turns += [{"role": "user", "content": user["content"]}, {"role": "assistant", "content": answer}]
    head = messages[:1] if messages and messages[0]["role"] == "system" else []
    return head + turns + messages[len(head) :]


# ---------------------------------------------------------------------- the strategies' base
class PromptStrategy(Strategy):
    """Base of the hard-prompt strategies: fit by search on a backend, no gradients.

    Subclasses implement :meth:`search` (return the chosen prompt); the base counts model calls,
    calibrates when asked and records dev metrics.
    """

    artifact_cls = PromptArtifact
    run_dir: Path | None = None
    progress: bool = False
    scores_dev: bool = True  # record dev metrics after the search (prompt_search has them already)

    def search(self, backend: Backend, train: TaskData, dev: TaskData | None, common: dict) -> PromptArtifact:
        raise NotImplementedError

    def adapt(self, model, train, dev, train_config, run_dir, resume, progress) -> PromptArtifact:
        cfg = self.config
        if cfg.calibrate and not train.spec.closed_labels:
            raise ValueError("calibrate=True applies to classification tasks only")
        backend = as_backend(model)
        start = backend.calls
        self.run_dir, self.progress = run_dir, progress  # a search that journals or shows progress reads them
        common = dict(decoding=default_decoding(train, backend.count_tokens))
        art = self.search(backend, train, dev, common)
        if self.scores_dev:
            finish(art, dev, cfg)
        art.metrics["train"] = {
            **art.metrics.get("train", {}),
            "model_calls": backend.calls - start,
            "trainable_params": 0,
            "steps": 0,
        }
        return art


def finish(artifact: PromptArtifact, dev: TaskData | None, config) -> PromptArtifact:
    """Calibrate (when asked) and record dev metrics on up to ``dev_limit`` examples."""
    if config.calibrate:
        if not artifact.backend.supports_scores:
            raise BackendError(
                f"{artifact.backend.name}: calibration needs label log-probabilities, "
                "which this endpoint does not return"
            )
        artifact.fit_calibration(list(config.content_free))
    part = dev_part(dev, config.dev_limit, config.seed)
    if part is not None:
        artifact.metrics["dev"] = artifact.evaluate(part)
    return artifact
