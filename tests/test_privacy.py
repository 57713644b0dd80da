"""Personal data: detection with checksums, counts per field with line numbers, redacted copies,
and the CLI reports of `data check` and `feedback export`."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from adaptlab.cli import app
from adaptlab.privacy import find, iban_ok, luhn_ok, redact, redact_file, scan_file

runner = CliRunner()


@pytest.mark.parametrize(
    "text, kinds",
    [
        ("write to jane.doe@example.co.uk today", ["email"]),
        ("call +44 20 7946 0958 or (555) 123-4567", ["phone", "phone"]),
        ("card 4111 1111 1111 1111 please", ["card"]),
        ("card 4111-1111-1111-1111", ["card"]),
        ("IBAN GB82 WEST 1234 5698 7654 32", ["iban"]),
        ("from 192.168.1.20 and 2001:db8::1", ["ip", "ip"]),
        # Not personal data: a failed Luhn check, a failed mod-97, dates, prices, order and ticket numbers.
        ("card 4111 1111 1111 1112", []),
        # A mistyped IBAN is no IBAN, but its digit groups still read as a phone number: over-flagging
        # is the safe side.
        ("IBAN GB82 WEST 1234 5698 7654 33", ["phone"]),
        ("order 123456 on 2024-05-01 costs 12.50", []),
        ("ticket 1234-5678, my order number is 12345678", []),
        ("999.1.1.1 is not an address", []),
    ],
)
def test_find(text, kinds):
    assert [s.kind for s in find(text)] == kinds


def test_checksums():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("DE89370400440532013000") and not iban_ok("DE89370400440532013001")


def test_redact_and_scan_a_file(tmp_path):
    p = tmp_path / "d.jsonl"
    rows = [
        {"text": "hi", "label": "a"},
        {"text": "mail a.b@c.io or b@c.io", "label": "a"},
        {"messages": [{"role": "user", "content": "my card 4111 1111 1111 1111"}], "label": "b"},
    ]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rep = scan_file(p)
    assert rep.counts == {"email": {"text": 2}, "card": {"messages[].content": 1}}
    assert rep.lines == {"email": {"text": [2]}, "card": {"messages[].content": [3]}}
    assert rep.summary() == ["2 email in field 'text' (line 2)", "1 card in field 'messages[].content' (line 3)"]
    assert redact("mail a.b@c.io now") == "mail [EMAIL] now"
    out = tmp_path / "clean.jsonl"
    assert redact_file(p, out) == 3
    assert scan_file(out).total == 0 and "[CARD]" in out.read_text()
    with pytest.raises(ValueError, match="must not overwrite its source"):
        redact_file(p, p)


def test_data_check_reports_and_redacts(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("text,label\nhello,a\ncall me on +1 415 555 0100,b\nfine,a\nok,b\n")
    out = tmp_path / "red.csv"
    r = runner.invoke(app, ["data", "check", str(p), "--tokenizer", "none", "--redact", str(out)])
    assert r.exit_code == 0, r.output
    assert "1 phone in field 'text' (line 3)" in r.output and "not detected: person names" in r.output
    assert "[PHONE]" in out.read_text() and out.read_text().startswith("text,label")


def test_feedback_export_reports_and_redacts(tmp_path):
    from adaptlab.registry import Registry
    from adaptlab.serving.feedback import export_feedback

    reg = Registry(tmp_path / "reg")
    reg.requests.log("r1", "t", 1, "generation", "reach me at 10.0.0.7", "ok")
    reg.requests.add_feedback("r1", -1, "call +44 20 7946 0958")
    reg.requests.log("r2", "t", 1, "generation", "bad answer", "nope")
    reg.requests.add_feedback("r2", -1)
    stats = export_feedback(reg, "t", tmp_path / "fb.jsonl")
    assert stats["written"] == 1 and stats["skipped_without_answer"] == 1
    assert stats["personal_data"]["counts"] == {"ip": {"input": 1}, "phone": {"target": 1}}
    stats = export_feedback(reg, "t", tmp_path / "fb2.jsonl", redact=True)
    assert stats["personal_data"]["total"] == 0
    assert json.loads((tmp_path / "fb2.jsonl").read_text()) == {"input": "reach me at [IP]", "target": "call [PHONE]"}
