import json

from typer.testing import CliRunner

from adaptlab.cli import app

runner = CliRunner()


def test_help_on_every_command():
    for args in ([], ["data"], ["models"], ["data", "check"], ["data", "demo"], ["models", "info"], ["eval"], ["demo"]):
        r = runner.invoke(app, args + ["--help"])
        assert r.exit_code == 0, (args, r.output)


def test_data_check_demo_and_file(tmp_path):
    r = runner.invoke(app, ["data", "check", "demo", "--tokenizer", "tiny"])
    assert r.exit_code == 0, r.output
    assert "360" in r.output and "no warnings" in r.output
    p = tmp_path / "d.jsonl"
    p.write_text(
        "".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in [("a", "x"), ("a", "x"), ("b", "y")])
    )
    r = runner.invoke(app, ["data", "check", str(p), "--tokenizer", "none"])
    assert r.exit_code == 0 and "exact duplicate" in r.output


def test_data_check_error_is_one_line_exit_2(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"text": "a", "label": "x"}\n{oops}\n')
    r = runner.invoke(app, ["data", "check", str(p), "--tokenizer", "none"])
    assert r.exit_code == 2
    assert "bad.jsonl:2: malformed JSON" in r.output and "Traceback" not in r.output


def test_eval_zero_shot_tiny_writes_json(tmp_path):
    out = tmp_path / "z.json"
    r = runner.invoke(app, ["eval", "--model", "tiny", "--limit", "24", "--out", str(out)])
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    assert res["n"] == 24 and 0 <= res["accuracy"] <= 1 and len(res["predictions"]) == 24


def test_models_info_tiny_and_unknown():
    r = runner.invoke(app, ["models", "info", "--model", "tiny"])
    assert r.exit_code == 0 and "Gemma3ForCausalLM" in r.output
    r = runner.invoke(app, ["models", "info", "--model", "nope"])
    assert r.exit_code == 2 and "unknown model" in r.output


def test_train_tiny_lora_end_to_end(tmp_path):
    out = tmp_path / "art"
    r = runner.invoke(
        app,
        [
            "train",
            "--strategy",
            "lora",
            "--model",
            "tiny",
            "--out",
            str(out),
            "--max-steps",
            "3",
            "--train-size",
            "24",
            "--set",
            "r=4",
            "--set",
            'target_modules=["q_proj","v_proj"]',
        ],
    )
    assert r.exit_code == 0, r.output
    meta = json.loads((out / "adaptlab_artifact.json").read_text())
    assert meta["strategy_config"]["r"] == 4 and meta["metrics"]["test"]["n"] == 120
    assert (out / "adapter_model.safetensors").exists() and (out / "run" / "train_log.jsonl").exists()


def test_train_bad_config_is_one_line(tmp_path):
    r = runner.invoke(
        app, ["train", "--strategy", "lora", "--model", "tiny", "--out", str(tmp_path / "a"), "--set", "r=0"]
    )
    assert r.exit_code == 2 and "rank must be a positive integer" in r.output
    r = runner.invoke(app, ["train", "--strategy", "nope", "--model", "tiny", "--out", str(tmp_path / "a")])
    assert r.exit_code == 2 and "unknown strategy 'nope'" in r.output
    r = runner.invoke(
        app,
        [
            "train",
            "--strategy",
            "lora",
            "--model",
            "tiny",
            "--out",
            str(tmp_path / "a"),
            "--endpoint",
            "http://127.0.0.1:9",
        ],
    )
    assert r.exit_code == 2 and "only prompt strategies run on an endpoint" in r.output
    r = runner.invoke(app, ["strategies"])
    assert r.exit_code == 0 and "soft_prompt" in r.output


def test_demo_compares_strategies_on_tiny(tmp_path):
    r = runner.invoke(app, ["demo", "--model", "tiny", "--out", str(tmp_path), "--budget", "30s"])
    assert r.exit_code == 0, r.output
    said = r.output.replace("\n", "")  # rich wraps a long path at the terminal's width
    assert "Recommended:" in said and "report.html" in said
    assert (tmp_path / "report" / "report.html").exists() and (tmp_path / "results" / "zero_shot-n0-s0.json").exists()


