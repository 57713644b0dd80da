"""The one training loop shared by every gradient strategy, its config and batching."""

from adaptlab.training.config import TrainConfig
from adaptlab.training.loop import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "train"]
