"""Several local bases in one compare (``--model a,b``): each strategy runs on each base as
STRATEGY@BASE, on the same test rows, in one ranking and one recommendation; the base's own
forgetting reference and token counts are used; a base and an endpoint may not share a name."""

import json
import re

import pytest
from typer.testing import CliRunner

from adaptlab.cli import app
from adaptlab.compare import CompareConfig, run_compare
from adaptlab.compare.costs import Estimator
from adaptlab.compare.measure import prepare
from tests.compare.test_grid import FAST


def test_each_strategy_runs_on_each_base_in_one_ranking(tmp_path):
    cfg = CompareConfig(
        data="demo",
        strategies=["zero_shot", "lora"],
        train_sizes=[8],
        seeds=1,
        **{**FAST, "model": "tiny,tiny-llama", "strategy_settings": {"lora": {"r": 4}}},
    )
    assert cfg.strategies == ["zero_shot@tiny", "zero_shot@tiny-llama", "lora@tiny", "lora@tiny-llama"]
    assert cfg.base_of("lora@tiny-llama") == "tiny-llama" and cfg.endpoint_of("lora@tiny-llama") is None
    res = run_compare(cfg, tmp_path, progress=False)
    assert sorted(res["finished"]) == [
        "lora@tiny-llama-n8-s0",
        "lora@tiny-n8-s0",
        "zero_shot@tiny-llama-n0-s0",
        "zero_shot@tiny-n0-s0",
    ]
    recs = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "results").glob("*.json")}
    a, b = recs["lora@tiny-n8-s0"], recs["lora@tiny-llama-n8-s0"]
    assert (a["run"]["base"], b["run"]["base"]) == ("tiny", "tiny-llama") and a["run"]["endpoint"] is None
    assert b["run"]["settings"] == {"r": 4} == cfg.settings_for("lora@tiny-llama")  # --set lora.r reaches each base
    assert [p["id"] for p in a["predictions"]] == [p["id"] for p in b["predictions"]]  # the same test rows
    # each base's own forgetting reference: its own perplexity before adapting
    za, zb = recs["zero_shot@tiny-n0-s0"], recs["zero_shot@tiny-llama-n0-s0"]
    assert za["eval"]["forgetting"]["ppl_before"] != zb["eval"]["forgetting"]["ppl_before"]
    assert a["eval"]["forgetting"]["ppl_before"] == za["eval"]["forgetting"]["ppl_before"]
    r = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert r.exit_code == 0, r.output
    report = (tmp_path / "report" / "report.md").read_text()
    assert "lora@tiny-llama" in report and "zero_shot@tiny" in report
    r = CliRunner().invoke(app, ["recommend", str(tmp_path)])
    assert r.exit_code == 0 and re.search(r"Recommended: \w+@tiny", r.output), r.output  # base and strategy


def test_the_cost_model_counts_each_base_s_own_tokens_and_shape(tmp_path):
    cfg = CompareConfig(data="demo", strategies=["lora"], train_sizes=[8], **{**FAST, "model": "tiny,tiny-llama"})
    ctx = prepare(cfg)
    est = Estimator(cfg, ctx.profile, ctx.n_eval, ctx.n_screen, profiles=ctx.profiles)
    pa, pb = ctx.profiles["tiny"], ctx.profiles["tiny-llama"]
    assert (pa.tok_gflop, pa.head_gflop) != (pb.tok_gflop, pb.head_gflop)
    assert est.row_gflop("lora@tiny") != est.row_gflop("lora@tiny-llama")
    assert est.row_gflop("lora@tiny") == Estimator(cfg, pa, ctx.n_eval, ctx.n_screen).row_gflop("lora")


def test_bad_base_lists_are_one_line_errors():
    with pytest.raises(ValueError, match="one or more base model names, each once"):
        CompareConfig(data="demo", model="tiny,tiny")
    with pytest.raises(ValueError, match="--endpoint tiny: also a base model of --model"):
        CompareConfig(
            data="demo",
            model="tiny,tiny-llama",
            strategies=["zero_shot"],
            endpoints=[{"name": "tiny", "url": "http://127.0.0.1:9"}],
        )
    one = CompareConfig(data="demo", model="tiny", strategies=["lora"])
    assert one.strategies == ["lora"] and one.base_of("lora") == "tiny"  # one base: names as before
