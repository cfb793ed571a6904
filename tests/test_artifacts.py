"""Cached steps: reuse, atomicity, interrupted builds, corrupt folders, benchmarks."""

import json

import pytest

from paper_lib import artifacts


def test_step_is_built_once_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("PAPER_RUNS_DIR", str(tmp_path))
    calls = []

    def build(out):
        calls.append(out)
        (out / "result.txt").write_text("42")
        return {"answer": 42}

    first = artifacts.cached_step("t", "step", {"a": 1}, build)
    second = artifacts.cached_step("t", "step", {"a": 1}, build)
    assert first == second and len(calls) == 1
    assert (first / "result.txt").read_text() == "42"
    assert artifacts.manifest(first)["meta"] == {"answer": 42}
    other = artifacts.cached_step("t", "step", {"a": 2}, build)
    assert other != first and len(calls) == 2


def test_failed_build_leaves_no_finished_folder_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setenv("PAPER_RUNS_DIR", str(tmp_path))

    def crash(out):
        (out / "checkpoint").write_text("half done")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        artifacts.cached_step("t", "long", {}, crash)
    final = artifacts.step_dir("t", "long", {})
    assert not final.exists()
    partial = final.with_name(final.name + ".partial")
    assert (partial / "checkpoint").read_text() == "half done"

    def resume(out):
        assert (out / "checkpoint").read_text() == "half done"  # the build sees what the last one left
        (out / "done").write_text("yes")

    path = artifacts.cached_step("t", "long", {}, resume)
    assert path == final and (path / "done").exists() and not partial.exists()


def test_folder_without_manifest_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("PAPER_RUNS_DIR", str(tmp_path))
    final = artifacts.step_dir("t", "odd", {})
    final.mkdir(parents=True)
    with pytest.raises(artifacts.ArtifactError, match="not a finished step"):
        artifacts.cached_step("t", "odd", {}, lambda out: None)


def test_hash_ignores_key_order():
    assert artifacts.stable_hash({"a": 1, "b": [1, 2]}) == artifacts.stable_hash({"b": [1, 2], "a": 1})
    assert artifacts.stable_hash({"a": 1}) != artifacts.stable_hash({"a": 2})


def test_json_write_is_atomic_and_errors_name_the_file(tmp_path):
    path = tmp_path / "x.json"
    artifacts.write_json_atomic(path, {"k": [1, 2]})
    assert json.loads(path.read_text()) == {"k": [1, 2]}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]
    path.write_text("{broken")
    with pytest.raises(artifacts.ArtifactError, match="x.json"):
        artifacts.read_json(path)


def test_benchmarks_accumulate(tmp_path, monkeypatch):
    monkeypatch.setenv("PAPER_RUNS_DIR", str(tmp_path))
    artifacts.record_benchmark("t", "one", {"seconds": 1.5})
    path = artifacts.record_benchmark("t", "two", {"seconds": 2.5})
    data = json.loads(path.read_text())
    assert data["one"]["seconds"] == 1.5 and data["two"]["seconds"] == 2.5
