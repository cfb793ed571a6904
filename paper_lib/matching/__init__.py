"""Feature matching across parent -> child models (the paper's Figure 2, notebook 05).

Every model's SAE features are recorded on one shared token sample (``cfg.matching.n_blocks`` BabyPython
validation blocks of ``cfg.matching.context_size`` tokens: BabyLM and Python, evenly by tokens), and every
parent feature is correlated with every child feature. Two exact Pearson modes:

* ``token`` (the released code's method): per feature, the mean activation per token string (token id) over
  the sample; a pair is correlated over the token strings where *both* features fire (nonzero mean). Pairs
  with fewer than ``cfg.matching.min_token_support`` such token strings, or where one side is constant on
  them (a relative spread below 1e-10), have r = NaN, as ``scipy.stats.pearsonr`` would give NaN (or refuse).
* ``position``: the activations at every token position of the sample. Every pair of live features has a
  defined r (pairs that are never co-active get their exact, slightly negative r); a dead feature (never
  active, zero variance) has r = NaN with everything.

A child feature *persists* if some live parent feature correlates with it at r >= threshold, else it
*emerges*; a live parent feature with no such child *disappears*. One-to-many matches are kept (``pairs``).
Dead features (never active on the sample) are reported apart and excluded from every share.

Modules: ``kernels`` (numba), ``correlate`` (streaming Pearson r of all pairs), ``classify`` (persisting /
emerging / disappearing), ``pairs`` (the cached matches between registry models), ``tokens`` (what features
respond to). The flow figure is ``plots.flow``.
"""
from .classify import MatchResult, classify
from .correlate import CONSTANT_RTOL, MODES, CorrelationAccumulator, pairwise_correlations
from .pairs import (
    activation_sample_dir,
    best_match_histogram,
    best_match_table,
    correlate_samples,
    load_activation_sample,
    match_all,
    match_pair,
    matching_pairs,
)
from .tokens import categorise_token, persisting_examples, persisting_token_table, top_token_categories, top_tokens
