"""adaptlab from Python (adaptlab.compare / train / load) and one config file for a compare (YAML, with
command-line options and --set over it), on the tiny model."""

import json

import pytest
from typer.testing import CliRunner

import adaptlab
from adaptlab.cli import app
from adaptlab.compare.config import from_mapping
from tests.compare.test_grid import FAST

YAML = """\
# a compare as a user writes it
data: demo
model: tiny
strategies: zero_shot,few_shot
train_sizes: [8]
test_limit: 6
fragility_k: 1
fragility_examples: 4
dev_limit: 4
epochs: 1
set:
  few_shot.k: 2
"""


def test_compare_from_python_returns_its_answer_as_objects(tmp_path):
    res = adaptlab.compare(
        "demo", out=tmp_path / "run", strategies=["zero_shot", "few_shot"], train_sizes=[8], progress=False, **FAST
    )
    assert isinstance(res, adaptlab.CompareResult) and res.out == tmp_path / "run"
    assert res.winner in ("zero_shot", "few_shot") and res.ranking[0]["strategy"] == res.winner
    assert {r.id for r in res.runs} == {"zero_shot-n0-s0", "few_shot-n8-s0"}
    assert res.reasons and res.report_html.exists() and res.report_md.exists()
    assert set(res.curves()) == {"zero_shot", "few_shot"}
    table = res.table()
    assert {t["strategy"] for t in table} == {"zero_shot", "few_shot"} and all(0 <= t["quality"] <= 1 for t in table)
    assert all(t["test_n"] == 6 for t in table)  # test_limit: 6
    df = res.to_pandas()
    assert list(df["run"]) == [t["run"] for t in table]
    assert f"Recommended: {res.winner}" in res._repr_markdown_()
    # resumable: the same call again runs nothing new; CompareResult.open reads the folder as it is
    again = adaptlab.compare(
        "demo", out=tmp_path / "run", strategies=["zero_shot", "few_shot"], train_sizes=[8], progress=False, **FAST
    )
    assert [r.id for r in again.runs] == [r.id for r in res.runs]
    assert [r.meta["finished"] for r in again.runs] == [r.meta["finished"] for r in res.runs]
    assert adaptlab.CompareResult.open(tmp_path / "run").winner == res.winner
    # The recommended run's artifact, and the registry takes the compare folder for it.
    assert res.artifact.parent == tmp_path / "run" / "artifacts" and res.artifact.name.startswith(res.winner)
    reg = tmp_path / "registry"
    out = CliRunner().invoke(
        app, ["registry", "register", str(tmp_path / "run"), "--task", "t", "--registry", str(reg)]
    )
    assert out.exit_code == 0 and f"the compare recommends {res.artifact.name}" in out.output, out.output
    entry = adaptlab.Registry(reg).resolve("t@1")
    assert entry.strategy == res.winner and entry.run == str(tmp_path / "run")
    measured = next(r for r in res.runs if r.id == res.artifact.name).eval["test"]
    assert entry.metrics["test"]["accuracy"] == measured["accuracy"]  # what `registry list` shows
    (res.artifact / "adaptlab_artifact.json").unlink()  # an artifact the compare did not keep
    with pytest.raises(ValueError, match=r"kept no artifact \(keep_artifacts="):
        _ = adaptlab.CompareResult.open(tmp_path / "run").artifact
    with pytest.raises(ValueError, match="unknown key 'strategy'"):
        adaptlab.compare("demo", out=tmp_path / "x", strategy="lora")


