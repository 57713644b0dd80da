"""The report builds from stored JSON alone, and renders in a headless browser."""

import html
import json
import re
import shutil
import subprocess

import pytest

from adaptlab.compare.report import build_report
from adaptlab.utils import atomic_write_json

from .synthetic import grid, rec


def _store(tmp_path):
    for r in grid():
        atomic_write_json(tmp_path / "results" / f"{r['run']['id']}.json", r)
    atomic_write_json(tmp_path / "compare.json", {"data": "synthetic", "model": "none"})
    atomic_write_json(
        tmp_path / "skipped.json", [{"id": "hybrid-n256-s0", "reason": "estimated 900 s, 12 s of budget left"}]
    )
    return tmp_path


def test_report_from_stored_json_only(tmp_path):
    out = build_report(_store(tmp_path))
    md = (out / "report.md").read_text()
    assert "**Recommended: full**" in md and "| lora | 256 |" in md and "hybrid-n256-s0" in md
    for png in ("learning_curves.png", "pareto.png", "fragility.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    # The learning curves as numbers: strategies x sizes, best of each column in bold.
    assert "## accuracy by train size" in md and "| strategy | 16 | 64 | 256 |" in md
    assert "| zero_shot | 0.400 (no training data) |  |  |" in md
    assert "| few_shot | **0.550** | 0.580 | 0.600 |" in md and "| full | 0.480 | **0.720** | **0.870** |" in md
    # Overfitting and forgetting: where dev peaked, whether early stopping fired, the base model's losses.
    assert "## Overfitting and forgetting" in md
    assert "| full | 256 | +0.050 | 6 of 10 | 1 of 1 | +40.0% | +0.0 pts |" in md
    assert "| lora | 16 | +0.050 | 10 of 10 | 0 of 1 |" in md and "| few_shot | 16 | +0.050 | - | - |" in md
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and '<table id="summary">' in page
    assert '<table id="fit">' in page and "6 of 10" in page
    assert '<table id="curves">' in page and "**" not in page
    assert 'src="http' not in page  # self-contained


def test_generation_report_shows_chrf(tmp_path):
    for r in (rec("zero_shot", 0, 0.30, generation=True), rec("lora", 64, 0.55, generation=True)):
        atomic_write_json(tmp_path / "results" / f"{r['run']['id']}.json", r)
    atomic_write_json(tmp_path / "compare.json", {"data": "viggo", "model": "none"})
    md = (build_report(tmp_path) / "report.md").read_text()
    assert "| quality | chrF |" in md and "macro-F1" not in md
    assert "| lora | 64 | 1 | 0.550 | 0.530 |" in md


def test_report_refuses_an_empty_run(tmp_path):
    with pytest.raises(ValueError, match="no finished runs"):
        build_report(tmp_path)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (Debian package 'chromium')")
def test_report_renders_in_headless_chromium(tmp_path):
    out = build_report(_store(tmp_path))
    script = (
        "JSON.stringify({imgs: [...document.images].map(i => i.complete && i.naturalWidth > 0),"
        " rows: document.querySelectorAll('#summary tbody tr').length,"
        " fit: document.querySelectorAll('#fit tbody tr').length})"
    )
    html_path = out / "report.html"
    # --dump-dom prints the DOM after load; an inline script writes the measurements into it.
    page = html_path.read_text().replace(
        "</body>", f"<script>window.onload=()=>{{document.body.setAttribute('data-check', {script});}}</script></body>"
    )
    probe = out / "probe.html"
    probe.write_text(page)
    res = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=5000",
            "--dump-dom",
            probe.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    found = re.search(r'data-check="([^"]*)"', res.stdout)
    assert found, res.stderr[-1000:]
    check = json.loads(html.unescape(found.group(1)))
    assert check["imgs"] == [True, True, True] and check["rows"] == 10 and check["fit"] == 9


def test_curve_table_says_which_cells_miss_seeds():
    from adaptlab.compare.report import curve_table
    from adaptlab.compare.summary import aggregate

    recs = [rec("lora", 16, 0.5, seed=0), rec("lora", 16, 0.7, seed=1), rec("full", 16, 0.8, seed=0)]
    cols, rows = curve_table(aggregate(recs))
    assert cols == ["strategy", "16"]
    assert rows == [["full", "**0.800 (1 of 2 seeds)**"], ["lora", "0.600 ± 0.100"]]


def test_report_says_when_timings_come_from_machines_of_different_speed(tmp_path):
    recs = grid()
    for i, r in enumerate(recs):
        r["meta"]["machine"].update(cpu_model="Xeon", gemm_gflops=60.0 if i % 2 else 100.0)
    recs[0]["meta"]["machine"].pop("gemm_gflops")  # a run from before the probe
    for r in recs:
        atomic_write_json(tmp_path / "results" / f"{r['run']['id']}.json", r)
    atomic_write_json(tmp_path / "compare.json", {"data": "synthetic", "model": "none"})
    out = build_report(tmp_path)
    md = (out / "report.md").read_text()
    assert "Machine speed (fp32 GEMM probe): 60-100 GFLOP/s on Xeon" in md
    assert "differ in speed by 1.7x" in md and f"; 1 of {len(recs)} runs are older than the probe" in md
    assert "differ in speed by" in (out / "report.html").read_text()
    # One machine: the probe is stated, with no warning; no probe at all: no line.
    for r in recs:
        r["meta"]["machine"]["gemm_gflops"] = 80.0
        atomic_write_json(tmp_path / "results" / f"{r['run']['id']}.json", r)
    md = (build_report(tmp_path) / "report.md").read_text()
    assert "80 GFLOP/s on Xeon" in md and "differ in speed" not in md
    assert "Machine speed" not in (build_report(_store(tmp_path / "plain")) / "report.md").read_text()


def test_gallery_and_consistency_sections(tmp_path):
    """The same test inputs side by side (zero-shot first), the winner's worst rows, and consistency."""
    inputs = [f"name[Game {i}]" for i in range(4)]
    recs = []
    for strategy, size, quality, outs, agree in (
        ("zero_shot", 0, 0.2, ["a game", "?", "?", "?"], 0.5),
        ("lora", 64, 0.6, ["Game 0 is fun.", "Game 1 is fun.", "nothing", "Game 3 is fun."], 0.9),
    ):
        r = rec(strategy, size, quality, generation=True)
        r["predictions"] = [
            {"input": i, "reference": f"{i[5:-1]} is fun.", "output": o, "metric": 1.0 if "fun" in o else 0.0}
            for i, o in zip(inputs, outs)
        ]
        r["eval"]["consistency"] = {
            "samples": 4,
            "temperature": 0.7,
            "inputs": 4,
            "pairwise_similarity": agree,
            "metric_spread": 0.1,
        }
        recs.append(r)
    for r in recs:
        atomic_write_json(tmp_path / "results" / f"{r['run']['id']}.json", r)
    atomic_write_json(tmp_path / "compare.json", {"data": "viggo", "model": "none", "gallery_examples": 2})
    out = build_report(tmp_path)
    md = (out / "report.md").read_text()
    assert "## Consistency under sampling" in md and "| lora | 64 | 0.900 | 0.100 |" in md
    assert "## Before and after: the same test inputs" in md
    assert "**Input 1.** name[Game 0] — reference: Game 0 is fun." in md
    assert md.index("| zero_shot | a game | 0.00 |") < md.index("| lora | Game 0 is fun. | 1.00 |")
    assert (
        "### " not in md
        and "lora's worst 2 test rows" in md
        and "| name[Game 2] | Game 2 is fun. | nothing | 0.00 |" in md
    )
    page = (out / "report.html").read_text()
    assert '<table id="consistency">' in page and '<table id="gallery-0">' in page and "lora&#x27;s worst" in page


def test_a_corrupt_skipped_list_is_named_by_report_and_grid_alike(tmp_path):
    """skipped.json has one reader with one policy: a file that is not a list of runs is an error
    naming it, for the report and for a resumed compare (which would otherwise retry cut runs)."""
    from adaptlab.compare.store import load_skipped
    from adaptlab.data.loading import DataError

    _store(tmp_path)
    assert [s["id"] for s in load_skipped(tmp_path)] == ["hybrid-n256-s0"]
    for bad in ('[{"id": "hybrid-n256-s0", "reas', '{"id": "x"}', '[{"reason": "no id"}]'):
        (tmp_path / "skipped.json").write_text(bad)
        for read in (load_skipped, build_report):
            with pytest.raises(DataError, match=r"skipped\.json: .*fix or delete it"):
                read(tmp_path)
    (tmp_path / "skipped.json").unlink()
    assert load_skipped(tmp_path) == [] and (build_report(tmp_path) / "report.md").exists()
