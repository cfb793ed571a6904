"""Claims and verdicts: numbers formatted into sentences, the Claim record, the rules comparing ours with the paper."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from .inputs import Figures, NotRun

REPRODUCED = "reproduced"
DIFFERS = "differs"
NOT_COMPARABLE = "not comparable"
CANNOT_TELL = "cannot tell at this size"
NOT_RUN = "not run"
VERDICTS = (REPRODUCED, DIFFERS, NOT_COMPARABLE, CANNOT_TELL, NOT_RUN)

# "Very few" has no number in the paper. Its most lenient reading is "fewer than half", so a share at or above
# half differs from the claim under any reading, while a "reproduced" below it is lenient (the share is shown).
FEW_CUT = 0.5
# Persistence across a fine-tune is judged against the same statistic between two SAE seeds of the child model
# (the ceiling): the claim that fine-tuning removes features holds when less than half of what two seeds of one
# model share survives the fine-tune. Half is a convention stated here, not a measured interval.
CEILING_CUT = 0.5
# "Mostly" in "persisting features are mostly about punctuation, formatting, whitespace": a majority.
MOSTLY_CUT = 0.5


# ---------------------------------------------------------------- formatting


def is_number(value) -> bool:
    """True for a finite int or float (None, NaN, booleans and strings are not numbers here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def percent(share, digits: int = 1) -> str:
    """A share in [0, 1] as a percentage with ``digits`` decimals: ``0.31592 -> '31.6%'``; 'n/a' if undefined."""
    return f"{100 * share:.{digits}f}%" if is_number(share) else "n/a"


def r_value(r, digits: int = 2) -> str:
    """A correlation with ``digits`` decimals: ``0.7633 -> '0.76'``; 'n/a' if undefined."""
    return f"{r:.{digits}f}" if is_number(r) else "n/a"


def telling_digits(value, reference, digits: int = 2, most: int = 4) -> int:
    """The fewest decimals, from ``digits`` up to ``most``, at which ``value`` and ``reference`` print apart, so a
    value just under a threshold never reads as equal to it (0.7996 against 0.8 prints as 0.7996, not 0.80)."""
    if not (is_number(value) and is_number(reference)) or value == reference:
        return digits
    while digits < most and round(value, digits) == round(reference, digits):
        digits += 1
    return digits


def number(value, digits: int = 4) -> str:
    """A measured value (loss, accuracy, t) with ``digits`` decimals; 'n/a' if undefined."""
    return f"{value:.{digits}f}" if is_number(value) else "n/a"


def count(n) -> str:
    """A count with thousands separators: ``2048 -> '2,048'``; 'n/a' if undefined."""
    return f"{int(n):,}" if is_number(n) else "n/a"


def n_of(n: int, total: int) -> str:
    """``'3 of 4'``."""
    return f"{count(n)} of {count(total)}"


def listing(items: Sequence[str]) -> str:
    """``['a', 'b', 'c'] -> 'a, b and c'``."""
    items = [str(i) for i in items]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


# ---------------------------------------------------------------- the claim record


@dataclass(frozen=True)
class Claim:
    """One of the paper's claims beside ours: ``paper`` is its number or direction, ``ours`` is rendered from
    saved JSON, ``verdict`` one of ``VERDICTS`` and ``reason`` the measured reason for it."""

    id: str
    figure: str
    statement: str
    paper: str
    ours: str
    verdict: str
    reason: str

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"claim {self.id}: verdict {self.verdict!r} is not one of {', '.join(VERDICTS)}")

    def markdown(self) -> str:
        """The claim as a Markdown paragraph (for notebooks)."""
        return (
            f"**{self.figure} · {self.statement}** Paper: {self.paper}. Ours: {self.ours}. "
            f"**Verdict: {self.verdict}.** {self.reason}"
        )


class Verdict(NamedTuple):
    """A rule's outcome: one of ``VERDICTS`` and the sentence that says why, with the numbers it compared."""

    verdict: str
    why: str


def sentence(text: str) -> str:
    """``text`` with a capital first letter and a final full stop."""
    text = text.strip()
    if not text:
        return text
    return text[0].upper() + text[1:] + ("" if text.endswith((".", "!", "?")) else ".")


