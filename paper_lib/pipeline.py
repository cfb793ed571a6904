"""Run the numbered notebooks in order with papermill: the engine behind ``make paper``.

Each executed copy is kept in ``runs/<profile>/notebooks/``. A notebook is re-executed only when its source,
the package's code, the profiles or the corpora (their contents, not their folder's name) changed since its
last successful run; every step inside it is cached too, keyed on its own code, so a re-execution rebuilds
only what a change touched. Wall times go to the benchmark file, with each notebook's peak resident memory (its
kernel process tree, polled while it runs) and a table of the cached steps each notebook built (``steps``: the
step's seconds and tokens per second from its manifest, beside its notebook's peak memory).

    python -m paper_lib.pipeline --profile cpu            # all notebooks
    python -m paper_lib.pipeline --profile cpu --only 01 02
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from .core.artifacts import (
    MANIFEST,
    STEP_TABLE,
    PROJECT_ROOT,
    file_fingerprint,
    read_benchmarks,
    read_json,
    record_benchmark,
    run_dir,
    write_json_atomic,
)
from .core.config import ConfigError, load_config
from .data import DataError, check_corpora
from .report import ReportError, write_results

NOTEBOOK_DIR = PROJECT_ROOT / "notebooks"
KERNEL_NAME = "feature-tracking"


def _parents() -> dict[int, int]:
    """``{pid: parent pid}`` of every process in /proc (empty where there is no /proc)."""
    parents = {}
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        if entry.name.isdigit():
            try:  # the command name may hold spaces and parentheses: the fields after the last ')' are fixed
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                parents[int(entry.name)] = int(fields[1])
            except (OSError, IndexError, ValueError):
                continue  # the process ended while we read
    return parents


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, parent in _parents().items():
        children.setdefault(parent, []).append(pid)
    found, stack = [], [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def _status_kib(pid: int, *keys: str) -> dict[str, int]:
    """Fields of /proc/<pid>/status in KiB (``VmRSS``: resident now, ``VmHWM``: its peak so far)."""
    values = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in keys:
                values[key] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return values


class PeakMemory:
    """Peak resident memory of this process's descendants (a notebook's kernel and whatever it starts), polled
    from a thread every ``interval`` seconds while the ``with`` block runs.

    ``peak_rss_mib`` is the largest sum of the descendants' resident memory seen at one poll; ``peak_hwm_mib`` the
    largest single process's own peak (the kernel's VmHWM, exact however short the peak was). Linux only (/proc);
    elsewhere both are None.
    """

    def __init__(self, interval: float = 0.5, root: int | None = None):
        self.interval, self.root = interval, root or os.getpid()
        self.peak_rss_kib = self.peak_hwm_kib = self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _sample(self) -> None:
        rss = 0
        for pid in _descendants(self.root):
            status = _status_kib(pid, "VmRSS", "VmHWM")
            rss += status.get("VmRSS", 0)
            self.peak_hwm_kib = max(self.peak_hwm_kib, status.get("VmHWM", 0))
        self.peak_rss_kib = max(self.peak_rss_kib, rss)
        self.samples += 1

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def result(self) -> dict:
        """The peaks in MiB (None without /proc) and the number of polls."""
        seen = Path("/proc").is_dir() and self.samples > 0
        return {"peak_rss_mib": round(self.peak_rss_kib / 1024, 1) if seen else None,
                "peak_hwm_mib": round(self.peak_hwm_kib / 1024, 1) if seen else None,
                "memory_polls": self.samples}


def finished_steps(run_folder: Path) -> set[str]:
    """Names of the finished step folders in a run folder."""
    return {p.parent.name for p in run_folder.glob(f"*/{MANIFEST}")}


def step_rows(run_folder: Path, names: set[str], notebook: str, memory: dict) -> list[dict]:
    """One row per step folder in ``names``: its step, seconds and tokens per second (from its manifest, where the
    step has a throughput) and the peak memory of the notebook that built it."""
    rows = []
    for name in sorted(names):
        found = read_json(run_folder / name / MANIFEST)
        meta = found.get("meta") or {}
        rows.append({"folder": name, "step": found.get("step"), "notebook": notebook, "seconds": found.get("seconds"),
                     "tokens_per_second": meta.get("tokens_per_second"),
                     "notebook_peak_rss_mib": memory.get("peak_rss_mib"),
                     "notebook_peak_hwm_mib": memory.get("peak_hwm_mib")})
    return rows


def record_steps(profile: str, rows: list[dict]) -> None:
    """Add ``rows`` to the benchmark file's per-step table (a folder built again replaces its old row)."""
    old = (read_benchmarks(profile).get(STEP_TABLE) or {}).get("rows", [])
    new = {row["folder"] for row in rows}
    kept = [row for row in old if row["folder"] not in new]
    record_benchmark(profile, STEP_TABLE, {"rows": kept + rows, "columns": {
        "seconds": "the step's build time (its manifest)", "tokens_per_second": "training or evaluation tokens per "
        "second, where the step has a throughput", "notebook_peak_rss_mib": "largest resident memory of the "
        "notebook's kernel process tree at one poll", "notebook_peak_hwm_mib": "the kernel process's own peak (VmHWM)"}})


