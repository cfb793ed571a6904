"""Running the notebooks on Colab: every notebook's first cell, its Open-in-Colab link and the README's section.

The repository URL is kept in one place, ``Repository`` in pyproject.toml's ``[project.urls]``. The cell cannot
read it at run time (on a fresh Colab machine nothing of the project is there yet, and the cell is what installs
``paper_lib``), so its text is generated with the URL written in, as are the links; a fork edits that one line
and runs ``python -m paper_lib.notebook_tools colab``, and the tests fail until it has.
"""

from __future__ import annotations

import re
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
REFRESH_COMMAND = "python -m paper_lib.notebook_tools colab"
TAG = "colab-setup"
CELL_ID = "colab-setup"  # a fixed id keeps regenerated notebooks diff-free
README_START, README_END = "<!-- colab:start -->", "<!-- colab:end -->"
README_AFTER = "## Two commands"  # the section goes right after this one when the markers are not there yet
# Colab's fixed places: the clone lives on the machine (lost with it), the runs on Drive (kept across sessions).
PROJECT_DIR = "/content/feature-tracking"
DRIVE_DIR = "/content/drive/MyDrive"
RUNS_ON_DRIVE = "feature-tracking/runs"
FIGURES_ON_DRIVE = "feature-tracking/figures"
BADGE = "https://colab.research.google.com/assets/colab-badge.svg"

# The cell is plain Python a researcher reads before running it, so it is written out here as it will appear.
_CELL = '''\
# Colab setup: installs this project and keeps its runs on Google Drive. Outside Colab it does nothing.
import sys

REPOSITORY = "{repository}"  # from pyproject.toml
PROJECT_DIR = "{project_dir}"
DRIVE_DIR = "{drive_dir}"

if "google.colab" in sys.modules:
    import importlib, importlib.metadata, os, subprocess
    import torch  # Colab's CUDA build

    if not os.path.isdir(PROJECT_DIR):
        subprocess.run(["git", "clone", "--depth", "1", REPOSITORY, PROJECT_DIR], check=True)
        print(f"cloned {{REPOSITORY}} into {{PROJECT_DIR}}")
    # Colab's torch is pinned, so no dependency can swap it for another build: pip fails instead, and says why.
    constraints = os.path.join(os.path.dirname(PROJECT_DIR), "pip-constraints.txt")
    with open(constraints, "w") as f:
        f.write(f"torch=={{torch.__version__}}\\n")
    versions = lambda: {{d.metadata["Name"]: d.version for d in importlib.metadata.distributions()}}
    before = versions()
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "-c", constraints, "-e", PROJECT_DIR],
                         capture_output=True, text=True)
    if pip.returncode:
        print(pip.stdout[-2000:], pip.stderr[-4000:], sep="\\n")
        raise RuntimeError("pip could not install the project: its output is above")
    changed = {{name for name, version in versions().items() if before.get(name, version) != version}}
    stale = sorted(module for module, names in importlib.metadata.packages_distributions().items()
                   if module in sys.modules and changed & set(names))
    if stale:  # a module loaded before the upgrade keeps its old code until the session restarts
        print(f"pip upgraded {{', '.join(stale)}}, already loaded here: restart the session (Runtime > "
              "Restart session) and run this cell again")
    if PROJECT_DIR not in sys.path:  # an editable install is seen by new kernels only; this one needs the path
        sys.path.insert(0, PROJECT_DIR)
    importlib.invalidate_caches()
    os.chdir(os.path.join(PROJECT_DIR, "notebooks"))  # the notebooks' paths are relative to their folder
    print(f"installed paper_lib from {{PROJECT_DIR}} (Colab's torch kept); working in {{PROJECT_DIR}}/notebooks")
    if os.path.isdir(DRIVE_DIR):  # every expensive step is cached there, so a new session resumes where one stopped
        os.environ["PAPER_RUNS_DIR"] = os.path.join(DRIVE_DIR, "{runs_on_drive}")
        os.environ["PAPER_FIGURES_DIR"] = os.path.join(DRIVE_DIR, "{figures_on_drive}")
        print(f"runs and figures are kept on Drive in {{os.path.dirname(os.environ['PAPER_RUNS_DIR'])}}")
    else:
        print("runs are lost with this session: to keep them, mount Drive "
              "(from google.colab import drive; drive.mount('/content/drive')) and run this cell again")'''


class ColabError(RuntimeError):
    """The repository URL is missing from pyproject.toml or is not a GitHub repository Colab can open."""