def test_train_prompt_strategy_end_to_end(tmp_path):
    out = tmp_path / "fs"
    r = runner.invoke(
        app,
        [
            "train",
            "--strategy",
            "few_shot",
            "--model",
            "tiny",
            "--out",
            str(out),
            "--set",
            "k=3",
            "--set",
            "calibrate=true",
            "--set",
            "dev_limit=12",
        ],
    )
    assert r.exit_code == 0, r.output
    meta = json.loads((out / "adaptlab_artifact.json").read_text())
    assert meta["kind"] == "prompt" and len(meta["prompt"]["exemplars"]) == 3
    assert len(meta["prompt"]["calibration"]) == 12 and meta["metrics"]["test"]["n"] == 120
    assert "prompt tokens" in r.output


def test_no_library_warning_reaches_the_terminal(tmp_path):
    """A compare as a user runs it (a process of its own, the CLI's entry point): nothing on the terminal
    is a library's warning (transformers' cache-keyword deprecation used to print twice per compare)."""
    import subprocess
    import sys

    cmd = [
        sys.executable,
        "-c",
        "from adaptlab.cli import main; main()",
        "compare",
        "--data",
        "demo",
        "--model",
        "tiny",
        "--strategies",
        "zero_shot,lora",
        "--train-sizes",
        "8,16",
        "--test-limit",
        "8",
        "--fragility-k",
        "0",
        "--no-forgetting",
        "--consistency-examples",
        "0",
        "--no-tune",
        "--out",
        str(tmp_path / "c"),
        "--no-progress",
        "--budget",
        "30m",
    ]
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("PYTHONWARNINGS", "ADAPTLAB_WARNINGS")}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout + out.stderr
    assert "Warning" not in text and "deprecated" not in text.lower(), text[-3000:]