def _small_csv(tmp_path):
    """A 40-row classification file (split 32/4/4). Not the demo where a test checks options, not
    quality: the demo's test split through a random tiny model's label tree took 20 s a train."""
    rows = [f"item {i} {'fresh' if i % 2 else 'broken'},{'good' if i % 2 else 'bad'}" for i in range(40)]
    (tmp_path / "d.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
    return tmp_path / "d.csv"


def test_train_then_load_and_use_an_adaptation(tmp_path):
    art = adaptlab.train(
        "lora",
        str(_small_csv(tmp_path)),
        out=tmp_path / "lora",
        model="tiny",
        settings={"r": 4},
        train_size=16,
        max_steps=2,
        batch_size=4,
        lr=1e-2,
        progress=False,
    )
    assert (tmp_path / "lora" / "adaptlab_artifact.json").exists() and "accuracy" in art.metrics["test"]
    meta = json.loads((tmp_path / "lora" / "adaptlab_artifact.json").read_text())
    assert meta["recipe"]["train_size"] == 16 and meta["strategy_config"]["r"] == 4
    m = adaptlab.load(tmp_path / "lora")
    assert m.task == "classification" and m.labels
    one = m.classify("Where is my parcel? It was due on Monday.")
    assert one in m.labels
    many = m.classify(["I want my money back", "The lamp arrived broken"])
    assert len(many) == 2 and all(x in m.labels for x in many)
    probs = m.scores(["I want my money back"])[0]
    assert set(probs) == set(m.labels) and abs(sum(probs.values()) - 1) < 1e-4
    assert m.chat([{"role": "user", "content": "I want my money back"}]) == many[0]
    with pytest.raises(ValueError, match="no user turn"):
        m.chat([{"role": "system", "content": "hi"}])
    # from the registry, by reference
    reg = adaptlab.Registry(tmp_path / "reg")
    reg.register(tmp_path / "lora", task="tickets")
    assert adaptlab.load("tickets@1", registry=tmp_path / "reg").classify("I want my money back") == many[0]


def test_a_generation_adaptation_generates(tmp_path):
    # dev_limit 4: a prompt strategy records dev metrics even without evaluate (50 dev chats decoded
    # by a random tiny model were 16 of this test's 17 seconds).
    adaptlab.train(
        "zero_shot",
        "demo-chat",
        out=tmp_path / "zs",
        model="tiny",
        settings={"dev_limit": 4},
        progress=False,
        evaluate=False,
    )
    m = adaptlab.load(tmp_path / "zs")
    assert m.task == "chat" and m.labels is None
    out = m.generate(["Hello"], max_new_tokens=3)
    assert isinstance(out, list) and isinstance(out[0], str)
    reply = m.chat([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}], max_new_tokens=3)
    assert isinstance(reply, str)
    with pytest.raises(ValueError, match="no label set"):
        m.classify("x")