def notebooks(only: list[str] | None = None) -> list[Path]:
    """The numbered notebooks in run order, optionally only those whose number or name is given."""
    found = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    if only:
        found = [nb for nb in found if any(nb.stem.startswith(key) or nb.stem == key for key in only)]
    return found


def _inputs_digest(notebook: Path, profile: str) -> str:
    digest = hashlib.sha256()
    sources = [notebook, *sorted((PROJECT_ROOT / "paper_lib").rglob("*.py")),
               *sorted((PROJECT_ROOT / "paper_lib" / "profiles").glob("*.yaml"))]
    for path in sources:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    digest.update(str(profile).encode())
    if Path(profile).suffix in (".yaml", ".yml") and Path(profile).is_file():  # a profile given as a file
        digest.update(Path(profile).read_bytes())
    data_dir = os.environ.get("PAPER_DATA_DIR")
    if data_dir and Path(data_dir).is_dir():  # the corpora's contents (fingerprints cached by size and mtime)
        for path in sorted(Path(data_dir).resolve().glob("*/*.jsonl*")):
            digest.update(f"{path.parent.name}/{path.name}:{file_fingerprint(path)}".encode())
    return digest.hexdigest()


def _kernel_name() -> str:
    """The project's kernel (the notebooks' kernelspec) if installed here, else ``python3``: the interpreter
    papermill runs in, which is what Colab and any plain Jupyter offer."""
    try:
        from jupyter_client.kernelspec import KernelSpecManager

        return KERNEL_NAME if KERNEL_NAME in KernelSpecManager().find_kernel_specs() else "python3"
    except Exception:
        return "python3"


def absolute_environment() -> None:
    """Make the run, data and figure folders in the environment absolute: the kernel runs in ``notebooks/``,
    so a path relative to the shell's folder would point somewhere else there."""
    for var in ("PAPER_RUNS_DIR", "PAPER_DATA_DIR", "PAPER_FIGURES_DIR"):
        value = os.environ.get(var)
        if value and not Path(value).expanduser().is_absolute():
            os.environ[var] = str(Path(value).expanduser().resolve())


def _publish(staging: Path, profile: str) -> None:
    """Move the figures a successful notebook wrote into the run folder and ``figures/``."""
    from .plots.style import final_dirs

    for name, target in final_dirs(profile).items():
        target.mkdir(parents=True, exist_ok=True)
        for path in sorted((staging / name).glob("*")) if (staging / name).is_dir() else []:
            shutil.move(path, target / path.name)  # staging and figures/ may be on different filesystems


def write_results_report(profile: str, output_dir: Path) -> None:
    """Write RESULTS.md (the paper's claims beside ours) into each of the profile's figure folders, built from
    that folder's JSON: staged like the figures, and moved into place only once every copy was built."""
    from .plots.style import final_dirs

    with tempfile.TemporaryDirectory(prefix=".results-", dir=output_dir) as staging:
        for name, target in final_dirs(profile).items():
            write_results(target, Path(staging) / name)
        _publish(Path(staging), profile)


