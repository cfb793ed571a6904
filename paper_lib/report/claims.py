"""Claims and verdicts: numbers formatted into sentences, the Claim record, the rules comparing ours with the paper."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from ..core import intervals as iv
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


def value_of(record):
    """The point value of an interval record, or ``record`` itself when it is a bare number (or None)."""
    return record["value"] if iv.is_interval(record) else record


def measured(row: dict, name: str):
    """A saved number as its interval record (``<name>_interval``) where the row has one, else the bare number
    (``None`` when absent): what ``with_interval`` and the verdict rules read."""
    return row.get(f"{name}_interval") or row.get(name)


def with_interval(record, fmt: Callable | None = None) -> str:
    """A value with its 95% interval, each end formatted by ``fmt`` (default ``number``): ``'28.5% [26.6%,
    30.4%]'``; a bare value where there is no interval; the range over seeds is written 'seeds lo–hi'."""
    fmt = fmt or number
    if not iv.is_interval(record):
        return fmt(record)
    if record.get("confidence") is None:  # a range over seeds, not a confidence interval
        return f"{fmt(record['value'])} (seeds {fmt(record['low'])}–{fmt(record['high'])})"
    return f"{fmt(record['value'])} [{fmt(record['low'])}, {fmt(record['high'])}]"


def envelope(*records) -> dict | None:
    """One interval that covers every given interval (e.g. a bootstrap interval over features and the range over
    SAE seeds): the verdicts read the widest honest uncertainty. ``None`` when none is an interval."""
    found = [r for r in records if iv.is_interval(r)]
    if not found:
        return None
    first = found[0]
    return {**first, "low": min(r["low"] for r in found), "high": max(r["high"] for r in found),
            "method": "; ".join(dict.fromkeys(r["method"] for r in found))}


_COUNTS = re.compile(r"\bover [\d,]+(?: \+ [\d,]+)* ")


def methods_of(*records) -> list[str]:
    """The distinct interval methods of the given records (nested lists and dicts searched), in order, with the
    numbers of units left out ('bootstrap over the live child features ...'): the counts are in the JSON, and
    the same method over different counts is one method."""
    found: list[str] = []

    def walk(x):
        if iv.is_interval(x):
            found.append(_COUNTS.sub("over the ", x["method"]))
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                walk(v)

    walk(records)
    return list(dict.fromkeys(found))


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
    intervals: str = ""  # how the intervals in ``ours`` were made (95% unless a range over seeds)

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"claim {self.id}: verdict {self.verdict!r} is not one of {', '.join(VERDICTS)}")

    def markdown(self) -> str:
        """The claim as a Markdown paragraph (for notebooks)."""
        text = (
            f"**{self.figure} · {self.statement}** Paper: {self.paper}. Ours: {self.ours}. "
            f"**Verdict: {self.verdict}.** {self.reason}"
        )
        return text + (f" *Intervals: {self.intervals}.*" if self.intervals else "")


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

    def claim(self, ours: str, verdict: Verdict, context: str = "", intervals: Sequence[str] | str = (),
              **override) -> Claim:
        """This spec's Claim with ``ours`` and ``verdict`` (its sentence, then ``context``); ``intervals`` names how
        the intervals in ``ours`` were made (``methods_of``); ``override`` replaces fields such as ``id`` or
        ``statement`` for claims that expand into one row per method."""
        reason = " ".join(sentence(part) for part in (verdict.why, context) if part)
        fields = {"id": self.id, "figure": self.figure, "statement": self.statement, "paper": self.paper}
        how = intervals if isinstance(intervals, str) else "; ".join(dict.fromkeys(intervals))
        return Claim(**{**fields, **override}, ours=ours, verdict=verdict.verdict, reason=reason, intervals=how)

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


def _bounds(record) -> tuple[float, float, float] | None:
    """(value, low, high) of an interval record; (v, v, v) for a bare number; None when undefined."""
    if iv.is_interval(record):
        return record["value"], record["low"], record["high"]
    return (record, record, record) if is_number(record) else None


