"""``adaptlab improve`` end to end on the tiny model: recipe, feedback (a new label arriving through
corrections, confirmations, answers rated down), the challenger as staging with its lineage, the
gate, promotion and rollback; personal data refused unless redacted."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from adaptlab.cli import app
from adaptlab.maintenance.improve import ImproveOptions, gate, held_back, improve
from adaptlab.privacy import PersonalDataError
from adaptlab.registry import RegistryError
from adaptlab.strategies.base import read_artifact_meta
from tests.maintenance.kit import champion

runner = CliRunner()
FRUIT = ["apple", "pear", "plum", "fig", "kiwi", "lime", "grape", "mango"]
VEG = ["leek", "kale", "bean", "corn", "okra", "pea", "yam", "beet"]


def _champion(tmp_path, monkeypatch):
    monkeypatch.setenv("ADAPTLAB_REGISTRY", str(tmp_path / "reg"))
    rows = [{"text": f"I ate a {w} today", "label": "fruit"} for w in FRUIT * 3] + [
        {"text": f"I cooked a {w} today", "label": "veg"} for w in VEG * 3
    ]
    return champion(tmp_path, rows, "--max-steps", "4", "--lr", "0.01")


def _feedback(reg, rows):
    for i, (text, served, rating, correction) in enumerate(rows):
        rid = f"req-{i}"
        reg.requests.log(rid, "food", 1, "classification", text, served)
        reg.requests.add_feedback(rid, rating, correction)


FEEDBACK = (
    [(f"my {w} smoothie", "veg", -1, "drink") for w in FRUIT + VEG]  # a new label, corrected
    + [(f"a {w} pie", "fruit", 1, None) for w in FRUIT]  # confirmed
    + [(f"raw {w}", "fruit", -1, None) for w in VEG]
)  # rated down only


def test_the_recipe_is_saved_and_improve_trains_judges_and_registers_staging(tmp_path, monkeypatch):
    reg, data = _champion(tmp_path, monkeypatch)
    meta = read_artifact_meta(reg.resolve("food@prod").path)
    assert meta["recipe"]["data"] == str(data) and len(meta["recipe"]["fingerprint"]) == 64
    _feedback(reg, FEEDBACK)
    ev = improve(reg, "food", tmp_path / "imp", ImproveOptions(holdout=0.3, progress=False), log=lambda *a: None)

    assert ev["champion"] == "food@1" and ev["challenger"] == "food@2"
    assert reg.aliases("food")["food"] == {"prod": 1, "staging": 2}
    lin = reg.lineage("food")[2]
    assert lin["parent"] == 1 and lin["new_labels"] == ["drink"]
    fb = lin["feedback"]
    assert fb["rated_down"] == 8 and fb["correction"] + fb["confirmed"] + lin["held_back"] == 24
    assert lin["rows_added"] == sum(fb.values())
    assert set(ev["scores"]) == {"test", "feedback"}
    for s in ev["scores"].values():
        p = s["paired"]
        assert p["lo"] <= p["diff"] <= p["hi"] and p["diff"] == pytest.approx(s["challenger"] - s["champion"])
    chal = read_artifact_meta(reg.get("food", 2).path)
    assert "drink" in chal["labels"] and chal["lineage"]["gate"] == ev["gate"]
    assert (tmp_path / "imp" / "improve.md").read_text().startswith("# improve food")
    if not ev["gate"]["passed"]:
        assert reg.aliases("food")["food"]["prod"] == 1 and ev["promote_command"] == "adaptlab registry promote food 2"

    # Without the rated-down rows: fewer rows added; the same rows held back (drawn by request id).
    ev2 = improve(
        reg,
        "food",
        tmp_path / "imp2",
        ImproveOptions(holdout=0.3, use_rated_down=False, progress=False),
        log=lambda *a: None,
    )
    assert reg.lineage("food")[3]["rows_added"] == lin["rows_added"] - 8
    assert ev2["lineage"]["held_back"] == lin["held_back"]


def test_auto_promote_only_through_the_gate_and_rollback(tmp_path, monkeypatch):
    reg, _ = _champion(tmp_path, monkeypatch)
    _feedback(reg, FEEDBACK)
    # An impossible margin: the gate refuses, prod stays.
    ev = improve(
        reg, "food", tmp_path / "a", ImproveOptions(margin=1.0, auto_promote=True, progress=False), log=lambda *a: None
    )
    assert not ev["gate"]["passed"] and not ev["promoted"] and reg.aliases("food")["food"]["prod"] == 1
    assert "does not win by the margin" in ev["gate"]["reason"]
    # The CLI: the challenger passes when it wins on the new label; then a rollback restores v1.
    r = runner.invoke(app, ["improve", "food", "--out", str(tmp_path / "b"), "--auto-promote", "--epochs", "8"])
    assert r.exit_code == 0, r.output
    ev = json.loads((tmp_path / "b" / "improve.json").read_text())
    assert ev["promoted"] == ev["gate"]["passed"]
    shown = json.loads(runner.invoke(app, ["registry", "show", "food@3"]).output)
    assert shown["lineage"]["parent"] == 1 and shown["lineage"]["kind"] == "improve"
    listed = runner.invoke(app, ["registry", "list", "--task", "food"])
    assert listed.exit_code == 0 and "made" in listed.output
    from adaptlab.registry import lineage_text

    text = lineage_text(reg.lineage("food")[3])
    assert text.startswith("improve: v1 + ") and "feedback rows (" in text
    if ev["promoted"]:
        assert reg.aliases("food")["food"]["prod"] == 3
        assert reg.rollback("food").version == 1


def test_personal_data_in_feedback_is_refused_unless_redacted(tmp_path, monkeypatch):
    reg, _ = _champion(tmp_path, monkeypatch)
    _feedback(reg, FEEDBACK + [("mail jane@example.com about the kiwi", "veg", -1, "fruit")])
    with pytest.raises(PersonalDataError, match=r"1 personal data finding\(s\) \(1 email in field 'text'"):
        improve(reg, "food", tmp_path / "x", ImproveOptions(progress=False), log=lambda *a: None)
    assert "staging" not in reg.aliases("food")["food"]
    ev = improve(
        reg, "food", tmp_path / "y", ImproveOptions(redact=True, holdout=0.0, progress=False), log=lambda *a: None
    )
    assert "jane@example.com" not in (tmp_path / "y" / "train.jsonl").read_text()
    assert "[EMAIL]" in (tmp_path / "y" / "train.jsonl").read_text() and ev["lineage"]["redacted"]


def test_a_champion_without_a_recipe_is_a_clear_error(tmp_path, monkeypatch):
    reg, _ = _champion(tmp_path, monkeypatch)
    folder = tmp_path / "norecipe"
    import shutil

    shutil.copytree(tmp_path / "art", folder)
    meta = json.loads((folder / "adaptlab_artifact.json").read_text())
    meta["recipe"] = None
    (folder / "adaptlab_artifact.json").write_text(json.dumps(meta))
    reg.register(folder, "food", alias="prod")
    _feedback(reg, FEEDBACK)
    with pytest.raises(RegistryError, match="food@2: no recipe saved with it"):
        improve(reg, "food", tmp_path / "z", ImproveOptions(progress=False), log=lambda *a: None)


def test_gate_rules():
    win = {"diff": 0.10, "lo": 0.02, "hi": 0.2}
    tie = {"diff": 0.0, "lo": -0.05, "hi": 0.05}
    loss = {"diff": -0.06, "lo": -0.1, "hi": -0.01}
    assert gate(win, tie, 0.05)["passed"]
    assert not gate(win, loss, 0.05)["passed"] and "significant loss" in gate(win, loss, 0.05)["reason"]
    assert not gate(win, tie, 0.2)["passed"]
    assert not gate(tie, tie, 0.0)["passed"]  # winning means more than nothing
    assert gate(None, win, 0.05)["judged_on"] == "held-out test rows"
    assert not gate(None, None, 0.0)["passed"]


def test_held_back_is_a_stable_share():
    ids = [f"r{i}" for i in range(2000)]
    share = sum(held_back(i, 0.25) for i in ids) / len(ids)
    assert 0.22 < share < 0.28 and [held_back(i, 0.25) for i in ids[:50]] == [held_back(i, 0.25) for i in ids[:50]]


def test_feedback_all_held_back_says_how_to_go_on(tmp_path, monkeypatch):
    reg, _ = _champion(tmp_path, monkeypatch)
    rid = next(f"req-{i}" for i in range(100) if held_back(f"req-{i}", 0.25))  # the tutorial's one correction
    reg.requests.log(rid, "food", 1, "classification", "my kiwi smoothie", "veg")
    reg.requests.add_feedback(rid, -1, "fruit")
    with pytest.raises(ValueError, match=r"no row left to train on \(1 rows, 1 held back .*pass --holdout 0"):
        improve(reg, "food", tmp_path / "x", ImproveOptions(progress=False), log=lambda *a: None)
