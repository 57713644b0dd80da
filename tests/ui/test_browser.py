"""The workbench in a real browser: Debian's Chromium driven by Playwright (no browser download).

One walk through the loop: upload -> check -> compare on the tiny model (live) -> report (constraints
changed in the page) -> register -> promote (confirmed) -> playground -> rating -> feedback inbox ->
export, with keyboard and phone-width checks. Screenshots go to ``$ADAPTLAB_UI_SCREENSHOTS`` (the
committed ones in docs/ui/ were made so) or the test's temporary folder.
"""

import os
import re
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from adaptlab.registry import Registry
from adaptlab.ui import create_ui
from adaptlab.ui.state import UiState
from tests.ui.conftest import DEMO

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SST2 = Path(__file__).resolve().parents[2] / "docs" / "results" / "adaptive_sst2"  # a committed CLI compare
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (Debian package 'chromium')")


@pytest.fixture
def server(tmp_path):
    import uvicorn

    st = UiState(tmp_path / "work", Registry(tmp_path / "registry"), model="tiny")
    app = create_ui(st)
    if SST2.is_dir():
        app.state.jobs.adopt(SST2)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    while not srv.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


def test_the_whole_loop_in_chromium(server, tmp_path):
    shots = Path(os.environ.get("ADAPTLAB_UI_SCREENSHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

        page.goto(server + "/ui/data")
        page.keyboard.press("Tab")  # keyboard first: the skip link, then the sections
        assert page.evaluate("document.activeElement.className") == "skip"
        page.set_input_files("#file", str(DEMO / "train.jsonl"))
        page.click("#upload")
        page.wait_for_selector("#verdict")
        assert "classification" in page.inner_text("#verdict")
        page.screenshot(path=str(shots / "1-data-check.png"), full_page=True)

        page.click("#to-compare")
        for box in page.query_selector_all("input[name=strategies]"):
            if box.get_attribute("value") not in ("zero_shot", "few_shot", "lora"):
                box.uncheck()
        page.fill("#c-sizes", "16,32")
        page.fill("#c-test", "24")
        page.check("input[name=mode][value=full]")
        page.uncheck("input[name=extras]")
        page.click("#start")
        page.wait_for_selector("#live")
        assert (
            not page.is_visible("#to-report") or page.inner_text("#state") == "finished"
        )  # no report before it exists
        page.screenshot(path=str(shots / "2-compare-live.png"), full_page=True)
        page.wait_for_selector("#to-report:not([hidden])", timeout=300_000)  # the events stream says finished
        assert page.inner_text("#state") == "finished"

        page.click("#to-report")
        page.wait_for_selector("#curves svg")
        assert page.locator("#curves circle").count() >= 5 and page.locator("#pareto circle").count() == 3
        page.hover("#curves circle >> nth=-1")  # the last drawn is on top
        assert page.is_visible("#curves .tip")
        page.screenshot(path=str(shots / "3-report.png"), full_page=True)
        page.uncheck("#curve-toggles input >> nth=0")  # toggling a strategy redraws without it
        assert page.locator("#curves polyline, #curves line[stroke-dasharray]").count() == 2
        page.select_option("#k-w", "no")  # API only: no weights to train -> a prompt wins, without a reload
        page.wait_for_url(re.compile("weights_accessible=no"))
        playwright.expect(page.locator("#excluded")).to_contain_text("lora")
        assert page.inner_text("#winner") in ("zero_shot", "few_shot") and "lora" not in page.inner_text("#ranked")

        page.fill("#r-task", "demo-intents")
        page.select_option("#r-strategy", "lora")
        page.click("#register")
        page.wait_for_selector("#registered")
        page.click("#promote")
        assert "Point demo-intents@prod at v1?" in page.inner_text("h2")
        page.screenshot(path=str(shots / "4-promote-confirm.png"))
        page.click("#confirm")
        page.wait_for_selector("#alias-prod")
        page.screenshot(path=str(shots / "5-registry.png"), full_page=True)

        page.goto(server + "/ui/playground")
        page.fill("#p-input", "Hi, tracking for FH-20417 hasn't updated in two weeks")
        for box in page.query_selector_all("input[name=models]"):
            box.set_checked(box.get_attribute("value") in ("base", "demo-intents@prod"))
        page.click("#run")
        page.wait_for_selector(".answer .prob", timeout=120_000)
        assert page.locator(".answer").count() == 2 and "ms" in page.inner_text(".answer >> nth=0")
        card = page.locator(".answer", has=page.locator(".prob"))
        card.locator("input[name=rating][value='-1']").check()
        card.locator("select[name=correction]").select_option("order_status")
        card.locator("button[type=submit]").click()
        card.locator("text=stored").wait_for()
        page.screenshot(path=str(shots / "6-playground.png"), full_page=True)

        page.goto(server + "/ui/feedback")
        assert "FH-20417" in page.inner_text("#feedback") and "order_status" in page.inner_text("#feedback")
        page.screenshot(path=str(shots / "7-feedback.png"), full_page=True)
        with page.expect_download() as dl:
            page.click("#export")
        exported = Path(dl.value.path()).read_text()
        assert '"label": "order_status"' in exported and "FH-20417" in exported

        page.set_viewport_size({"width": 390, "height": 844})  # phone width: nothing wider than the screen
        page.goto(server + "/ui/registry/demo-intents")
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
        page.screenshot(path=str(shots / "8-phone-registry.png"), full_page=True)
        browser.close()
    assert not errors, errors


@pytest.mark.skipif(not (SST2 / "results").is_dir(), reason="docs/results/adaptive_sst2 is not in this checkout")
def test_a_compare_run_from_the_cli_opens_and_reports(server, tmp_path):
    """``adaptlab ui --open docs/results/adaptive_sst2``: eight strategies on real SST-2 runs."""
    shots = Path(os.environ.get("ADAPTLAB_UI_SCREENSHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(server + "/ui/compare")
        page.click("#jobs a >> text=o-")
        assert page.inner_text("#state") == "finished"
        page.click("#to-report")
        page.wait_for_selector("#pareto svg")
        assert page.inner_text("#winner") == _recommended(SST2)  # what `adaptlab recommend` says of that run
        assert page.locator("#curve-toggles input").count() == 8 and page.locator("#pareto circle").count() == 8
        page.screenshot(path=str(shots / "9-report-sst2.png"), full_page=True)
        page.click("#to-examples")
        assert page.locator("#examples tbody tr").count() == 200  # the first 200 of 500 test rows, worst first
        browser.close()


def _recommended(run_dir: Path) -> str:
    from adaptlab.compare.recommend import Constraints, recommend
    from adaptlab.compare.store import load_results

    return recommend(load_results(run_dir), Constraints()).winner
