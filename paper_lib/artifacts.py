"""Run folders, content-addressed step directories and atomic writes.

Every expensive step writes into ``runs/<profile>/<step>-<hash>/``, where the hash covers everything that
determines the result (config fields, upstream artifact hashes, the step's version). A step is built in
``<dir>.partial`` (kept across interruptions, so long steps can resume from their checkpoints) and renamed
to its final name only when complete; a finished folder is reused and never overwritten. A file lock
serialises concurrent builders of the same step.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MANIFEST = "manifest.json"  # written last inside a step folder: its presence marks the step complete
BENCHMARK_FILE = "benchmarks.json"


def runs_root() -> Path:
    """Root of all run folders: ``$PAPER_RUNS_DIR`` or ``<project>/runs``."""
    return Path(os.environ.get("PAPER_RUNS_DIR", PROJECT_ROOT / "runs")).resolve()


def run_dir(profile: str) -> Path:
    """The run folder of one profile."""
    path = runs_root() / profile
    path.mkdir(parents=True, exist_ok=True)
    return path


def figures_dir() -> Path:
    """Where ``make paper`` collects figures: ``$PAPER_FIGURES_DIR`` or ``<project>/figures``."""
    path = Path(os.environ.get("PAPER_FIGURES_DIR", PROJECT_ROOT / "figures")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def stable_hash(obj: Any, length: int = 12) -> str:
    """Hash of a JSON-serialisable object, independent of dict order."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def file_digest(path: Path, length: int = 16) -> str:
    """Content hash of a file (used to tie artifacts to the exact corpus files they were built from)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:length]


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON through a temporary file in the same folder and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(obj, handle, indent=2, sort_keys=True, default=str)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_json(path: Path) -> Any:
    """Read a JSON file, with an error that names the file if it is unreadable."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ArtifactError(f"{path}: cannot read JSON ({err}). Delete the file to rebuild it.") from err


class ArtifactError(RuntimeError):
    """A run folder that is corrupt or incomplete."""


def is_complete(path: Path) -> bool:
    """True when ``path`` is a finished step folder."""
    return (Path(path) / MANIFEST).is_file()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    lock_path = path.with_name(path.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def step_dir(profile: str, step: str, inputs: dict[str, Any], version: int = 1) -> Path:
    """Folder for a step, named by the hash of its inputs and the step's version."""
    return run_dir(profile) / f"{step}-{stable_hash({'inputs': inputs, 'version': version})}"


def cached_step(
    profile: str,
    step: str,
    inputs: dict[str, Any],
    build: Callable[[Path], dict[str, Any] | None],
    version: int = 1,
) -> Path:
    """Return the finished folder of ``step``, building it with ``build(partial_dir)`` if needed.

    ``build`` writes its files into ``partial_dir`` (which survives an interruption, so it may resume from
    checkpoints it left there) and may return metadata for the manifest. The folder is renamed into place
    only after ``build`` returns, so a partial result is never mistaken for a finished one.
    """
    final = step_dir(profile, step, inputs, version)
    if is_complete(final):
        return final
    with _locked(final):
        if is_complete(final):  # built by a concurrent process while we waited
            return final
        if final.exists():
            raise ArtifactError(
                f"{final} exists but has no {MANIFEST}: it is not a finished step. Delete it to rebuild."
            )
        partial = final.with_name(final.name + ".partial")
        partial.mkdir(parents=True, exist_ok=True)
        started = time.time()
        meta = build(partial) or {}
        manifest = {
            "step": step,
            "version": version,
            "inputs": inputs,
            "hash": final.name.rsplit("-", 1)[-1],
            "seconds": round(time.time() - started, 3),
            "meta": meta,
        }
        write_json_atomic(partial / MANIFEST, manifest)
        os.replace(partial, final)
    return final


def manifest(path: Path) -> dict[str, Any]:
    """The manifest of a finished step folder."""
    if not is_complete(path):
        raise ArtifactError(f"{path} is not a finished step folder (no {MANIFEST}).")
    return read_json(Path(path) / MANIFEST)


def record_benchmark(profile: str, name: str, values: dict[str, Any]) -> Path:
    """Merge ``values`` under ``name`` into the profile's benchmark file (``runs/<profile>/benchmarks.json``).

    Benchmarks (wall times, throughputs) are measured by the code that does the work and kept in one file
    per profile, so a report can quote them without anyone retyping a number.
    """
    path = run_dir(profile) / BENCHMARK_FILE
    with _locked(path):
        data = read_json(path) if path.exists() else {}
        data[name] = {**values, "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        write_json_atomic(path, data)
    return path


def remove_tree(path: Path) -> None:
    """Delete a folder if it exists (used by tests and explicit rebuilds)."""
    shutil.rmtree(path, ignore_errors=True)
