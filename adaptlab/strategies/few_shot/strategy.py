"""Few-shot: k exemplars from the train split in the prompt (random, class-balanced or nearest)."""

from __future__ import annotations

from adaptlab.data.loading import TaskData
from adaptlab.data.splits import subsample
from adaptlab.strategies.prompting import PromptArtifact, PromptStrategy, pairs, select_balanced, select_random


class FewShotStrategy(PromptStrategy):
    name = "few_shot"

    @classmethod
    def reads_rows_at_most(cls, config) -> int:
        # nearest: the pool (its rows are compared with every input); else the k exemplars and the k
        # reserve exemplars, drawn at random (class-balanced) from whatever train set it is given
        return config.pool_size if config.selection == "nearest" else 2 * config.k

    def search(self, backend, train, dev, common) -> PromptArtifact:
        cfg = self.config
        template = cfg.template_for(train.task, backend)
        if "examples" not in template.fields:
            raise ValueError(f"few_shot: template '{template.name}' has no {{examples}} placeholder")
        labels = train.label_set
        if cfg.selection == "nearest":
            pool_data = subsample(train, n=cfg.pool_size, seed=cfg.seed) if len(train) > cfg.pool_size else train
            pool = pairs(pool_data.examples)
            emb = backend.embed([x for x, _ in pool])
            return PromptArtifact(
                self.name,
                backend,
                cfg,
                template,
                train.task,
                labels,
                selection="nearest",
                k=cfg.k,
                pool=pool,
                pool_embeddings=emb,
                **common,
            )
        select = select_balanced if cfg.selection == "balanced" and train.spec.closed_labels else select_random
        chosen = select(train, cfg.k, cfg.seed)
        rest = [ex for ex in train.examples if ex not in chosen]
        reserve = (
            select_random(TaskData(train.task, rest, train.source, train.label_names), cfg.k, cfg.seed + 1)
            if rest
            else []
        )
        return PromptArtifact(
            self.name,
            backend,
            cfg,
            template,
            train.task,
            labels,
            exemplars=pairs(chosen),
            reserve=pairs(reserve),
            selection="fixed",
            k=cfg.k,
            **common,
        )
