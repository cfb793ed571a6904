"""Finding a concept's feature without a hand-picked id: every feature scored against rule-based labels (cached)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.artifacts import cached_step, manifest
from ..data import DATA_CODE, corpus_fingerprint, search_blocks, token_strings, tokenizer_hash
from ..saes.encode import ENCODE_CODE
from ..saes.store import ENCODE_CHUNK_BLOCKS
from ..saes import encode_chunks, sae_dir
from .labels import CONCEPT_LABELS, CONCEPTS, concept_labels
from .scoring import FeatureScorer, best_feature

SEARCH_DOMAIN = "python"  # both concepts are searched on Python validation code


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
        for start, acts in zip(range(0, len(blocks), ENCODE_CHUNK_BLOCKS), encode_chunks(cfg, name, blocks, ENCODE_CHUNK_BLOCKS)):
            if scorer is None:
                scorer = FeatureScorer(acts.shape[-1], CONCEPTS)
            chunk_labels = labels[start : start + len(acts)].reshape(-1, len(CONCEPTS))
            scorer.update(acts.reshape(-1, acts.shape[-1]), chunk_labels)
        for concept in CONCEPTS:
            scorer.table(concept).to_csv(out / f"{concept}.csv", index=False)
        return {
            "n_tokens": int(labels.shape[0] * labels.shape[1]),
            "n_positive": {c: int(labels[..., i].sum()) for i, c in enumerate(CONCEPTS)},
        }

    code = [*DATA_CODE, *ENCODE_CODE, "paper_lib.data.vocab", "paper_lib.case_studies.labels",
            "paper_lib.case_studies.scoring"]
    path = cached_step(cfg.profile, f"case-search-{name}", _search_inputs(cfg, name), build, code=code)
    meta = manifest(path)["meta"]
    return {
        "tables": {c: pd.read_csv(path / f"{c}.csv") for c in CONCEPTS},
        "n_tokens": meta["n_tokens"],
        "n_positive": meta["n_positive"],
    }


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
