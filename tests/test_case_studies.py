"""Case studies: labellers, the feature search on planted activations, logit effects, the renderers."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from paper_lib import case_studies as cs
from paper_lib import plots
from paper_lib.core.hooks import DEFAULT_HOOK

# Lines of code as token strings, each with the index of its statement-level assignment '=' (or None).
# The near-misses are what a sloppy labeller would count: comparisons, keyword arguments, '+=', table fields.
LINES = [
    (["x", " =", " 1", "\n"], 1),
    (["local", " y", " =", " x", "\n"], 2),
    (["  ", "self", ".v", " =", " []", "\n"], 3),
    (["a", ",", " b", " =", " 1", ",", " 2", "\n"], 3),
    (["n", ":", " int", " =", " 0", "\n"], 3),
    (["if", " x", " ==", " 2", ":", "\n"], None),
    (["while", " a", " !=", " b", ":", "\n"], None),
    (["if", " v", " ~=", " 0", " then", "\n"], None),
    (["print", "(", "end", "=", "''", ")", "\n"], None),
    (["f", "(", "a", "=", "1", ",", "\n"], None),
    (["  ", "b", "=", "2", ")", "\n"], None),  # keyword argument continuing inside the open bracket
    (["t", " +=", " 1", "\n"], None),
    (["return", " x", " >=", " y", "\n"], None),
]


def _synthetic_code(n_lines: int, rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    tokens, truth = [], []
    i = 0
    while i < n_lines:
        index = int(rng.integers(len(LINES)))
        group = [9, 10] if index in (9, 10) else [index]  # a multi-line call is always closed
        for g in group:
            line, op = LINES[g]
            tokens += line
            truth += [k == op for k in range(len(line))]
        i += len(group)
    return tokens, np.asarray(truth)


def test_assignment_labeller_finds_assignments_only():
    tokens, truth = _synthetic_code(400, np.random.default_rng(0))
    labels = cs.label_tokens(tokens, cs.assignment_spans)
    assert labels.sum() > 50
    np.testing.assert_array_equal(labels, truth)
    assert not labels[[i for i, t in enumerate(tokens) if "==" in t]].any()


def test_labeller_resets_at_documents_and_splits_spans_over_tokens():
    # '=' split across tokens and a document separator inside an open bracket.
    tokens = ["f", "(", "x", "</s>", "y", " =", "=", " 1", "\n", "z", " ", "=", " 2"]
    labels = cs.label_tokens(tokens, cs.assignment_spans)
    assert labels.tolist() == [False] * 11 + [True, False]
    exc = cs.label_tokens(["try", ":", "\n", " raise", " Value", "Error", "(", "retry", ")"], cs.exception_spans)
    assert exc.tolist() == [True, False, False, True, True, True, False, False, False]


def test_planted_assignment_feature_is_found(seed):
    rng = np.random.default_rng(1)
    tokens, truth = _synthetic_code(600, rng)
    labels = cs.concept_labels(tokens)
    n, f = len(tokens), 64
    acts = np.maximum(rng.normal(0, 1, size=(n, f)) - 1.0, 0).astype(np.float32)  # sparse noise features
    planted, decoy = 17, 40
    acts[:, planted] = np.where(truth, 3.0 + rng.random(n), 0.0)
    # A stronger decoy fires on every token holding '=' (comparisons and keyword arguments included).
    acts[:, decoy] = np.where([("=" in t) for t in tokens], 6.0, 0.0)
    table = cs.score_features(acts, labels[:, 0], "variable_assignment")
    assert cs.best_feature(table) == planted
    assert cs.best_feature(table, "f1") == planted
    row = table.set_index("feature").loc[planted]
    assert row.pearson == pytest.approx(np.corrcoef(acts[:, planted], truth)[0, 1], abs=1e-9)
    assert row.precision == 1.0 and row.recall == 1.0
    decoy_row = table.set_index("feature").loc[decoy]
    assert decoy_row.recall == 1.0 and decoy_row.precision < 0.8  # '==' and keyword '=' count against it


def test_streaming_scores_match_in_memory_pearson():
    rng = np.random.default_rng(2)
    acts = np.maximum(rng.normal(size=(300, 20)), 0).astype(np.float32)
    acts[:, 3] = 0  # a dead feature scores 0, not NaN
    labels = rng.random((300, 2)) < 0.2
    scorer = cs.FeatureScorer(20, ["a", "b"])
    for chunk in np.array_split(np.arange(300), 7):
        scorer.update(torch.from_numpy(acts[chunk]), labels[chunk])
    for c, name in enumerate(["a", "b"]):
        table = scorer.table(name).set_index("feature").sort_index()
        expected = [0.0 if j == 3 else np.corrcoef(acts[:, j], labels[:, c])[0, 1] for j in range(20)]
        np.testing.assert_allclose(table.pearson.to_numpy(), expected, atol=1e-8)
    with pytest.raises(ValueError, match="d_sae"):
        scorer.update(torch.zeros(5, 19), np.zeros((5, 2)))


def test_sae_activations_and_logit_effects(tiny_hooked, seed):
    from sae_lens import StandardSAE, StandardSAEConfig

    d_mlp = tiny_hooked.cfg.d_mlp
    sae = StandardSAE(StandardSAEConfig(d_in=d_mlp, d_sae=24))
    blocks = torch.randint(0, 97, (5, 12))
    acts = torch.cat(list(cs.sae_activations(tiny_hooked, sae, blocks, batch_size=2)))
    _, cache = tiny_hooked.run_with_cache(blocks, names_filter=DEFAULT_HOOK)
    torch.testing.assert_close(acts, sae.encode(cache[DEFAULT_HOOK]))

    vocab = [f"t{i}" for i in range(97)]
    direction = sae.W_dec[7].detach()
    effects = cs.logit_effects(tiny_hooked, direction, vocab, k=5)
    raised = effects[effects.effect == "raises"].logit.to_numpy()
    lowered = effects[effects.effect == "lowers"].logit.to_numpy()
    assert np.all(np.diff(raised) <= 0) and np.all(np.diff(lowered) >= 0) and raised.min() > lowered.max()
    # Ground truth from the model itself: a residual stream holding only the feature's output (W_dec[f] @ W_out)
    # gives logits equal to the approximation divided by the RMS, a positive constant: same ranking.
    resid = direction @ tiny_hooked.blocks[0].mlp.W_out

    def replace(value, hook):
        return resid.expand_as(value).clone()

    logits = tiny_hooked.run_with_hooks(blocks[:1], fwd_hooks=[("blocks.0.hook_resid_post", replace)])[0, -1]
    top = torch.topk(logits, 5).indices.tolist()
    bottom = torch.topk(-logits, 5).indices.tolist()
    assert effects[effects.effect == "raises"].token_id.tolist() == top
    assert effects[effects.effect == "lowers"].token_id.tolist() == bottom
    with pytest.raises(ValueError, match="hook_post"):
        cs.logit_effects(tiny_hooked, torch.zeros(d_mlp + 1), vocab)


def test_top_contexts_and_histogram():
    tokens = [[f"w{b}_{p}" for p in range(10)] for b in range(4)]
    tokens[2][5] = "a\nb"
    acts = np.zeros((4, 10))
    acts[2, 5], acts[0, 1], acts[3, 9], acts[3, 2] = 5.0, 2.0, 1.0, 0.5
    table = cs.top_contexts(tokens, acts, k=10, window=2)
    assert table.block.tolist() == [2, 0, 3]  # block 1 never fires; one row per block
    assert table.iloc[0].context == "w2_3w2_4[[a\u21b5b]]w2_6w2_7"
    hist = cs.activation_histogram(acts, bins=5)
    assert hist["count"].sum() == 4 and hist.attrs["fire_rate"] == pytest.approx(4 / 40)


def test_pairwise_pattern_correlations():
    a = np.array([0, 1, 0, 2, 0.0])
    table = cs.pairwise_pattern_correlations({"A": a, "B": 2 * a + 1, "C": -a, "D": np.zeros(5)})
    corr = {(r.a, r.b): r.corr for r in table.itertuples()}
    assert corr[("A", "B")] == pytest.approx(1.0) and corr[("A", "C")] == pytest.approx(-1.0)
    assert np.isnan(corr[("A", "D")]) and len(table) == 6


def test_html_escapes_and_shows_whitespace():
    tokens = ["<script>", "alert('x')", "</script>", " &", "\n", "\tx", '"q"']
    out = plots.highlight_html(tokens, np.arange(len(tokens), dtype=float), title="<b>t</b>")
    assert "<script>" not in out and "&lt;script&gt;" in out and "&lt;/script&gt;" in out
    assert "&amp;" in out and "&lt;b&gt;t&lt;/b&gt;" in out
    assert "\u21b5<br>" in out and "\u2192x" in out and "white-space: pre-wrap" in out
    # Every token is one span: escaped tokens cannot open or close tags of their own.
    assert out.count("<span") == out.count("</span>") == len(tokens)


def test_shading_is_monotone_in_activation():
    rng = np.random.default_rng(3)
    acts = np.sort(np.concatenate([[-1.0, 0.0], rng.exponential(size=50)]))
    alpha = plots.shade(acts)
    assert np.all(np.diff(alpha) >= 0) and alpha[0] == 0 and alpha[1] == 0 and alpha[-1] == 1
    out = plots.highlight_html([f"t{i}" for i in range(len(acts))], acts)
    shown = [float(x) for x in re.findall(r"rgba\(\d+,\d+,\d+,([0-9.]+)\)", out)]
    assert len(shown) == len(acts) and np.all(np.diff(shown) >= 0)
    assert np.all(plots.shade(acts, vmax=0.0) == 0)


def test_highlight_figure_is_drawn_and_shaded(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    snippets = {"python": ["x", " =", " 1", "\n", "if", " x", " ==", " 1", ":"], "lua": ["local", " y", " =", " 2"]}
    acts = {
        "A": {"python": [0, 3, 0, 0, 0, 0, 1, 0, 0], "lua": [0, 0, 3, 0]},
        "B": {"python": [0, 1, 0, 0, 0, 0, 0, 0, 0], "lua": [0, 0, 0, 0]},
    }
    fig = plots.highlight_figure(snippets, acts, titles={"A": "A #1"}, note="r(A, B) = 0.9")
    assert len(fig.axes) == 4
    fig.savefig(tmp_path / "f.png")
    fig.savefig(tmp_path / "f.pdf")
    assert (tmp_path / "f.png").stat().st_size > 1000 and (tmp_path / "f.pdf").stat().st_size > 1000
    # Darker (lower luminance) background for higher activation, within one panel.
    ax = fig.axes[0]
    faces = [p.get_facecolor() for p in ax.patches]
    luminance = [0.3 * r + 0.6 * g + 0.1 * b for r, g, b, _ in faces]
    strongest, weaker, zero = luminance[1], luminance[6], luminance[0]
    assert strongest < weaker < zero
    assert "A #1" in ax.get_title(loc="left") and any("0.9" in t.get_text() for t in fig.texts)
    plt.close(fig)
    with pytest.raises(ValueError, match="no activations"):
        plots.highlight_figure(snippets, {"A": {"python": acts["A"]["python"]}})


def test_feature_matches_follow_routes_and_stop_at_missing_matches(monkeypatch, smoke_cfg):
    import types

    import paper_lib.matching as matching

    # babypython -> lua maps f to f + 1 (r 0.9); lua -> luastories maps f to 2f (r 0.7); feature 3 has no lua match.
    def fake_match_pair(cfg, parent, child, mode="token"):
        best = {("babypython", "lua"): (np.array([1, 2, 3, -1, 5]), np.array([0.9, 0.9, 0.9, np.nan, 0.9])),
                ("lua", "luastories"): (np.arange(6) * 2 % 6, np.full(6, 0.7))}[(parent, child)]
        return types.SimpleNamespace(best_child_for_parent=best[0], best_corr_for_parent=best[1])

    monkeypatch.setattr(matching, "match_pair", fake_match_pair)
    routes = {"lua": ["babypython", "lua"], "luastories": ["babypython", "lua", "luastories"]}
    table = cs.feature_matches(smoke_cfg, 2, routes=routes, with_intervals=False).set_index("model")
    assert table.loc["lua", "feature"] == 3 and table.loc["lua", "corr"] == pytest.approx(0.9)
    assert table.loc["luastories", "feature"] == 0 and table.loc["luastories", "route_min_corr"] == pytest.approx(0.7)
    assert table.loc["lua", "matched"] and not table.loc["luastories", "matched"]  # 0.7 < threshold 0.8
    missing = cs.feature_matches(smoke_cfg, 3, routes=routes, with_intervals=False).set_index("model")
    assert (missing.feature == -1).all() and not missing.matched.any() and np.isnan(missing.loc["luastories", "corr"])


def test_describe_findings_states_the_numbers():
    import pandas as pd

    summary = pd.DataFrame([
        {"concept": "python_exception", "model": "babypython", "feature": 4, "route": "babypython", "corr": np.nan,
         "route_min_corr": np.nan, "matched": True, "label_pearson": 0.61, "label_f1": 0.5, "best_label_pearson": 0.61},
        {"concept": "python_exception", "model": "lua", "feature": 9, "route": "babypython -> lua", "corr": 0.42,
         "route_min_corr": 0.42, "matched": False, "label_pearson": 0.3, "label_f1": 0.2, "best_label_pearson": 0.35},
    ])
    (sentence,) = cs.describe_findings(summary, 0.8)
    assert "#4" in sentence and "0.61" in sentence and "Lua #9 (r = 0.42" in sentence and "falls below the 0.8" in sentence


def test_match_correlation_is_the_matching_statistic():
    from paper_lib import matching

    rng = np.random.default_rng(4)
    x = np.maximum(rng.normal(size=(30, 6)), 0)
    y = np.maximum(x + rng.normal(size=(30, 6)) - 0.5, 0)
    tokens = rng.integers(0, 9, size=(30, 6)).astype(float)
    hop = np.stack([x, y, tokens], axis=1)
    assert cs.match_correlation(hop) == pytest.approx(np.corrcoef(x.ravel(), y.ravel())[0, 1], abs=1e-12)
    coactive = np.count_nonzero((x > 0) & (y > 0))
    assert np.isnan(cs.match_correlation(hop, min_support=coactive + 1))
    assert cs.match_correlation(hop, min_support=coactive) == cs.match_correlation(hop)
    expected = matching.pairwise_correlations(x.reshape(-1, 1), y.reshape(-1, 1), "token", tokens.ravel().astype(int))
    assert cs.match_correlation(hop, "token") == pytest.approx(expected[0, 0], abs=1e-12)
    hop[:, 1] = 0  # a dead child feature: r undefined
    assert np.isnan(cs.match_correlation(hop))


def test_case_study_numbers_have_intervals_over_their_samples_blocks(smoke_cfg):
    """On the smoke run: every best-match correlation and label score of the summary has an interval around the
    reported number, made by resampling the blocks of the sample the number was computed on."""
    from paper_lib import matching
    from paper_lib.case_studies.search import _block_sums, _scores

    cfg = smoke_cfg
    searches = {c: cs.find_feature(cfg, c) for c in cs.CONCEPTS}
    matches = {c: cs.feature_matches(cfg, s.feature) for c, s in searches.items()}
    summary = cs.summary_table(cfg, searches, matches)
    fields = ("corr", "route_min_corr", "label_pearson", "label_f1", "best_label_pearson")
    n_checked = 0
    for row in summary.to_dict("records"):
        for field in fields:
            record = row[f"{field}_interval"]
            if not np.isfinite(row[field]):  # BabyPython's own row, or no match to follow
                assert record is None, (row["model"], field)
                continue
            assert record["value"] == row[field] and record["low"] <= row[field] <= record["high"], (row, field)
            assert record["confidence"] == 0.95
            unit = "sample blocks" if "corr" in field else "search blocks"
            assert unit in record["method"], record["method"]
            n_checked += 1
        if row["model"] != "babypython":
            assert row["corr_interval"]["n"] == cfg.matching.n_blocks
            assert row["corr_interval"]["low"] < row["corr_interval"]["high"]
        assert row["best_label_pearson_interval"]["n"] == cfg.case_studies.n_search_blocks
        assert "best of the" in row["best_label_pearson_interval"]["method"]
    assert n_checked >= 5 * len(cs.CONCEPTS) * 2
    # A route of two hops resamples each hop's sample on its own; one hop is its own weakest hop.
    two_hops = summary[summary.route.str.count("->") == 2].iloc[0]
    if two_hops.route_min_corr_interval is not None:
        n = cfg.matching.n_blocks
        assert f"bootstrap over {n:,} + {n:,} sample blocks" in two_hops.route_min_corr_interval["method"]
    one_hop = summary[(summary.route.str.count("->") == 1) & summary["corr"].notna()].iloc[0]
    assert one_hop.route_min_corr_interval == one_hop.corr_interval

    # The blocks are those of the sample the match was made on: all of them give the reported r.
    parent, child = one_hop.route.split(" -> ")
    base = searches[one_hop.concept].feature
    hop = cs.match_blocks(cfg, parent, child, base, int(one_hop.feature))
    assert hop.shape == (cfg.matching.n_blocks, 3, cfg.matching.context_size)
    assert cs.match_correlation(hop) == pytest.approx(one_hop["corr"], abs=1e-5)
    result = matching.match_pair(cfg, parent, child, mode=cfg.case_studies.matching_mode)
    assert int(result.best_child_for_parent[base]) == one_hop.feature

    # The label scores from per-block sums of the stored search sample are the search table's.
    acts, labels = cs.search_sample(cfg, "babypython")
    assert acts.shape[0] == labels.shape[0] * labels.shape[1] == cfg.case_studies.n_search_blocks * labels.shape[1]
    table = searches["variable_assignment"].table.set_index("feature")
    features = [int(f) for f in table.index[:5]]
    x = acts[:, features].toarray().reshape(labels.shape[0], labels.shape[1], len(features))
    pearson, f1 = _scores(_block_sums(x, labels[..., cs.CONCEPTS.index("variable_assignment")]))
    np.testing.assert_allclose(pearson, table.loc[features, "pearson"], atol=1e-9)
    np.testing.assert_allclose(f1, table.loc[features, "f1"], atol=1e-9)
    shown = cs.formatted_summary(summary)
    assert shown.corr_interval.iloc[0] == "n/a" and shown.label_pearson_interval.iloc[0].count("[") == 1
