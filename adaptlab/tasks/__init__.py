"""Task types, one module each, registered like strategies (:mod:`adaptlab.tasks.base`).

The order of registration is the order auto-detection tries them and the order messages list them.
"""

from adaptlab.tasks.base import TaskSpec, get_task, list_tasks, register_task
from adaptlab.tasks.chat import ChatTask
from adaptlab.tasks.classification import ClassificationTask
from adaptlab.tasks.generation import GenerationTask
from adaptlab.tasks.preference import ChatPreferenceTask, PreferenceTask

register_task(ClassificationTask())
register_task(GenerationTask())
register_task(ChatTask())
register_task(PreferenceTask())
register_task(ChatPreferenceTask())

__all__ = ["TaskSpec", "get_task", "list_tasks", "register_task"]
