"""adaptlab from Python: the calls the command line is a thin layer over.

    import adaptlab

    result = adaptlab.compare("tickets.csv", out="runs/tickets", budget="15m")
    print(result.recommendation)               # the answer, with its reasons
    result.to_pandas()                         # one row per run (pandas, where installed)

    art = adaptlab.train("lora", "tickets.csv", out="artifacts/lora", train_size=256)
    model = adaptlab.load("artifacts/lora")    # or a registry reference: "tickets@prod"
    model.classify(["Where is my parcel?"])

Every call is resumable: a compare re-run on the same ``out`` goes on from the runs it finished, a
gradient ``train`` with ``resume=True`` from its last checkpoint; progress shows as rich bars, in a
notebook as in a terminal. Settings are the config classes' fields
(:class:`adaptlab.compare.CompareConfig`, :class:`adaptlab.training.TrainConfig`), so a notebook, a
YAML file and the command line share one set of names, defaults and checks.
"""

from __future__ import annotations

import json
from pathlib import Path

from adaptlab.compare.session import CompareResult, compare, compare_config  # noqa: F401  (the API's names)

__all__ = ["Adapted", "CompareResult", "compare", "load", "train"]


# ------------------------------------------------------------------ train
def train(
    strategy: str,
    data: str = "demo",
    *,
    out: str | Path,
    model: str | None = None,
    backend=None,
    settings: dict | None = None,
    train_size: int | None = None,
    seed: int = 0,
    resume: bool = False,
    data_dir: str | Path | None = None,
    columns: dict[str, str] | None = None,
    device: str = "auto",
    evaluate: bool = True,
    progress: bool = True,
    **train_settings,
):
    """Fit one strategy on ``data``'s train split, score it on the test split, save it in ``out``.

    ``settings``: the strategy's own config fields (``{"r": 16}`` for LoRA); ``train_settings``:
    :class:`~adaptlab.training.TrainConfig` fields (``epochs``, ``lr``, ``batch_size``, ``max_steps``,
    ...). ``backend``: a loaded backend to fit on (an endpoint for prompt strategies); else ``model``
    (default Gemma 3 270M) is loaded. Returns the artifact (``.metrics``, ``.predict``, ``.save``)."""
    from adaptlab.data.named import load_task, recipe_for
    from adaptlab.data.splits import subsample
    from adaptlab.strategies import get_strategy, make_config
    from adaptlab.training import TrainConfig
    from adaptlab.training.distributed import is_main

    spec = get_strategy(strategy)
    config = make_config(strategy, **(settings or {}))
    cfg = TrainConfig(seed=seed, **train_settings)
    splits = load_task(data, data_dir_override=data_dir, seed=seed, columns=columns)
    train_part = subsample(splits.train, n=train_size, seed=seed) if train_size else splits.train
    if backend is None:
        backend = _local_backend(model, device)
    out = Path(out)
    # A prompt search shows a spinner; a gradient strategy's loop shows its own progress bars.
    with _status(progress and spec.kind == "prompt", f"{strategy}: fitting"):
        art = spec.strategy_cls(config).fit(backend, train_part, splits.dev, cfg, run_dir=out / "run", resume=resume)
    if not is_main():  # under torchrun: rank 0 evaluates and saves; the others are done
        return art
    if evaluate:
        with _status(progress, f"evaluating on {len(splits.test)} test examples"):
            art.metrics["test"] = art.evaluate(splits.test)
    art.recipe = recipe_for(data, data_dir, seed, train_size, seed, train_part, columns=columns)
    art.save(out)
    return art


def _status(show: bool, text: str):
    """A rich spinner (terminal or notebook) while ``show``; nothing otherwise."""
    import contextlib

    if not show:
        return contextlib.nullcontext()
    from rich.console import Console

    return Console(stderr=True).status(text)


def _local_backend(model: str | None, device: str = "auto"):
    from adaptlab.backends import LocalBackend
    from adaptlab.models.base import DEFAULT_MODEL, load_base, resolve_device

    return LocalBackend(load_base(model or DEFAULT_MODEL, device=resolve_device(device)))


# ------------------------------------------------------------------ export
def export_as(artifact_dir: str | Path, out: str | Path, cfg, base=None) -> Path:
    """Write ``artifact_dir`` into ``out`` as ``cfg`` (an :class:`adaptlab.export.ExportConfig`) says;
    ``base`` (``cfg.model``, loaded) for merged and gguf. Returns the folder written. It lives here,
    not in :mod:`adaptlab.export`, because the gguf form (:mod:`adaptlab.export_gguf`) builds on that
    module."""
    from adaptlab.export import ExportError, _meta, export
    from adaptlab.export_gguf import export_gguf

    if cfg.needs_base and base is None and _meta(Path(artifact_dir)).get("kind") != "prompt":
        raise ExportError(f"--format {cfg.format} reads the base model's weights: pass its loaded base")
    if cfg.format == "gguf":
        return export_gguf(
            Path(artifact_dir),
            Path(out),
            base,
            force=cfg.force,
            gguf_type=cfg.gguf_type,
            allow_partial=cfg.allow_partial,
        )
    return export(artifact_dir, out, cfg.format, base, force=cfg.force, allow_partial=cfg.allow_partial)


