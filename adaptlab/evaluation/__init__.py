"""Metrics, label scoring and evaluation of a base model on task data."""

from adaptlab.evaluation.metrics import accuracy, classification_metrics, macro_f1
from adaptlab.evaluation.scoring import predict_labels, score_labels, target_logprobs

__all__ = ["accuracy", "classification_metrics", "macro_f1", "predict_labels", "score_labels", "target_logprobs"]
