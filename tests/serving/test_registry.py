"""Registry: versions, aliases, rollback, content addressing, safety, concurrency, crashes."""

import json
import multiprocessing as mp
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adaptlab.registry import Registry, RegistryError, parse_ref


def fake_artifact(folder: Path, payload: str, fingerprint: str = "fp-tiny", kind: str = "lora") -> Path:
    """A structurally valid artifact folder (the registry never loads weights)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_model.safetensors").write_bytes(payload.encode() * 50)
    meta = {
        "strategy": kind,
        "kind": "gradient",
        "task": "classification",
        "labels": ["a", "b"],
        "base_model": {"name": "tiny", "fingerprint": fingerprint},
        "metrics": {"accuracy": 0.5},
    }
    (folder / "adaptlab_artifact.json").write_text(json.dumps(meta))
    return folder


def test_versions_aliases_and_rollback(tmp_path):
    reg = Registry(tmp_path / "reg")
    e1 = reg.register(fake_artifact(tmp_path / "a1", "one"), "food", note="first")
    e2 = reg.register(fake_artifact(tmp_path / "a2", "two"), "food")
    assert (e1.version, e2.version) == (1, 2) and e1.digest != e2.digest
    assert reg.resolve("food").version == 2  # no prod alias yet: the latest
    reg.promote("food", 1)
    assert reg.resolve("food").version == 1 and reg.resolve("food@prod").version == 1
    reg.promote("food", 2)
    reg.promote("food", 2, alias="staging")
    assert reg.resolve("food@staging").version == 2
    assert reg.rollback("food").version == 1
    assert reg.resolve("food").version == 1
    assert reg.rollback("food").version == 2  # rolling back a rollback goes forward again
    with pytest.raises(RegistryError, match="no alias 'canary'"):
        reg.resolve("food@canary")
    with pytest.raises(RegistryError, match="no such version"):
        reg.resolve("food@9")
    assert [h["action"] for h in reg.history("food", "prod")] == ["promote", "promote", "rollback", "rollback"]


def test_the_training_run_next_to_an_artifact_is_not_registered(tmp_path):
    """`adaptlab train --out X` keeps its checkpoint in X/run; registering X stores the artifact only."""
    plain = fake_artifact(tmp_path / "plain", "same")
    trained = fake_artifact(tmp_path / "trained", "same")
    (trained / "run" / "checkpoint").mkdir(parents=True)
    (trained / "run" / "checkpoint" / "optimizer.safetensors").write_bytes(b"x" * 10_000)
    (trained / "run" / "train_log.jsonl").write_text("{}\n")
    reg = Registry(tmp_path / "reg")
    a, b = reg.register(plain, "t"), reg.register(trained, "t")
    assert a.digest == b.digest and a.bytes == b.bytes < 10_000
    assert not (b.path / "run").exists()
    reg.verify(b)


def test_same_content_is_stored_once_and_gc_frees_unused(tmp_path):
    reg = Registry(tmp_path / "reg")
    a = reg.register(fake_artifact(tmp_path / "a", "same"), "t1")
    b = reg.register(fake_artifact(tmp_path / "b", "same"), "t2")
    assert a.digest == b.digest and len(list(reg.objects.iterdir())) == 1
    c = reg.register(fake_artifact(tmp_path / "c", "other"), "t1")
    reg.promote("t1", c.version)
    with pytest.raises(RegistryError, match="aliased as prod"):
        reg.delete("t1", c.version)
    reg.delete("t1", a.version)
    assert reg.gc()["removed_objects"] == 0  # t2 still uses the shared folder
    reg.delete("t2", b.version)
    out = reg.gc()
    assert out["removed_objects"] == 1 and out["freed_bytes"] > 0
    reg.verify(reg.resolve("t1"))


def test_names_are_validated_and_unsafe_folders_refused(tmp_path):
    reg = Registry(tmp_path / "reg")
    art = fake_artifact(tmp_path / "a", "x")
    for bad in ("../etc", "a/b", "A", "", "x@y", "..", "a..b", "/abs", "a b", "é"):
        with pytest.raises(RegistryError, match="invalid"):
            reg.register(art, bad)
        if "@" not in bad:
            with pytest.raises(RegistryError):
                parse_ref(bad)
    for bad in ("food@../x", "food@a/b", "a@b@c", "../x@1"):
        with pytest.raises(RegistryError, match="invalid"):
            parse_ref(bad)
    pickled = fake_artifact(tmp_path / "p", "y")
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(RegistryError, match="pickled"):
        reg.register(pickled, "food")
    linked = fake_artifact(tmp_path / "l", "z")
    (linked / "secret").symlink_to("/etc/passwd")
    with pytest.raises(RegistryError, match="symbolic links"):
        reg.register(linked, "food")
    with pytest.raises(RegistryError, match="not an adaptlab artifact"):
        reg.register(tmp_path, "food")
    assert reg.entries() == []


def test_tampered_files_are_detected(tmp_path):
    reg = Registry(tmp_path / "reg")
    e = reg.register(fake_artifact(tmp_path / "a", "x"), "food")
    (e.path / "adapter_model.safetensors").write_bytes(b"evil")
    with pytest.raises(RegistryError, match="do not match"):
        reg.verify(e)


def test_api_keys_are_hashed_and_scoped(tmp_path):
    reg = Registry(tmp_path / "reg")
    key = reg.api_keys.add("alice", ["food"])
    assert reg.api_keys.scope(key) == ["food"] and reg.api_keys.scope(key + "x") is None
    raw = sqlite3.connect(reg.db_path).execute("SELECT key_hash FROM api_keys").fetchone()[0]
    assert key not in raw and len(raw) == 64
    reg.api_keys.revoke("alice")
    assert reg.api_keys.scope(key) is None
    with pytest.raises(RegistryError, match="exists"):
        reg.api_keys.add("alice", ["*"])


def _register_many(root: str, folder: str, n: int, tag: str) -> None:
    reg = Registry(root)
    for i in range(n):
        reg.register(fake_artifact(Path(folder) / f"{tag}{i}", f"{tag}-{i}"), "shared")


def test_two_processes_registering_at_once(tmp_path):
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(target=_register_many, args=(str(tmp_path / "reg"), str(tmp_path / "src"), 12, t))
        for t in ("a", "b")
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    reg = Registry(tmp_path / "reg")
    entries = reg.entries("shared")
    assert [e.version for e in entries] == list(range(1, 25))
    assert len({e.digest for e in entries}) == 24
    for e in entries:
        reg.verify(e)


WRITER = """
import sys, json
from pathlib import Path
from adaptlab.registry import Registry
root, src = sys.argv[1], Path(sys.argv[2])
reg = Registry(root)
i = 0
while True:
    d = src / f"w{i}"
    d.mkdir(parents=True, exist_ok=True)
    (d / "adapter_model.safetensors").write_bytes(f"payload-{i}".encode() * 200000)
    (d / "adaptlab_artifact.json").write_text(json.dumps({"strategy": "lora", "kind": "gradient",
        "task": "classification", "base_model": {"name": "tiny", "fingerprint": "fp"}, "metrics": {}}))
    e = reg.register(d, "crash")
    if i % 3 == 0:
        reg.promote("crash", e.version)
    print(e.version, flush=True)
    i += 1
