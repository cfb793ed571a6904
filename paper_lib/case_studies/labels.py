"""Rule-based token labels for the case studies' concepts (variable assignment, Python exception), from the text alone."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np

from ..data import SPECIAL_TOKENS  # document separators in the packed streams: they reset the labellers

CONCEPTS = ("variable_assignment", "python_exception")
CONCEPT_LABELS = {"variable_assignment": "variable assignment", "python_exception": "Python exception"}


# An assignment target: a name with attribute access and subscripts (``x``, ``self.x``, ``t[i].y``).
_TARGET = r"\*?[A-Za-z_]\w*(?:\.[A-Za-z_]\w*|\[[^\]\n]*\])*"


# A statement-level assignment: targets at the start of a line (optionally ``local`` in Lua, a tuple of
# targets, a Python annotation), then a single '=' that is not '=='. Comparisons ('==', '!=', '~=', '<=',
# '>='), augmented assignments ('+='), keyword arguments (not at the start of a line) and control
# statements (``if x == 1``, ``for i = 1, n``: a keyword followed by a space) do not match.
_ASSIGNMENT = re.compile(
    rf"^[ \t]*(?:local[ \t]+)?\(?{_TARGET}(?:[ \t]*,[ \t]*{_TARGET})*\)?[ \t]*(?::[^=\n]+)?(?P<op>=)(?!=)"
)


_STRINGS_AND_COMMENTS = re.compile(r"'(?:\\.|[^'\\\n])*'|\"(?:\\.|[^\"\\\n])*\"|#.*$|--.*$")


_EXCEPTION = re.compile(r"\b(?:try|except|raise|finally|[A-Za-z_]\w*(?:Error|Exception))\b")


def assignment_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the '=' of every statement-level variable assignment in Python or Lua code.

    A line counts only when it starts outside brackets: keyword arguments and Lua table fields spread over
    several lines inside ``(...)``/``{...}`` are not assignments. Bracket depth is tracked line by line with
    strings and comments removed (an approximation: multi-line strings are not parsed).
    """
    spans = []
    depth = 0
    offset = 0
    for line in text.splitlines(keepends=True):
        if depth == 0:
            match = _ASSIGNMENT.match(line)
            if match:
                spans.append((offset + match.start("op"), offset + match.end("op")))
        code = _STRINGS_AND_COMMENTS.sub("", line)
        depth += sum(code.count(c) for c in "([{") - sum(code.count(c) for c in ")]}")
        depth = max(depth, 0)  # an unbalanced closing bracket (e.g. from a parsing miss) must not stick
        offset += len(line)
    return spans


def exception_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of Python exception handling: ``try``, ``except``, ``raise``, ``finally`` and names
    ending in ``Error``/``Exception`` (whole words only, so ``retry`` or ``exceptional`` do not count)."""
    return [m.span() for m in _EXCEPTION.finditer(text)]


LABELLERS: dict[str, Callable[[str], list[tuple[int, int]]]] = {
    "variable_assignment": assignment_spans,
    "python_exception": exception_spans,
}


def label_tokens(
    tokens: Sequence[str],
    spans_fn: Callable[[str], list[tuple[int, int]]],
    special: Sequence[str] = SPECIAL_TOKENS,
) -> np.ndarray:
    """Binary label per token: True where the token's characters overlap a span found by ``spans_fn``.

    ``tokens`` are the token strings of a packed stream (each id decoded on its own); special tokens split it
    into documents, each labelled on its own text (they are never labelled themselves).
    """
    labels = np.zeros(len(tokens), dtype=bool)
    special = set(special)
    start = 0
    for end in [i for i, t in enumerate(tokens) if t in special] + [len(tokens)]:
        segment = tokens[start:end]
        if segment:
            bounds = np.cumsum([0] + [len(t) for t in segment])
            for lo, hi in spans_fn("".join(segment)):
                # tokens [a, b) overlap characters [lo, hi): a token overlaps when it starts before hi and ends after lo
                first = int(np.searchsorted(bounds, lo, side="right")) - 1
                last = int(np.searchsorted(bounds, hi, side="left"))
                labels[start + max(first, 0) : start + min(last, len(segment))] = True
        start = end + 1
    return labels


def concept_labels(tokens: Sequence[str], concepts: Sequence[str] = CONCEPTS) -> np.ndarray:
    """Labels of several concepts: ``[n_tokens, n_concepts]`` bool, concepts named as in ``LABELLERS``."""
    unknown = [c for c in concepts if c not in LABELLERS]
    if unknown:
        raise ValueError(f"unknown concept(s) {unknown}; known: {', '.join(LABELLERS)}")
    return np.stack([label_tokens(tokens, LABELLERS[c]) for c in concepts], axis=1)