def numeric_verdict(ours, paper: float, tolerance: float, digits: int = 4, scale_gaps: Sequence[str] = ()) -> Verdict:
    """A numeric claim: not comparable when the run is not at the paper's scale (``scale_gaps`` names what
    differs: a number that depends on model size, tokenizer and data cannot be compared across them);
    otherwise reproduced when the paper's number lies inside our interval widened by ``tolerance`` (the
    resolution of the measurement, e.g. a sweep's spacing), differs when outside it. A bare number is its own
    interval."""
    if scale_gaps:
        return Verdict(NOT_COMPARABLE, scale_note(scale_gaps))
    bounds = _bounds(ours)
    if bounds is None:
        return Verdict(CANNOT_TELL, "our value is undefined")
    value, low, high = bounds
    span = (f"{number(value, digits)}" if low == high else
            f"{number(value, digits)} (interval {number(low, digits)} to {number(high, digits)})")
    if low - tolerance <= paper <= high + tolerance:
        return Verdict(REPRODUCED,
                       f"the paper's {number(paper, digits)} lies within {number(tolerance, digits)} of ours, {span}")
    return Verdict(DIFFERS,
                   f"the paper's {number(paper, digits)} lies more than {number(tolerance, digits)} from ours, {span}")


def _side(record, cut: float) -> int | None:
    """+1 when the whole interval is at or above ``cut``, -1 when wholly below, 0 when it straddles; None if
    undefined."""
    bounds = _bounds(record)
    if bounds is None:
        return None
    _, low, high = bounds
    return 1 if low >= cut else -1 if high < cut else 0


def few_verdict(share, cut: float = FEW_CUT) -> Verdict:
    """'Very few persist', read as leniently as possible: reproduced when the share's interval lies below
    ``cut``, differs when it lies at or above it, cannot tell when it straddles it."""
    side = _side(share, cut)
    shown = with_interval(share, percent)
    if side is None:
        return Verdict(CANNOT_TELL, "the share is undefined")
    if side < 0:
        return Verdict(REPRODUCED, f"{shown} is below {percent(cut, 0)}")
    if side > 0:
        return Verdict(DIFFERS, f"{shown} persist, not fewer than {percent(cut, 0)}")
    return Verdict(CANNOT_TELL, f"{shown} straddles {percent(cut, 0)}")


def persistence_verdict(share, ceiling, floor, fraction=None, cut: float = CEILING_CUT) -> Verdict:
    """Persistence across a fine-tune against its controls. ``ceiling``: the same statistic between two SAE
    seeds of the child model; ``floor``: against an unrelated model. Cannot tell when the ceiling does not stand
    above the floor (the statistic cannot tell one model from an unrelated one); reproduced ("few persist")
    when ``share`` / ``ceiling`` lies below ``cut``; differs when at or above it (features survive the
    fine-tune about as often as they survive a change of SAE seed); cannot tell when the interval of the
    fraction straddles ``cut``. Each argument may be a number or an interval record; ``fraction`` is the
    fraction of the ceiling (with its interval) where already computed."""
    share_value, ceiling_value = value_of(share), value_of(ceiling)
    if not (is_number(share_value) and is_number(ceiling_value)):
        return Verdict(CANNOT_TELL, "the share or its ceiling is undefined")
    floor_value = value_of(floor)
    if is_number(floor_value) and ceiling_value <= floor_value:
        return Verdict(CANNOT_TELL,
                       f"the ceiling ({percent(ceiling_value)}) does not stand above the floor ({percent(floor_value)})")
    if value_of(fraction) is None:
        fraction = share_value / ceiling_value if ceiling_value > 0 else None
    if not is_number(value_of(fraction)):
        return Verdict(CANNOT_TELL, "the ceiling is zero")
    said = f"{percent(share_value)} persist, {with_interval(fraction, percent)} of the ceiling ({percent(ceiling_value)})"
    share_high = share["high"] if iv.is_interval(share) else share_value
    if is_number(floor_value) and share_high <= floor_value:
        return Verdict(REPRODUCED, f"{percent(share_value)} persist, no more than the floor ({percent(floor_value)})")
    side = _side(fraction, cut)
    if side < 0:
        return Verdict(REPRODUCED, f"{said}: fewer than {percent(cut, 0)} of what two seeds of the child share")
    if side > 0:
        return Verdict(DIFFERS, f"{said}: features survive the fine-tune at least {percent(cut, 0)} as often as a "
                                "change of SAE seed")
    return Verdict(CANNOT_TELL, f"{said}: the interval straddles {percent(cut, 0)} of the ceiling")


