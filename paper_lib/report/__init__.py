"""The paper's claims beside ours: verdicts and sentences rendered from the saved figures/*.json, and RESULTS.md."""

from .claims import (
    CANNOT_TELL,
    DIFFERS,
    NOT_COMPARABLE,
    NOT_RUN,
    REPRODUCED,
    VERDICTS,
    Claim,
    ClaimSpec,
    Verdict,
    combine,
    count,
    direction_verdict,
    few_verdict,
    mostly_verdict,
    n_of,
    number,
    numeric_verdict,
    percent,
    persistence_verdict,
    r_value,
    range_verdict,
    threshold_verdict,
)
from .inputs import Figures, NotRun, ReportError, scale_differences
from .results import (
    CLAIM_SPECS,
    RESULTS_FILE,
    build_results,
    collect_claims,
    matching_findings,
    section_markdown,
    write_results,
)
