"""The workbench's pages and APIs through FastAPI's test client (the browser walk is test_browser.py)."""

import json
import re

import pytest

from adaptlab.registry import Registry
from adaptlab.ui.state import UiError
from tests.ui.conftest import DEMO, make_client, token, wait_finished


def upload(client, name: str, data: bytes):
    return client.post(
        "/ui/data/upload", data={"csrf": token(client)}, files={"file": (name, data)}, follow_redirects=True
    )


def test_upload_check_lists_every_row_error_with_its_line(client):
    bad = b'{"text": "a", "label": "x"}\n{oops\n{"text": "b"}\n{"text": "c", "label": "y"}\n[1]\n'
    r = upload(client, "../../etc/tickets.jsonl", bad)
    assert r.status_code == 200
    errors = re.findall(r"<li>(.*?)</li>", r.text.split('id="errors"')[1].split("</ul>")[0])
    assert [e.split(":")[1] for e in errors] == ["2", "3", "5"]  # every bad line, in order
    assert all(e.startswith("tickets.jsonl:") for e in errors)  # the user's file name, not where we keep it
    assert "missing field &#39;label&#39;" in r.text
    stored = list((client.app.state.ui.uploads).glob("*.jsonl"))
    assert len(stored) == 1 and stored[0].parent == client.app.state.ui.uploads  # no path from the request


def test_upload_check_of_a_good_file_shows_counts_histogram_and_warnings(client):
    r = upload(client, "demo.jsonl", (DEMO / "train.jsonl").read_bytes())
    assert r.status_code == 200 and 'id="verdict"' in r.text and "classification" in r.text
    assert "order_status" in r.text and r.text.count("<rect") >= 3 * 2  # label counts, one histogram per split
    assert "Compare strategies on it" in r.text


def test_bad_uploads_and_sources_are_refused_in_one_line(client):
    assert upload(client, "x.txt", b"hello").status_code == 400
    assert "file is empty" in upload(client, "x.jsonl", b"  \n").text
    small = make_client(client.app.state.ui.workdir.parent / "small", max_upload_bytes=1000)
    r = small.post("/ui/data/upload", data={"csrf": token(small)}, files={"file": ("big.jsonl", b"x" * 5000)})
    assert r.status_code == 413
    r = client.get("/ui/data/check", params={"source": "upload:../../etc/passwd"})
    assert r.status_code == 404 and "no such upload" in r.text
    assert client.get("/ui/data/check", params={"source": "named:nope"}).status_code == 400


def test_every_change_needs_the_csrf_token(client):
    r = client.post("/ui/data/upload", files={"file": ("a.jsonl", b'{"text":"a","label":"b"}\n')})
    assert r.status_code == 403 and "CSRF" in r.text
    r = client.post("/ui/api/feedback", json={"request_id": "x", "rating": 1}, headers={"X-CSRF-Token": "forged"})
    assert r.status_code == 403 and r.json()["error"].startswith("missing or wrong CSRF token")
    page = client.get("/ui/data")
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    assert f'name="csrf" value="{client.cookies["adaptlab_csrf"]}"' in page.text


