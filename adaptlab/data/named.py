"""Named datasets and the one resolver every command uses for ``--data FILE_OR_NAME``.

Benchmark datasets are read in place from a data directory (``$ADAPTLAB_DATA_DIR``, the
``--data-dir`` flag, or ``../shared/datasets`` when it exists); they are never copied into the
project. A dataset folder holds ``<split>.jsonl`` files and, for classification, ``labels.json``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from adaptlab.data.loading import DataError, TaskData, TaskType, load_file, load_label_names
from adaptlab.data.splits import stratified_split

DATA_DIR_ENV = "ADAPTLAB_DATA_DIR"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEMO_NAME = "demo"
DEMO_DIR = Path(__file__).resolve().parent / "demo"
DEMO_CHAT_NAME = "demo-chat"   # the same shop's support as multi-turn chats (adaptlab.data.demo_chat)
DEMO_CHAT_DIR = Path(__file__).resolve().parent / "demo_chat"
EMBEDDED = {DEMO_NAME: DEMO_DIR, DEMO_CHAT_NAME: DEMO_CHAT_DIR}

# Split names accepted for each role, most preferred first.
DEV_NAMES = ("dev", "validation", "valid", "val")
TEST_NAMES = ("test",)


def data_dir(override: str | Path | None = None) -> Path:
    """Where named datasets live: flag, then env var, then ``../shared/datasets``."""
    if override is not None:
        p = Path(override)
        if not p.is_dir():
            raise DataError(f"{p}: data directory does not exist")
        return p
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        p = Path(env)
        if not p.is_dir():
            raise DataError(f"{p}: ${DATA_DIR_ENV} points to a directory that does not exist")
        return p
    for candidate in (Path.cwd() / ".." / "shared" / "datasets", PROJECT_ROOT / ".." / "shared" / "datasets"):
        if candidate.is_dir():
            return candidate.resolve()
    raise DataError(f"no data directory found; set ${DATA_DIR_ENV} or pass --data-dir")


def list_named(override: str | Path | None = None) -> list[str]:
    """Names of the datasets in the data directory (folders holding at least one .jsonl)."""
    names = list(EMBEDDED)
    try:
        root = data_dir(override)
    except DataError:
        return names
    return names + sorted(p.name for p in root.iterdir() if p.is_dir() and any(p.glob("*.jsonl")))


def _dataset_dir(name: str, override: str | Path | None) -> Path:
    if name in EMBEDDED:
        return EMBEDDED[name]
    root = data_dir(override)
    d = root / name
    if not d.is_dir() or ".." in Path(name).parts:
        known = ", ".join(list_named(override))
        raise DataError(f"unknown dataset '{name}' in {root} (known: {known})")
    return d


def _split_file(d: Path, split: str) -> Path:
    names = DEV_NAMES if split in DEV_NAMES else (split,)
    for n in names:
        if (d / f"{n}.jsonl").exists():
            return d / f"{n}.jsonl"
    have = ", ".join(sorted(p.stem for p in d.glob("*.jsonl")))
    raise DataError(f"{d}: no split '{split}' (have: {have})")


def load_named(name: str, split: str = "train", data_dir_override: str | Path | None = None,
               task: TaskType | None = None) -> TaskData:
    """Load one split of a named dataset, with its declared label set when it has one."""
    d = _dataset_dir(name, data_dir_override)
    labels_file = d / "labels.json"
    label_names = load_label_names(labels_file) if labels_file.exists() else None
    data = load_file(_split_file(d, split), task=task, label_names=label_names)
    data.meta["dataset"] = name
    data.meta["split"] = split
    return data


@dataclass
class TaskSplits:
    """The three roles every comparison needs: train, dev (for selection), test (held out)."""

    name: str
    train: TaskData
    dev: TaskData
    test: TaskData

    @property
    def task(self) -> TaskType:
        return self.train.task


def _split_roles(name: str, files: dict[str, Path | None], loader, seed: int) -> TaskSplits:
    """Fill missing roles by carving them out of train (stratified, seeded)."""
    train = loader(files["train"])
    dev = loader(files["dev"]) if files["dev"] else None
    test = loader(files["test"]) if files["test"] else None
    if dev is None and test is None:
        parts = stratified_split(train, {"train": 0.8, "dev": 0.1, "test": 0.1}, seed=seed)
        train, dev, test = parts["train"], parts["dev"], parts["test"]
    elif dev is None:
        parts = stratified_split(train, {"train": 0.9, "dev": 0.1}, seed=seed)
        train, dev = parts["train"], parts["dev"]
    elif test is None:
        # The only given evaluation split becomes the held-out test; dev is carved from train
        # so that selection never sees the test rows.
        test = dev
        parts = stratified_split(train, {"train": 0.9, "dev": 0.1}, seed=seed)
        train, dev = parts["train"], parts["dev"]
    return TaskSplits(name=name, train=train, dev=dev, test=test)


def load_task(spec: str, data_dir_override: str | Path | None = None, task: TaskType | None = None,
              text_field: str | None = None, label_field: str | None = None, seed: int = 0) -> TaskSplits:
    """Resolve ``--data``: a named dataset, a folder of split files, or a single file.

    A single file is split 80/10/10 (stratified, seeded). A folder or named dataset uses its
    ``train`` / ``dev|validation`` / ``test`` files and carves out whatever is missing.
    """
    path = Path(spec)
    if path.is_file():
        data = load_file(path, task=task, text_field=text_field, label_field=label_field)
        parts = stratified_split(data, {"train": 0.8, "dev": 0.1, "test": 0.1}, seed=seed)
        return TaskSplits(name=path.stem, train=parts["train"], dev=parts["dev"], test=parts["test"])
    if path.is_dir() and spec not in list_named(data_dir_override):
        d = path
    else:
        d = _dataset_dir(spec, data_dir_override)
    labels_file = d / "labels.json"
    label_names = load_label_names(labels_file) if labels_file.exists() else None

    def find(names) -> Path | None:
        return next((d / f"{n}.jsonl" for n in names if (d / f"{n}.jsonl").exists()), None)

    files = {"train": find(("train",)), "dev": find(DEV_NAMES), "test": find(TEST_NAMES)}
    if files["train"] is None and files["dev"] is not None and files["test"] is not None:
        # An evaluation-only release (E2E ships validation and test; its train split is not in the
        # snapshot): the validation split trains, and dev is carved from it, every reference of one
        # input in the same part. The test split stays held out.
        files = {"train": files["dev"], "dev": None, "test": files["test"]}
    if files["train"] is None:
        raise DataError(f"{d}: no train.jsonl (nor a validation and a test file to train and test on)")

    def loader(p: Path) -> TaskData:
        return load_file(p, task=task, text_field=text_field, label_field=label_field, label_names=label_names)

    return _split_roles(d.name if spec != DEMO_NAME else DEMO_NAME, files, loader, seed)


def recipe_for(data: str, data_dir: str | Path | None, split_seed: int, train_size: int | None, subsample_seed: int,
               train: TaskData) -> dict:
    """How an adaptation's training rows were made, saved with it (``adaptlab_artifact.json``'s
    ``recipe``) so that ``adaptlab improve`` and ``rebase`` can make them again and tell whether the
    data changed since: the ``--data`` argument, the seeds, the train size and the rows' fingerprint."""
    return {"data": str(data), "data_dir": None if data_dir is None else str(data_dir), "split_seed": split_seed,
            "train_size": train_size, "subsample_seed": subsample_seed, "rows": len(train),
            "fingerprint": train.fingerprint(), "task": train.task, "source": train.source}


def splits_of_recipe(recipe: dict, data_dir_override: str | Path | None = None) -> tuple[TaskSplits, TaskData]:
    """The splits a recipe names and its train rows as they were drawn (the same subsample)."""
    from adaptlab.data.splits import subsample

    for key in ("data", "split_seed", "subsample_seed", "fingerprint"):
        if key not in recipe:
            raise DataError(f"recipe: missing field '{key}'")
    splits = load_task(recipe["data"], data_dir_override=data_dir_override or recipe.get("data_dir"),
                       task=recipe.get("task"), seed=recipe["split_seed"])
    n = recipe.get("train_size")
    train = subsample(splits.train, n=n, seed=recipe["subsample_seed"]) if n and n < len(splits.train) else splits.train
    return splits, train
