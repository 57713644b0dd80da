"""Zero-shot: an instruction template (instruction, label list, answer format) filled per example."""

from __future__ import annotations

from adaptlab.strategies.prompting import PromptArtifact, PromptStrategy


class ZeroShotStrategy(PromptStrategy):
    name = "zero_shot"

    def search(self, backend, train, dev, common) -> PromptArtifact:
        return PromptArtifact(
            self.name,
            backend,
            self.config,
            self.config.template_for(train.task, backend),
            train.task,
            train.label_set,
            **common,
        )
