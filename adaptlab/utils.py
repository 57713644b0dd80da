"""Small helpers shared across the package: atomic writes, hashing, versions, threads."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import platform
import tempfile
from pathlib import Path


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; results and artifacts are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def package_versions() -> dict[str, str]:
    """Versions of the packages that decide numerical results, for self-describing outputs."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("adaptlab", "torch", "transformers", "peft", "safetensors", "tokenizers"):
        with contextlib.suppress(PackageNotFoundError):
            out[name] = version(name)
    return out


def cpu_model() -> str:
    """The CPU's marketing name (``platform.processor()`` says only "x86_64" on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, str | int]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count() or 1,
    }


def speed_probe(repeats: int = 20, warmup: int = 5) -> float:
    """GFLOP/s of an fp32 matrix product shaped like a slice of Gemma's LM head (64 x 640 x 16384):
    the fastest of ``repeats`` products after ``warmup`` ones, on the threads torch uses now, in
    about 0.3 s on 2 cores.

    Timings are only comparable on one machine. A grid resumed over several sessions, or shared by
    workers on several machines, records this next to every run, so that the report can say when
    its examples/s and costs come from machines of different speed (two 2-core VMs of the same
    type differed by 1.7x in evaluation speed). The fastest product, not the median: on a quiet
    2-core VM five runs of this probe gave medians from 132 to 180 GFLOP/s and maxima from 172 to
    204; the first few products are slower still (thread pool and allocator warming up)."""
    import time

    import torch

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(64, 640, generator=g), torch.randn(640, 16384, generator=g)
    best = float("inf")
    for i in range(warmup + repeats):
        t = time.perf_counter()
        a @ b
        if i >= warmup:
            best = min(best, time.perf_counter() - t)
    return 2 * 64 * 640 * 16384 / best / 1e9


def set_torch_threads() -> int:
    """Use one intra-op thread per available core (the default can oversubscribe containers)."""
    import torch

    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if os.environ.get("ADAPTLAB_THREADS", "").isdigit():  # set for each of several workers on one machine
        n = int(os.environ["ADAPTLAB_THREADS"])
    torch.set_num_threads(max(1, n))
    return n


def provenance_lines(meta: dict, packages: tuple[str, ...] = ("torch", "transformers")) -> list[str]:
    """The "Command" and "Machine" lines every benchmark table in docs/results starts with."""
    m, v = meta["machine"], meta["versions"]
    threads = f", torch threads {m['torch_threads']}" if "torch_threads" in m else ""
    versions = ", ".join(f"{p} {v.get(p)}" for p in packages)
    return [
        f"Command: `{meta['command']}`  ",
        f"Machine: {m['processor']}, {m['cpu_count']} cores{threads}; {meta['date']}; {versions}  ",
    ]


class TimeUp(Exception):
    """A run went past the time it was given (:func:`time_limit`): the compare cuts it and says so."""


_DEADLINE: list[float] = []  # monotonic seconds, innermost last


class time_limit:
    """``with time_limit(seconds):`` makes :func:`check_deadline` raise :class:`TimeUp` once the
    seconds have passed (None: no limit). The long loops check it (a training step, a scoring or
    decoding batch), so a run that overruns its budget stops by measured time, not by its estimate."""

    def __init__(self, seconds: float | None):
        import time

        self.at = None if seconds is None else time.monotonic() + max(0.0, seconds)

    def __enter__(self):
        _DEADLINE.append(self.at if self.at is not None else float("inf"))
        return self

    def __exit__(self, *exc):
        _DEADLINE.pop()
        return False


def check_deadline() -> None:
    if _DEADLINE:
        import time

        if time.monotonic() > min(_DEADLINE):
            raise TimeUp("time limit reached")


def cli_setting(default, text: str, *flags: str):
    """A config dataclass field that is also a command option (``cli.config_options``): its default and
    help written once, in the field (``flags`` where the option is spelled otherwise; a default of
    ``dataclasses.MISSING`` makes a required option). ServeConfig, ImproveOptions and ExportConfig
    declare their options with it."""
    return dataclasses.field(default=default, metadata={"cli": flags or True, "help": text})