def run_notebook(notebook: Path, profile: str, output_dir: Path, force: bool = False) -> dict:
    """Execute one notebook with ``profile`` unless its last run is up to date; returns its record.

    ``profile`` is a profile name or a YAML path (the notebook's ``profile`` parameter); ``output_dir`` holds the
    executed copy and its stamp. A run that fails leaves no stamp, keeps its executed copy only as
    ``<name>.failed.ipynb`` (to read the error) and changes no figure, so the next run executes it again.
    """
    try:
        import papermill
    except ImportError as err:
        raise SystemExit("make paper runs the notebooks with papermill, which comes with the 'lab' extra: "
                         "pip install -e '.[lab]' (make setup installs it).") from err

    from .plots.style import STAGING_ENV

    absolute_environment()
    output = output_dir / notebook.name
    failed = output_dir / f"{notebook.stem}.failed.ipynb"
    stamp_path = output_dir / f"{notebook.stem}.stamp.json"
    digest = _inputs_digest(notebook, profile)
    if not force and output.exists() and stamp_path.exists() and read_json(stamp_path).get("digest") == digest:
        return {"notebook": notebook.name, "skipped": True, "seconds": 0.0}
    for stale in (stamp_path, output, failed):
        stale.unlink(missing_ok=True)
    profile_name = load_config(profile).profile
    started = time.time()
    previous = os.environ.get(STAGING_ENV)
    before = finished_steps(run_dir(profile_name))
    memory = PeakMemory()
    with tempfile.TemporaryDirectory(prefix=f".{notebook.stem}-figures-", dir=output_dir) as staging, memory:
        os.environ[STAGING_ENV] = staging
        try:
            papermill.execute_notebook(
                str(notebook),
                str(failed),
                parameters={"profile": str(profile)},
                kernel_name=_kernel_name(),
                cwd=str(notebook.parent),
                progress_bar=False,
                log_output=True,
            )
        finally:
            if previous is None:
                os.environ.pop(STAGING_ENV, None)
            else:
                os.environ[STAGING_ENV] = previous
        _publish(Path(staging), profile_name)
    os.replace(failed, output)
    seconds = round(time.time() - started, 1)
    write_json_atomic(stamp_path, {"digest": digest, "seconds": seconds})
    usage = memory.result()
    steps = step_rows(run_dir(profile_name), finished_steps(run_dir(profile_name)) - before, notebook.stem, usage)
    return {"notebook": notebook.name, "skipped": False, "seconds": seconds, **usage, "steps": steps}


def _building_wall(profile: str, name: str, seconds: float, built: bool) -> dict[str, float]:
    """``building_wall_seconds``: the wall time of the last execution that built steps (these ``seconds`` if this one
    ``built`` any, else the value kept under ``name`` in the benchmark file: a notebook's record, or ``make_paper``
    for the whole run), so a re-execution from the cache does not hide the cold time the costs are read beside."""
    if built:
        return {"building_wall_seconds": seconds}
    kept = read_benchmarks(profile).get(name, {}).get("building_wall_seconds")
    return {} if kept is None else {"building_wall_seconds": kept}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--only", nargs="*", help="notebook numbers or names to run (default: all)")
    parser.add_argument("--force", action="store_true", help="re-execute even when nothing changed")
    args = parser.parse_args(argv)
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    os.environ.setdefault("PAPER_PROGRESS", "text")  # the kernels' progress bars as text in this log (paper_lib/__init__)
    absolute_environment()
    try:
        cfg = load_config(args.profile)  # a bad profile fails here, before anything is created
        check_corpora(cfg)  # every corpus the run will read, before hours of training on the first ones
    except (ConfigError, DataError) as err:
        print(f"[paper] {err}", file=sys.stderr)
        return 2
    output_dir = run_dir(cfg.profile) / "notebooks"
    output_dir.mkdir(parents=True, exist_ok=True)
    selected = notebooks(args.only)
    if not selected:
        print(f"no notebooks match {args.only}", file=sys.stderr)
        return 2
    total = time.time()
    records = []
    for notebook in selected:
        print(f"[paper] {notebook.name} (profile {cfg.profile})", flush=True)
        record = run_notebook(notebook, args.profile, output_dir, args.force)
        status = "up to date" if record["skipped"] else f"{record['seconds']} s"
        print(f"[paper] {notebook.name}: {status}", flush=True)
        records.append(record)
        if not record["skipped"]:
            usage = {k: record[k] for k in ("peak_rss_mib", "peak_hwm_mib", "memory_polls")}
            steps = record.pop("steps")
            record["built_steps"] = len(steps)
            name = f"notebook_{notebook.stem}"
            record_benchmark(cfg.profile, name, {"wall_seconds": record["seconds"], "built_steps": len(steps), **usage,
                                                 **_building_wall(cfg.profile, name, record["seconds"], bool(steps))})
            record_steps(cfg.profile, steps)
    try:  # only after every notebook succeeded: a failed one raised above and leaves RESULTS.md as it was
        write_results_report(cfg.profile, output_dir)
    except ReportError as err:
        print(f"[paper] RESULTS.md: {err}", file=sys.stderr)
        return 1
    if not args.only:  # the browser reads every section's steps: written once the whole paper is up to date
        from .browser.render import site_dir, summary

        print(f"[paper] feature browser: {summary(site_dir(cfg))}", flush=True)
    elapsed = round(time.time() - total, 1)
    built = any(r.get("built_steps") for r in records)  # a re-check from the cache keeps the cold time
    record_benchmark(cfg.profile, "make_paper", {"wall_seconds": elapsed, "notebooks": records,
                                                 **_building_wall(cfg.profile, "make_paper", elapsed, built)})
    print(f"[paper] done in {elapsed} s; executed notebooks in {output_dir}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
