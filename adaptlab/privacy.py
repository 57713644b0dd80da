"""Personal data in task rows and feedback: find it, count it per field with line numbers, redact it.

Found: email addresses, phone numbers, payment card numbers (13-19 digits passing the Luhn check),
IBANs (passing the ISO 13616 mod-97 check), and IPv4/IPv6 addresses. Checksums keep order numbers
and other long digit runs from counting as cards or IBANs.

Hand-written rather than with Microsoft Presidio: for these five kinds Presidio's recognizers are
regular expressions plus the same checksums, while installing it pulls spaCy and, for the one kind
it adds (person names), a named-entity model that must be downloaded, which this product never does
(no network at run time). Person names are therefore **not** detected; :data:`NOT_DETECTED` says
so, and every report prints it, so nobody reads "0 findings" as "no names".
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

NOT_DETECTED = ("person names (needs a named-entity model download, which adaptlab never does)",)

EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w-])")
# A phone number: an optional +country code, then 7-15 digits in groups split by spaces, dots, dashes
# or parentheses; without a leading + at least 9 digits (not a date, a price or a ticket number), and
# a run without separators at least 10.
PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{1,4}\)[\s.-]?)?\d{2,5}(?:[\s.-]\d{2,8}){1,4}(?![\w])"
    r"|(?<![\w+])\+\d{7,15}(?!\w)|(?<![\w+])\d{10,11}(?!\w)"
)
CARD = re.compile(r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w-])")
IBAN = re.compile(r"(?<![\w])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}(?![\w])")
IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.])")
IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{1,4}:){2,7}[0-9A-Fa-f]{0,4}(?:::?[0-9A-Fa-f]{1,4})*(?![\w:])")

KINDS = ("email", "card", "iban", "ip", "phone")  # the order overlapping matches are resolved in


def luhn_ok(digits: str) -> bool:
    total, odd = 0, False
    for ch in reversed(digits):
        d = int(ch)
        if odd:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
        odd = not odd
    return total % 10 == 0


def iban_ok(candidate: str) -> bool:
    s = candidate.replace(" ", "")
    if not 15 <= len(s) <= 34:
        return False
    moved = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _ip_ok(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _candidates(text: str):
    for m in EMAIL.finditer(text):
        yield "email", m
    for m in CARD.finditer(text):
        digits = re.sub(r"\D", "", m.group())
        if 13 <= len(digits) <= 19 and luhn_ok(digits) and len(set(digits)) > 1:
            yield "card", m
    for m in IBAN.finditer(text):
        if iban_ok(m.group()):
            yield "iban", m
    for pattern in (IPV4, IPV6):
        for m in pattern.finditer(text):
            if _ip_ok(m.group()) and (pattern is IPV6 or m.group().count(".") == 3):
                yield "ip", m
    for m in PHONE.finditer(text):
        digits = re.sub(r"\D", "", m.group())
        if 7 <= len(digits) <= 15 and (len(digits) >= 9 or m.group().lstrip().startswith("+")):
            yield "phone", m


@dataclass(frozen=True)
class Span:
    kind: str
    start: int
    end: int
    text: str


def find(text: str) -> list[Span]:
    """Personal data in ``text``, without overlaps (an email's digits are not also a phone)."""
    if not isinstance(text, str) or not text:
        return []
    found = sorted(
        ((KINDS.index(k), m.start(), m.end(), k, m.group()) for k, m in _candidates(text)), key=lambda t: (t[0], t[1])
    )
    taken: list[Span] = []
    for _, start, end, kind, value in found:
        if all(end <= s.start or start >= s.end for s in taken):
            taken.append(Span(kind, start, end, value))
    return sorted(taken, key=lambda s: s.start)


def redact(text: str) -> str:
    """``text`` with each finding replaced by its kind in brackets, e.g. ``[EMAIL]``."""
    out, last = [], 0
    for s in find(text):
        out += [text[last : s.start], f"[{s.kind.upper()}]"]
        last = s.end
    return "".join(out) + text[last:]


def _strings(value, path: str):
    """(field path, string) for every string inside a record's value (conversations included)."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, f"{path}[{i}]")


def _redact_value(value):
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redact_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_value(v) for v in value]
    return value


def redact_record(record: dict) -> dict:
    return _redact_value(record)


@dataclass
class Report:
    """Findings per kind and field, with the lines they are on."""

    source: str
    rows: int = 0
    counts: dict | None = None  # kind -> field -> count
    lines: dict | None = None  # kind -> field -> [line numbers]

    @property
    def total(self) -> int:
        return sum(n for fields in (self.counts or {}).values() for n in fields.values())

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "rows": self.rows,
            "total": self.total,
            "counts": self.counts or {},
            "lines": self.lines or {},
            "not_detected": list(NOT_DETECTED),
        }

    def summary(self, max_lines: int = 5) -> list[str]:
        """One line per kind and field: '3 email in field "text" (lines 2, 7, 9)'."""
        out = []
        for kind in KINDS:
            for field, n in sorted((self.counts or {}).get(kind, {}).items()):
                lines = self.lines[kind][field]
                shown = ", ".join(map(str, lines[:max_lines])) + (
                    f", ... ({len(lines)} lines)" if len(lines) > max_lines else ""
                )
                out.append(f"{n} {kind} in field '{field}' (line{'s' if len(lines) > 1 else ''} {shown})")
        return out


def scan_records(records: list[tuple[int, dict]], source: str) -> Report:
    """Scan ``(line, record)`` pairs (as :func:`adaptlab.data.records.read_records` gives them)."""
    counts: dict = {}
    lines: dict = {}
    for lineno, rec in records:
        for field, text in _strings(rec, ""):
            for s in find(text):
                name = re.sub(r"\[\d+\]", "[]", field)  # messages[3].content -> messages[].content
                counts.setdefault(s.kind, {}).setdefault(name, 0)
                counts[s.kind][name] += 1
                at = lines.setdefault(s.kind, {}).setdefault(name, [])
                if not at or at[-1] != lineno:
                    at.append(lineno)
    return Report(source, len(records), counts, lines)


class PersonalDataError(ValueError):
    """Personal data where it was refused; the message is one line."""


def scan_file(path) -> Report:
    """Scan a data file's rows (any format :func:`adaptlab.data.formats.read_rows` reads); line numbers
    are the file's (a row's index for Parquet and ``datasets`` folders)."""
    from pathlib import Path

    from adaptlab.data.formats import read_rows

    records, _ = read_rows(Path(path))
    return scan_records(records, str(path))


def redact_file(src, dst) -> int:
    """Write a redacted copy of a data file in its own format (atomically); returns the rows written."""
    from pathlib import Path

    from adaptlab.data.formats import is_datasets_folder, read_rows, write_rows

    src, dst = Path(src), Path(dst)
    if src.resolve() == dst.resolve():
        raise PersonalDataError(f"{dst}: the redacted copy must not overwrite its source")
    records, columns = read_rows(src)
    rows = [redact_record(r) for _, r in records]
    fmt = "datasets" if is_datasets_folder(src) else src.suffix.lower()
    if fmt == ".json" and src.read_text(encoding="utf-8").lstrip().startswith("["):
        fmt = "json-array"
    write_rows(dst, rows, columns, fmt)
    return len(rows)
