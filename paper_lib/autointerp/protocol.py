"""The autointerp protocol on plain arrays: choose examples, explain, simulate on held-out text, score.

The paper's protocol (Figure 6), following Bills et al. (2023):

1. Activations of a feature are min-max normalised to integers 0-9 over the text searched for examples.
2. About 40 (token, activation) examples are chosen (``select_examples``): up to 10 top activations, two from
   each other non-zero bin, 5 random positions, and the top tokens again in other contexts (so the explainer
   sees whether the token alone decides the activation).
3. An *explainer* completes "This feature looks mainly for ...".
4. A *simulator* predicts a 0-9 activation for every token of held-out text from the explanation alone.
5. The score is the Pearson correlation of simulated and true activations over all held-out tokens
   (``explanation_score``; see there for the constant cases).

The core works on plain arrays: token strings per block (``tokens_BT``) and one feature's activations per block
(``acts_BT``), so it is testable without any model or SAE. ``autointerp.run`` wires it to the SAEs; the explainers and
simulators are in ``autointerp.backends``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np


N_LEVELS = 10  # activations are shown to the explainer and simulator as integers 0..9
EXPLANATION_PREFIX = "This feature looks mainly for"
CONTEXT_WINDOW = 8  # preceding tokens shown with each example
HOLDOUT_FRACTION = 0.2  # share of the searched blocks held out for simulation (never shown to the explainer)


class AutointerpError(RuntimeError):
    """A backend that cannot be reached, refuses a request or returns a reply that cannot be parsed."""


class BackendUnavailable(AutointerpError):
    """The backend cannot answer at all (server down, bad key, unknown model): the run stops and nothing is
    cached, so a rerun asks again. A reply that cannot be parsed is an ``AutointerpError`` of one feature only."""


@dataclass(frozen=True)
class Example:
    """One (token, activation) pair shown to the explainer, with the tokens before it."""

    token: str
    activation: int  # normalised, 0..9
    context: tuple[str, ...]  # up to CONTEXT_WINDOW preceding tokens of the same block, oldest first
    kind: str  # "top", "bin", "random" or "top_token_context"
    block: int
    position: int


def normalise_activations(acts: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """Min-max normalise activations to integers 0..9 (rounded); ``lo``/``hi`` default to the array's range.

    A constant array (a feature that never varies) maps to all zeros.
    """
    acts = np.asarray(acts, dtype=np.float64)
    lo = float(acts.min()) if lo is None else lo
    hi = float(acts.max()) if hi is None else hi
    if not hi > lo:
        return np.zeros(acts.shape, dtype=np.int64)
    levels = np.rint((acts - lo) / (hi - lo) * (N_LEVELS - 1))
    return np.clip(levels, 0, N_LEVELS - 1).astype(np.int64)


def _check_block_arrays(tokens_BT: Sequence[Sequence[str]], acts_BT: np.ndarray) -> np.ndarray:
    acts_BT = np.asarray(acts_BT, dtype=np.float64)
    if acts_BT.ndim != 2:
        raise ValueError(f"acts_BT must be [n_blocks, n_tokens], got shape {acts_BT.shape}")
    if len(tokens_BT) != acts_BT.shape[0] or any(len(t) != acts_BT.shape[1] for t in tokens_BT):
        raise ValueError(
            f"tokens_BT ({len(tokens_BT)} blocks) must match acts_BT {acts_BT.shape} block for block, token for token"
        )
    return acts_BT


def select_examples(
    tokens_BT: Sequence[Sequence[str]],
    acts_BT: np.ndarray,
    rng: np.random.Generator,
    n_examples: int = 40,
    n_top: int = 10,
    n_per_bin: int = 2,
    n_random: int = 5,
) -> list[Example]:
    """Choose about ``n_examples`` examples of one feature as in the paper (see the module docstring).

    Returns examples in the order chosen (top first). A feature that never fires gives an empty list.
    """
    acts_BT = _check_block_arrays(tokens_BT, acts_BT)
    n_blocks, n_tokens = acts_BT.shape
    flat = acts_BT.ravel()
    if not flat.max() > 0:
        return []
    levels = normalise_activations(flat, lo=min(0.0, float(flat.min())))
    chosen: list[int] = []
    used: set[int] = set()
    kinds: list[str] = []

    def take(indices: Sequence[int], kind: str) -> None:
        for index in indices:
            if len(chosen) >= n_examples:
                return
            if int(index) not in used:
                used.add(int(index))
                chosen.append(int(index))
                kinds.append(kind)

    # stable sort: ties keep text order, so selection is deterministic
    order = np.argsort(-flat, kind="stable")
    take([i for i in order[:n_top] if flat[i] > 0], "top")
    for level in range(N_LEVELS - 1, 0, -1):
        candidates = np.setdiff1d(np.flatnonzero(levels == level), list(used))
        take(rng.permutation(candidates)[:n_per_bin].tolist(), "bin")
    free = np.setdiff1d(np.arange(flat.size), list(used))
    take(rng.permutation(free)[:n_random].tolist(), "random")

    # the top tokens again, elsewhere: shows whether the token or its context drives the feature
    top_tokens = list(dict.fromkeys(tokens_BT[i // n_tokens][i % n_tokens] for i in chosen[:n_top]))
    flat_tokens = np.array([tok for block in tokens_BT for tok in block], dtype=object)
    occurrences = {
        tok: [int(i) for i in rng.permutation(np.flatnonzero(flat_tokens == tok)) if int(i) not in used]
        for tok in top_tokens
    }
    while len(chosen) < n_examples and any(occurrences.values()):  # each pass removes at least one index
        for tok in top_tokens:
            if occurrences[tok]:
                take([occurrences[tok].pop(0)], "top_token_context")

    examples = []
    for index, kind in zip(chosen, kinds):
        block, position = divmod(index, n_tokens)
        context = tuple(tokens_BT[block][max(0, position - CONTEXT_WINDOW) : position])
        examples.append(Example(tokens_BT[block][position], int(levels[index]), context, kind, block, position))
    return examples


def holdout_blocks(acts_BT: np.ndarray, n_blocks: int, rng: np.random.Generator) -> list[int]:
    """Held-out blocks to simulate: half with the feature's highest activations, half at random.

    Random text alone would be almost all zeros for a sparse feature (and so unscorable); top text alone
    would never test that the explanation predicts *where* the feature is silent.
    """
    acts_BT = np.asarray(acts_BT)
    n_top = min(n_blocks // 2 + n_blocks % 2, len(acts_BT))
    top = [int(b) for b in np.argsort(-acts_BT.max(axis=1), kind="stable")[:n_top]]
    rest = np.setdiff1d(np.arange(len(acts_BT)), top)
    return top + [int(b) for b in rng.permutation(rest)[: n_blocks - n_top]]


def explanation_score(simulated: Sequence[float], true: Sequence[float]) -> float:
    """Pearson correlation of simulated and true activations over all held-out tokens.

    Constant cases (where Pearson's r is undefined): if the *true* activations are constant the feature says
    nothing on this text and the score is NaN (left out of means, counted in tables); if only the
    *simulated* ones are constant, the explanation predicts nothing and scores 0.0, as an uninformative
    explanation should.
    """
    simulated = np.asarray(simulated, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    if simulated.shape != true.shape:
        raise ValueError(f"simulated {simulated.shape} and true {true.shape} activations differ in shape")
    if true.size < 2 or np.ptp(true) == 0:
        return float("nan")
    if np.ptp(simulated) == 0:
        return 0.0
    # np.corrcoef, not core.runtime.pearson: the same r up to the last bits, and every published score was
    # computed this way (a changed rounding would move Figure 6's numbers for no reason).
    return float(np.corrcoef(simulated, true)[0, 1])


class Backend(Protocol):
    """What every explainer/simulator offers."""

    name: str
    model: str

    def explain(self, examples: Sequence[Example]) -> str:
        """An explanation that starts with EXPLANATION_PREFIX."""
        ...

    def simulate(self, explanation: str, tokens: Sequence[str]) -> list[int]:
        """A 0..9 activation for each token, predicted from the explanation alone."""
        ...


@dataclass
class FeatureInterpretation:
    """The outcome of the protocol for one feature."""

    feature: int
    explanation: str
    score: float  # NaN when unscorable (see explanation_score) or when the backend failed
    n_examples: int
    n_holdout_tokens: int
    backend: str
    model: str
    error: str = ""  # why there is no score, if the backend failed

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for tables."""
        return asdict(self)


def interpret_feature(
    feature: int,
    tokens_BT: Sequence[Sequence[str]],
    acts_BT: np.ndarray,
    holdout_tokens_BT: Sequence[Sequence[str]],
    holdout_acts_BT: np.ndarray,
    backend: Backend,
    n_examples: int = 40,
    n_holdout_blocks: int = 20,
    seed: int = 0,
) -> FeatureInterpretation:
    """Explain one feature from ``tokens_BT``/``acts_BT``, simulate it on held-out blocks and score it.

    A reply that cannot be parsed is recorded in ``error`` with a NaN score, so one bad reply does not lose a
    whole run; a backend that cannot answer at all raises ``BackendUnavailable``; a feature that never fires
    gets NaN and no explanation.
    """
    acts_BT = _check_block_arrays(tokens_BT, acts_BT)
    holdout_acts_BT = _check_block_arrays(holdout_tokens_BT, holdout_acts_BT)
    rng = np.random.default_rng([seed, feature])
    examples = select_examples(tokens_BT, acts_BT, rng, n_examples=n_examples)
    result = FeatureInterpretation(feature, "", float("nan"), len(examples), 0, backend.name, backend.model)
    if not examples:
        result.error = "the feature never fires on the searched text"
        return result
    chosen = holdout_blocks(holdout_acts_BT, n_holdout_blocks, rng)
    try:
        result.explanation = backend.explain(examples)
        simulated = [v for b in chosen for v in backend.simulate(result.explanation, list(holdout_tokens_BT[b]))]
    except BackendUnavailable:
        raise
    except AutointerpError as err:
        result.error = str(err)
        return result
    true = holdout_acts_BT[chosen].ravel()
    if len(simulated) != true.size:
        result.error = f"the simulator returned {len(simulated)} activations for {true.size} tokens"
        return result
    result.n_holdout_tokens = int(true.size)
    result.score = explanation_score(simulated, true)
    return result


def interpret_features(
    features: Sequence[int],
    tokens_BT: Sequence[Sequence[str]],
    acts_FBT: np.ndarray,
    backend: Backend,
    n_examples: int = 40,
    n_holdout_blocks: int = 20,
    seed: int = 0,
    holdout_fraction: float = HOLDOUT_FRACTION,
) -> list[FeatureInterpretation]:
    """Run the protocol for several features on shared text.

    The last ``holdout_fraction`` of the blocks is held out for simulation, the rest searched for examples,
    so no held-out token is ever shown to the explainer.
    """
    from tqdm.auto import tqdm

    acts_FBT = np.asarray(acts_FBT)
    if acts_FBT.ndim != 3 or acts_FBT.shape[0] != len(features):
        raise ValueError(f"acts_FBT must be [n_features={len(features)}, n_blocks, n_tokens], got {acts_FBT.shape}")
    n_search = int(round(len(tokens_BT) * (1 - holdout_fraction)))
    if not 0 < n_search < len(tokens_BT):
        raise ValueError(f"{len(tokens_BT)} blocks cannot be split into search and held-out parts")
    return [
        interpret_feature(
            int(feature),
            tokens_BT[:n_search],
            acts_FBT[i, :n_search],
            tokens_BT[n_search:],
            acts_FBT[i, n_search:],
            backend,
            n_examples=n_examples,
            n_holdout_blocks=n_holdout_blocks,
            seed=seed,
        )
        for i, feature in enumerate(tqdm(features, desc=f"autointerp ({backend.name})", leave=False))
    ]


def summarise_scores(scores: Sequence[float]) -> dict[str, float]:
    """Mean, median and counts of scores (NaN scores counted, not averaged)."""
    scores = np.asarray(scores, dtype=np.float64)
    valid = scores[np.isfinite(scores)]
    return {
        "n": int(scores.size),
        "n_scored": int(valid.size),
        "mean": float(valid.mean()) if valid.size else float("nan"),
        "median": float(np.median(valid)) if valid.size else float("nan"),
    }