def threshold_verdict(r, threshold: float, paper_persists: bool) -> Verdict:
    """A feature-matching claim: the feature persists when its best match reaches ``threshold``; reproduced
    when that agrees with the paper (``paper_persists``). With an interval for r: persists when the whole
    interval reaches the threshold, does not when it lies wholly below, cannot tell when it straddles it."""
    value = value_of(r)
    if not is_number(value):
        return Verdict(CANNOT_TELL, "no best match was found (the feature is silent on the matching sample)")
    shown = with_interval(r, lambda x: r_value(x, telling_digits(x, threshold)))
    side = _side(r, threshold)
    if side == 0:
        return Verdict(CANNOT_TELL, f"best-match r = {shown} straddles the threshold {r_value(threshold)}")
    persists = side > 0
    said = (f"best-match r = {shown} is {'at or above' if persists else 'below'} the threshold "
            f"{r_value(threshold)}")
    return Verdict(REPRODUCED if persists == paper_persists else DIFFERS, said)


def mostly_verdict(share, baseline=None, cut: float = MOSTLY_CUT, group: str = "the comparison group",
                   difference=None) -> Verdict:
    """'Mostly X': reproduced when ``share`` is a majority (its interval above ``cut``) and above ``baseline``,
    the same share in a comparison ``group``, where that is defined (``difference``: the interval of share -
    baseline, when known); differs when either clearly fails; cannot tell when an interval straddles."""
    value = value_of(share)
    if not is_number(value):
        return Verdict(CANNOT_TELL, "the share is undefined (no features in the group)")
    low, high = (share["low"], share["high"]) if iv.is_interval(share) else (value, value)
    majority = 1 if low > cut else -1 if high <= cut else 0
    said = f"{with_interval(share, percent)}, {({1: 'a', -1: 'not a', 0: 'perhaps a'})[majority]} majority"
    base_value = value_of(baseline)
    if not is_number(base_value):
        above = 1
        said += f" (nothing to compare in {group})"
    else:
        if iv.is_interval(difference):
            above = 1 if difference["low"] > 0 else -1 if difference["high"] <= 0 else 0
            gap = f" (difference {with_interval(difference, percent)})"
        else:
            above = 1 if value > base_value else -1
            gap = ""
        said += f", {({1: 'above', -1: 'not above', 0: 'not clearly above'})[above]} the {percent(base_value)} among {group}{gap}"
    if majority < 0 or above < 0:
        return Verdict(DIFFERS, said)
    if majority == 0 or above == 0:
        return Verdict(CANNOT_TELL, said)
    return Verdict(REPRODUCED, said)


def range_verdict(value, low: float, high: float, digits: int = 1) -> Verdict:
    """A value the paper places in a range [low, high): reproduced when our interval lies inside it, differs when
    it lies outside, cannot tell when it crosses an end."""
    bounds = _bounds(value)
    if bounds is None:
        return Verdict(CANNOT_TELL, "the value is undefined")
    _, lo, hi = bounds
    shown = with_interval(value, lambda x: number(x, digits))
    if low <= lo and hi < high:
        return Verdict(REPRODUCED, f"{shown} is inside [{low:g}, {high:g})")
    if hi < low or lo >= high:
        return Verdict(DIFFERS, f"{shown} is outside [{low:g}, {high:g})")
    return Verdict(CANNOT_TELL, f"{shown} crosses an end of [{low:g}, {high:g})")


def sign_verdict(record, paper: bool | None, what: str) -> Verdict:
    """A direction read from an interval of a difference (``what`` phrased so that a positive difference means
    it holds): holds when the interval lies above 0, fails when below, cannot tell when it contains 0."""
    if not iv.is_interval(record):
        return direction_verdict(record > 0 if is_number(record) else None, paper, what)
    side = iv.sign(record)
    if side == 0:
        return Verdict(CANNOT_TELL, f"{what}: the interval of the difference contains 0 "
                                    f"({with_interval(record)})")
    return direction_verdict(side > 0, paper, what)


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


def grouped_markdown(groups: Iterable[tuple[str, Sequence[str]]]) -> str:
    """Findings as Markdown: a bold title per group, then its sentences as bullet points (empty groups left out)."""
    return "\n\n".join(f"**{title}.**\n\n" + "\n".join(f"- {line}" for line in lines) for title, lines in groups if lines)


def intervals_overlap(a, b) -> bool:
    """Whether two interval records (``low``/``high``) share any value (False if either is missing)."""
    return bool(a and b and a["low"] <= b["high"] and b["low"] <= a["high"])
