"""The report: verdict rules, RESULTS.md from synthetic figures, absent and malformed files, numbers traced to inputs."""

from __future__ import annotations

import json
import math
import re
from itertools import pairwise
from pathlib import Path

import pytest

from paper_lib import report
from paper_lib.report import claims as rules
from paper_lib.report import feature_claims, model_claims

PAIRS = [("babypython", "lua"), ("babypython", "tinystories"), ("lua", "luastories"), ("tinystories", "luastories")]


def _write(folder: Path, name: str, data, profile: str = "cpu") -> None:
    (folder / f"{name}.json").write_text(json.dumps({"profile": profile, "data": data}), encoding="utf-8")


def _controls() -> list[dict]:
    """Position/many: fine-tunes keep 0.2137 of features against a ceiling of 0.2671 (80%: differs);
    token/one: 0.0419 against 0.3847 (11%: reproduced); decoder/one: a ceiling under its floor (cannot tell)."""
    rows = []
    for i, (parent, child) in enumerate(PAIRS):
        common = {"parent": parent, "child": child, "threshold": 0.8, "min_support": 2, "seeding": "independent",
                  "sample": f"{parent}+{child}", "shared_init_same_index_matches": 1733 + i,
                  "floor_null_model_share": 0.0113 + i / 1e4, "floor_permuted_share": 0.0071 + i / 1e4}
        rows.append({**common, "method": "position", "assignment": "many", "persisting_share": 0.2137 + i / 1e4,
                     "shared_init_persisting_share": 0.6323 + i / 1e4, "ceiling_share": 0.2671 + i / 1e4,
                     "fraction_of_ceiling": (0.2137 + i / 1e4) / (0.2671 + i / 1e4)})
        rows.append({**common, "method": "token", "assignment": "many", "persisting_share": 0.1289 + i / 1e4,
                     "shared_init_persisting_share": 0.9981 - i / 1e4, "ceiling_share": 0.1571 + i / 1e4,
                     "fraction_of_ceiling": (0.1289 + i / 1e4) / (0.1571 + i / 1e4)})
        rows.append({**common, "method": "token", "assignment": "one", "persisting_share": 0.0419 + i / 1e4,
                     "shared_init_persisting_share": None, "ceiling_share": 0.3847 + i / 1e4,
                     "fraction_of_ceiling": (0.0419 + i / 1e4) / (0.3847 + i / 1e4)})
        rows.append({**common, "method": "decoder", "assignment": "one", "persisting_share": 0.0057,
                     "shared_init_persisting_share": None, "ceiling_share": 0.0063, "fraction_of_ceiling": None,
                     "floor_null_model_share": 0.0094})
    return rows


def _case_rows(concept: str, base_feature: int, matches: dict) -> list[dict]:
    rows = [{"concept": concept, "model": "babypython", "feature": base_feature, "corr": None, "route": "babypython",
             "route_min_corr": None, "matched": True, "label_pearson": 0.7123, "label_f1": 0.6611,
             "best_label_feature": base_feature, "best_label_pearson": 0.7123}]
    for model, (feature, corr, weakest, best) in matches.items():
        route = "babypython -> lua -> luastories" if model == "luastories" else f"babypython -> {model}"
        rows.append({"concept": concept, "model": model, "feature": feature, "corr": corr, "route": route,
                     "route_min_corr": weakest, "matched": weakest >= 0.8, "label_pearson": 0.5321,
                     "label_f1": 0.4432, "best_label_feature": best, "best_label_pearson": 0.6117})
    return rows


