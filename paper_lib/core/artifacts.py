"""Run folders, content-addressed step folders keyed on inputs and code, file fingerprints, atomic writes.

Every expensive step writes into ``runs/<profile>/<step>-<hash>/``, where the hash covers everything that
determines the result: its config fields, upstream artifact folder names (themselves such hashes), the
fingerprints of the corpus files it read, and the source of the code that computes it (the module that
defines the step's ``build`` function plus any modules the step names). Editing a step's code therefore
rebuilds that step and, through the folder names in their inputs, every step downstream of it, and nothing
else. A step is built in ``<dir>.partial`` (kept across interruptions, so long steps can resume from their
checkpoints) and renamed to its final name only when complete; its manifest lists its files, and a finished
folder with a file missing or truncated is rebuilt, with a message. A file lock serialises concurrent
builders of the same step; ``shared_cached_step`` keeps the same contract for one build that several processes
run together (data-parallel training).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
import sys
import time
import types
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

from .runtime import first_non_finite

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent
MANIFEST = "manifest.json"  # written last inside a step folder: its presence marks the step complete
BENCHMARK_FILE = "benchmarks.json"
STEP_TABLE = "steps"  # the benchmark file's per-step table (which notebook built each step folder, and its cost)


def runs_root() -> Path:
    """Root of all run folders: ``$PAPER_RUNS_DIR`` or ``<project>/runs``."""
    return Path(os.environ.get("PAPER_RUNS_DIR", PROJECT_ROOT / "runs")).resolve()


def run_dir(profile: str) -> Path:
    """The run folder of one profile (``cfg.profile``: a plain folder name, never a path)."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", str(profile)) or ".." in str(profile):
        raise ArtifactError(
            f"profile name {profile!r} cannot name a run folder: use letters, digits, '_', '.', '-' (no path, no '..')"
        )
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
    """Content hash of a file (read in full; ``file_fingerprint`` caches it)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:length]


FINGERPRINT_CACHE = ".fingerprints.json"  # in the runs root: {path: [size, mtime_ns, digest]}
_fingerprints: dict[str, tuple[int, int, str]] = {}


def file_fingerprint(path: Path) -> str:
    """``<content hash>-<size>`` of a file, hashed once per (size, mtime) and remembered on disk.

    Corpora are hundreds of megabytes on the paper profile; hashing them on every cache lookup would cost more
    than the lookup saves, and a changed file always changes its size or modification time.
    """
    path = Path(path).resolve()
    stat = path.stat()
    key = str(path)
    cached = _fingerprints.get(key)
    if cached is None:
        store = runs_root() / FINGERPRINT_CACHE
        if store.is_file():
            try:
                on_disk = json.loads(store.read_text(encoding="utf-8"))
                _fingerprints.update({k: tuple(v) for k, v in on_disk.items()})
            except (OSError, json.JSONDecodeError, TypeError, ValueError):
                pass  # a broken cache file only costs a rehash
            cached = _fingerprints.get(key)
    if cached is None or cached[0] != stat.st_size or cached[1] != stat.st_mtime_ns:
        cached = (stat.st_size, stat.st_mtime_ns, file_digest(path))
        _fingerprints[key] = cached
        store = runs_root() / FINGERPRINT_CACHE
        with _locked(store):
            write_json_atomic(store, {k: list(v) for k, v in _fingerprints.items()})
    return f"{cached[2]}-{cached[0]}"


def _module_source(module: types.ModuleType | str) -> bytes:
    if isinstance(module, str):
        module = sys.modules.get(module) or __import__(module, fromlist=["_"])
    file = getattr(module, "__file__", None)
    if not file:
        raise ArtifactError(f"module {module.__name__} has no source file to key a cache on")
    return Path(file).read_bytes()


def code_fingerprint(modules: Iterable[types.ModuleType | str]) -> str:
    """Hash of the source of some modules (by name or object): what a cached step's code is keyed on."""
    digest = hashlib.sha256()
    for name in sorted({m if isinstance(m, str) else m.__name__ for m in modules}):
        digest.update(name.encode())
        digest.update(_module_source(name))
    return digest.hexdigest()[:12]


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
        raise ArtifactError(f"{path}: cannot read JSON ({err}). Delete the file (or the step folder holding it) to rebuild it.") from err


