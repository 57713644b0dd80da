"""Named datasets and the one resolver every command uses for ``--data FILE_OR_NAME``.

Benchmark datasets are read in place from a data directory (``$ADAPTLAB_DATA_DIR``, the
``--data-dir`` flag, or ``../shared/datasets`` when it exists); they are never copied into the
project. A dataset folder holds one file per split (``train.jsonl``, ``validation.parquet``,
``test.csv``, ... in any format :func:`adaptlab.data.loading.load_file` reads) and, for
classification, ``labels.json``; a ``DatasetDict`` written by ``datasets``' ``save_to_disk`` is such a
folder too (one sub-folder per split).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from adaptlab.data.formats import is_dataset_dict, is_datasets_folder
from adaptlab.data.loading import SUPPORTED_SUFFIXES, DataError, TaskData, TaskType, load_file, load_label_names
from adaptlab.data.splits import stratified_split

DATA_DIR_ENV = "ADAPTLAB_DATA_DIR"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEMO_NAME = "demo"
DEMO_DIR = Path(__file__).resolve().parent / "demo"
DEMO_CHAT_NAME = "demo-chat"  # the same shop's support as multi-turn chats (adaptlab.data.demo_chat)
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
    """Names of the datasets in the data directory (folders holding a train, dev or test split)."""
    names = list(EMBEDDED)
    try:
        root = data_dir(override)
    except DataError:
        return names
    return names + sorted(
        p.name for p in root.iterdir() if p.is_dir() and _find_split(p, ("train", *DEV_NAMES, *TEST_NAMES))
    )


def _dataset_dir(name: str, override: str | Path | None) -> Path:
    if name in EMBEDDED:
        return EMBEDDED[name]
    root = data_dir(override)
    d = root / name
    if not d.is_dir() or ".." in Path(name).parts:
        known = ", ".join(list_named(override))
        raise DataError(f"unknown dataset '{name}' in {root} (known: {known})")
    return d


def _find_split(d: Path, names) -> Path | None:
    """The first split file (any supported suffix) or ``datasets`` split folder named one of ``names``."""
    for n in names:
        for suffix in SUPPORTED_SUFFIXES:
            if (d / f"{n}{suffix}").is_file():
                return d / f"{n}{suffix}"
        if is_datasets_folder(d / n):
            return d / n
    return None


def _split_file(d: Path, split: str) -> Path:
    found = _find_split(d, DEV_NAMES if split in DEV_NAMES else (split,))
    if found is not None:
        return found
    have = ", ".join(
        sorted(
            {
                p.stem
                for p in d.iterdir()
                if (p.suffix in SUPPORTED_SUFFIXES and p.name != "labels.json") or is_datasets_folder(p)
            }
        )
    )
    raise DataError(f"{d}: no split '{split}' (have: {have})")


def load_named(
    name: str, split: str = "train", data_dir_override: str | Path | None = None, task: TaskType | None = None
) -> TaskData:
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


def load_task(
    spec: str,
    data_dir_override: str | Path | None = None,
    task: TaskType | None = None,
    text_field: str | None = None,
    label_field: str | None = None,
    seed: int = 0,
    columns: dict[str, str] | None = None,
) -> TaskSplits:
    """Resolve ``--data``: a named dataset, a folder of split files, or a single file.

    A single file (or a ``datasets`` folder of one ``Dataset``) is split 80/10/10 (stratified,
    seeded). A folder or named dataset (a ``DatasetDict`` folder included) uses its ``train`` /
    ``dev|validation`` / ``test`` splits and carves out whatever is missing. ``columns`` maps the
    files' column names to the task's fields.
    """
    path = Path(spec)
    if path.is_file() or (is_datasets_folder(path) and not is_dataset_dict(path)):
        data = load_file(path, task=task, text_field=text_field, label_field=label_field, columns=columns)
        parts = stratified_split(data, {"train": 0.8, "dev": 0.1, "test": 0.1}, seed=seed)
        return TaskSplits(name=path.stem, train=parts["train"], dev=parts["dev"], test=parts["test"])
    d = path if path.is_dir() and spec not in list_named(data_dir_override) else _dataset_dir(spec, data_dir_override)
    labels_file = d / "labels.json"
    label_names = load_label_names(labels_file) if labels_file.exists() else None

    files = {"train": _find_split(d, ("train",)), "dev": _find_split(d, DEV_NAMES), "test": _find_split(d, TEST_NAMES)}
    if files["train"] is None and files["dev"] is not None and files["test"] is not None:
        # An evaluation-only release (E2E ships validation and test; its train split is not in the
        # snapshot): the validation split trains, and dev is carved from it, every reference of one
        # input in the same part. The test split stays held out.
        files = {"train": files["dev"], "dev": None, "test": files["test"]}
    if files["train"] is None:
        raise DataError(
            f"{d}: no train split (train.jsonl, train.parquet, ... or a train/ folder written by "
            f"save_to_disk), nor a validation and a test split to train and test on"
        )

    def loader(p: Path) -> TaskData:
        return load_file(
            p, task=task, text_field=text_field, label_field=label_field, label_names=label_names, columns=columns
        )

    return _split_roles(d.name if spec != DEMO_NAME else DEMO_NAME, files, loader, seed)


def recipe_for(
    data: str,
    data_dir: str | Path | None,
    split_seed: int,
    train_size: int | None,
    subsample_seed: int,
    train: TaskData,
    columns: dict[str, str] | None = None,
) -> dict:
    """How an adaptation's training rows were made, saved with it (``adaptlab_artifact.json``'s
    ``recipe``) so that ``adaptlab improve`` and ``rebase`` can make them again and tell whether the
    data changed since: the ``--data`` argument, the seeds, the train size and the rows' fingerprint."""
    return {
        "data": str(data),
        "data_dir": None if data_dir is None else str(data_dir),
        "split_seed": split_seed,
        "train_size": train_size,
        "subsample_seed": subsample_seed,
        "rows": len(train),
        "fingerprint": train.fingerprint(),
        "task": train.task,
        "source": train.source,
        **({"columns": dict(columns)} if columns else {}),
    }


def splits_of_recipe(recipe: dict, data_dir_override: str | Path | None = None) -> tuple[TaskSplits, TaskData]:
    """The splits a recipe names and its train rows as they were drawn (the same subsample)."""
    from adaptlab.data.splits import subsample

    for key in ("data", "split_seed", "subsample_seed", "fingerprint"):
        if key not in recipe:
            raise DataError(f"recipe: missing field '{key}'")
    splits = load_task(
        recipe["data"],
        data_dir_override=data_dir_override or recipe.get("data_dir"),
        task=recipe.get("task"),
        seed=recipe["split_seed"],
        columns=recipe.get("columns"),
    )
    n = recipe.get("train_size")
    train = subsample(splits.train, n=n, seed=recipe["subsample_seed"]) if n and n < len(splits.train) else splits.train
    return splits, train
