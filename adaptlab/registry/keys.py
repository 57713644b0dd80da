"""API keys: random tokens stored as hashes, each scoped to tasks (``*``: every task and the base)."""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import time

from adaptlab.registry.index import Index, RegistryError, check_name


class KeyStore:
    def __init__(self, index: Index):
        self.index = index

    def add(self, name: str, tasks: list[str]) -> str:
        """Create an API key scoped to ``tasks`` (``*`` = every task and the base model); returns it once.

        Keys are 192-bit random tokens, so a plain sha256 is enough to store them (a slow password
        hash protects guessable secrets; these are not guessable).
        """
        check_name(name, "key")
        for t in tasks:
            if t not in ("*", "base"):
                check_name(t, "task")
        if not tasks:
            raise RegistryError("a key needs at least one task in its scope (or '*')")
        key = "al-" + secrets.token_urlsafe(24)
        try:
            with self.index.write() as con:
                con.execute(
                    "INSERT INTO api_keys (name, key_hash, tasks, created_at) VALUES (?,?,?,?)",
                    (name, hash_key(key), json.dumps(sorted(set(tasks))), time.time()),
                )
        except sqlite3.IntegrityError:
            raise RegistryError(f"a key named {name!r} exists already") from None
        return key

    def revoke(self, name: str) -> None:
        with self.index.write() as con:
            if con.execute("UPDATE api_keys SET revoked = 1 WHERE name = ? AND revoked = 0", (name,)).rowcount == 0:
                raise RegistryError(f"no active key named {name!r}")

    def list(self) -> list[dict]:
        with self.index.connect() as con:
            return [
                {
                    "name": r["name"],
                    "tasks": json.loads(r["tasks"]),
                    "created_at": r["created_at"],
                    "revoked": bool(r["revoked"]),
                }
                for r in con.execute("SELECT * FROM api_keys ORDER BY id")
            ]

    def scope(self, key: str) -> list[str] | None:
        """The tasks a presented key may use, or None when it is unknown or revoked."""
        return self.scope_of_hash(hash_key(key))

    def scope_of_hash(self, key_hash: str) -> list[str] | None:
        """As :meth:`scope`, for a key known by its hash (a session that must not hold the key)."""
        with self.index.connect() as con:
            row = con.execute("SELECT tasks FROM api_keys WHERE key_hash = ? AND revoked = 0", (key_hash,)).fetchone()
        return json.loads(row["tasks"]) if row else None

    def any(self) -> bool:
        with self.index.connect() as con:
            return con.execute("SELECT 1 FROM api_keys WHERE revoked = 0 LIMIT 1").fetchone() is not None


def hash_key(key: str) -> str:
    """How a key is stored and looked up (sessions keep this, never the key)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()
