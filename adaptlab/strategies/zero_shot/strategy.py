"""Zero-shot: an instruction template (instruction, label list, answer format) filled per example."""

from __future__ import annotations

from adaptlab.backends.base import as_backend
from adaptlab.data.loading import TaskData
from adaptlab.strategies.prompting import PromptArtifact, check_task_data, decoding_for, finish, majority_label


class ZeroShotStrategy:
    name = "zero_shot"

    def __init__(self, config):
        self.config = config

    def fit(self, model, train: TaskData, dev: TaskData | None = None, train_config=None, **_) -> PromptArtifact:
        check_task_data(train, self.config)
        backend = as_backend(model)
        template = self.config.template_for(train.task)
        art = PromptArtifact(self.name, backend, self.config, template, train.task,
                             train.labels if train.task == "classification" else None,
                             decoding=decoding_for(train), fallback_label=majority_label(train))
        return finish(art, dev, self.config)
