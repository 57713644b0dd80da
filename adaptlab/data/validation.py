"""Whole-dataset checks: errors that stop a run, warnings that a user should read.

Errors (raised as :class:`DataError`): a single class, labels in an evaluation split that the
train split never shows. Warnings (returned): exact duplicates, texts shared by train and an
evaluation split (leakage), the same text with different labels, heavy class imbalance, inputs
longer than the token budget.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from adaptlab.data.records import DataError, TaskData
from adaptlab.tasks.base import get_task

IMBALANCE_RATIO = 10.0  # largest class / smallest class above which we warn
DEFAULT_MAX_TOKENS = 512


@dataclass
class SplitSummary:
    name: str
    source: str
    rows: int
    class_counts: dict[str, int]
    length_tokens: dict[str, float]  # min / mean / p95 / max
    length_unit: str
    length_histogram: list[tuple[int, int, int]] = field(default_factory=list)  # (from, to, rows)


@dataclass
class DataReport:
    task: str
    splits: list[SplitSummary]
    warnings: list[str] = field(default_factory=list)


def _summary_stats(values: list[int]) -> dict[str, float]:
    s = sorted(values)
    p95 = s[min(len(s) - 1, int(round(0.95 * (len(s) - 1))))]
    return {"min": s[0], "mean": round(sum(s) / len(s), 1), "p95": p95, "max": s[-1]}


def histogram(values: list[int], bins: int = 10) -> list[tuple[int, int, int]]:
    """``bins`` equal-width bins over [min, max]: (from, to inclusive, count)."""
    lo, hi = min(values), max(values)
    width = max(1, -(-(hi - lo + 1) // bins))  # ceil: every value falls in a bin
    counts = Counter((v - lo) // width for v in values)
    return [(lo + b * width, lo + (b + 1) * width - 1, counts.get(b, 0)) for b in range((hi - lo) // width + 1)]


def file_errors(path, limit: int = 20, **load_args) -> list[str]:
    """Every row error of a JSONL file (up to ``limit``), each as ``load_file`` words it: load, and
    on an error at a line, blank that line and load again (line numbers stay). Other files, and
    errors of the whole file, stop at the first."""
    import re
    import tempfile
    from pathlib import Path

    from adaptlab.data.loading import jsonl_lines, load_file

    path = Path(path)
    errors: list[str] = []
    try:
        load_file(path, **load_args)
        return errors
    except DataError as e:
        errors.append(str(e))
    if path.suffix.lower() not in (".jsonl", ".json"):
        return errors
    lines = jsonl_lines(path.read_bytes().decode("utf-8", errors="replace"))
    at = re.compile(re.escape(str(path)) + r":(\d+):")
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / path.name
        while len(errors) < limit and (m := at.match(errors[-1])) and 0 < int(m.group(1)) <= len(lines):
            lines[int(m.group(1)) - 1] = ""
            probe.write_text("\n".join(lines) + "\n", encoding="utf-8")
            try:
                load_file(probe, **load_args)
                break
            except DataError as e:
                msg = str(e).replace(str(probe), str(path))
                if msg in errors or not at.match(msg):
                    break
                errors.append(msg)
    return errors


def token_counter(tokenizer) -> Callable[[str], int]:
    if tokenizer is None:
        return lambda text: len(text.split())
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


def validate(
    train: TaskData,
    evals: dict[str, TaskData] | None = None,
    tokenizer=None,
    max_tokens: int = DEFAULT_MAX_TOKENS,
) -> DataReport:
    """Check a train split and its evaluation splits; raise on errors, return warnings + stats.

    ``tokenizer`` (any HF tokenizer) measures lengths in tokens; without it, whitespace words.
    """
    evals = evals or {}
    warnings: list[str] = []
    for ev in evals.values():
        if ev.task != train.task:
            raise DataError(f"{ev.source}: task is {ev.task} but the train split ({train.source}) is {train.task}")
    spec = get_task(train.task)
    if spec.closed_labels:
        counts = Counter(ex.label for ex in train.examples)
        if len(counts) < 2:
            only = next(iter(counts))
            raise DataError(
                f"{train.source}: field '{train.label_field}': only one class ({only!r}); "
                "classification needs at least 2"
            )
        for ev in evals.values():
            for ex in ev.examples:
                if ex.label not in counts:
                    raise DataError(
                        f"{ev.source}:{ex.line}: field '{ev.label_field}': label {ex.label!r} "
                        f"does not occur in the train split ({train.source})"
                    )
        most, least = counts.most_common()[0], counts.most_common()[-1]
        if most[1] / least[1] >= IMBALANCE_RATIO:
            warnings.append(
                f"{train.source}: heavy class imbalance: {most[0]!r} has {most[1]} rows, "
                f"{least[0]!r} has {least[1]} (ratio {most[1] / least[1]:.0f}:1); report macro-F1, not only accuracy"
            )
    count = token_counter(tokenizer)
    unit = "tokens" if tokenizer is not None else "words"
    summaries = []
    for name, data in {"train": train, **evals}.items():
        warnings += _duplicates(data)
        lengths = spec.input_lengths(data, count, tokenizer)
        long = [(n, ex.line) for n, ex in zip(lengths, data.examples) if n > max_tokens]
        if long and spec.conversation:
            lines = ", ".join(str(line) for _, line in long[:10]) + (", ..." if len(long) > 10 else "")
            warnings.append(
                f"{data.source}: {len(long)} conversation(s) longer than {max_tokens} {unit} would be cut: "
                f"training drops their earliest turns to fit (lines {lines}; longest {max(long)[0]} {unit})"
            )
        elif long:
            worst = max(long)
            warnings.append(
                f"{data.source}: {len(long)} input(s) longer than {max_tokens} {unit} "
                f"(longest {worst[0]} at line {worst[1]}); they will be truncated"
            )
        summaries.append(
            SplitSummary(
                name=name,
                source=data.source,
                rows=len(data),
                class_counts=dict(Counter(ex.label for ex in data.examples).most_common())
                if spec.closed_labels
                else {},
                length_tokens=_summary_stats(lengths),
                length_unit=unit,
                length_histogram=histogram(lengths),
            )
        )
    train_texts = {ex.text: ex.line for ex in train.examples}
    for ev in evals.values():
        leaked = [ex for ex in ev.examples if ex.text in train_texts]
        if leaked:
            first = leaked[0]
            warnings.append(
                f"{ev.source}: {len(leaked)} text(s) also in the train split (first at line {first.line}, "
                f"same as {train.source}:{train_texts[first.text]}); scores on this split will be optimistic"
            )
    return DataReport(task=train.task, splits=summaries, warnings=warnings)


def _duplicates(data: TaskData) -> list[str]:
    out = []
    seen_pair: dict[tuple[str, str], int] = {}
    seen_text: dict[str, tuple[str, int]] = {}
    dupes: list[tuple[int, int]] = []
    conflicts: list[tuple[int, int]] = []
    closed = get_task(data.task).closed_labels
    for ex in data.examples:
        key = (ex.text, ex.label)
        if key in seen_pair:
            dupes.append((ex.line, seen_pair[key]))
        else:
            seen_pair[key] = ex.line
            if closed and ex.text in seen_text and seen_text[ex.text][0] != ex.label:
                conflicts.append((ex.line, seen_text[ex.text][1]))
            seen_text.setdefault(ex.text, (ex.label, ex.line))
    if dupes:
        out.append(
            f"{data.source}: {len(dupes)} exact duplicate row(s) (first at line {dupes[0][0]}, "
            f"duplicate of line {dupes[0][1]})"
        )
    if conflicts:
        out.append(
            f"{data.source}: {len(conflicts)} text(s) appear with different labels (first at line "
            f"{conflicts[0][0]}, conflicts with line {conflicts[0][1]})"
        )
    return out
