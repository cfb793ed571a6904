"""Nothing wrong is ever cached or shown as done: each case a hostile user found, at smoke size."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from paper_lib import data, models, pipeline
from paper_lib.core import artifacts
from paper_lib.core.config import load_config
from paper_lib.core.runtime import NonFiniteError

PROJECT_ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------ silent wrong results


def _notebook(path: Path, body: str) -> Path:
    from paper_lib.notebook_tools import write_notebook

    write_notebook([("parameters", 'profile = "smoke"'), ("code", body)], path)
    return path


def test_failed_notebook_leaves_no_stamp_no_output_and_no_figure(smoke_cfg, tmp_path):
    import papermill

    notebooks = tmp_path / "nb"
    notebooks.mkdir()
    out = tmp_path / "executed"
    out.mkdir()
    write = (
        "from paper_lib.core.config import load_config\nfrom paper_lib.plots import save_results\n"
        "cfg = load_config(profile)\nsave_results({'answer': ANSWER}, cfg, '99_probe')\n"
    )
    figure = artifacts.run_dir("smoke") / "figures" / "99_probe.json"
    figure.unlink(missing_ok=True)
    good = _notebook(notebooks / "99_probe.ipynb", write.replace("ANSWER", "1"))
    assert not pipeline.run_notebook(good, "smoke", out)["skipped"]
    assert json.loads(figure.read_text())["data"] == {"answer": 1} and (out / "99_probe.stamp.json").is_file()

    _notebook(good, write.replace("ANSWER", "2") + "raise RuntimeError('boom after writing its numbers')\n")
    with pytest.raises(papermill.PapermillExecutionError, match="boom"):
        pipeline.run_notebook(good, "smoke", out)
    assert json.loads(figure.read_text())["data"] == {"answer": 1}  # the failed run changed no figure
    assert not (out / "99_probe.stamp.json").exists() and not (out / "99_probe.ipynb").exists()
    assert (out / "99_probe.failed.ipynb").is_file()  # kept to read the error
    _notebook(good, write.replace("ANSWER", "3"))
    assert not pipeline.run_notebook(good, "smoke", out)["skipped"]  # nothing claims the failed run was good
    assert json.loads(figure.read_text())["data"] == {"answer": 3}


def test_diverged_training_is_not_cached(smoke_cfg):
    cfg = load_config("smoke", {"pretrain.learning_rate": 1000.0, "data.base_train_tokens": 20000})
    with pytest.raises(NonFiniteError, match="lower the learning rate"):
        models.model_dir(cfg, "babypython")
    runs = artifacts.run_dir("smoke")
    finished = [p for p in runs.glob("model-babypython-*") if artifacts.is_complete(p)]
    assert all(artifacts.manifest(p)["inputs"]["train"]["learning_rate"] != 1000.0 for p in finished)


def test_nan_in_a_step_result_is_never_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("PAPER_RUNS_DIR", str(tmp_path))
    with pytest.raises(artifacts.ArtifactError, match=r"metrics.loss = nan.*not cached"):
        artifacts.cached_step("t", "eval", {}, lambda out: {"metrics": {"loss": float("nan")}})
    assert not [p for p in tmp_path.rglob("eval-*") if artifacts.is_complete(p)]


def test_small_corpus_shrinking_a_mixture_is_a_warning(smoke_cfg, monkeypatch):
    streams = {"babylm": torch.arange(500), "lua": torch.arange(50)}
    monkeypatch.setattr(data.blocks, "token_stream", lambda cfg, d, split, n: streams[d][:n])
    with pytest.warns(data.DataWarning, match=r"lua/train .*has only 50: every domain is cut to 50"):
        blocks = data.mixture_blocks(smoke_cfg, ("babylm", "lua"), "train", 1000, 10)
    assert blocks.shape == (10, 10)


# ------------------------------------------------------------------------------------ paths and profiles


def test_relative_folders_are_made_absolute_for_the_kernel(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PAPER_RUNS_DIR", "relative/runs")
    monkeypatch.setenv("PAPER_DATA_DIR", "relative/data")
    pipeline.absolute_environment()
    assert os.environ["PAPER_RUNS_DIR"] == str(tmp_path / "relative" / "runs")
    assert os.environ["PAPER_DATA_DIR"] == str(tmp_path / "relative" / "data")


def test_profiles_given_as_paths_and_unsafe_names(smoke_cfg, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert pipeline.main(["--profile", str(tmp_path / "p.yaml"), "--only", "none"]) == 2
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "p.yaml").exists()
    custom = tmp_path / "custom.yaml"
    custom.write_text((PROJECT_ROOT / "paper_lib" / "profiles" / "smoke.yaml").read_text().replace("profile: smoke", "profile: mine"))
    assert pipeline.main(["--profile", str(custom), "--only", "no-such-notebook"]) == 2  # ran up to the selection
    assert (artifacts.runs_root() / "mine" / "notebooks").is_dir()
    for bad in ("../../x", "a/b", ".."):
        with pytest.raises(artifacts.ArtifactError, match="cannot name a run folder"):
            artifacts.run_dir(bad)


def test_data_dir_error_suggests_an_absolute_path(monkeypatch):
    monkeypatch.setenv("PAPER_DATA_DIR", "/no/such/folder")
    with pytest.raises(data.DataError, match="realpath"):
        data.local_data_dir(load_config("smoke"))


# ---------------------------------------------------------------------------------- broken checkpoints


def _checkpoints(folder: Path, tiny_hf_model, steps: int = 2) -> None:
    """Real Trainer checkpoints (checkpoint-1 .. checkpoint-steps) of the tiny model."""
    from transformers import Trainer, TrainingArguments

    blocks = torch.randint(0, 97, (16, 8), generator=torch.Generator().manual_seed(0))
    args = TrainingArguments(output_dir=str(folder), max_steps=steps, save_steps=1, per_device_train_batch_size=2,
                             report_to=[], save_strategy="steps", dataloader_pin_memory=False, disable_tqdm=True)
    Trainer(model=tiny_hf_model, args=args, train_dataset=models.train._Blocks(blocks)).train()


def test_broken_checkpoints_fall_back_to_the_previous_one_then_restart(tiny_hf_model, tmp_path, capsys):
    folder = tmp_path / "checkpoints"
    _checkpoints(folder, tiny_hf_model)
    newest = folder / "checkpoint-2" / "optimizer.pt"
    newest.write_bytes(newest.read_bytes()[:100])  # truncated by a kill mid-write
    assert models.train.usable_checkpoint(folder) == folder / "checkpoint-1"
    err = capsys.readouterr().err
    assert "checkpoint-2: optimizer.pt is missing or truncated" in err and "earlier checkpoint-1" in err
    assert not (folder / "checkpoint-2").exists()
    (folder / "checkpoint-1" / "trainer_state.json").unlink()
    assert models.train.usable_checkpoint(folder) is None
    assert "trainer_state.json is missing" in capsys.readouterr().err


def test_resumed_training_reports_the_throughput_of_what_it_trained(tiny_hf_model, tmp_path):
    from paper_lib.core.config import TrainConfig

    _checkpoints(tmp_path / "checkpoints", tiny_hf_model, steps=2)
    train = torch.randint(0, 97, (16, 8), generator=torch.Generator().manual_seed(0))
    cfg = TrainConfig(batch_size=2, epochs=1.0, learning_rate=1e-3, warmup_steps=0, logging_steps=1, save_steps=100,
                      eval_batch_size=2, bf16=False)
    stats = models.train_lm(tiny_hf_model, train, train[:2], cfg, tmp_path, seed=0)
    assert stats["resumed"] and stats["resumed_from_step"] == 2 and stats["train_steps"] == 8
    assert stats["tokens_this_run"] == stats["train_tokens"] * 6 // 8
    assert stats["tokens_per_second"] == pytest.approx(stats["tokens_this_run"] / stats["train_seconds"], rel=0.01)


# -------------------------------------------------------------------------------------- corpora


def _corpus(folder: Path, domains=("babylm", "python", "lua", "tinystories"), n_docs: int = 5) -> Path:
    for domain in domains:
        for split in ("train", "validation"):
            (folder / domain).mkdir(parents=True, exist_ok=True)
            with gzip.open(folder / domain / f"{split}.jsonl.gz", "wt") as handle:
                for i in range(n_docs):
                    handle.write(json.dumps({"text": f"{domain} document {i} " * 20}) + "\n")
    return folder


def test_a_missing_later_corpus_fails_before_any_training(tmp_path, monkeypatch):
    corpus = _corpus(tmp_path / "data", domains=("babylm", "python", "tinystories"))
    cfg = load_config("smoke", {"data.data_dir": str(corpus)})
    monkeypatch.setattr(models.train, "train_lm", lambda *a, **k: pytest.fail("trained before checking corpora"))
    with pytest.raises(data.DataError, match=r"lua/train\.jsonl\.gz"):
        models.model_dir(cfg, "babypython")


def test_too_few_tokens_names_the_domain_and_file(smoke_cfg, monkeypatch):
    monkeypatch.setattr(data.blocks, "token_stream", lambda cfg, d, split, n: torch.arange(13))
    with pytest.raises(data.DataError, match=r"lua/train \(.*lua/train\.jsonl\.gz\): only 13 tokens.*block of 64"):
        data.domain_blocks(smoke_cfg, "lua", "train")


def test_gzip_corruption_inside_the_stream_is_named(tmp_path):
    path = tmp_path / "train.jsonl.gz"
    rng = np.random.default_rng(0)
    lines = [json.dumps({"text": " ".join(map(str, rng.integers(0, 10**6, 50)))}) for _ in range(2000)]
    path.write_bytes(gzip.compress("\n".join(lines).encode()))
    raw = bytearray(path.read_bytes())
    for i in range(len(raw) // 2, len(raw) // 2 + 64):
        raw[i] ^= 0x5A
    path.write_bytes(bytes(raw))
    with pytest.raises(data.DataError, match="gzip"):
        data.read_jsonl_texts(path)



def test_a_deleted_file_of_a_finished_step_is_rebuilt_not_a_bare_error(smoke_cfg, capsys):
    first = data.token_stream(smoke_cfg, "lua", "validation", 2048)
    folder = next(p for p in artifacts.run_dir("smoke").glob("tokens-lua-validation-*") if artifacts.is_complete(p)
                  and artifacts.manifest(p)["inputs"]["max_tokens"] == 2048)
    (folder / "tokens.npy").unlink()
    again = data.token_stream(smoke_cfg, "lua", "validation", 2048)
    assert torch.equal(first, again) and (folder / "tokens.npy").is_file()
    err = capsys.readouterr().err
    assert "tokens.npy" in err and "rebuilding" in err
