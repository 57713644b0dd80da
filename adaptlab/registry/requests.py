"""The request log and the feedback people give on logged requests (the next round's data)."""

from __future__ import annotations

import time

from adaptlab.registry.index import Index, RegistryError


class RequestLog:
    def __init__(self, index: Index):
        self.index = index

    def log(
        self, request_id: str, task: str, version: int | None, task_type: str | None, text: str, output: str
    ) -> None:
        with self.index.write() as con:
            con.execute(
                "INSERT INTO requests (id, task, version, task_type, input, output, created_at) VALUES (?,?,?,?,?,?,?)",
                (request_id, task, version, task_type, text, output, time.time()),
            )

    def get(self, request_id: str) -> dict | None:
        with self.index.connect() as con:
            row = con.execute("SELECT * FROM requests WHERE id = ?", (request_id,)).fetchone()
        return dict(row) if row else None

    def add_feedback(
        self, request_id: str, rating: int, correction: str | None = None, comment: str | None = None
    ) -> int:
        with self.index.write() as con:
            if con.execute("SELECT 1 FROM requests WHERE id = ?", (request_id,)).fetchone() is None:
                raise RegistryError(f"unknown request id {request_id!r}")
            cur = con.execute(
                "INSERT INTO feedback (request_id, rating, correction, comment, created_at) VALUES (?,?,?,?,?)",
                (request_id, int(rating), correction, comment, time.time()),
            )
            return int(cur.lastrowid)

    def feedback(self, task: str) -> list[dict]:
        with self.index.connect() as con:
            return [
                dict(r)
                for r in con.execute(
                    "SELECT f.*, r.input, r.output, r.task_type, r.version FROM feedback f JOIN requests r"
                    " ON r.id = f.request_id WHERE r.task = ? ORDER BY f.id",
                    (task,),
                )
            ]

    def recent(self, task: str, n: int) -> list[dict]:
        """The task's last ``n`` logged requests, oldest first."""
        with self.index.connect() as con:
            rows = con.execute(
                "SELECT * FROM requests WHERE task = ? ORDER BY created_at DESC, rowid DESC LIMIT ?", (task, int(n))
            ).fetchall()
        return [dict(r) for r in reversed(rows)]

    def tasks(self) -> list[str]:
        """Tasks with logged requests."""
        with self.index.connect() as con:
            return [r[0] for r in con.execute("SELECT DISTINCT task FROM requests ORDER BY task")]