def test_a_yaml_config_runs_and_flags_and_set_override_it(tmp_path):
    (tmp_path / "compare.yaml").write_text(YAML)
    r = CliRunner().invoke(
        app,
        [
            "compare",
            "--config",
            str(tmp_path / "compare.yaml"),
            "--out",
            str(tmp_path / "a"),
            "--no-progress",
            "--strategies",
            "zero_shot",
            "--set",
            "few_shot.k=3",
        ],
    )
    assert r.exit_code == 0, r.output
    saved = json.loads((tmp_path / "a" / "compare.json").read_text())
    assert saved["strategies"] == ["zero_shot"] and saved["strategy_settings"]["few_shot"] == {"k": 3}
    assert saved["model"] == "tiny" and saved["train_sizes"] == [8]
    # the run folder's saved config re-runs it unchanged (nothing new to run)
    r = CliRunner().invoke(
        app,
        ["compare", "--config", str(tmp_path / "a" / "compare.json"), "--out", str(tmp_path / "a"), "--no-progress"],
    )
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "a" / "compare.json").read_text()) == saved
    # the Python call takes the same file
    res = adaptlab.compare(
        config=tmp_path / "compare.yaml", out=tmp_path / "b", strategies=["zero_shot"], progress=False
    )
    assert res.config.model == "tiny" and [r.id for r in res.runs] == ["zero_shot-n0-s0"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("data: demo\nseedz: 2\n", "c.yaml: unknown key 'seedz' (did you mean 'seeds'?)"),
        ("data: demo\nseeds: two\n", "c.yaml: key 'seeds': expected int, got str 'two'"),
        ("data: demo\nbudget: soon\n", "c.yaml: key 'budget': use e.g. 30m"),
        ("data: demo\nset:\n  lora.rank: 2\n", "c.yaml: strategy 'lora': unknown config key(s) rank"),
        ("data: demo\nstrategies: [lora, nope]\n", "c.yaml: --strategies: unknown nope"),
        ("seeds: 1\n", "c.yaml: missing key 'data'"),
        ("data: demo\n  seeds: [\n", "c.yaml:2: malformed YAML"),
        ("- data\n", "c.yaml: expected a mapping of compare settings"),
    ],
)
def test_bad_config_is_one_line_naming_the_file_and_the_key(tmp_path, text, message):
    (tmp_path / "c.yaml").write_text(text)
    r = CliRunner().invoke(app, ["compare", "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and message in r.output, r.output
    assert not (tmp_path / "o").exists()  # nothing written for a bad config


def test_file_spellings_of_budget_sizes_and_set():
    c = from_mapping(
        {
            "data": "demo",
            "budget": "15m",
            "train_sizes": "32,128,all",
            "strategies": "zero_shot,lora",
            "set": {"lora.r": 16, "full.epochs": 1},
            "volume": "1M/month",
        },
        "f.yaml",
    )
    assert (c.budget_seconds, c.adaptive, c.train_sizes) == (900.0, True, [32, 128, "all"])
    assert c.strategy_settings == {"lora": {"r": 16}} and c.strategy_epochs == {"full": 1.0}
    assert c.volume == 1e6 and c.strategies == ["zero_shot", "lora"]
    assert from_mapping({"data": "demo", "budget": "15m", "adaptive": False}, "f").adaptive is False


def test_train_from_a_yaml_file_flags_over_it_and_its_saved_options_rerun_it(tmp_path):
    (tmp_path / "train.yaml").write_text(
        f"strategy: lora\ndata: {_small_csv(tmp_path)}\nmodel: tiny\ntrain_size: 16\nmax-steps: 2\nbatch_size: 4\n"
        "lr: 0.01\nsettings:\n  r: 4\n"
    )
    r = CliRunner().invoke(
        app, ["train", "--config", str(tmp_path / "train.yaml"), "--out", str(tmp_path / "a"), "--train-size", "8"]
    )
    assert r.exit_code == 0, r.output
    meta = json.loads((tmp_path / "a" / "adaptlab_artifact.json").read_text())
    assert meta["recipe"]["train_size"] == 8 and meta["strategy_config"]["r"] == 4  # the flag over the file
    assert meta["train_config"]["max_steps"] == 2 and meta["train_config"]["batch_size"] == 4
    import yaml

    saved = yaml.safe_load((tmp_path / "a" / "train.yaml").read_text())
    assert saved["train_size"] == 8 and saved["settings"] == {"r": 4} and saved["model"] == "tiny"
    r = CliRunner().invoke(app, ["train", "--config", str(tmp_path / "a" / "train.yaml"), "--out", str(tmp_path / "b")])
    assert r.exit_code == 0, r.output
    again = json.loads((tmp_path / "b" / "adaptlab_artifact.json").read_text())
    assert again["recipe"]["fingerprint"] == meta["recipe"]["fingerprint"]
    assert again["strategy_config"] == meta["strategy_config"] and again["train_config"] == meta["train_config"]


@pytest.mark.parametrize("command", ["train", "serve"])
def test_a_train_or_serve_file_with_an_unknown_key_is_one_line(tmp_path, command):
    (tmp_path / "c.yaml").write_text("model: tiny\nbatchsize: 4\n")
    r = CliRunner().invoke(app, [command, "--config", str(tmp_path / "c.yaml")])
    assert r.exit_code == 2 and "c.yaml: unknown key 'batchsize'" in r.output, r.output


def test_every_compare_option_that_is_a_config_field_takes_its_help_from_the_field():
    import dataclasses

    import typer

    from adaptlab.compare.config import CompareConfig, help_of

    fields = {f.name for f in dataclasses.fields(CompareConfig)}
    cmd = typer.main.get_command(app).commands["compare"]
    shared = [p for p in cmd.params if p.name in fields]
    assert len(shared) >= 25
    for p in shared:
        written = help_of(CompareConfig, p.name)
        assert written and (p.help or "").startswith(written.rstrip(".")), p.name