def synthetic_figures(folder: Path, profile: str = "cpu", controls: bool = True) -> Path:
    """Every results file the report reads, with distinctive numbers (so a typed number would stand out)."""
    folder.mkdir(parents=True, exist_ok=True)
    _write(folder, "01_training", {"validation": [
        {"domain": "babylm", "loss": 3.1311, "accuracy": 0.4137},
        {"domain": "python", "loss": 3.0877, "accuracy": 0.4219}]}, profile)
    table = []
    for model, accs in {"BabyPython": (0.2113, 0.1217, 0.2927, 0.1345), "Lua": (0.1931, 0.4927, 0.2311, 0.1356),
                        "TinyStories": (0.1767, 0.0881, 0.2522, 0.4981), "LuaStories": (0.1993, 0.1507, 0.2686, 0.2359)}.items():
        for domain, acc in zip(("babylm", "lua", "python", "tinystories"), accs):
            table.append({"model": model, "domain": domain, "accuracy": acc, "loss": 2.0 + 3 * (1 - acc)})
    table = [dict(row, loss=2.4431) if (row["model"], row["domain"]) == ("Lua", "lua") else row for row in table]
    table = [dict(row, loss=2.0517) if (row["model"], row["domain"]) == ("TinyStories", "tinystories") else row
             for row in table]
    _write(folder, "02_model_table", {"models": table}, profile)
    _write(folder, "03_model_table", {"models": table}, profile)
    ts = [0.0, 0.25, 0.5, 0.58, 0.75, 1.0]
    sweep = [{"t": t, "lua_accuracy": 0.4927 - 0.3 * t, "tinystories_accuracy": 0.1356 + 0.35 * t} for t in ts]
    _write(folder, "03_slerp_sweep", {"sweep": sweep, "chosen_t": 0.58, "summary": [
        {"source": "ours", "crossing_t": 0.5471, "lua_falls": True, "lua_worst_rise": 0.0012,
         "tinystories_rises": True, "tinystories_worst_fall": 0.0031},
        {"source": "paper", "crossing_t": 0.4297, "lua_falls": True, "lua_worst_rise": 0.0,
         "tinystories_rises": True, "tinystories_worst_fall": 0.0}]}, profile)
    _write(folder, "04_sae_diagnostics", {"diagnostics": [
        {"model": "BabyPython", "l0": 23.71, "d_sae": 4096}, {"model": "Lua", "l0": 131.4, "d_sae": 4096}]}, profile)
    matching = {"summary": [], "token_categories": [
        {"pair": "babypython -> lua", "group": "persisting", "mode": "position", "formatting_share": 0.6173, "n_features": 517},
        {"pair": "babypython -> lua", "group": "emerging", "mode": "position", "formatting_share": 0.2291, "n_features": 1433},
        {"pair": "lua -> luastories", "group": "persisting", "mode": "position", "formatting_share": 0.3377, "n_features": 709},
        {"pair": "lua -> luastories", "group": "emerging", "mode": "position", "formatting_share": None, "n_features": 0}]}
    if controls:
        matching["controls"] = _controls()
    _write(folder, "05_feature_matching", matching, profile)
    cases = _case_rows("variable_assignment", 271, {"lua": (183, 0.7634, 0.7634, 1319),
                                                    "tinystories": (492, 0.8342, 0.8342, 492),
                                                    "luastories": (271, 0.8407, 0.7634, 1067)})
    cases += _case_rows("python_exception", 1890, {"lua": (69, 0.9617, 0.9617, 69)})
    _write(folder, "06_case_studies", {"summary": cases, "threshold": 0.8, "mode": "position"}, profile)
    _write(folder, "06_variable_assignment", {"correlations": [
        {"snippet": "all", "a": "babypython", "b": "lua", "corr": 0.9137},
        {"snippet": "all", "a": "lua", "b": "tinystories", "corr": 0.9662},
        {"snippet": "Python", "a": "babypython", "b": "lua", "corr": 0.1111}]}, profile)
    _write(folder, "06_python_exception", {"correlations": [
        {"snippet": "all", "a": "babypython", "b": "lua", "corr": 0.9871}]}, profile)
    _write(folder, "07_autointerp", {"summary": [
        {"group": "lua", "label": "Lua features", "mean": 0.4062, "median": 0.4445, "n": 100, "n_scored": 97,
         "backend": "offline", "model": "token-statistics"},
        {"group": "luastories_persisting", "label": "Persisting Lua features in LuaStories", "mean": 0.3111,
         "median": 0.2117, "n": 100, "n_scored": 99, "backend": "offline", "model": "token-statistics"}]}, profile)
    return folder