"""


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_killed_writer_leaves_a_consistent_index(tmp_path, seed):
    random.seed(seed)
    root = tmp_path / "reg"
    Registry(root).register(fake_artifact(tmp_path / "before", "before"), "crash")
    for attempt in range(3):
        p = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(root), str(tmp_path / f"src{attempt}")],
            stdout=subprocess.PIPE,
            text=True,
        )
        p.stdout.readline()  # at least one registration went through in this process
        time.sleep(random.uniform(0.0, 0.4))
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    reg = Registry(root)
    entries = reg.entries("crash")
    assert [e.version for e in entries] == list(range(1, len(entries) + 1))
    for e in entries:
        reg.verify(e)  # every committed version has its complete folder
    assert reg.resolve("crash").version in {e.version for e in entries}
    reg.gc(tmp_min_age_s=0)
    assert list(reg.tmp.iterdir()) == []
    assert {d.name for d in reg.objects.iterdir()} == {e.digest for e in entries}


def test_read_only_registry_reads_but_refuses_writes(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root ignores file permissions")
    root = tmp_path / "reg"
    reg = Registry(root)
    reg.register(fake_artifact(tmp_path / "a", "x"), "food")
    os.chmod(root, 0o555)
    try:
        ro = Registry(root)
        assert ro.resolve("food").version == 1
        with pytest.raises(RegistryError, match="read-only"):
            ro.promote("food", 1)
    finally:
        os.chmod(root, 0o755)


def test_read_only_mode_refuses_every_write(tmp_path):
    root = tmp_path / "reg"
    Registry(root).register(fake_artifact(tmp_path / "a", "x"), "food")
    ro = Registry(root, read_only=True)
    assert ro.resolve("food").version == 1 and ro.entries()[0].task == "food"
    before = (root / "index.sqlite").read_bytes()
    for write in (
        lambda: ro.promote("food", 1),
        lambda: ro.register(fake_artifact(tmp_path / "b", "y"), "food"),
        lambda: ro.api_keys.add("k", ["*"]),
        lambda: ro.delete("food", 1),
        lambda: ro.gc(),
    ):
        with pytest.raises(RegistryError, match="read-only"):
            write()
    assert (root / "index.sqlite").read_bytes() == before
    with pytest.raises(RegistryError, match="no index.sqlite"):
        Registry(tmp_path / "nothing", read_only=True)


def test_an_artifact_from_a_compare_run_remembers_the_run(tmp_path):
    run = tmp_path / "runs" / "tickets"
    (run / "artifacts").mkdir(parents=True)
    (run / "compare.json").write_text("{}")
    e = Registry(tmp_path / "reg").register(fake_artifact(run / "artifacts" / "lora-n8-s0", "x"), "tickets")
    assert e.run == str(run.resolve())