def test_the_cli_turns_off_transformers_per_load_progress_bar():
    """'Loading weights' drew a bar on every model load (a line of carriage returns in every compare
    log); the CLI turns transformers' bars off before any command loads a model."""
    import os
    import subprocess
    import sys

    code = (
        "from adaptlab.cli import quiet_libraries; quiet_libraries(); "
        "from transformers.utils import logging; print(logging.is_progress_bar_enabled())"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_DISABLE_PROGRESS_BARS", "ADAPTLAB_WARNINGS")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr[-1000:]


def test_config_fields_marked_cli_are_the_commands_options_with_their_defaults_and_help():
    """Each setting is written once, in its config class: a field marked ``cli`` is an option of the
    command with the field's type, default and help, and reaches the config unchanged."""
    import dataclasses

    import typer.main

    from adaptlab.cli import (
        cli_fields,
        compare_cmd,
        drift_cmd,
        export_cmd,
        improve_cmd,
        rebase_cmd,
        serve_cmd,
        train_cmd,
    )
    from adaptlab.compare.config import CompareConfig, default_of, help_of
    from adaptlab.export import ExportConfig
    from adaptlab.maintenance.drift import DriftConfig
    from adaptlab.maintenance.improve import ImproveOptions
    from adaptlab.maintenance.rebase import RebaseOptions
    from adaptlab.serving import ServeConfig
    from adaptlab.training.config import TrainConfig

    commands = typer.main.get_command(app).commands
    params = {}
    for cmd, cls, least in (
        (compare_cmd, CompareConfig, 10),
        (train_cmd, TrainConfig, 10),
        (serve_cmd, ServeConfig, 10),
        (export_cmd, ExportConfig, 5),
        (drift_cmd, DriftConfig, 3),
        (rebase_cmd, RebaseOptions, 3),
        (improve_cmd, ImproveOptions, 8),  # last: params below are improve's
    ):
        params = {p.name: p for p in commands[cmd.__name__[:-4]].params}
        names = cli_fields(cls)
        assert len(names) >= least, cls
        for name in names:
            p, default = params[name], default_of(cls, name)
            assert p.help == help_of(cls, name)
            assert p.required if default is dataclasses.MISSING else p.default == default  # no default: required
        if cls is TrainConfig:
            assert params["fsdp"].opts == ["--fsdp"] and params["fsdp"].secondary_opts == []  # its own flags
    assert params["auto_promote"].opts == ["--auto-promote"] and params["auto_promote"].secondary_opts == []
    help_text = runner.invoke(app, ["compare", "--help"], terminal_width=200).output
    assert "--prompt-margin" in help_text and "--no-forgetting" in help_text and "--strict-budget" in help_text

    from adaptlab.cli import _flag_config

    ctx_params = {p.name: p.default for p in typer.main.get_command(app).commands["compare"].params}
    ctx_params |= {"data": "demo", "prompt_margin": 0.05, "seeds": 2, "strict_budget": True, "set_": [], "endpoint": []}
    cfg = _flag_config(ctx_params)
    assert (cfg.prompt_margin, cfg.seeds, cfg.strict_budget) == (0.05, 2, True)


def test_serve_options_reach_its_config_and_bad_values_fail_in_one_line(monkeypatch, tmp_path):
    """``adaptlab serve``'s options come from ServeConfig: given values reach the config the service
    gets, one that ServeConfig refuses is one line naming the setting, and nothing starts."""
    import adaptlab.cli as cli

    seen = {}

    def fake_service(bases, reg, config, drift_interval):
        seen["config"] = config
        raise ValueError("stopped before serving")

    monkeypatch.setattr(cli, "_service_with_gauges", fake_service)
    monkeypatch.setattr("adaptlab.models.base.load_base", lambda name, device=None: name)
    reg = ["--registry", str(tmp_path / "reg")]
    r = runner.invoke(app, ["serve", "--model", "tiny", *reg, "--max-batch", "4", "--max-n", "2", "--no-prompt-cache"])
    assert "stopped before serving" in r.output, r.output
    c = seen["config"]
    assert (c.max_batch, c.max_n, c.prompt_cache, c.weights) == (4, 2, False, "auto")
    r = runner.invoke(app, ["serve", "--model", "tiny", *reg, "--max-new-tokens", "0"])
    assert r.exit_code != 0 and "max_new_tokens=0: must be >= 1" in r.output


def test_drift_and_rebase_settings_are_checked_in_one_line_before_the_registry_is_opened(tmp_path):
    """A value DriftConfig or RebaseOptions refuses is one line naming the option, and no registry
    folder is made for it."""
    reg = tmp_path / "reg"
    r = runner.invoke(app, ["drift", "food", "--registry", str(reg), "--alpha", "2"])
    assert r.exit_code != 0 and "--alpha 2.0: must be in (0, 1)" in r.output, r.output
    r = runner.invoke(app, ["drift", "food", "--registry", str(reg), "--window", "0"])
    assert r.exit_code != 0 and "--window 0: must be >= 1" in r.output, r.output
    r = runner.invoke(
        app,
        ["rebase", "food", "--registry", str(reg), "--model", "tiny", "--out", str(tmp_path / "o"), "--labels", "x"],
    )
    assert r.exit_code != 0 and "--labels 'x': use recipe or distill" in r.output, r.output
    r = runner.invoke(
        app,
        [
            "rebase",
            "food",
            "--registry",
            str(reg),
            "--model",
            "tiny",
            "--out",
            str(tmp_path / "o"),
            "--confidence",
            "1",
        ],
    )
    assert r.exit_code != 0 and "--confidence 1.0: must be in (0, 1)" in r.output, r.output
    assert not reg.exists() and not (tmp_path / "o").exists()


def test_a_command_option_given_twice_is_refused():
    import dataclasses

    import pytest

    from adaptlab.cli import config_options

    @dataclasses.dataclass
    class Cfg:
        seeds: int = dataclasses.field(default=1, metadata={"cli": True, "help": "Seeds."})

    def cmd(seeds: int = 1, **settings):
        return settings

    with pytest.raises(TypeError, match="seeds given twice"):
        config_options(Cfg)(cmd)