def _rows(markdown: str) -> dict[str, list[str]]:
    """The RESULTS.md tables as {claim cell: [paper, ours, verdict, why, intervals]}."""
    rows = {}
    for line in markdown.splitlines():
        if line.startswith("| ") and not line.startswith("| claim"):
            cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            rows[cells[0]] = cells[1:]
    return rows


def _row(rows: dict, fragment: str) -> list[str]:
    found = [cells for claim, cells in rows.items() if fragment in claim]
    assert len(found) == 1, f"{len(found)} rows match {fragment!r}: {list(rows)}"
    return found[0]


# ---------------------------------------------------------------- formatting and rules


def test_numbers_are_formatted_into_words():
    assert rules.percent(0.31592) == "31.6%" and rules.percent(0.5, 0) == "50%"
    assert rules.r_value(0.7633) == "0.76" and rules.number(0.25094, 3) == "0.251"
    assert rules.count(2048) == "2,048" and rules.n_of(3, 4) == "3 of 4"
    assert rules.listing(["a", "b", "c"]) == "a, b and c" and rules.listing(["a"]) == "a"
    assert rules.telling_digits(0.7996, 0.8) == 4 and rules.telling_digits(0.7634, 0.8) == 2
    for undefined in (None, float("nan"), float("inf"), "0.3", True):
        assert rules.percent(undefined) == rules.r_value(undefined) == rules.count(undefined) == "n/a"


def test_direction_rule():
    assert rules.direction_verdict(True, True, "x").verdict == report.REPRODUCED
    assert rules.direction_verdict(False, False, "x").verdict == report.REPRODUCED
    assert rules.direction_verdict(False, True, "x").verdict == report.DIFFERS
    assert rules.direction_verdict(True, None, "x").verdict == report.NOT_COMPARABLE
    assert rules.direction_verdict(None, True, "x").verdict == report.CANNOT_TELL


def test_numeric_rule_states_its_tolerance_and_refuses_other_scales():
    assert rules.numeric_verdict(0.4151, 0.4190, 0.01).verdict == report.REPRODUCED
    far = rules.numeric_verdict(0.2310, 0.4190, 0.01)
    assert far.verdict == report.DIFFERS and "0.0100" in far.why
    gaps = ["hidden size 256 (paper 512)", "vocabulary 8,192 (paper 32,000)", "data local (paper hub)"]
    other = rules.numeric_verdict(0.4190, 0.4190, 0.01, scale_gaps=gaps)
    assert other.verdict == report.NOT_COMPARABLE and "hidden size 256" in other.why and "1 more" in other.why
    assert rules.numeric_verdict(None, 0.4190, 0.01).verdict == report.CANNOT_TELL


def test_persistence_rules_read_shares_against_ceiling_and_floor():
    assert rules.few_verdict(0.0123).verdict == report.REPRODUCED
    assert rules.few_verdict(0.9985).verdict == report.DIFFERS
    assert rules.persistence_verdict(0.05, 0.40, 0.01).verdict == report.REPRODUCED  # 12% of the ceiling
    survives = rules.persistence_verdict(0.32, 0.40, 0.01)
    assert survives.verdict == report.DIFFERS and "80.0% of the ceiling" in survives.why
    assert rules.persistence_verdict(0.008, 0.40, 0.01).verdict == report.REPRODUCED  # at the floor
    assert rules.persistence_verdict(0.005, 0.006, 0.009).verdict == report.CANNOT_TELL  # ceiling under the floor
    assert rules.persistence_verdict(None, 0.40, 0.01).verdict == report.CANNOT_TELL


def test_threshold_mostly_range_rules():
    assert rules.threshold_verdict(0.99, 0.8, paper_persists=False).verdict == report.DIFFERS  # it did not disappear
    assert rules.threshold_verdict(0.42, 0.8, paper_persists=False).verdict == report.REPRODUCED
    assert rules.threshold_verdict(0.83, 0.8, paper_persists=True).verdict == report.REPRODUCED
    assert rules.threshold_verdict(None, 0.8, paper_persists=True).verdict == report.CANNOT_TELL
    just_under = rules.threshold_verdict(0.79962, 0.8, paper_persists=False)
    assert just_under.verdict == report.REPRODUCED and "r = 0.7996 is below" in just_under.why
    assert rules.mostly_verdict(0.61, 0.23).verdict == report.REPRODUCED
    assert rules.mostly_verdict(0.38, 0.23).verdict == report.DIFFERS  # above the others, but no majority
    assert rules.mostly_verdict(0.61, 0.72).verdict == report.DIFFERS
    assert rules.mostly_verdict(0.61, None).verdict == report.REPRODUCED
    assert rules.range_verdict(19.5, 10, 100).verdict == report.REPRODUCED
    assert rules.range_verdict(131.4, 10, 100).verdict == report.DIFFERS


