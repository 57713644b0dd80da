"""A champion for the maintenance tests: rows written to a file, trained with `adaptlab train` on the
tiny model (so its artifact has a recipe), registered as prod."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from adaptlab.cli import app
from adaptlab.registry import Registry


def train_cli(data: Path, out: Path, strategy: str = "lora", *extra: str) -> Path:
    r = CliRunner().invoke(
        app, ["train", "--strategy", strategy, "--data", str(data), "--out", str(out), "--model", "tiny", *extra]
    )
    assert r.exit_code == 0, r.output
    return out


def champion(tmp_path: Path, rows: list[dict], *extra: str) -> tuple[Registry, Path]:
    """(the registry at tmp_path/reg with the champion as food@prod, the data file)."""
    data = tmp_path / "food.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    reg = Registry(tmp_path / "reg")
    reg.register(train_cli(data, tmp_path / "art", "lora", *extra), "food", alias="prod")
    return reg, data
