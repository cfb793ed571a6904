"""RESULTS.md: each claim of the paper beside ours, read from a figures folder, with verdict and reason."""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from pathlib import Path

from .claims import VERDICTS, Claim, ClaimSpec
from .feature_claims import FEATURE_SPECS
from .inputs import Figures, scale_differences
from .matching import matching_sentences
from .model_claims import MODEL_SPECS

CLAIM_SPECS: tuple[ClaimSpec, ...] = (*MODEL_SPECS, *FEATURE_SPECS)
RESULTS_FILE = "RESULTS.md"
# The files the claims read, by notebook: their profiles are what the header reports.
RESULT_FILES = ("01_training", "02_model_table", "03_slerp_sweep", "03_model_table", "04_sae_diagnostics",
                "05_feature_matching", "06_case_studies", "06_variable_assignment", "06_python_exception",
                "07_autointerp")
SECTION_TITLES = {
    "01": "BabyPython (notebook 01)",
    "02": "Fine-tunes (notebook 02)",
    "03": "SLERP sweep, Figure 5 (notebook 03)",
    "04": "Sparse autoencoders (notebook 04)",
    "05": "Feature matching, Figure 2 (notebook 05)",
    "06": "Case studies, Figures 3 and 4 (notebook 06)",
    "07": "Automated interpretability, Figure 6 (notebook 07)",
}


def _figures(source: Figures | Path | str) -> Figures:
    return source if isinstance(source, Figures) else Figures(source)


def collect_claims(source: Figures | Path | str, sections: tuple[str, ...] | None = None) -> list[Claim]:
    """Every claim (or those of the notebooks in ``sections``, e.g. ``("06",)``) built from a figures folder."""
    figures = _figures(source)
    return [claim for spec in CLAIM_SPECS if sections is None or spec.section in sections
            for claim in spec.evaluate(figures)]


def section_markdown(source: Figures | Path | str, section: str) -> str:
    """The claims of one notebook's section as Markdown paragraphs, for ``IPython.display.Markdown``."""
    claims = collect_claims(source, (section,))
    if not claims:
        raise ValueError(f"no claims belong to section {section!r}; sections are {', '.join(SECTION_TITLES)}")
    return "\n\n".join(claim.markdown() for claim in claims)


def matching_findings(data: dict, cfg) -> str:
    """Notebook 05's claims as Markdown, from the ``data`` it just saved as ``05_feature_matching``."""
    figures = Figures.from_payloads({"05_feature_matching": {"profile": cfg.profile, "data": data}})
    return matching_sentences(data) + "\n\n**Beside the paper's claims:**\n\n" + section_markdown(figures, "05")


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def profile_summary(figures: Figures) -> tuple[str, list[str]]:
    """The sentence naming the profile(s) behind the files present, and how the (single) profile differs from
    the paper's scale (empty when it is the paper's scale or when the files come from several profiles)."""
    profiles = figures.profiles(RESULT_FILES)
    if not profiles:
        return "No results files were found: nothing has been run.", []
    by_profile: dict[str, list[str]] = {}
    for name, profile in profiles.items():
        by_profile.setdefault(profile, []).append(name)
    if len(by_profile) > 1:
        parts = "; ".join(f"{p}: {', '.join(names)}" for p, names in by_profile.items())
        return f"**Profile:** the files come from different profiles ({parts}); rows mix runs.", []
    (profile, names), = by_profile.items()
    return f"**Profile:** `{profile}` (all {len(names)} results files present).", scale_differences(profile)


def build_results(figures_dir: Path | str) -> str:
    """RESULTS.md for a figures folder: the profile, a count of verdicts, and per notebook a table of the
    paper's claims with its number, ours (read from ``<name>.json``), the verdict and the reason. A missing file
    or table gives "not run" rows; a malformed file raises ``ReportError`` naming it."""
    figures = Figures(figures_dir)
    by_section = {section: collect_claims(figures, (section,)) for section in SECTION_TITLES}
    profile_line, gaps = profile_summary(figures)
    tally = Counter(claim.verdict for claims in by_section.values() for claim in claims)
    lines = [
        "# Results beside the paper's",
        "",
        ("Horn & Elliott (2024), *Tracking Universal Features Through Fine-Tuning and Model Merging*. Written by "
         "`make paper` from the JSON files in this folder: every number under *ours* is read from them; the "
         "paper's numbers and directions are from its text, figures and model cards. The verdict rules are the "
         "functions of `paper_lib/report/claims.py`."),
        "",
        ("**Intervals.** A number in *ours* is followed by its 95% confidence interval in brackets, `[low, high]`; "
         "*seeds lo–hi* is the range over draws of the SAE seeds. The last column names how each interval was "
         "made (`paper_lib/core/intervals.py`). A verdict is *reproduced* only when the paper's number or "
         "direction lies inside our interval, *differs* only when it lies outside, and otherwise *cannot tell at "
         "this size*."),
        "",
        profile_line,
    ]
    if gaps:
        lines += ["", "Not the paper's scale: " + "; ".join(gaps) + ". Numbers that depend on size are "
                  "*not comparable*; directions and positions are compared."]
    lines += ["", "**Verdicts:** " + ", ".join(f"{tally[v]} {v}" for v in VERDICTS if tally[v]) + "."]
    for section, claims in by_section.items():
        if not claims:
            continue
        lines += ["", f"## {SECTION_TITLES[section]}", "", "| claim | paper | ours | verdict | why | intervals |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {_cell(c.figure + ': ' + c.statement)} | {_cell(c.paper)} | {_cell(c.ours)} | "
                  f"**{c.verdict}** | {_cell(c.reason)} | {_cell(c.intervals or 'none')} |" for c in claims]
    return "\n".join(lines) + "\n"


def write_results(figures_dir: Path | str, out_dir: Path | str | None = None) -> Path:
    """Build RESULTS.md from ``figures_dir`` and write it atomically into ``out_dir`` (default: the same folder,
    or a staging folder that the pipeline moves into place). Returns its path."""
    text = build_results(figures_dir)
    out = Path(out_dir if out_dir is not None else figures_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / RESULTS_FILE
    fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{RESULTS_FILE}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