def _interval(value, low, high, method="bootstrap over 100 features (percentile, 2,000 resamples)"):
    return {"value": value, "low": low, "high": high, "confidence": 0.95, "method": method, "n": 100}


def test_rules_read_intervals_and_say_cannot_tell_when_they_straddle():
    # a share: wholly below the cut, wholly above, straddling
    assert rules.few_verdict(_interval(0.30, 0.27, 0.33)).verdict == rules.REPRODUCED
    assert rules.few_verdict(_interval(0.55, 0.51, 0.59)).verdict == rules.DIFFERS
    straddle = rules.few_verdict(_interval(0.48, 0.45, 0.52))
    assert straddle.verdict == rules.CANNOT_TELL and "[45.0%, 52.0%]" in straddle.why
    # persistence against the ceiling reads the fraction's interval
    args = (_interval(0.2, 0.19, 0.21), _interval(0.4, 0.38, 0.42), 0.05)
    assert rules.persistence_verdict(*args, _interval(0.5, 0.45, 0.55)).verdict == rules.CANNOT_TELL
    assert rules.persistence_verdict(*args, _interval(0.5, 0.51, 0.55)).verdict == rules.DIFFERS
    assert rules.persistence_verdict(*args, _interval(0.4, 0.35, 0.45)).verdict == rules.REPRODUCED
    # a best-match r against the threshold
    assert rules.threshold_verdict(_interval(0.82, 0.78, 0.86), 0.8, False).verdict == rules.CANNOT_TELL
    assert rules.threshold_verdict(_interval(0.94, 0.91, 0.96), 0.8, False).verdict == rules.DIFFERS
    assert rules.threshold_verdict(_interval(0.70, 0.62, 0.77), 0.8, False).verdict == rules.REPRODUCED
    # a range, a number with a resolution, a direction, a majority
    assert rules.range_verdict(_interval(12.0, 9.0, 15.0), 10, 100).verdict == rules.CANNOT_TELL
    assert rules.range_verdict(_interval(12.0, 11.0, 13.0), 10, 100).verdict == rules.REPRODUCED
    assert rules.range_verdict(_interval(8.0, 7.0, 9.0), 10, 100).verdict == rules.DIFFERS
    assert rules.numeric_verdict(_interval(0.36, 0.33, 0.40), 0.43, 0.05).verdict == rules.REPRODUCED
    assert rules.numeric_verdict(_interval(0.36, 0.33, 0.37), 0.43, 0.05).verdict == rules.DIFFERS
    assert rules.sign_verdict(_interval(0.1, -0.01, 0.2), True, "higher").verdict == rules.CANNOT_TELL
    assert rules.sign_verdict(_interval(0.1, 0.01, 0.2), True, "higher").verdict == rules.REPRODUCED
    assert rules.sign_verdict(_interval(-0.1, -0.2, -0.01), True, "higher").verdict == rules.DIFFERS
    assert rules.mostly_verdict(_interval(0.6, 0.55, 0.65), 0.4, difference=_interval(0.2, -0.01, 0.4)).verdict \
        == rules.CANNOT_TELL
    assert rules.mostly_verdict(_interval(0.6, 0.55, 0.65), 0.4, difference=_interval(0.2, 0.1, 0.3)).verdict \
        == rules.REPRODUCED
    assert rules.mostly_verdict(_interval(0.45, 0.40, 0.49), 0.2).verdict == rules.DIFFERS
    # formatting and the record of how intervals were made
    assert rules.with_interval(_interval(0.285, 0.266, 0.304), rules.percent) == "28.5% [26.6%, 30.4%]"
    seeds = {**_interval(0.285, 0.28, 0.29, "range over 3 draws of the SAE seeds"), "confidence": None}
    assert rules.with_interval(seeds, rules.percent) == "28.5% (seeds 28.0%–29.0%)"
    assert rules.envelope(_interval(0.5, 0.45, 0.55), seeds)["low"] == 0.28
    assert rules.methods_of([{"a": _interval(1, 0, 2)}, seeds, _interval(1, 0, 2)]) == [  # counts left out, deduplicated
        "bootstrap over the features (percentile, 2,000 resamples)", "range over the draws of the SAE seeds"]


