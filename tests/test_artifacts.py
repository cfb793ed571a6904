"""Cached steps: reuse, atomicity, interrupted builds, corrupt folders, benchmarks."""

import json

import pytest

from paper_lib.core import artifacts


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
    final = artifacts.step_dir("t", "long", {}, artifacts.code_fingerprint([crash.__module__]))
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
    final = artifacts.step_dir("t", "odd", {}, artifacts.code_fingerprint([__name__]))
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


def _write_steps(folder, a_extra="", b_extra=""):
    """Two cached steps in their own modules: b reads a's output and has a's folder name in its inputs."""
    (folder / "step_a.py").write_text(
        '"""Step a."""\n'
        "from paper_lib.core import artifacts\n\n"
        "def run(profile):\n"
        "    def build(out):\n"
        "        (out / 'a.txt').write_text('a')\n"
        "    return artifacts.cached_step(profile, 'a', {'n': 1}, build)\n" + a_extra
    )
    (folder / "step_b.py").write_text(
        '"""Step b."""\n'
        "from paper_lib.core import artifacts\n"
        "import step_a\n\n"
        "def run(profile):\n"
        "    upstream = step_a.run(profile)\n"
        "    def build(out):\n"
        "        (out / 'b.txt').write_text((upstream / 'a.txt').read_text() + 'b')\n"
        "    return artifacts.cached_step(profile, 'b', {'a': upstream.name}, build)\n" + b_extra
    )


def test_code_change_rebuilds_its_step_and_the_steps_downstream_only(tmp_path, monkeypatch):
    import sys

    monkeypatch.setenv("PAPER_RUNS_DIR", str(tmp_path / "runs"))
    code = tmp_path / "code"
    code.mkdir()
    _write_steps(code)
    monkeypatch.syspath_prepend(str(code))
    for name in ("step_a", "step_b"):
        sys.modules.pop(name, None)
    import step_a
    import step_b

    a1, b1 = step_a.run("t"), step_b.run("t")
    _write_steps(code, b_extra="# b's code changed\n")  # only b's module
    a2, b2 = step_a.run("t"), step_b.run("t")
    assert a2 == a1 and b2 != b1  # a is reused, b rebuilt
    _write_steps(code, a_extra="# a's code changed\n", b_extra="# b's code changed\n")
    a3, b3 = step_a.run("t"), step_b.run("t")
    assert a3 != a1 and b3 not in (b1, b2)  # a rebuilt, and b with it (its inputs name a's folder)
    assert (b3 / "b.txt").read_text() == "ab"
    assert artifacts.manifest(a3)["code"] != artifacts.manifest(a1)["code"]


def test_finished_step_with_a_missing_file_is_rebuilt_with_a_message(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PAPER_RUNS_DIR", str(tmp_path))
    calls = []

    def build(out):
        calls.append(1)
        (out / "sub").mkdir()
        (out / "sub" / "weights.bin").write_bytes(b"x" * 100)

    path = artifacts.cached_step("t", "model", {}, build)
    assert artifacts.manifest(path)["files"] == {"sub/weights.bin": 100}
    (path / "sub" / "weights.bin").unlink()
    assert not artifacts.is_complete(path)
    again = artifacts.cached_step("t", "model", {}, build)
    assert again == path and len(calls) == 2 and (path / "sub" / "weights.bin").is_file()
    assert "weights.bin" in capsys.readouterr().err
    (path / "sub" / "weights.bin").write_bytes(b"x" * 10)  # truncated counts as missing too
    artifacts.cached_step("t", "model", {}, build)
    assert len(calls) == 3


def test_file_fingerprint_follows_content_and_is_hashed_once(tmp_path, monkeypatch):
    import os

    monkeypatch.setenv("PAPER_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setattr(artifacts, "_fingerprints", {})
    corpus = tmp_path / "train.jsonl.gz"
    corpus.write_bytes(b"one")
    hashed = []
    real = artifacts.file_digest
    monkeypatch.setattr(artifacts, "file_digest", lambda path, length=16: hashed.append(path) or real(path, length))
    first = artifacts.file_fingerprint(corpus)
    assert artifacts.file_fingerprint(corpus) == first and len(hashed) == 1  # remembered by size and mtime
    monkeypatch.setattr(artifacts, "_fingerprints", {})
    assert artifacts.file_fingerprint(corpus) == first and len(hashed) == 1  # ... and on disk
    corpus.write_bytes(b"two")  # replaced in place, same size
    os.utime(corpus, ns=(1, 1))
    assert artifacts.file_fingerprint(corpus) != first and len(hashed) == 2