@dataclass(frozen=True)
class ClaimSpec:
    """A claim of the paper and how ours is built for it: ``build(figures, spec)`` returns its Claim(s), and
    raises ``NotRun`` when an input is absent, which ``evaluate`` turns into one "not run" row."""

    id: str
    section: str  # the notebook whose saved results it reads: "01" ... "07"
    figure: str
    statement: str
    paper: str
    build: Callable[[Figures, ClaimSpec], Claim | list[Claim]]

    def claim(self, ours: str, verdict: Verdict, context: str = "", **override) -> Claim:
        """This spec's Claim with ``ours`` and ``verdict`` (its sentence, then ``context``); ``override`` replaces
        fields such as ``id`` or ``statement`` for claims that expand into one row per method."""
        reason = " ".join(sentence(part) for part in (verdict.why, context) if part)
        fields = {"id": self.id, "figure": self.figure, "statement": self.statement, "paper": self.paper}
        return Claim(**{**fields, **override}, ours=ours, verdict=verdict.verdict, reason=reason)

    def evaluate(self, figures: Figures) -> list[Claim]:
        """The claim(s) from ``figures``; one "not run" row when an input is absent."""
        try:
            built = self.build(figures, self)
        except NotRun as missing:
            return [self.claim("—", not_run(str(missing)))]
        return [built] if isinstance(built, Claim) else list(built)


def not_run(what: str) -> Verdict:
    """The inputs of a claim were not produced (a notebook not run, a table not written)."""
    return Verdict(NOT_RUN, what)


def statistic_differs(why: str) -> Verdict:
    """Ours measures something other than the paper's number: not comparable, saying why."""
    return Verdict(NOT_COMPARABLE, why)


# ---------------------------------------------------------------- verdict rules


def direction_verdict(ours: bool | None, paper: bool | None = True, what: str = "the direction") -> Verdict:
    """A direction claim, ``what`` phrased so that True means it holds: reproduced when ours holds as the
    paper's does, differs when not; not comparable when the paper states no direction; cannot tell when ours
    is undefined."""
    said = {True: "yes", False: "no", None: "undefined"}
    if paper is None:
        return Verdict(NOT_COMPARABLE, f"{what} ({said[ours]} here; the paper states no direction)")
    if ours is None:
        return Verdict(CANNOT_TELL, f"{what} (undefined here, {said[bool(paper)]} in the paper)")
    verdict = REPRODUCED if bool(ours) == bool(paper) else DIFFERS
    return Verdict(verdict, f"{what} ({said[bool(ours)]} here, {said[bool(paper)]} in the paper)")


def scale_note(scale_gaps: Sequence[str], shown: int = 2) -> str:
    """'not at the paper's scale (a; b and 3 more settings)': the first ``shown`` differences and a count."""
    gaps = list(scale_gaps)
    more = f" and {len(gaps) - shown} more settings" if len(gaps) > shown else ""
    return f"the run is not at the paper's scale ({'; '.join(gaps[:shown])}{more})"


def numeric_verdict(ours, paper: float, tolerance: float, digits: int = 4, scale_gaps: Sequence[str] = ()) -> Verdict:
    """A numeric claim: not comparable when the run is not at the paper's scale (``scale_gaps`` names what
    differs: a number that depends on model size, tokenizer and data cannot be compared across them);
    otherwise reproduced when |ours - paper| <= ``tolerance``, differs when further."""
    if scale_gaps:
        return Verdict(NOT_COMPARABLE, scale_note(scale_gaps))
    if not is_number(ours):
        return Verdict(CANNOT_TELL, "our value is undefined")
    gap = abs(ours - paper)
    if gap <= tolerance:
        return Verdict(REPRODUCED,
                       f"{number(ours, digits)} is within {number(tolerance, digits)} of {number(paper, digits)}")
    return Verdict(DIFFERS,
                   f"{number(ours, digits)} is more than {number(tolerance, digits)} from {number(paper, digits)}")


def few_verdict(share, cut: float = FEW_CUT) -> Verdict:
    """'Very few persist', read as leniently as possible: reproduced when the share is below ``cut``."""
    if not is_number(share):
        return Verdict(CANNOT_TELL, "the share is undefined")
    if share < cut:
        return Verdict(REPRODUCED, f"{percent(share)} is below {percent(cut, 0)}")
    return Verdict(DIFFERS, f"{percent(share)} persist, not fewer than {percent(cut, 0)}")