def test_results_use_the_intervals_in_the_figures(tmp_path):
    """With intervals in the saved JSON, RESULTS.md shows them, names their method, and a ceiling fraction whose
    interval straddles the cut is 'cannot tell' even where its point value is above the cut."""
    folder = synthetic_figures(tmp_path / "figures")
    path = folder / "05_feature_matching.json"
    payload = json.loads(path.read_text())
    for row in payload["data"]["controls"]:
        if (row["method"], row["assignment"]) == ("position", "many"):  # point fraction 0.80: differs
            row["persisting_share_interval"] = _interval(row["persisting_share"], 0.1, 0.3)
            row["fraction_of_ceiling_interval"] = _interval(row["fraction_of_ceiling"], 0.41, 0.93)
    path.write_text(json.dumps(payload))
    rows = _rows(report.build_results(folder))
    cells = _row(rows, "(position, threshold matches)")
    assert cells[2] == "**cannot tell at this size**", cells
    assert "[10.0%, 30.0%]" in cells[1] and "bootstrap over the features" in cells[4]
    assert _row(rows, "(token, one-to-one assignment)")[4] == "none"  # no interval saved: said so


def test_combined_verdict_of_a_general_claim():
    yes, no = report.Verdict(report.REPRODUCED, "a"), report.Verdict(report.DIFFERS, "b")
    assert report.combine([yes, yes]).verdict == report.REPRODUCED
    mixed = report.combine([yes, no], ["A", "B"])
    assert mixed.verdict == report.DIFFERS and "1 of 2" in mixed.why and "B: b" in mixed.why
    assert report.combine([]).verdict == report.NOT_RUN


def test_claim_accepts_only_known_verdicts():
    with pytest.raises(ValueError, match="verdict"):
        report.Claim("x", "Figure 2", "s", "p", "o", "looks fine", "r")


# ---------------------------------------------------------------- RESULTS.md


def test_results_from_synthetic_figures(tmp_path):
    text = report.build_results(synthetic_figures(tmp_path / "figures"))
    assert "**Profile:** `cpu`" in text and "Not the paper's scale" in text
    rows = _rows(text)
    assert _row(rows, "BabyPython's validation")[2] == "**not comparable**"
    assert _row(rows, "more accurate on its own domain")[2] == "**reproduced**"
    crossing = _row(rows, "cross near the middle")
    assert crossing[2] == "**reproduced**" and "0.250" in crossing[3]  # within the sweep's spacing
    assert _row(rows, "tens of active features")[2] == "**differs**"  # Lua's L0 131.4
    released = _row(rows, "(the released protocol)")
    assert released[2] == "**differs**" and "99.8% (1,733 matched at the parent's own index)" in released[1]
    assert _row(rows, "(position, threshold matches)")[2] == "**differs**"  # 80% of the ceiling
    assert _row(rows, "(token, one-to-one assignment)")[2] == "**reproduced**"
    assert _row(rows, "(decoder, one-to-one assignment)")[2] == "**cannot tell at this size**"
    assert _row(rows, "formatting and whitespace (position")[2] == "**differs**"  # 33.8% in Lua → LuaStories
    assignment = _row(rows, "variable-assignment")
    assert assignment[2] == "**differs**" and "1 of 3" in assignment[1] and "#1319" in assignment[3]
    exception = _row(rows, "Python-exception")
    assert exception[2] == "**differs**" and "0.96" in exception[1] and "0.53" in exception[3]
    assert _row(rows, "explanation scores")[2] == "**not comparable**"