def repository_url(pyproject: Path = PYPROJECT) -> str:
    """The project's repository, ``Repository`` in pyproject.toml's ``[project.urls]``: the one place it is kept."""
    import tomllib  # Python 3.11+; only the generator and the tests read pyproject, never the notebooks

    urls = tomllib.loads(Path(pyproject).read_text(encoding="utf-8")).get("project", {}).get("urls", {})
    if "Repository" not in urls:
        raise ColabError(f"{pyproject} has no Repository in [project.urls]; add the project's GitHub URL there")
    return urls["Repository"].rstrip("/").removesuffix(".git")


def github_path(repository: str | None = None) -> str:
    """``owner/name`` of the GitHub repository, the part of the URL Colab's links are built from."""
    repository = repository or repository_url()
    match = re.fullmatch(r"https://github\.com/([\w.-]+/[\w.-]+)", repository)
    if not match:
        raise ColabError(f"Repository {repository!r} is not https://github.com/<owner>/<name>: Colab opens only "
                         "notebooks on GitHub by URL")
    return match.group(1)


def colab_url(notebook: str, repository: str | None = None) -> str:
    """The Open-in-Colab URL of ``notebooks/<notebook>`` on the repository's main branch."""
    return f"https://colab.research.google.com/github/{github_path(repository)}/blob/main/notebooks/{notebook}"


def setup_cell_source(repository: str | None = None, project_dir: str = PROJECT_DIR,
                      drive_dir: str = DRIVE_DIR) -> str:
    """The first cell of every notebook. The folders are arguments so a test can run the cell on folders of its
    own; the notebooks carry the defaults."""
    repository = repository or repository_url()
    github_path(repository)  # a URL Colab cannot open is an error here, not on someone's Colab machine
    return _CELL.format(repository=repository, project_dir=project_dir, drive_dir=drive_dir,
                        runs_on_drive=RUNS_ON_DRIVE, figures_on_drive=FIGURES_ON_DRIVE)


def readme_section(notebooks: list[str], repository: str | None = None) -> str:
    """The README's "Run on Colab" section, markers included: a link per notebook and what to do there."""
    links = "\n".join(f"| `{name}` | [![Open in Colab]({BADGE})]({colab_url(name, repository)}) |"
                      for name in notebooks)
    return f"""{README_START}
## Run on Colab

The `paper` profile (the paper's sizes and datasets) wants a GPU. Each link opens a notebook on Colab:

| notebook | |
|---|---|
{links}

1. **GPU**: Runtime > Change runtime type > a GPU.
2. **Mount Drive first** (the folder icon in the left bar, or
   `from google.colab import drive; drive.mount("/content/drive")`): runs are then kept in
   `MyDrive/{RUNS_ON_DRIVE}` (figures in `MyDrive/{FIGURES_ON_DRIVE}`), and a dropped session resumes where it
   stopped (every expensive step is cached there, and training resumes from its last checkpoint).
3. **Run the first cell** (tagged `{TAG}`; it does nothing outside Colab). It clones the repository into
   `{PROJECT_DIR}`, installs it with `pip install -e` (Colab's torch pinned, so it is kept), points
   `PAPER_RUNS_DIR` and `PAPER_FIGURES_DIR` at Drive when Drive is mounted, and works in the clone's
   `notebooks/` folder. Should pip upgrade a package the session had already loaded, the cell says which:
   restart the session (Runtime > Restart session) and run the cell again. A failed install prints pip's output.
4. **Set `profile = "paper"`** in the `parameters` cell. The default `smoke` and the `cpu` profile read the offline
   corpora (`PAPER_DATA_DIR`), which Colab does not have; `paper` reads the Hugging Face hub.
5. **`HF_TOKEN`**: the `paper` profile's Mistral-7B tokenizer (`mistralai/Mistral-7B-v0.1`) is gated. Accept its
   terms on the hub, then add your token as a Colab secret named `HF_TOKEN` (the key icon) with notebook access on.
6. **Run the notebooks in order**, 01 to 10: each reads what the ones before it cached on Drive. After a dropped
   session, open the notebook again, mount Drive and run it from the top: finished steps load from Drive.

The links and the first cell are generated from `Repository` in pyproject.toml's `[project.urls]`. A fork edits
that one line and runs `{REFRESH_COMMAND}`, which rewrites every notebook's first cell and
this section.
{README_END}"""


def readme_with_section(readme: str, section: str) -> str:
    """``readme`` with its Colab section replaced by ``section``, or inserted after the "Two commands" section."""
    if README_START in readme and README_END in readme:
        before, rest = readme.split(README_START, 1)
        return before + section + rest.split(README_END, 1)[1]
    start = readme.find(README_AFTER)
    if start < 0:
        raise ColabError(f"README has neither the Colab markers nor a {README_AFTER!r} section to put them after")
    following = readme.find("\n## ", start + len(README_AFTER))
    at = len(readme) if following < 0 else following + 1
    return readme[:at].rstrip("\n") + "\n\n" + section + "\n\n" + readme[at:]
