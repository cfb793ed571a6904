"""Models: HF <-> TransformerLens equivalence, evaluation, cached and atomic artifacts."""

import pytest
import torch

from paper_lib import models
from paper_lib.core import artifacts


def test_hooked_transformer_matches_hf_logits(tiny_hf_model, tiny_hooked):
    tokens = torch.randint(0, 97, (3, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        hf_logits = tiny_hf_model(tokens).logits
        tl_logits = tiny_hooked(tokens)
    assert (hf_logits - tl_logits).abs().max().item() < 1e-4
    _, cache = tiny_hooked.run_with_cache(tokens, names_filter="blocks.0.mlp.hook_post")
    assert cache["blocks.0.mlp.hook_post"].shape == (3, 40, 64)


def test_evaluate_lm_counts_correct_predictions(tiny_hf_model, plus_one_lm):
    blocks = torch.tensor([[0, 1, 2, 3], [4, 5, 9, 9]])
    metrics = models.evaluate_lm(plus_one_lm, blocks, batch_size=1)
    assert metrics["accuracy"] == pytest.approx(4 / 6)  # 3 of 3 in the first block, 1 of 3 (5->6 no, 9->0 no) in the second
    both = models.evaluate_lm(tiny_hf_model, torch.randint(0, 97, (4, 16)), batch_size=3)
    assert 0 <= both["accuracy"] <= 1 and both["loss"] > 0


def test_trained_model_is_reused_not_retrained(smoke_cfg):
    path = models.model_dir(smoke_cfg, "babypython")
    assert artifacts.is_complete(path)
    stamp = (path / "manifest.json").stat().st_mtime_ns
    assert models.model_dir(smoke_cfg, "babypython") == path
    assert (path / "manifest.json").stat().st_mtime_ns == stamp
    assert not path.with_name(path.name + ".partial").exists()
    stats = models.training_stats(smoke_cfg, "babypython")
    assert stats["train_tokens"] > 0 and stats["tokens_per_second"] > 0


def test_training_is_deterministic_even_from_inside_inference_mode(smoke_cfg, tmp_path, monkeypatch):
    reference = models.load_lm(smoke_cfg, "babypython")
    monkeypatch.setenv("PAPER_RUNS_DIR", str(tmp_path))
    with torch.inference_mode():  # models train on first use, whatever the caller's autograd context
        again = models.load_lm(smoke_cfg, "babypython")
    for (name, a), (_, b) in zip(reference.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name


def test_finetuned_models_improve_on_their_domain(smoke_cfg):
    table = models.model_table(smoke_cfg, ["babypython", "lua", "tinystories"])
    acc = table.pivot(index="model", columns="domain", values="accuracy")
    # Even the tiny smoke fine-tunes move towards their domain; the cpu-profile gains are reported separately.
    assert acc.loc["Lua", "lua"] > acc.loc["BabyPython", "lua"]
    assert acc.loc["TinyStories", "tinystories"] > acc.loc["BabyPython", "tinystories"]


def test_corrupt_checkpoint_gives_a_clear_error(smoke_cfg, tmp_path):
    import shutil

    path = models.model_dir(smoke_cfg, "babypython")
    copy = tmp_path / "corrupt-copy"  # outside the shared run folder, which other tests read

    shutil.copytree(path, copy)
    (copy / "model" / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(RuntimeError, match="corrupt: delete"):
        models.load_hf(copy)


def test_unknown_model_name(smoke_cfg):
    with pytest.raises(ValueError, match="unknown model 'gpt2'"):
        models.model_dir(smoke_cfg, "gpt2")
