"""Run the numbered notebooks in order with papermill: the engine behind ``make paper``.

Each executed copy is kept in ``runs/<profile>/notebooks/``. A notebook is re-executed only when its source,
the package's code, the profiles or the corpora (their contents, not their folder's name) changed since its
last successful run; every step inside it is cached too, keyed on its own code, so a re-execution rebuilds
only what a change touched. Wall times go to the benchmark file.

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
import time
from pathlib import Path

from .core.artifacts import (
    PROJECT_ROOT,
    file_fingerprint,
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
    import papermill

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
    with tempfile.TemporaryDirectory(prefix=f".{notebook.stem}-figures-", dir=output_dir) as staging:
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
    return {"notebook": notebook.name, "skipped": False, "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--only", nargs="*", help="notebook numbers or names to run (default: all)")
    parser.add_argument("--force", action="store_true", help="re-execute even when nothing changed")
    args = parser.parse_args(argv)
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
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
            record_benchmark(cfg.profile, f"notebook_{notebook.stem}", {"wall_seconds": record["seconds"]})
    try:  # only after every notebook succeeded: a failed one raised above and leaves RESULTS.md as it was
        write_results_report(cfg.profile, output_dir)
    except ReportError as err:
        print(f"[paper] RESULTS.md: {err}", file=sys.stderr)
        return 1
    elapsed = round(time.time() - total, 1)
    record_benchmark(cfg.profile, "make_paper", {"wall_seconds": elapsed, "notebooks": records})
    print(f"[paper] done in {elapsed} s; executed notebooks in {output_dir}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
