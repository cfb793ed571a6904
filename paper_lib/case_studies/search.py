"""Finding a concept's feature without a hand-picked id: every feature scored against rule-based labels (cached),
and intervals for those scores by a bootstrap over the searched blocks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from ..core import intervals
from ..core.artifacts import cached_step, manifest
from ..data import DATA_CODE, corpus_fingerprint, search_blocks, token_strings, tokenizer_hash
from ..saes.encode import ENCODE_CODE
from ..saes.store import ENCODE_CHUNK_BLOCKS
from ..saes import encode_chunks, sae_dir
from .labels import CONCEPT_LABELS, CONCEPTS, concept_labels
from .scoring import FeatureScorer, best_feature

SEARCH_DOMAIN = "python"  # both concepts are searched on Python validation code
SEARCH_UNIT = "search blocks"  # what the label scores' intervals resample
# A model's best label correlation is resampled as the best of its BEST_CANDIDATES features with the highest r on
# all the blocks (scoring every feature on every resample would cost d_sae / 64 times more); on a resample this
# equals the best of all features unless one outside them overtakes them all, so the ends can only err low.
BEST_CANDIDATES = 64


@dataclass
class FeatureSearch:
    """Result of ``find_feature``: the chosen feature, its score and the whole score table."""

    model: str
    concept: str
    score: str
    feature: int
    value: float
    table: Any  # pandas DataFrame, one row per feature (see FeatureScorer.table)
    n_tokens: int
    n_positive: int

    def describe(self) -> str:
        """A sentence naming the feature and its score, for notebooks."""
        row = self.table.set_index("feature").loc[self.feature]
        return (
            f"{self.model} feature {self.feature} is the best {CONCEPT_LABELS.get(self.concept, self.concept)} "
            f"feature: Pearson r = {row.pearson:.3f} with the rule-based label "
            f"(precision {row.precision:.2f}, recall {row.recall:.2f}, F1 {row.f1:.2f} of 'fires'), over "
            f"{self.n_tokens} Python validation tokens of which {self.n_positive} are labelled."
        )


def labelled_search_blocks(cfg) -> tuple[torch.Tensor, np.ndarray]:
    """The Python validation blocks features are scored on (``cfg.case_studies.n_search_blocks`` blocks of
    ``cfg.sae.context_size`` tokens, the SAEs' context) and their labels ``[n_blocks, ctx, n_concepts]``.

    Labels are computed on the whole packed stream before it is cut into blocks, so a line split across two
    blocks is still recognised.
    """
    ctx = cfg.sae.context_size
    blocks, stream = search_blocks(cfg, SEARCH_DOMAIN)
    vocab = token_strings(cfg)
    labels = concept_labels([vocab[int(i)] for i in stream[: blocks.numel()]])
    return blocks, labels.reshape(blocks.shape[0], ctx, len(CONCEPTS))


def _search_inputs(cfg, name: str) -> dict[str, Any]:
    return {
        "sae": sae_dir(cfg, name).name,  # content-addressed: covers the model, its data and the SAE's config
        "tokenizer": tokenizer_hash(cfg),
        "corpus": corpus_fingerprint(cfg, SEARCH_DOMAIN, "validation"),
        "n_search_blocks": cfg.case_studies.n_search_blocks,
        "context_size": cfg.sae.context_size,
        "seed": cfg.seed,
        "concepts": list(CONCEPTS),
    }


def concept_scores(cfg, name: str = "babypython") -> dict[str, Any]:
    """Score every feature of ``name``'s SAE against every concept's labels on the Python validation blocks
    (cached step ``case-search-<name>``): ``{concept: table}`` plus ``n_tokens`` and ``n_positive``."""
    import pandas as pd

    def build(out: Path) -> dict:
        blocks, labels = labelled_search_blocks(cfg)
        scorer = None
        pieces = []  # the activations, kept sparse for the scores' intervals (search_sample)
        for start, acts in zip(range(0, len(blocks), ENCODE_CHUNK_BLOCKS), encode_chunks(cfg, name, blocks, ENCODE_CHUNK_BLOCKS)):
            if scorer is None:
                scorer = FeatureScorer(acts.shape[-1], CONCEPTS)
            chunk_labels = labels[start : start + len(acts)].reshape(-1, len(CONCEPTS))
            acts_NF = acts.reshape(-1, acts.shape[-1])
            scorer.update(acts_NF, chunk_labels)
            pieces.append(sp.csr_matrix(np.asarray(acts_NF, dtype=np.float32)))
        for concept in CONCEPTS:
            scorer.table(concept).to_csv(out / f"{concept}.csv", index=False)
        sp.save_npz(out / "acts.npz", sp.vstack(pieces).tocsr().astype(np.float32))
        np.save(out / "labels.npy", np.asarray(labels, dtype=bool))
        return {
            "n_tokens": int(labels.shape[0] * labels.shape[1]),
            "n_positive": {c: int(labels[..., i].sum()) for i, c in enumerate(CONCEPTS)},
        }

    code = [*DATA_CODE, *ENCODE_CODE, "paper_lib.data.vocab", "paper_lib.case_studies.labels",
            "paper_lib.case_studies.scoring", "paper_lib.case_studies.search"]
    path = cached_step(cfg.profile, f"case-search-{name}", _search_inputs(cfg, name), build, code=code)
    meta = manifest(path)["meta"]
    return {
        "tables": {c: pd.read_csv(path / f"{c}.csv") for c in CONCEPTS},
        "n_tokens": meta["n_tokens"],
        "n_positive": meta["n_positive"],
        "folder": path,
    }


def search_sample(cfg, name: str = "babypython") -> tuple[sp.csr_matrix, np.ndarray]:
    """What ``concept_scores`` scored: ``name``'s SAE activations on the searched blocks ``[n_positions, d_sae]``
    (CSR, positions block by block) and their labels ``[n_blocks, ctx, n_concepts]`` (bool)."""
    folder = concept_scores(cfg, name)["folder"]
    return sp.load_npz(folder / "acts.npz").tocsr(), np.load(folder / "labels.npy")


def _block_sums(acts_BCK: np.ndarray, labels_BC: np.ndarray) -> np.ndarray:
    """Per block, the sums ``FeatureScorer`` accumulates for K features and one label: ``[n_blocks, 5K + 2]`` =
    x, x^2, x*y, fires, fires*y per feature, then y and the token count (y is 0/1, so y^2 = y)."""
    x = acts_BCK.astype(np.float64)
    y = labels_BC.astype(np.float64)[..., None]
    fires = (x > 0).astype(np.float64)
    per_feature = [x.sum(1), (x * x).sum(1), (x * y).sum(1), fires.sum(1), (fires * y).sum(1)]
    n = np.full((len(x), 1), x.shape[1], dtype=np.float64)
    return np.concatenate([*per_feature, y.sum(1), n], axis=1)


def _scores(sums_BS: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pearson r and F1 of every feature from summed ``_block_sums`` rows, as ``FeatureScorer.table`` has them
    (a feature that never varies scores 0)."""
    total = sums_BS.sum(0)
    k = (len(total) - 2) // 5
    sx, sxx, sxy, fires, hits = (total[i * k : (i + 1) * k] for i in range(5))
    sy, n = total[-2], total[-1]
    cov = n * sxy - sx * sy
    var_x = np.maximum(n * sxx - sx * sx, 0)
    var_y = max(n * sy - sy * sy, 0)
    denom = np.sqrt(var_x * var_y)
    pearson = np.divide(cov, denom, out=np.zeros_like(cov), where=denom > 0)
    precision = np.divide(hits, fires, out=np.zeros_like(hits), where=fires > 0)
    recall = hits / max(sy, 1.0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(hits), where=precision + recall > 0)
    return pearson, f1


def label_intervals(cfg, name: str, concept: str, feature: int) -> dict[str, Any]:
    """95% intervals for a feature's scores against a concept's labels, by a bootstrap over the searched blocks
    (tokens of one block are not independent; blocks are): ``label_pearson_interval`` and ``label_f1_interval``
    of ``feature`` (``None`` for -1, no feature), and ``best_label_pearson_interval``, the best Pearson r of any
    of ``name``'s features (resampled over the ``BEST_CANDIDATES`` best on all blocks, named in its method)."""
    table = concept_scores(cfg, name)["tables"][concept]
    acts, labels = search_sample(cfg, name)
    labels_BC = labels[..., CONCEPTS.index(concept)]
    n_blocks, ctx = labels_BC.shape

    def columns(features) -> np.ndarray:
        return acts[:, list(features)].toarray().reshape(n_blocks, ctx, len(features))

    by_feature = table.set_index("feature")
    out: dict[str, Any] = {"label_pearson_interval": None, "label_f1_interval": None}
    if feature >= 0:
        sums = _block_sums(columns([feature]), labels_BC)
        for score, index in (("pearson", 0), ("f1", 1)):
            record = intervals.bootstrap(sums, lambda s, i=index: float(_scores(s)[i][0]), unit=SEARCH_UNIT)
            out[f"label_{score}_interval"] = intervals.around(record, float(by_feature.loc[feature, score]),
                                                              f"{name} feature {feature}'s label {score}")
    candidates = table.sort_values("pearson", ascending=False, kind="stable")["feature"].to_numpy()[:BEST_CANDIDATES]
    record = intervals.bootstrap(_block_sums(columns(candidates), labels_BC), lambda s: float(_scores(s)[0].max()),
                                 unit=SEARCH_UNIT)
    record["method"] += f"; the best of the {len(candidates)} features with the highest r on all blocks"
    out["best_label_pearson_interval"] = intervals.around(record, float(table["pearson"].max()),
                                                          f"{name}'s best label correlation")
    return out


def find_feature(cfg, concept: str, name: str = "babypython", score: str | None = None) -> FeatureSearch:
    """The feature of ``name``'s SAE that best matches a concept's rule-based labels (no hand-picked id),
    by ``score`` (default ``cfg.case_studies.score``)."""
    score = score or cfg.case_studies.score
    if concept not in CONCEPTS:
        raise ValueError(f"unknown concept '{concept}'; choose one of {', '.join(CONCEPTS)}")
    found = concept_scores(cfg, name)
    table = found["tables"][concept]
    feature = best_feature(table, score)
    return FeatureSearch(
        model=name,
        concept=concept,
        score=score,
        feature=feature,
        value=float(table.set_index("feature").loc[feature, score]),
        table=table,
        n_tokens=found["n_tokens"],
        n_positive=found["n_positive"][concept],
    )
