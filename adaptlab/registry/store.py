"""Versioned artifacts: an SQLite index plus content-addressed artifact folders.

Layout under the registry root (``ADAPTLAB_REGISTRY`` or ``~/.cache/adaptlab/registry``)::

    index.sqlite            tasks' versions, aliases (with history), API keys, requests, feedback
    objects/<digest>/       one artifact folder per digest, never modified once there
    tmp/                    folders being copied in (a crash leaves them here; ``gc`` removes them)

The digest is the sha256 of the artifact's manifest (relative path + sha256 of every file), so
the same artifact registered twice is stored once. Crash safety comes from ordering: the folder
is copied to ``tmp/`` and renamed into ``objects/`` (atomic) *before* the index row is committed
in one transaction, so a killed writer leaves either the old index (plus an orphan folder that
``gc`` deletes) or the new one, never a row pointing at a half-written folder.

Why SQLite by hand rather than an MLflow-style server: the index is embedded (no daemon), WAL
mode lets a running server read while the CLI promotes or rolls back, and ``BEGIN IMMEDIATE``
serialises the two writers that could otherwise pick the same version number.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import shutil
import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from adaptlab.registry.index import Index, RegistryError, check_name, registry_root
from adaptlab.registry.keys import KeyStore
from adaptlab.registry.requests import RequestLog
from adaptlab.utils import sha256_file

DEFAULT_ALIAS = "prod"


@dataclass(frozen=True)
class Entry:
    task: str
    version: int
    digest: str
    kind: str
    strategy: str
    task_type: str
    fingerprint: str
    base_model: str | None
    metrics: dict
    bytes: int
    created_by: str
    created_at: float
    run: str | None
    note: str | None
    path: Path

    @property
    def ref(self) -> str:
        return f"{self.task}@{self.version}"


# What `adaptlab train --out FOLDER` keeps next to the artifact but is not part of it: the training
# run (checkpoints with optimizer moments, the step log). Registering leaves it out.
NOT_ARTIFACT = ("run",)


def manifest(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """Relative path -> sha256 of every file in an artifact folder (sorted); top-level entries named
    in ``skip`` are left out."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.relative_to(folder).parts[0] not in skip)
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in files}


def manifest_digest(files: dict[str, str]) -> str:
    h = hashlib.sha256()
    for rel, sha in sorted(files.items()):
        h.update(f"{rel}\0{sha}\n".encode())
    return h.hexdigest()


def parse_ref(ref: str) -> tuple[str, str | None]:
    """``task``, ``task@3`` or ``task@alias`` -> (task, version-or-alias or None), names validated."""
    if not isinstance(ref, str) or ref.count("@") > 1:
        raise RegistryError(f"invalid model reference {ref!r}: use TASK, TASK@VERSION or TASK@ALIAS")
    task, _, sel = ref.partition("@")
    check_name(task, "task")
    if sel and not sel.isdigit():
        check_name(sel, "alias")
    return task, (sel or None)


