"""The registry's SQLite index: schema, connections, write transactions, names.

Shared by the three stores over it: artifact versions and aliases
(:class:`adaptlab.registry.store.Registry`), API keys (:mod:`adaptlab.registry.keys`) and the
request log with its feedback (:mod:`adaptlab.registry.requests`).
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
from pathlib import Path

REGISTRY_ENV = "ADAPTLAB_REGISTRY"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")

SCHEMA = """
CREATE TABLE IF NOT EXISTS artifacts (
    task TEXT NOT NULL, version INTEGER NOT NULL, digest TEXT NOT NULL, kind TEXT NOT NULL,
    strategy TEXT NOT NULL, task_type TEXT NOT NULL, fingerprint TEXT NOT NULL, base_model TEXT,
    metrics TEXT NOT NULL, bytes INTEGER NOT NULL, created_by TEXT NOT NULL, created_at REAL NOT NULL,
    run TEXT, note TEXT, deleted INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (task, version));
CREATE TABLE IF NOT EXISTS aliases (
    task TEXT NOT NULL, alias TEXT NOT NULL, version INTEGER NOT NULL, set_at REAL NOT NULL, set_by TEXT,
    PRIMARY KEY (task, alias));
CREATE TABLE IF NOT EXISTS alias_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT, task TEXT NOT NULL, alias TEXT NOT NULL, version INTEGER,
    set_at REAL NOT NULL, set_by TEXT, action TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS api_keys (
    id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE, key_hash TEXT NOT NULL UNIQUE,
    tasks TEXT NOT NULL, created_at REAL NOT NULL, revoked INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS requests (
    id TEXT PRIMARY KEY, task TEXT NOT NULL, version INTEGER, task_type TEXT, input TEXT NOT NULL,
    output TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT, request_id TEXT NOT NULL REFERENCES requests(id),
    rating INTEGER NOT NULL, correction TEXT, comment TEXT, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS lineage (
    task TEXT NOT NULL, version INTEGER NOT NULL, parent INTEGER, info TEXT NOT NULL,
    PRIMARY KEY (task, version));
"""


class RegistryError(ValueError):
    """A registry operation that cannot be done; the message is one line."""


def registry_root() -> Path:
    from adaptlab.models.base import cache_root

    return Path(os.environ.get(REGISTRY_ENV) or cache_root() / "registry")


def check_name(value: str, what: str) -> str:
    """Task and alias names: lowercase, no path separators, no '@' (they end up in URLs and SQL)."""
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise RegistryError(f"invalid {what} name {value!r}: use 1-64 of a-z 0-9 _ . - starting with a letter or digit")
    if value in (".", "..") or ".." in value:
        raise RegistryError(f"invalid {what} name {value!r}: '..' is not allowed")
    return value


class Index:
    """The SQLite file under a registry root, opened read-write or read-only."""

    def __init__(self, root: Path, read_only: bool = False):
        """Open (creating if needed) the index under ``root``. ``read_only`` opens an existing one for
        reading only (a serving replica, a read-only mount); it is also chosen when the folder
        cannot be written."""
        self.root = root
        self.db_path = root / "index.sqlite"
        self.read_only = read_only
        if read_only:
            if not self.db_path.is_file():
                raise RegistryError(f"registry {self.root}: no index.sqlite to open read-only")
            return
        try:
            for d in (self.root, self.root / "objects", self.root / "tmp"):
                d.mkdir(parents=True, exist_ok=True)
            with self.connect() as con:
                con.executescript(SCHEMA)
        except (OSError, sqlite3.OperationalError) as e:
            if self.db_path.exists() and not os.access(self.root, os.W_OK):
                self.read_only = True
                return
            raise RegistryError(f"registry {self.root}: cannot open for writing ({e})") from None

    @contextlib.contextmanager
    def connect(self):
        if self.read_only:
            con = sqlite3.connect(
                f"{self.db_path.resolve().as_uri()}?mode=ro", timeout=30, isolation_level=None, uri=True
            )
        else:
            con = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
        try:
            con.execute("PRAGMA busy_timeout = 30000")
            if not self.read_only:
                with contextlib.suppress(sqlite3.OperationalError):
                    con.execute("PRAGMA journal_mode = WAL")
                con.execute("PRAGMA synchronous = FULL")
            con.row_factory = sqlite3.Row
            yield con
        finally:
            con.close()

    @contextlib.contextmanager
    def write(self):
        """One write transaction; BEGIN IMMEDIATE takes the write lock up front so two writers queue."""
        if self.read_only:
            raise RegistryError(f"registry {self.root} is read-only: cannot change it")
        with self.connect() as con:
            try:
                con.execute("BEGIN IMMEDIATE")
                yield con
                con.execute("COMMIT")
            except sqlite3.OperationalError as e:
                with contextlib.suppress(sqlite3.OperationalError):
                    con.execute("ROLLBACK")
                raise RegistryError(f"registry {self.db_path}: {e}") from None
            except BaseException:
                with contextlib.suppress(sqlite3.OperationalError):
                    con.execute("ROLLBACK")
                raise
