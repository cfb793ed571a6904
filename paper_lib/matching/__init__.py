"""Feature matching across parent -> child models (the paper's Figure 2, notebook 05).

Both models' SAE features are recorded on one token sample (``cfg.matching.n_blocks`` validation blocks of
``cfg.matching.context_size`` tokens; the released code's is BabyPython: BabyLM and Python, evenly by tokens),
and every parent feature is correlated with every child feature. Two exact Pearson modes:

* ``token`` (the released code's statistic): the released pipeline logs only nonzero activations, so a
  feature's mean for a token string (token id) is over the positions where that feature *fired* on it, not
  over every occurrence of the token. A pair is correlated over the token strings where both features have
  such a mean (each fired there at least once). Pairs with fewer than ``min_support`` (>= 2) such token
  strings, or where one side is constant on them (a relative spread below 1e-10), have r = NaN, as
  ``scipy.stats.pearsonr`` would give NaN (or refuse). With 2 token strings any non-constant pair has |r| = 1.
* ``position``: the activations at every token position of the sample. With no guard (``min_support=0``,
  the default) every pair of live features has a defined r (pairs that are never co-active get their exact,
  slightly negative r); a guard ``min_support = k > 0`` sets r = NaN for pairs co-active (both nonzero) at
  fewer than k positions, since two rare features that fire once, at the same position, have r = 1. A dead
  feature (never active, zero variance) has r = NaN with everything.

The support a guard reads (shared token strings, or co-active positions) is ``CorrelationAccumulator.support``;
``finalize(min_support=...)`` re-applies another guard without reading the data again, and
``methods.choose_min_support`` picks one from a permutation null (``methods.permute_positions``).

A child feature *persists* if some live parent feature correlates with it at r >= threshold, else it
*emerges*; a live parent feature with no such child *disappears*. ``classify(..., assignment="many")`` (the
paper's) keeps one-to-many matches (``pairs``); ``assignment="one"`` pairs features one-to-one by Hungarian
assignment (``methods.one_to_one``), the usual way to match two SAEs' features (Paulo & Belrose 2025). A
data-free alternative to correlation is the cosine of decoder directions (``methods.decoder_cosine``).
Dead features (never active on the sample: *inactive on this sample*, not dead in general) are reported apart
and excluded from every share. Each pair is matched on text from both models' domains (``pairs.sample_domains``)
and read against its controls (``controls``: the child's seed ceiling, the untrained model's and the
permutation null's floors, shared vs independent SAE seeds, the released sample, methods side by side).

Modules: ``kernels`` (numba), ``correlate`` (streaming Pearson r of all pairs), ``classify`` (persisting /
emerging / disappearing), ``methods`` (decoder cosine, one-to-one assignment, permutation null, threshold
curves, choosing a support guard), ``pairs`` (the cached matches of any two SAEs), ``controls``, ``tokens`` (what
features respond to). The flow figure is ``plots.flow``.
"""
from .classify import ASSIGNMENTS, MatchResult, classify
from .correlate import CONSTANT_RTOL, MODES, CorrelationAccumulator, pairwise_correlations
from .methods import choose_min_support, decoder_cosine, one_to_one, permute_positions, threshold_curve
from .pairs import (
    activation_sample_dir,
    best_match_histogram,
    best_match_table,
    correlate_samples,
    load_activation_sample,
    METHODS,
    match_all,
    match_pair,
    match_saes,
    matching_pairs,
    sample_domains,
)
from . import controls
from .tokens import categorise_token, persisting_examples, persisting_token_table, top_token_categories, top_tokens