# ------------------------------------------------------------------ load
class Adapted:
    """An adaptation loaded on its base model: ``classify``, ``generate``, ``chat`` (and the artifact
    itself as ``.artifact``)."""

    def __init__(self, artifact, source: str, folder: str | Path | None = None):
        self.artifact = artifact
        self.source = source
        self.folder = Path(folder) if folder is not None else None  # the artifact's folder, for export()

    @property
    def task(self) -> str:
        return self.artifact.task

    @property
    def labels(self) -> list[str] | None:
        return self.artifact.label_set

    @property
    def metrics(self) -> dict:
        return self.artifact.metrics

    def _inputs(self, texts) -> tuple[list[str], bool]:
        one = isinstance(texts, str)
        items = [texts] if one else list(texts)
        if self.artifact.spec.conversation:  # a chat adaptation takes a user turn as a one-turn conversation
            items = [json.dumps([{"role": "user", "content": t}]) for t in items]
        return items, one

    def classify(self, texts: str | list[str]) -> str | list[str]:
        """The label of each text (one text: one label), from the adaptation's label set."""
        if self.labels is None:
            raise ValueError(f"{self.source}: a {self.task} adaptation has no label set; use generate()")
        items, one = self._inputs(texts)
        out = self.artifact.predict(items)
        return out[0] if one else out

    def scores(self, texts: list[str]) -> list[dict[str, float]]:
        """Each text's probability per label (calibrated where the adaptation is)."""
        if self.labels is None:
            raise ValueError(f"{self.source}: a {self.task} adaptation has no label set")
        items, _ = self._inputs(texts)
        probs = self.artifact.scores(items).softmax(dim=1).tolist()
        return [dict(zip(self.labels, p, strict=True)) for p in probs]

    def generate(
        self, texts: str | list[str], max_new_tokens: int | None = None, temperature: float = 0.0, seed: int = 0
    ) -> str | list[str]:
        """Generated text for each input (greedy unless ``temperature`` > 0)."""
        from adaptlab.models.decoding import Sampling

        items, one = self._inputs(texts)
        sampling = Sampling(temperature=temperature, seed=seed) if temperature > 0 else None
        out = self.artifact.generate(items, max_new_tokens=max_new_tokens, sampling=sampling)
        return out[0] if one else out

    def chat(self, messages: list[dict], max_new_tokens: int | None = None) -> str:
        """The assistant's next turn for an OpenAI-style list of ``{"role", "content"}`` messages. An
        adaptation for single inputs answers the last user turn (as the server's chat route does)."""
        from adaptlab.data.records import check_conversation

        if self.artifact.spec.conversation:
            if not messages or not isinstance(messages[-1], dict) or messages[-1].get("role") != "user":
                raise ValueError("messages: the conversation must end with a user turn to answer")
            # the turns' own checks (roles, contents, a system turn only first), as a training row's
            check_conversation([*messages, {"role": "assistant", "content": "?"}], "messages")
            return self.artifact.generate([json.dumps(messages)], max_new_tokens=max_new_tokens)[0]
        users = [m.get("content") for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        if not users or not isinstance(users[-1], str):
            raise ValueError("messages: no user turn to answer")
        if self.labels is not None:
            return self.artifact.predict([users[-1]])[0]
        return self.artifact.generate([users[-1]], max_new_tokens=max_new_tokens)[0]

    def export(
        self,
        out: str | Path,
        format: str,
        *,
        gguf_type: str | None = None,
        force: bool = False,
        allow_partial: bool = False,
    ) -> Path:
        """Write this adaptation for another engine, as ``adaptlab export`` does (the same settings,
        :class:`adaptlab.export.ExportConfig`): ``format`` peft (PEFT / vLLM), merged (a transformers
        model) or gguf (llama.cpp and Ollama; ``gguf_type`` adapter or a merged type). The base model
        is the one this adaptation is loaded on. Returns the folder written."""
        from adaptlab.export import ExportConfig, ExportError

        if self.folder is None:
            raise ExportError(f"{self.source}: loaded without its folder; adaptlab.load(FOLDER) it to export")
        base = getattr(self.artifact.backend, "base", None)  # None: a prompt for an endpoint (no weights)
        cfg = ExportConfig(format, force=force, allow_partial=allow_partial, gguf_type=gguf_type)
        return export_as(self.folder, out, cfg, base if cfg.needs_base else None)

    def __repr__(self) -> str:
        return f"Adapted({self.artifact.strategy} {self.task} from {self.source})"


def load(ref: str | Path, *, registry: str | Path | None = None, model=None, device: str = "auto") -> Adapted:
    """An adaptation by artifact folder (``train``'s ``out``, a compare's ``artifacts/RUN``) or by
    registry reference (``task``, ``task@3``, ``task@prod``), on its own base model (``model``: a
    loaded base or backend to use instead, e.g. one shared by several adaptations)."""
    from adaptlab.strategies.base import Artifact, read_artifact_meta

    folder = Path(ref)
    if not (folder / "adaptlab_artifact.json").exists():
        from adaptlab.registry import Registry

        entry = Registry(registry, read_only=True).resolve(str(ref))
        folder = entry.path
    meta = read_artifact_meta(folder)
    if model is None:
        base = str(meta["base_model"]["name"])
        if base.startswith("endpoint:"):
            raise ValueError(
                f"{ref}: a prompt for the endpoint {base[len('endpoint:') :]}; pass the endpoint's "
                f"backend as model= (adaptlab.backends.endpoints.EndpointSpec(...).backend())"
            )
        # a hard prompt records its backend ("local:NAME"), an adapter its base model's name
        model = _local_backend(base.removeprefix("local:"), device).base
    return Adapted(Artifact.load(folder, model), str(ref), folder)
