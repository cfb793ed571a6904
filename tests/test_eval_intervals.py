"""Confidence intervals on every language-model number: per-block sums, model metrics, the sweep and its crossing."""

import numpy as np
import pytest
import torch

from paper_lib import models
from paper_lib.core import intervals
from paper_lib.models.evaluate import metric_difference, model_block_sums
from paper_lib.models.sweep import (
    change_interval,
    crossing_interval,
    sweep_block_sums,
    sweep_intervals,
    sweep_summary,
)


def _old_evaluate_lm(model, blocks, batch_size):
    """evaluate_lm as it was before the per-block sums: the totals must not change by a single bit."""
    total_loss, correct, count = 0.0, 0, 0
    with torch.inference_mode():
        for start in range(0, len(blocks), batch_size):
            batch = blocks[start : start + batch_size]
            logits = model(batch)
            logits = getattr(logits, "logits", logits)[:, :-1].float()
            targets = batch[:, 1:]
            total_loss += float(torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum"))
            correct += int((logits.argmax(-1) == targets).sum())
            count += targets.numel()
    return {"loss": total_loss / count, "accuracy": correct / count}


def _assert_contains(record, value):
    assert intervals.is_interval(record)
    assert record["value"] == value
    assert record["low"] <= value <= record["high"]
    assert record["high"] > record["low"], record
    assert record["confidence"] == intervals.CONFIDENCE


def test_block_sums_add_up_to_the_unchanged_totals(tiny_hf_model):
    blocks = torch.randint(0, 97, (7, 16), generator=torch.Generator().manual_seed(2))
    result = models.evaluate_lm(tiny_hf_model, blocks, batch_size=3)  # 3 does not divide 7: a short last batch
    old = _old_evaluate_lm(tiny_hf_model, blocks, batch_size=3)
    assert result["loss"] == old["loss"] and result["accuracy"] == old["accuracy"]  # bit for bit
    assert [len(result[k]) for k in ("block_loss", "block_correct", "block_tokens")] == [len(blocks)] * 3
    assert (result["block_tokens"] == blocks.shape[1] - 1).all()
    tokens = result["block_tokens"].sum()
    assert result["block_correct"].sum() / tokens == result["accuracy"]
    assert result["block_loss"].sum() / tokens == pytest.approx(result["loss"], rel=1e-6)


def test_block_sums_count_each_block_on_its_own(plus_one_lm):
    blocks = torch.tensor([[0, 1, 2, 3], [4, 5, 9, 9], [7, 8, 9, 0]])
    expected = [sum(int((a + 1) % 10 == b) for a, b in zip(row[:-1].tolist(), row[1:].tolist())) for row in blocks]
    result = models.evaluate_lm(plus_one_lm, blocks, batch_size=2)
    assert result["block_correct"].tolist() == expected
    assert result["accuracy"] == sum(expected) / blocks[:, 1:].numel()


def test_model_metrics_carry_intervals_over_validation_blocks(smoke_cfg):
    metrics = models.model_metrics(smoke_cfg, "babypython")
    sums = model_block_sums(smoke_cfg, "babypython")
    assert set(metrics) == set(sums)
    for domain, values in metrics.items():
        n_blocks = len(sums[domain]["tokens"])
        assert n_blocks > 1 and all(len(sums[domain][k]) == n_blocks for k in ("loss", "correct"))
        tokens = sums[domain]["tokens"].sum()
        assert sums[domain]["correct"].sum() / tokens == values["accuracy"]
        assert sums[domain]["loss"].sum() / tokens == pytest.approx(values["loss"], rel=1e-6)
        for metric in ("loss", "accuracy"):
            record = values[f"{metric}_interval"]
            _assert_contains(record, values[metric])
            assert record["n"] == n_blocks and "validation blocks" in record["method"]

    table = models.model_table(smoke_cfg, ["babypython", "lua"])
    for metric in ("loss", "accuracy"):
        assert (table[f"{metric}_low"] <= table[metric]).all() and (table[metric] <= table[f"{metric}_high"]).all()
        assert (table[f"{metric}_interval"].map(lambda r: r["value"]) == table[metric]).all()


def test_a_finetune_gain_is_paired_over_the_same_blocks(smoke_cfg):
    gain = metric_difference(smoke_cfg, "lua", "babypython", "lua")
    ours, base = models.model_metrics(smoke_cfg, "lua")["lua"], models.model_metrics(smoke_cfg, "babypython")["lua"]
    _assert_contains(gain, ours["accuracy"] - base["accuracy"])
    # pairing removes the blocks' own difficulty: the gain's interval is narrower than the two metrics' together
    width = lambda r: r["high"] - r["low"]
    assert width(gain) < width(ours["accuracy_interval"]) + width(base["accuracy_interval"])


def _curves_with_known_crossing(rng, n_blocks, start, end, tokens=100):
    """Per-block correct counts [n_blocks, n_t] on t = (0, 0.3, 0.6, 1) whose pooled accuracy goes linearly from
    ``start`` to ``end``: blocks come in pairs, one easier and one harder by the same amount, so the pooled curve is
    exactly the line while single blocks scatter around it."""
    t = np.array([0.0, 0.3, 0.6, 1.0])
    line = np.round(tokens * (start + (end - start) * t)).astype(int)
    offsets = rng.integers(0, 10, n_blocks // 2)
    correct = np.concatenate([line + offsets[:, None], line - offsets[:, None]])
    return t, correct, np.full(len(correct), tokens)


def test_crossing_interval_contains_a_known_crossing():
    rng = np.random.default_rng(0)
    t, falling, tokens_a = _curves_with_known_crossing(rng, 40, 0.6, 0.2)
    _, rising, tokens_b = _curves_with_known_crossing(rng, 30, 0.2, 0.6)  # another domain, other blocks
    known = 0.5  # 0.6 - 0.4 t = 0.2 + 0.4 t
    record = crossing_interval(t, (falling, tokens_a), (rising, tokens_b))
    assert record["value"] == pytest.approx(known)
    assert record["value"] == models.crossing_point(t, falling.sum(0) / tokens_a.sum(), rising.sum(0) / tokens_b.sum())
    _assert_contains(record, record["value"])
    assert record["low"] <= known <= record["high"] and "40 + 30 validation blocks" in record["method"]
    # curves that never cross have no crossing to put an interval on
    assert crossing_interval(t, (falling, tokens_a), (falling + 20, tokens_a)) is None


def test_change_interval_reads_the_direction():
    rng = np.random.default_rng(1)
    t, falling, tokens = _curves_with_known_crossing(rng, 40, 0.6, 0.2)
    _, rising, _ = _curves_with_known_crossing(rng, 40, 0.2, 0.6)
    down, up = change_interval(t, falling, tokens), change_interval(t, rising, tokens)
    assert down["value"] == pytest.approx(-0.4) and up["value"] == pytest.approx(0.4)
    assert intervals.sign(down) == -1 and intervals.sign(up) == 1
    # blocks that change in both directions, by amounts that cancel: no change, yet an interval of some width
    offsets = rng.integers(1, 5, len(falling) // 2)
    wobble = np.concatenate([offsets, -offsets])
    flat = falling[:, [0, 0, 0, 0]] + np.outer(wobble, [0, 0, 0, 1])
    record = change_interval(t, flat, tokens)
    assert record["value"] == 0 and record["high"] > record["low"] and intervals.sign(record) == 0


def test_sweep_points_and_summary_carry_intervals(smoke_cfg):
    sweep = models.slerp_sweep(smoke_cfg)
    sums = sweep_block_sums(smoke_cfg)
    assert sums["t"].tolist() == sweep["t"].tolist()
    for domain in ("lua", "tinystories"):
        assert sums[f"{domain}_correct"].shape == (len(sums[f"{domain}_tokens"]), len(sweep))
        pooled = sums[f"{domain}_correct"].sum(0) / sums[f"{domain}_tokens"].sum()
        assert pooled.tolist() == sweep[f"{domain}_accuracy"].tolist()
        for metric in ("accuracy", "loss"):
            for value, record in zip(sweep[f"{domain}_{metric}"], sweep[f"{domain}_{metric}_interval"]):
                _assert_contains(record, value)

    uncertainty = sweep_intervals(smoke_cfg)
    summary = sweep_summary(sweep, uncertainty=uncertainty)
    assert summary["crossing_t"] == uncertainty["crossing_t"]
    if summary["crossing_t"] is None:
        assert summary["crossing_t_interval"] is None
    else:
        _assert_contains(summary["crossing_t_interval"], summary["crossing_t"])
    ordered = sweep.sort_values("t")
    for domain in ("lua", "tinystories"):
        change = ordered[f"{domain}_accuracy"].iloc[-1] - ordered[f"{domain}_accuracy"].iloc[0]
        assert summary[f"{domain}_change"] == change == uncertainty[f"{domain}_change"]
        _assert_contains(summary[f"{domain}_change_interval"], change)


def test_summary_of_the_papers_table_keeps_its_numbers():
    paper = models.paper_sweep_table()
    summary = sweep_summary(paper)
    assert summary["crossing_t"] == models.crossing_point(paper["t"], paper["lua_accuracy"], paper["tinystories_accuracy"])
    assert summary["lua_falls"] and summary["tinystories_rises"]
    assert summary["crossing_t_interval"] is None and summary["lua_change_interval"] is None  # no per-block numbers
    assert summary["lua_change"] == pytest.approx(paper["lua_accuracy"].iloc[-1] - paper["lua_accuracy"].iloc[0])


def test_interval_plots_draw_what_the_table_says():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from paper_lib.plots import (
        interval_bounds,
        plot_band,
        plot_interval_bars,
        plot_interval_span,
    )

    table = pd.DataFrame({"model": ["A", "A", "B", "B"], "domain": ["x", "y", "x", "y"],
                          "accuracy": [0.4, 0.5, 0.6, 0.3]})
    table["accuracy_low"], table["accuracy_high"] = table["accuracy"] - 0.05, table["accuracy"] + 0.1
    fig, ax = plt.subplots()
    plot_interval_bars(table, "accuracy", x="domain", hue="model", ax=ax)
    assert sorted(round(p.get_height(), 6) for p in ax.patches) == sorted(table["accuracy"])
    with pytest.raises(KeyError, match="loss_low"):
        plot_interval_bars(table, "loss", x="domain", hue="model", ax=ax)
    low, high = interval_bounds([intervals.interval(0.5, 0.4, 0.6, "test", 2), None])
    assert low[0] == 0.4 and high[0] == 0.6 and np.isnan(low[1]) and np.isnan(high[1])
    plot_band(ax, [0, 1], [0.5, 0.5], low, high)
    assert plot_interval_span(ax, None) is None
    assert plot_interval_span(ax, intervals.interval(0.5, 0.4, 0.6, "test", 2)) is not None
    plt.close(fig)
