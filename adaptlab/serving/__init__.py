"""Serving many adaptations of one base model: mixed batches, registry names, OpenAI-compatible HTTP."""

from adaptlab.serving.service import ServeConfig, Service, ServingError, Work

__all__ = ["ServeConfig", "Service", "ServingError", "Work"]