def test_sign_in_with_a_star_key_when_a_key_is_required(tmp_path):
    c = make_client(tmp_path, key_required=True)
    reg: Registry = c.app.state.ui.registry
    star, narrow = reg.api_keys.add("admin", ["*"]), reg.api_keys.add("one", ["demo"])
    r = c.get("/ui/registry", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/ui/login?next=/ui/registry")
    assert c.get("/ui/api/compare/x").status_code == 401
    for bad in ("al-wrong", narrow):
        r = c.post("/ui/login", data={"key": bad, "csrf": token(c), "next": "/ui/registry"}, follow_redirects=False)
        assert r.status_code == 401 and "not scoped to" in r.text
    r = c.post(
        "/ui/login", data={"key": star, "csrf": token(c), "next": "https://evil.example/"}, follow_redirects=False
    )
    assert r.status_code == 303 and r.headers["location"] == "/ui/"  # never off-site
    assert c.get("/ui/registry").status_code == 200
    reg.api_keys.revoke("admin")  # revoking the key ends its sessions
    assert c.get("/ui/registry", follow_redirects=False).status_code == 303


def test_compare_report_register_promote_playground_feedback_export(tmp_path):
    """The whole loop on the tiny model, and a restart of the UI in the middle."""
    c = make_client(tmp_path)
    r = upload(c, "demo.jsonl", (DEMO / "train.jsonl").read_bytes())
    source = re.search(r"source=(upload%3A\w+|upload:\w+)", r.text).group(1).replace("%3A", ":")
    r = c.post(
        "/ui/compare",
        data={
            "csrf": token(c),
            "source": source,
            "model": "tiny",
            "strategies": ["zero_shot", "lora"],
            "train_sizes": "16,32",
            "seeds": "1",
            "mode": "full",
            "test_limit": "24",
            "track": "1",
        },
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    job = r.headers["location"].rsplit("/", 1)[1]
    live = c.get(f"/ui/compare/{job}")
    assert live.status_code == 200 and 'id="live"' in live.text and "tiny" in live.text
    events = c.get(f"/ui/api/compare/{job}/events")  # the stream ends once the compare is over
    last = json.loads([ln for ln in events.text.splitlines() if ln.startswith("data: ")][-1][6:])
    assert last["state"] == "finished", last
    status = wait_finished(c, job)
    assert status["done"] == 3 and status["report"]
    assert status["mlflow"].startswith("sqlite:///") and 'id="mlflow"' in c.get(f"/ui/compare/{job}").text

    c = make_client(tmp_path)  # a restarted UI reads the compare back from its folder
    assert job in c.get("/ui/compare").text and c.get(f"/ui/api/compare/{job}").json()["state"] == "finished"
    opened = c.app.state.jobs.adopt(c.app.state.ui.compares / job)  # as `adaptlab ui --open FOLDER` does
    assert c.get(f"/ui/api/compare/{opened}").json()["state"] == "finished"
    assert "was opened, not started here" in c.post(f"/ui/compare/{opened}/resume", data={"csrf": token(c)}).text
    page = c.get(f"/ui/compare/{job}/report")
    assert page.status_code == 200 and 'id="winner"' in page.text and 'id="report-data"' in page.text
    data = json.loads(page.text.split('id="report-data">')[1].split("</script>")[0])
    assert set(data["curves"]) == {"zero_shot", "lora"} and [p["n"] for p in data["curves"]["lora"]] == [16, 32]
    rec = c.get(f"/ui/api/compare/{job}/recommend", params={"weights_accessible": "no"}).json()
    assert rec["winner"] == "zero_shot" and any(x["strategy"] == "lora" for x in rec["excluded"])
    assert (
        c.get(f"/ui/api/compare/{job}/recommend", params={"max_train_minutes": "abc"}).json()["error"]
        == "max train minutes: 'abc' is not a number"
    )
    ex = c.get(f"/ui/compare/{job}/examples", params={"strategy": "lora"}).text
    assert ex.count("<tr>") == 25  # 24 test rows + the header
    assert c.get(f"/ui/compare/{job}/report.html").status_code == 200

    r = c.post(
        f"/ui/compare/{job}/register",
        data={"csrf": token(c), "task": "demo-intents", "strategy": "lora"},
        follow_redirects=True,
    )
    assert r.status_code == 200 and "Registered as version 1" in r.text
    c.post(f"/ui/compare/{job}/register", data={"csrf": token(c), "task": "demo-intents", "strategy": "zero_shot"})
    r = c.post("/ui/registry/demo-intents/promote", data={"csrf": token(c), "version": "1", "alias": "prod"})
    assert "Point demo-intents@prod at v1?" in r.text  # a confirmation first; nothing changed yet
    reg: Registry = c.app.state.ui.registry
    assert reg.aliases("demo-intents") == {}
    for v in ("1", "2"):
        c.post(
            "/ui/registry/demo-intents/promote",
            data={"csrf": token(c), "version": v, "alias": "prod", "confirmed": "yes"},
        )
    assert reg.aliases("demo-intents")["demo-intents"]["prod"] == 2
    c.post("/ui/registry/demo-intents/rollback", data={"csrf": token(c), "alias": "prod", "confirmed": "yes"})
    assert reg.aliases("demo-intents")["demo-intents"]["prod"] == 1
    page = c.get("/ui/registry/demo-intents").text
    assert "rollback" in page and f"{job}/lora-n32-s0" in page
    assert "B − A" in c.get("/ui/registry/demo-intents/diff", params={"a": 1, "b": 2}).text

    csrf = {"X-CSRF-Token": token(c)}
    r = c.post(
        "/ui/api/playground",
        json={"input": "where is my order FH-1?", "models": ["demo-intents@prod", "base"]},
        headers=csrf,
    )
    assert r.status_code == 200, r.text
    mine, base = r.json()["answers"]
    assert mine["output"] in mine["labels"] and abs(sum(p["p"] for p in mine["probs"]) - 1) < 1e-6
    assert mine["latency_ms"] > 0 and mine["request_id"] and "request_id" not in base
    bad = c.post(
        "/ui/api/feedback", json={"request_id": mine["request_id"], "rating": -1, "correction": "nope"}, headers=csrf
    )
    assert bad.status_code == 400 and "is not a label of demo-intents@1" in bad.json()["error"]
    ok = c.post(
        "/ui/api/feedback",
        json={"request_id": mine["request_id"], "rating": -1, "correction": "order_status"},
        headers=csrf,
    )
    assert ok.json()["status"] == "stored"
    inbox = c.get("/ui/feedback", params={"task": "demo-intents", "rating": "-1"}).text
    assert "where is my order FH-1?" in inbox and "order_status" in inbox
    assert "No feedback with this rating" in c.get("/ui/feedback", params={"task": "demo-intents", "rating": "1"}).text
    out = c.post("/ui/feedback/export", data={"csrf": token(c), "task": "demo-intents"})
    assert out.status_code == 200 and json.loads(out.text.splitlines()[0]) == {
        "text": "where is my order FH-1?",
        "label": "order_status",
    }
    assert json.loads(out.headers["x-adaptlab-export"])["written"] == 1


def test_a_stopped_compare_resumes_to_the_end(tmp_path):
    import os
    import signal
    import time

    c = make_client(tmp_path)
    r = c.post(
        "/ui/compare",
        data={
            "csrf": token(c),
            "source": "named:demo",
            "model": "tiny",
            "strategies": ["zero_shot", "few_shot", "lora"],
            "train_sizes": "16,32",
            "mode": "full",
            "test_limit": "16",
        },
        follow_redirects=False,
    )
    job = r.headers["location"].rsplit("/", 1)[1]
    folder = c.app.state.ui.compares / job
    t0 = time.time()
    while not list((folder / "results").glob("*.json")) and time.time() - t0 < 120:
        time.sleep(0.2)
    pid = json.loads((folder / "job.json").read_text())["pid"]
    os.killpg(pid, signal.SIGKILL)  # the compare dies mid-way (its own session: the UI goes on)
    c.app.state.jobs.children[job].wait()
    s = c.get(f"/ui/api/compare/{job}").json()
    assert s["state"] == "stopped" and 1 <= s["done"] < 5
    assert 'id="resume"' in c.get(f"/ui/compare/{job}").text
    c.post(f"/ui/compare/{job}/resume", data={"csrf": token(c)})
    s = wait_finished(c, job)
    assert s["state"] == "finished" and s["done"] == 5
    with pytest.raises(UiError, match="is finished: nothing to resume"):
        c.app.state.jobs.resume(job)


def test_compare_form_errors_name_the_field(client):
    base = {
        "csrf": token(client),
        "source": "named:demo",
        "model": "tiny",
        "strategies": ["lora"],
        "train_sizes": "16",
        "mode": "full",
    }
    for change, message in [
        ({"train_sizes": "16,x"}, "train sizes: &#39;16,x&#39;"),
        ({"strategies": ["nope"]}, "strategies: choose one or more"),
        ({"model": "/etc/passwd"}, "model: &#39;/etc/passwd&#39; is not one of"),
        ({"budget": "soon"}, "budget: --budget &#39;soon&#39;"),
        ({"source": "upload:zz"}, "no such upload"),
    ]:
        r = client.post("/ui/compare", data={**base, **change})
        assert r.status_code in (400, 404) and message in r.text, (change, r.text[-400:])
    assert not list(client.app.state.ui.compares.iterdir())  # nothing was started or written


def test_the_pages_mount_in_the_server_and_share_its_model(tmp_path):
    from fastapi.testclient import TestClient

    from adaptlab.models.tiny import build_tiny
    from adaptlab.serving import Service
    from adaptlab.serving.app import create_app
    from adaptlab.ui.app import include_ui
    from adaptlab.ui.state import UiState

    reg = Registry(tmp_path / "reg")
    admin = reg.api_keys.add("admin", ["*"])
    service = Service(build_tiny(), reg)
    try:
        app = include_ui(
            create_app(service), UiState(tmp_path / "ui", reg, model="tiny", key_required=True, service=service)
        )
        c = TestClient(app)
        assert c.get("/v1/models", headers={"Authorization": f"Bearer {admin}"}).status_code == 200
        assert c.get("/ui/playground", follow_redirects=False).status_code == 303  # the API key signs in here too
        c.post("/ui/login", data={"key": admin, "csrf": token(c)})
        r = c.post(
            "/ui/api/playground", json={"input": "hello", "models": ["base"]}, headers={"X-CSRF-Token": token(c)}
        )
        assert r.status_code == 200 and r.json()["answers"][0]["task_type"] == "base"
        assert app.state.ui.get_service() is service  # no second copy of the model
    finally:
        service.close()


def test_ui_command_refuses_what_it_cannot_serve(tmp_path):
    from typer.testing import CliRunner

    from adaptlab.cli import app

    args = ["ui", "--registry", str(tmp_path / "reg"), "--workdir", str(tmp_path / "w")]
    r = CliRunner().invoke(app, args + ["--host", "0.0.0.0"])
    assert r.exit_code == 2 and "needs a key to sign in with" in r.output
    r = CliRunner().invoke(app, args + ["--open", str(tmp_path)])
    assert r.exit_code == 2 and "not a compare run folder (no results/)" in r.output
