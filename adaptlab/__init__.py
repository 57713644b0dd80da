"""adaptlab: prompt it or fine-tune it? Measured on your data, then served.

The Python API (:mod:`adaptlab.api`)::

    import adaptlab

    result = adaptlab.compare("tickets.csv", out="runs/tickets", budget="15m")
    result.recommendation, result.ranking, result.to_pandas()
    art = adaptlab.train("lora", "tickets.csv", out="artifacts/lora")
    adaptlab.load("artifacts/lora").classify(["Where is my parcel?"])

Names are imported on first use, so ``import adaptlab`` (and the command line) stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

# name -> module that defines it
_EXPORTS = {
    "compare": "adaptlab.compare",
    "train": "adaptlab.api",
    "load": "adaptlab.api",
    "CompareResult": "adaptlab.api",
    "Adapted": "adaptlab.api",
    "CompareConfig": "adaptlab.compare.config",
    "TrainConfig": "adaptlab.training.config",
    "Registry": "adaptlab.registry.store",
    "list_strategies": "adaptlab.strategies.registry",
    "load_task": "adaptlab.data.named",
    "DataError": "adaptlab.data.records",
}
__all__ = sorted(_EXPORTS) + ["__version__"]

if TYPE_CHECKING:  # for type checkers and editors; at run time the names load lazily
    from adaptlab.api import Adapted, CompareResult, compare, load, train  # noqa: F401
    from adaptlab.compare.config import CompareConfig  # noqa: F401
    from adaptlab.data.named import load_task  # noqa: F401
    from adaptlab.data.records import DataError  # noqa: F401
    from adaptlab.registry.store import Registry  # noqa: F401
    from adaptlab.strategies.registry import list_strategies  # noqa: F401
    from adaptlab.training.config import TrainConfig  # noqa: F401


def __getattr__(name: str):
    if name == "compare":  # the package adaptlab.compare, itself callable as adaptlab.api.compare
        import importlib

        return importlib.import_module("adaptlab.compare")
    if name in _EXPORTS:
        import importlib

        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'adaptlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
