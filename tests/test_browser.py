"""The feature browser: per-feature statistics on constructed activations, escaped and shaded contexts, and the smoke
run's site (every page written, every match link landing on its partner, nothing loaded from the network)."""

import re

import numpy as np
import pytest
import scipy.sparse as sp

from paper_lib.browser import context_html, feature_stats, sparkline


def _constructed():
    """3 blocks of 4 positions, 3 features: #0 fires twice in block 2 and once in block 0, #1 never, #2 once."""
    acts = np.zeros((12, 3))
    acts[9, 0], acts[10, 0], acts[1, 0] = 5.0, 1.0, 2.0
    acts[6, 2] = 0.5
    tokens = np.array([7, 8, 9, 7, 7, 8, 9, 7, 3, 4, 7, 3])
    return sp.csr_matrix(acts), tokens


def test_feature_stats_on_constructed_activations():
    acts, tokens = _constructed()
    stats = {s["id"]: s for s in feature_stats(acts, tokens, context=4, k=2, bins=4)}
    assert set(stats) == {0, 2}  # a feature that never fires is not listed
    first = stats[0]
    assert first["n_active"] == 3 and first["frequency"] == pytest.approx(3 / 12)
    assert first["max"] == 5.0 and first["mean"] == pytest.approx(8 / 3)
    assert [c["block"] for c in first["contexts"]] == [2, 0]  # the block of the largest activation first
    assert first["contexts"][0]["acts"] == [0.0, 5.0, 1.0, 0.0] and first["contexts"][0]["tokens"] == [3, 4, 7, 3]
    assert sum(first["histogram"]) == 3
    assert first["top_tokens"][0] == (4, pytest.approx(5 / 8))  # token 4 carries 5 of the 8 units of activation
    assert [t for t, _ in first["top_tokens"]] == [4, 8, 7]
    with pytest.raises(ValueError, match="must agree"):
        feature_stats(acts, tokens[:-1], context=4)


def test_contexts_are_escaped_and_shaded_by_activation():
    html = str(context_html(["<script>", " x", "\n"], [0.0, 2.0, 4.0], vmax=4.0))
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert '<i style="--a:0.50" title="2.000"> x</i>' in html and "\u21b5<br>" in html
    assert sparkline(np.array([0, 1, 100])) == " \u2582\u2588"  # log scale: 1 of 100 is a seventh of the height


def test_the_smoke_site_links_every_match_to_its_partner(smoke_cfg):
    from paper_lib.browser import site_dir
    from paper_lib.core.artifacts import manifest
    from paper_lib.core.registry import REGISTRY

    path = site_dir(smoke_cfg)
    meta = manifest(path)["meta"]
    pages = {p.name: p.read_text(encoding="utf-8") for p in path.glob("*.html")}
    names = list(meta["features"])
    assert set(pages) == {"index.html", *(f"{n}.html" for n in names)} and meta["pages"] == len(pages)
    assert meta["bytes"] == sum(len(t.encode("utf-8")) for t in pages.values())
    anchors = {n: set(re.findall(r'<section class="feat" id="f(\d+)"', pages[f"{n}.html"])) for n in names}
    for name in names:
        assert len(anchors[name]) == meta["features"][name] > 0
    directions = set()
    for name in names:
        for target, feature in re.findall(r'<a href="(\w+)\.html#f(\d+)">', pages[f"{name}.html"]):
            assert feature in anchors[target], (name, target, feature)  # every link lands on a listed feature
            directions.add((name, target))
    for parent, child in REGISTRY.edges():
        assert (parent, child) in directions and (child, parent) in directions  # walkable both ways
    for text in pages.values():
        assert not re.search(r'(src|href)="(https?:)?//', text)  # nothing from the network