class ArtifactError(RuntimeError):
    """A run folder that is corrupt or incomplete."""


def _file_list(folder: Path) -> dict[str, int]:
    """``{relative path: size}`` of every file in a step folder but its manifest."""
    return {
        str(p.relative_to(folder)): p.stat().st_size
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


def missing_files(path: Path) -> list[str]:
    """Files a finished step's manifest lists that are gone or have another size (empty if all are there)."""
    path = Path(path)
    listed = read_json(path / MANIFEST).get("files", {})
    return [
        name for name, size in listed.items()
        if not (path / name).is_file() or (path / name).stat().st_size != size
    ]


def is_complete(path: Path) -> bool:
    """True when ``path`` is a finished step folder with every file its manifest lists."""
    path = Path(path)
    return (path / MANIFEST).is_file() and not missing_files(path)


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


def step_dir(profile: str, step: str, inputs: dict[str, Any], code: str = "") -> Path:
    """Folder for a step, named by the hash of its inputs and of its code (``code_fingerprint``)."""
    return run_dir(profile) / f"{step}-{stable_hash({'inputs': inputs, 'code': code})}"


def _clear_for_build(final: Path) -> Path:
    """Make way for building ``final`` (caller holds its lock, and found it unfinished): remove a finished folder
    with missing files, refuse a folder with no manifest; return the ``.partial`` folder to build in."""
    if (final / MANIFEST).is_file():
        print(
            f"[cache] {final.name}: finished step with missing or truncated file(s) "
            f"{missing_files(final)[:5]}; rebuilding it.",
            file=sys.stderr,
            flush=True,
        )
        shutil.rmtree(final)
    elif final.exists():
        raise ArtifactError(
            f"{final} exists but has no {MANIFEST}: it is not a finished step. Delete the folder to rebuild."
        )
    partial = final.with_name(final.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    return partial


def _finish(final: Path, partial: Path, step: str, code_hash: str, inputs: dict, meta: dict, started: float) -> None:
    """Write the manifest of a built ``partial`` folder and rename it to ``final`` (caller holds the lock)."""
    found = first_non_finite(meta)
    if found:  # a diverged or failed build must not be taken as finished
        raise ArtifactError(
            f"step {step} produced {found[0]} = {found[1]}; it is not cached. Fix the cause (a diverging learning "
            f"rate, a corpus too small) and rerun; the unfinished folder {partial} can be deleted."
        )
    manifest = {
        "step": step,
        "code": code_hash,
        "inputs": inputs,
        "hash": final.name.rsplit("-", 1)[-1],
        "seconds": round(time.time() - started, 3),
        "meta": meta,
        "files": _file_list(partial),
    }
    write_json_atomic(partial / MANIFEST, manifest)
    os.replace(partial, final)


def newest_resumable(checkpoints: list[Path], problem: Callable[[Path], str | None], tag: str,
                     where: Path) -> Path | None:
    """The first of ``checkpoints`` (newest first) that ``problem`` finds nothing wrong with; broken ones are
    removed, with a message saying which, so an interrupted run falls back to an earlier checkpoint or starts
    afresh by itself. ``tag`` and ``where`` name the run in the messages (LM and SAE training share this)."""
    for checkpoint in checkpoints:
        found = problem(checkpoint)
        if found is None:
            if checkpoint != checkpoints[0]:
                print(f"[{tag}] resuming from the earlier {checkpoint.name}", file=sys.stderr, flush=True)
            return checkpoint
        print(f"[{tag}] {checkpoint}: {found}; removing it", file=sys.stderr, flush=True)
        shutil.rmtree(checkpoint, ignore_errors=True)
    if checkpoints:
        print(f"[{tag}] no usable checkpoint in {where}: training starts again from step 0", file=sys.stderr, flush=True)
    return None


def cached_step(
    profile: str,
    step: str,
    inputs: dict[str, Any],
    build: Callable[[Path], dict[str, Any] | None],
    code: Iterable[types.ModuleType | str] = (),
) -> Path:
    """Return the finished folder of ``step``, building it with ``build(partial_dir)`` if needed.

    The folder's name hashes ``inputs`` and the source of the module defining ``build`` plus the modules in
    ``code`` (name there any module whose functions the build calls and whose output is not already an
    upstream step in ``inputs``). ``build`` writes its files into ``partial_dir`` (which survives an
    interruption, so it may resume from checkpoints it left there) and may return metadata for the manifest.
    The folder is renamed into place only after ``build`` returns, so a partial result is never mistaken for
    a finished one.
    """
    code_hash = code_fingerprint([build.__module__, *code])
    final = step_dir(profile, step, inputs, code_hash)
    if is_complete(final):
        return final
    with _locked(final):
        if is_complete(final):  # built by a concurrent process while we waited
            return final
        partial = _clear_for_build(final)
        started = time.time()
        meta = build(partial) or {}
        _finish(final, partial, step, code_hash, inputs, meta, started)
    return final


class StepGroup(Protocol):
    """Processes that build one step together, such as the ranks of a data-parallel training run."""

    is_main: bool  # the one process that takes the lock and writes the manifest

    def share(self, value: Any) -> Any:
        """The main process's ``value``, returned on every process; every process of the group must call it."""


def shared_cached_step(
    group: StepGroup,
    profile: str,
    step: str,
    inputs: dict[str, Any],
    build: Callable[[Path], dict[str, Any] | None],
    code: Iterable[types.ModuleType | str] = (),
) -> Path:
    """``cached_step`` for a build that every process of ``group`` runs at once (one data-parallel training).

    The folder and its name are those ``cached_step`` gives (same inputs, same code): only the main process takes
    the lock, decides whether the step is finished and writes the manifest, and every process calls
    ``build`` on the same ``.partial`` folder (the build itself must let one process write each file). No
    process returns before the folder is renamed into place, and an error on the main process is raised on all.
    """
    code_hash = code_fingerprint([build.__module__, *code])
    final = step_dir(profile, step, inputs, code_hash)
    with _locked(final) if group.is_main else contextlib.nullcontext():
        verdict: Any = None
        if group.is_main:
            try:
                verdict = "finished" if is_complete(final) else str(_clear_for_build(final))
            except ArtifactError as err:
                verdict = err
        verdict = group.share(verdict)
        if isinstance(verdict, Exception):
            raise verdict
        if verdict == "finished":
            return final
        partial = Path(verdict)
        started = time.time()
        meta = build(partial) or {}
        group.share(None)  # every process has finished writing into the partial folder
        failure: Exception | None = None
        if group.is_main:
            try:
                _finish(final, partial, step, code_hash, inputs, meta, started)
            except Exception as err:  # passed on, so the other processes raise it too instead of waiting
                failure = err if isinstance(err, ArtifactError) else ArtifactError(f"finishing {step}: {err!r}")
        failure = group.share(failure)
        if failure is not None:
            raise failure
    return final


def manifest(path: Path) -> dict[str, Any]:
    """The manifest of a finished step folder."""
    if not is_complete(path):
        raise ArtifactError(f"{path} is not a finished step folder (no {MANIFEST}).")
    return read_json(Path(path) / MANIFEST)


def read_benchmarks(profile: str) -> dict[str, Any]:
    """The profile's benchmark file (``record_benchmark``) as a dict; empty where nothing was recorded yet."""
    path = run_dir(profile) / BENCHMARK_FILE
    return read_json(path) if path.exists() else {}


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
