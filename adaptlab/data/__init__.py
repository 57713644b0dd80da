"""Task data: loading with line-numbered errors, validation, splits, named datasets, demo task."""

from adaptlab.data.loading import DataError, Example, TaskData, load_file, load_label_names
from adaptlab.data.named import TaskSplits, data_dir, list_named, load_named, load_task
from adaptlab.data.splits import stratified_split, subsample
from adaptlab.data.validation import DataReport, validate

__all__ = [
    "DataError",
    "DataReport",
    "Example",
    "TaskData",
    "TaskSplits",
    "data_dir",
    "list_named",
    "load_file",
    "load_label_names",
    "load_named",
    "load_task",
    "stratified_split",
    "subsample",
    "validate",
]