def test_paper_profile_compares_model_cards_within_tolerance(tmp_path):
    rows = _rows(report.build_results(synthetic_figures(tmp_path / "figures", profile="paper")))
    assert _row(rows, "BabyPython's validation")[2] == "**reproduced**"  # mean of the domains: 3.1094, 0.4178
    assert _row(rows, "Lua fine-tune's")[2] == "**reproduced**"
    tiny = _row(rows, "TinyStories fine-tune's")
    assert tiny[2] == "**differs**" and "accuracy: the paper's 0.5196 lies more than 0.0100 from ours, 0.4981" in tiny[3]
    assert "**Profile:** `paper`" in report.build_results(tmp_path / "figures")


def test_absent_controls_and_files_are_not_run(tmp_path):
    folder = synthetic_figures(tmp_path / "figures", controls=False)
    (folder / "07_autointerp.json").unlink()
    rows = _rows(report.build_results(folder))
    for fragment in ("(the released protocol)", "against ceiling and floor"):
        cells = _row(rows, fragment)
        assert cells[2] == "**not run**" and "'controls'" in cells[3]
    assert _row(rows, "explanation scores")[2] == "**not run**"
    assert "07_autointerp.json is absent" in _row(rows, "explanation scores")[3]
    empty = report.build_results(tmp_path / "nothing")
    assert "nothing has been run" in empty and {c[2] for c in _rows(empty).values()} == {"**not run**"}