class Registry:
    """Artifact versions and aliases; the API keys (``api_keys``) and the request log with its
    feedback (``requests``) are stores of their own over the same index."""

    def __init__(self, root: str | Path | None = None, read_only: bool = False):
        """Open (creating if needed) the registry at ``root``. ``read_only`` opens an existing one
        for reading only (a serving replica, a read-only mount); it is also chosen when the
        folder cannot be written."""
        self.root = Path(root) if root is not None else registry_root()
        self.index = Index(self.root, read_only)
        self.db_path = self.index.db_path
        self.objects = self.root / "objects"
        self.tmp = self.root / "tmp"
        self.api_keys = KeyStore(self.index)
        self.requests = RequestLog(self.index)

    @property
    def read_only(self) -> bool:
        return self.index.read_only

    def _entry(self, row) -> Entry:
        return Entry(
            task=row["task"],
            version=row["version"],
            digest=row["digest"],
            kind=row["kind"],
            strategy=row["strategy"],
            task_type=row["task_type"],
            fingerprint=row["fingerprint"],
            base_model=row["base_model"],
            metrics=json.loads(row["metrics"]),
            bytes=row["bytes"],
            created_by=row["created_by"],
            created_at=row["created_at"],
            run=row["run"],
            note=row["note"],
            path=self.objects / row["digest"],
        )

    # ------------------------------------------------------------------ artifacts
    def register(
        self,
        folder: str | Path,
        task: str,
        run: str | None = None,
        note: str | None = None,
        created_by: str | None = None,
        alias: str | None = None,
        parent: int | None = None,
        lineage: dict | None = None,
    ) -> Entry:
        """Copy an artifact folder in (content-addressed) and give it the task's next version.
        ``parent`` (a version of the same task) and ``lineage`` (what it was made from: rows added,
        feedback used, data fingerprint) are kept with it (:meth:`lineage`)."""
        check_name(task, "task")
        if alias is not None:
            check_name(alias, "alias")
        from adaptlab.strategies.base import ArtifactError, read_artifact_meta

        folder = Path(folder)
        try:
            meta = read_artifact_meta(folder)
        except ArtifactError as e:
            raise RegistryError(str(e)) from None
        for key in ("strategy", "kind", "task", "base_model"):
            if key not in meta:
                raise RegistryError(f"{folder}: adaptlab_artifact.json misses field '{key}'")
        links = sorted(p.name for p in folder.rglob("*") if p.is_symlink())
        if links:
            raise RegistryError(f"{folder}: refusing symbolic links ({', '.join(links)})")
        metrics = dict(meta.get("metrics") or {})
        compare = folder.resolve().parent.parent
        if (compare / "compare.json").is_file():  # an artifact of a compare run: remember which
            run = run or str(compare)
            metrics.setdefault("test", _compare_test(compare, folder.name))
        files_sha = manifest(folder, skip=NOT_ARTIFACT)
        digest = manifest_digest(files_sha)
        self._store(folder, digest)
        size = sum((folder / rel).stat().st_size for rel in files_sha)
        who = created_by or _user()
        now = time.time()
        with self.index.write() as con:
            row = con.execute("SELECT COALESCE(MAX(version), 0) AS v FROM artifacts WHERE task = ?", (task,)).fetchone()
            version = row["v"] + 1
            con.execute(
                "INSERT INTO artifacts (task, version, digest, kind, strategy, task_type, fingerprint, base_model,"
                " metrics, bytes, created_by, created_at, run, note) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    task,
                    version,
                    digest,
                    meta["kind"],
                    meta["strategy"],
                    meta["task"],
                    meta["base_model"]["fingerprint"],
                    meta["base_model"].get("name"),
                    json.dumps({k: v for k, v in metrics.items() if v is not None}, sort_keys=True),
                    size,
                    who,
                    now,
                    run,
                    note,
                ),
            )
            if parent is not None or lineage is not None:
                if (
                    parent is not None
                    and con.execute("SELECT 1 FROM artifacts WHERE task = ? AND version = ?", (task, parent)).fetchone()
                    is None
                ):
                    raise RegistryError(f"{task}@{parent}: no such version (the parent of a new one)")
                con.execute(
                    "INSERT INTO lineage (task, version, parent, info) VALUES (?,?,?,?)",
                    (task, version, parent, json.dumps(lineage or {}, sort_keys=True)),
                )
            if alias is not None:
                self._set_alias(con, task, alias, version, who, "promote")
        return self.get(task, version)

    def lineage(self, task: str) -> dict[int, dict]:
        """Version -> {"parent", **info} for the task's versions made from another (``improve``, ``rebase``)."""
        check_name(task, "task")
        with self.index.connect() as con:
            try:
                rows = con.execute(
                    "SELECT version, parent, info FROM lineage WHERE task = ? ORDER BY version", (task,)
                ).fetchall()
            except sqlite3.OperationalError:  # an index written before lineage existed, opened read-only
                return {}
        return {r["version"]: {"parent": r["parent"], **json.loads(r["info"])} for r in rows}

    def _store(self, folder: Path, digest: str) -> Path:
        dest = self.objects / digest
        if dest.exists():
            return dest
        if self.read_only:
            raise RegistryError(f"registry {self.root} is read-only: cannot change it")
        work = self.tmp / f"{digest}.{uuid.uuid4().hex}"
        try:
            shutil.copytree(
                folder,
                work,
                symlinks=False,
                ignore=lambda d, names: [n for n in names if Path(d) == folder and n in NOT_ARTIFACT],
            )
            for p in work.rglob("*"):
                if p.is_file():
                    with open(p, "rb") as f:
                        os.fsync(f.fileno())
            check = manifest_digest(manifest(work))
            if check != digest:
                raise RegistryError(f"{folder}: files changed while being registered; try again")
            try:
                os.rename(work, dest)  # atomic; loses the race harmlessly if another writer got there
            except OSError:
                if not dest.exists():
                    raise
        except OSError as e:
            raise RegistryError(f"registry {self.root}: cannot store artifact ({e.strerror or e})") from None
        finally:
            if work.exists():
                shutil.rmtree(work, ignore_errors=True)
        return dest

    def entries(self, task: str | None = None, include_deleted: bool = False) -> list[Entry]:
        sql = "SELECT * FROM artifacts"
        args: tuple = ()
        where = [] if include_deleted else ["deleted = 0"]
        if task is not None:
            where.append("task = ?")
            args = (check_name(task, "task"),)
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self.index.connect() as con:
            return [self._entry(r) for r in con.execute(sql + " ORDER BY task, version", args)]

    def tasks(self) -> list[str]:
        with self.index.connect() as con:
            return [r[0] for r in con.execute("SELECT DISTINCT task FROM artifacts WHERE deleted = 0 ORDER BY task")]

    def get(self, task: str, version: int) -> Entry:
        with self.index.connect() as con:
            row = con.execute("SELECT * FROM artifacts WHERE task = ? AND version = ?", (task, int(version))).fetchone()
        if row is None:
            raise RegistryError(f"{task}@{version}: no such version")
        if row["deleted"]:
            raise RegistryError(f"{task}@{version}: deleted")
        return self._entry(row)

    def resolve(self, ref: str) -> Entry:
        """``task`` (its ``prod`` alias, else its latest version), ``task@3`` or ``task@alias``."""
        task, sel = parse_ref(ref)
        with self.index.connect() as con:
            if sel is None or not sel.isdigit():
                alias = sel or DEFAULT_ALIAS
                row = con.execute("SELECT version FROM aliases WHERE task = ? AND alias = ?", (task, alias)).fetchone()
                if row is not None:
                    return self.get(task, row["version"])
                if sel is not None:
                    raise RegistryError(f"{ref}: task {task!r} has no alias {sel!r}")
                row = con.execute(
                    "SELECT MAX(version) AS v FROM artifacts WHERE task = ? AND deleted = 0", (task,)
                ).fetchone()
                if row["v"] is None:
                    raise RegistryError(f"{ref}: no such task in the registry")
                return self.get(task, row["v"])
        return self.get(task, int(sel))

    def verify(self, entry: Entry) -> None:
        """Check every file of a stored artifact against its digest (detects tampering or bit rot)."""
        if not entry.path.is_dir():
            raise RegistryError(f"{entry.ref}: stored folder {entry.path} is missing")
        if manifest_digest(manifest(entry.path)) != entry.digest:
            raise RegistryError(f"{entry.ref}: stored files do not match digest {entry.digest[:12]}")

    # ------------------------------------------------------------------ aliases
    def _set_alias(self, con, task: str, alias: str, version: int | None, who: str, action: str) -> None:
        now = time.time()
        if version is None:
            con.execute("DELETE FROM aliases WHERE task = ? AND alias = ?", (task, alias))
        else:
            con.execute(
                "INSERT INTO aliases (task, alias, version, set_at, set_by) VALUES (?,?,?,?,?) "
                "ON CONFLICT(task, alias) DO UPDATE SET version = excluded.version, set_at = excluded.set_at,"
                " set_by = excluded.set_by",
                (task, alias, version, now, who),
            )
        con.execute(
            "INSERT INTO alias_history (task, alias, version, set_at, set_by, action) VALUES (?,?,?,?,?,?)",
            (task, alias, version, now, who, action),
        )

    def promote(self, task: str, version: int, alias: str = DEFAULT_ALIAS) -> Entry:
        check_name(task, "task")
        check_name(alias, "alias")
        entry = self.get(task, version)  # raises for unknown / deleted
        with self.index.write() as con:
            self._set_alias(con, task, alias, entry.version, _user(), "promote")
        return entry

    def aliases(self, task: str | None = None) -> dict[str, dict[str, int]]:
        with self.index.connect() as con:
            rows = con.execute(
                "SELECT task, alias, version FROM aliases"
                + (" WHERE task = ?" if task else "")
                + " ORDER BY task, alias",
                (task,) if task else (),
            ).fetchall()
        out: dict[str, dict[str, int]] = {}
        for r in rows:
            out.setdefault(r["task"], {})[r["alias"]] = r["version"]
        return out

    def history(self, task: str, alias: str | None = None) -> list[dict]:
        sql = "SELECT * FROM alias_history WHERE task = ?" + (" AND alias = ?" if alias else "") + " ORDER BY id"
        with self.index.connect() as con:
            return [dict(r) for r in con.execute(sql, (task, alias) if alias else (task,))]

    def rollback(self, task: str, alias: str = DEFAULT_ALIAS) -> Entry:
        """Point ``alias`` back at the version it had before its current one (skipping deleted ones)."""
        check_name(task, "task")
        check_name(alias, "alias")
        with self.index.write() as con:
            cur = con.execute("SELECT version FROM aliases WHERE task = ? AND alias = ?", (task, alias)).fetchone()
            if cur is None:
                raise RegistryError(f"{task}@{alias}: alias not set; nothing to roll back")
            # Walk the history backwards: the versions this alias held before, most recent first.
            rows = con.execute(
                "SELECT version FROM alias_history WHERE task = ? AND alias = ? AND version IS NOT NULL"
                " ORDER BY id DESC",
                (task, alias),
            ).fetchall()
            seen = [r["version"] for r in rows]
            # Drop the run of entries equal to the current version at the top (repeated promotes).
            i = 0
            while i < len(seen) and seen[i] == cur["version"]:
                i += 1
            target = None
            for v in seen[i:]:
                live = con.execute("SELECT deleted FROM artifacts WHERE task = ? AND version = ?", (task, v)).fetchone()
                if live is not None and not live["deleted"] and v != cur["version"]:
                    target = v
                    break
            if target is None:
                raise RegistryError(f"{task}@{alias}: no earlier version to roll back to")
            self._set_alias(con, task, alias, target, _user(), "rollback")
        return self.get(task, target)

    # ------------------------------------------------------------------ delete / gc
    def delete(self, task: str, version: int, force: bool = False) -> None:
        check_name(task, "task")
        with self.index.write() as con:
            row = con.execute(
                "SELECT deleted FROM artifacts WHERE task = ? AND version = ?", (task, version)
            ).fetchone()
            if row is None or row["deleted"]:
                raise RegistryError(f"{task}@{version}: no such version")
            held = [
                r["alias"]
                for r in con.execute("SELECT alias FROM aliases WHERE task = ? AND version = ?", (task, version))
            ]
            if held and not force:
                raise RegistryError(
                    f"{task}@{version} is aliased as {', '.join(held)}; promote another version first or pass --force"
                )
            for a in held:
                self._set_alias(con, task, a, None, _user(), "delete")
            con.execute("UPDATE artifacts SET deleted = 1 WHERE task = ? AND version = ?", (task, version))

    def gc(self, tmp_min_age_s: float = 600) -> dict:
        """Delete stored folders no live version uses, and leftovers of interrupted writes.

        A folder in ``tmp/`` younger than ``tmp_min_age_s`` may belong to a writer still copying,
        so it is kept.
        """
        with self.index.write() as con:  # holding the write lock: no register can commit a new digest meanwhile
            live = {r[0] for r in con.execute("SELECT DISTINCT digest FROM artifacts WHERE deleted = 0")}
            removed, freed = [], 0
            for d in self.objects.iterdir():
                if d.name not in live:
                    freed += sum(p.stat().st_size for p in d.rglob("*") if p.is_file())
                    shutil.rmtree(d, ignore_errors=True)
                    removed.append(d.name)
        stale = 0
        for d in self.tmp.iterdir():
            if time.time() - d.stat().st_mtime >= tmp_min_age_s:
                shutil.rmtree(d, ignore_errors=True)
                stale += 1
        return {"removed_objects": len(removed), "freed_bytes": freed, "removed_tmp": stale}


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return str(os.getuid())


def lineage_text(info: dict | None) -> str:
    """'v3 + 120 feedback rows (40 corrections, 60 confirmed, 20 rated down); new labels: x' or '–'."""
    if not info:
        return "–"
    parts = [f"v{info['parent']}" if info.get("parent") is not None else "new"]
    if info.get("rows_added") is not None:
        fb = info.get("feedback") or {}
        used = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in fb.items() if n)
        parts.append(f"+ {info['rows_added']} feedback rows" + (f" ({used})" if used else ""))
    if info.get("base_model"):
        parts.append(f"on {info['base_model']}")
    if info.get("new_labels"):
        parts.append("new labels: " + ", ".join(info["new_labels"]))
    if info.get("kind"):
        parts.insert(0, info["kind"] + ":")
    return " ".join(parts)


def _compare_test(compare: Path, run_id: str) -> dict | None:
    """The held-out test numbers the compare measured for this artifact's run (what `registry list`
    shows as its metric), or None where its record is missing or unreadable."""
    from adaptlab.compare.record import RunRecord  # the compare's one loader of run records

    try:
        return RunRecord.load(compare / "results" / f"{run_id}.json").eval["test"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