def persistence_verdict(share, ceiling, floor, fraction=None, cut: float = CEILING_CUT) -> Verdict:
    """Persistence across a fine-tune against its controls. ``ceiling``: the same statistic between two SAE
    seeds of the child model; ``floor``: against an unrelated model. Cannot tell when the ceiling does not stand
    above the floor (the statistic cannot tell one model from an unrelated one); reproduced ("few persist")
    when ``share`` is below ``cut`` of the ceiling; differs when at or above it (features survive the fine-tune
    about as often as they survive a change of SAE seed). ``fraction`` is share / ceiling if already computed."""
    if not (is_number(share) and is_number(ceiling)):
        return Verdict(CANNOT_TELL, "the share or its ceiling is undefined")
    if is_number(floor) and ceiling <= floor:
        return Verdict(CANNOT_TELL,
                       f"the ceiling ({percent(ceiling)}) does not stand above the floor ({percent(floor)})")
    if not is_number(fraction):
        fraction = share / ceiling if ceiling > 0 else None
    if not is_number(fraction):
        return Verdict(CANNOT_TELL, "the ceiling is zero")
    said = f"{percent(share)} persist, {percent(fraction)} of the ceiling ({percent(ceiling)})"
    if is_number(floor) and share <= floor:
        return Verdict(REPRODUCED, f"{percent(share)} persist, no more than the floor ({percent(floor)})")
    if fraction < cut:
        return Verdict(REPRODUCED, f"{said}: fewer than {percent(cut, 0)} of what two seeds of the child share")
    return Verdict(DIFFERS, f"{said}: features survive the fine-tune at least {percent(cut, 0)} as often as a "
                            "change of SAE seed")


def threshold_verdict(r, threshold: float, paper_persists: bool) -> Verdict:
    """A feature-matching claim: the feature persists when its best match reaches ``threshold``; reproduced
    when that agrees with the paper (``paper_persists``)."""
    if not is_number(r):
        return Verdict(CANNOT_TELL, "no best match was found (the feature is silent on the matching sample)")
    persists = r >= threshold
    digits = telling_digits(r, threshold)
    said = (f"best-match r = {r_value(r, digits)} is {'at or above' if persists else 'below'} the threshold "
            f"{r_value(threshold)}")
    return Verdict(REPRODUCED if persists == paper_persists else DIFFERS, said)


def mostly_verdict(share, baseline=None, cut: float = MOSTLY_CUT, group: str = "the comparison group") -> Verdict:
    """'Mostly X': reproduced when ``share`` is a majority (above ``cut``) and above ``baseline``, the same share
    in a comparison ``group``, where that is defined; differs otherwise."""
    if not is_number(share):
        return Verdict(CANNOT_TELL, "the share is undefined (no features in the group)")
    majority = share > cut
    said = f"{percent(share)}, {'a' if majority else 'not a'} majority"
    if not is_number(baseline):
        return Verdict(REPRODUCED if majority else DIFFERS, f"{said} (nothing to compare in {group})")
    above = share > baseline
    said += f", {'above' if above else 'not above'} the {percent(baseline)} among {group}"
    return Verdict(REPRODUCED if majority and above else DIFFERS, said)


def range_verdict(value, low: float, high: float, digits: int = 1) -> Verdict:
    """A value the paper places in a range [low, high): reproduced inside it, differs outside."""
    if not is_number(value):
        return Verdict(CANNOT_TELL, "the value is undefined")
    inside = low <= value < high
    where = "inside" if inside else "outside"
    return Verdict(REPRODUCED if inside else DIFFERS, f"{number(value, digits)} is {where} [{low:g}, {high:g})")


def combine(verdicts: Iterable[Verdict], labels: Sequence[str] | None = None, unit: str = "pairs") -> Verdict:
    """One verdict for a claim stated for every pair (or model): the common verdict when all agree; differs
    when any differs (the claim is general); else cannot tell, else not comparable. ``labels`` name the parts
    in the reason."""
    verdicts = list(verdicts)
    labels = list(labels) if labels is not None else [str(i + 1) for i in range(len(verdicts))]
    kinds = [v.verdict for v in verdicts]
    if not verdicts:
        return Verdict(NOT_RUN, f"no {unit} in the results")
    whys = {v.why for v in verdicts}
    parts = whys.pop() if len(whys) == 1 else "; ".join(f"{label}: {v.why}" for label, v in zip(labels, verdicts))
    if len(set(kinds)) == 1:
        return Verdict(kinds[0], parts)
    for kind in (DIFFERS, CANNOT_TELL, NOT_COMPARABLE, NOT_RUN):
        if kind in kinds:
            n = sum(k == REPRODUCED for k in kinds)
            return Verdict(kind, f"holds for {n_of(n, len(kinds))} {unit} ({parts})")
    return Verdict(REPRODUCED, parts)  # unreachable: every kind is listed above