def test_malformed_json_is_an_error_naming_the_file(tmp_path):
    folder = synthetic_figures(tmp_path / "figures")
    (folder / "03_slerp_sweep.json").write_text('{"profile": "cpu", "data": {', encoding="utf-8")
    with pytest.raises(report.ReportError, match="03_slerp_sweep.json"):
        report.build_results(folder)
    _write(folder, "03_slerp_sweep", {"summary": "not a table"})
    with pytest.raises(report.ReportError, match="03_slerp_sweep.json.*list of records"):
        report.build_results(folder)
    synthetic_figures(folder)
    _write(folder, "05_feature_matching", {"controls": [{"parent": "babypython", "child": "lua"}]})
    with pytest.raises(report.ReportError, match="05_feature_matching.json.*'method'"):
        report.build_results(folder)
    (folder / "05_feature_matching.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(report.ReportError, match="05_feature_matching.json.*'profile'"):
        report.build_results(folder)


def test_write_results_is_atomic_and_can_write_elsewhere(tmp_path):
    folder = synthetic_figures(tmp_path / "figures")
    path = report.write_results(folder)
    assert path == folder / "RESULTS.md" and path.read_text(encoding="utf-8") == report.build_results(folder)
    staged = report.write_results(folder, tmp_path / "staging")
    assert staged.read_text(encoding="utf-8") == path.read_text(encoding="utf-8")
    assert not [p for p in (*folder.iterdir(), *staged.parent.iterdir()) if p.name.startswith(".")]


def test_pipeline_writes_results_into_every_figures_folder(tmp_path, monkeypatch):
    from paper_lib import pipeline
    from paper_lib.plots.style import final_dirs

    monkeypatch.setenv("PAPER_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("PAPER_FIGURES_DIR", str(tmp_path / "published"))
    targets = final_dirs("cpu")
    for target in targets.values():
        synthetic_figures(target)
    (tmp_path / "notebooks").mkdir()
    pipeline.write_results_report("cpu", tmp_path / "notebooks")
    assert sorted(targets) == ["published", "run"]
    for target in targets.values():
        assert (target / "RESULTS.md").read_text(encoding="utf-8") == report.build_results(target)
    assert not list((tmp_path / "notebooks").iterdir())  # the staging folder is gone


def test_a_feature_with_no_match_cannot_be_judged(tmp_path):
    folder = synthetic_figures(tmp_path / "figures")
    cases = json.loads((folder / "06_case_studies.json").read_text())["data"]
    for row in cases["summary"]:
        if (row["concept"], row["model"]) == ("python_exception", "lua"):
            row.update(feature=-1, corr=None, route_min_corr=None, matched=False, label_pearson=None)
    _write(folder, "06_case_studies", cases)
    exception = _row(_rows(report.build_results(folder)), "Python-exception")
    assert exception[2] == "**cannot tell at this size**" and "Lua: no match" in exception[1]


def test_matching_findings_from_the_data_a_notebook_saved(tmp_path):
    from paper_lib.core.config import load_config

    folder = synthetic_figures(tmp_path / "figures")
    data = json.loads((folder / "05_feature_matching.json").read_text())["data"]
    text = report.matching_findings(data, load_config("cpu"))
    assert text.endswith(report.section_markdown(folder, "05")) and "Figure 2" in text and "ceiling" in text
    assert text.startswith("**Persistence beside its controls**")
    with pytest.raises(report.ReportError, match="05_feature_matching.json.*'method'"):
        report.matching_findings({"controls": [{"parent": "lua"}]}, load_config("cpu"))


def test_section_markdown_for_a_notebook(tmp_path):
    folder = synthetic_figures(tmp_path / "figures")
    text = report.section_markdown(folder, "06")
    assert text.count("**Verdict:") == 2 and "Figure 4" in text and "#69" in text
    with pytest.raises(ValueError, match="section"):
        report.section_markdown(folder, "99")


# ---------------------------------------------------------------- every number comes from the inputs


NUMBER = re.compile(r"(?<![\w.\-#])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?%?(?!\w)")


def _leaves(obj) -> list[float]:
    if isinstance(obj, dict):
        return [v for value in obj.values() for v in _leaves(value)]
    if isinstance(obj, list):
        return [v for value in obj for v in _leaves(value)]
    return [float(obj)] if isinstance(obj, (int, float)) and not isinstance(obj, bool) else []


def _allowed(folder: Path, profile: str) -> list[float]:
    from paper_lib.core.config import load_config

    values = [v for path in folder.glob("*.json") for v in _leaves(json.loads(path.read_text())["data"])]
    values += [v for name in (profile, "paper") for v in _leaves(load_config(name).model_dump())]
    values += [*_leaves(model_claims.PAPER_CARDS), model_claims.PAPER_D_SAE, *model_claims.L0_RANGE,
               model_claims.ACCURACY_TOLERANCE, model_claims.LOSS_TOLERANCE,
               rules.FEW_CUT, rules.CEILING_CUT, rules.MOSTLY_CUT, feature_claims.RELEASED_MIN_SUPPORT]
    ts = sorted(row["t"] for row in json.loads((folder / "03_slerp_sweep.json").read_text())["data"]["sweep"])
    values += [b - a for a, b in pairwise(ts)]  # the crossing's tolerance: the sweep's spacing
    return values + list(range(11))  # counts: "n of N" pairs, models and settings


def _untraced(text: str, allowed: list[float]) -> list[str]:
    """Numbers in ``text`` that no allowed value rounds to (at the digits shown; percentages as shares)."""
    missing = []
    for token in NUMBER.findall(text):
        digits = len(token.rstrip("%").split(".")[1]) if "." in token else 0
        shown = float(token.rstrip("%").replace(",", ""))
        scale = 100 if token.endswith("%") else 1
        if not any(math.isclose(round(scale * v, digits), shown, abs_tol=1e-9) for v in allowed):
            missing.append(token)
    return missing


@pytest.mark.parametrize("profile", ["cpu", "paper"])
def test_every_rendered_number_comes_from_the_inputs(tmp_path, profile):
    folder = synthetic_figures(tmp_path / "figures", profile=profile)
    allowed = _allowed(folder, profile)
    rows = _rows(report.build_results(folder))
    assert rows
    if profile == "paper":  # the base model's card is compared as the mean over its two domains
        allowed += [(3.1311 + 3.0877) / 2, (0.4137 + 0.4219) / 2]
    for claim, (_, ours, _, why, _) in rows.items():
        assert not _untraced(ours + " " + why, allowed), f"{claim}: {_untraced(ours + ' ' + why, allowed)}"
    assert _untraced("ours is 0.5723, 61.9%", allowed) == ["0.5723", "61.9%"]  # the check sees typed numbers
