"""The crosscoder (``paper_lib.crosscoder``) on constructed activations where the right answer is known: latents in
one model only are found exclusive, shared ones shared, latent scaling tells them apart, and one model against
itself gives only shared latents."""

import numpy as np
import pytest
import torch

from paper_lib.crosscoder import (
    BatchTopKCrosscoder, class_counts, evaluate, latent_classes, latent_scaling, relative_norms, train_crosscoder,
)

D, N_SHARED, N_PARENT, N_CHILD = 32, 40, 12, 12


@pytest.fixture(autouse=True)
def one_thread():
    """Small matrices: one thread is several times faster than two contending ones."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _directions(n: int, generator: torch.Generator) -> torch.Tensor:
    d = torch.randn(n, D, generator=generator)
    return d / d.norm(dim=1, keepdim=True)


class Constructed:
    """Sparse true features: ``N_SHARED`` with the same direction in both models, ``N_PARENT`` in the parent's
    activations only and ``N_CHILD`` in the child's only; about three active per token."""

    def __init__(self, same: bool = False):
        g = torch.Generator().manual_seed(1)
        self.shared, self.parent, self.child = _directions(N_SHARED, g), _directions(N_PARENT, g), _directions(N_CHILD, g)
        self.same = same  # the child's activations are the parent's (one model against itself)

    def batches(self, seed: int, batch: int = 256):
        g = torch.Generator().manual_seed(seed)
        n = N_SHARED + N_PARENT + N_CHILD
        while True:
            on = (torch.rand(batch, n, generator=g) < 3 / n) * torch.rand(batch, n, generator=g) * 2
            common = on[:, :N_SHARED] @ self.shared
            parent = common + on[:, N_SHARED:N_SHARED + N_PARENT] @ self.parent
            child = parent if self.same else common + on[:, N_SHARED + N_PARENT:] @ self.child
            yield torch.stack([parent, child], dim=1)

    def held_out(self, n: int = 20):
        it = self.batches(seed=99)
        return [next(it) for _ in range(n)]


def _trained(data: Constructed) -> BatchTopKCrosscoder:
    crosscoder = BatchTopKCrosscoder(D, 128, k=4, seed=0)
    train_crosscoder(crosscoder, data.batches(seed=0), n_steps=1500, lr=3e-3, dead_after_tokens=20_000)
    return crosscoder


def _best_latents(crosscoder: BatchTopKCrosscoder, truth: torch.Tensor, model: int) -> tuple[np.ndarray, np.ndarray]:
    directions = torch.nn.functional.normalize(crosscoder.W_dec_FMD.detach()[:, model], dim=1)
    cos = directions @ truth.T
    return cos.argmax(dim=0).numpy(), cos.max(dim=0).values.numpy()


def test_exclusive_and_shared_latents_are_found_and_latent_scaling_separates_them():
    data = Constructed()
    crosscoder = _trained(data)
    found = evaluate(crosscoder, data.held_out())
    assert min(found["explained_variance"]) > 0.9
    assert 2 < found["mean_l0"] < 6  # the inference threshold keeps about k = 4 latents a token
    relative = relative_norms(crosscoder)
    classes = latent_classes(relative, found["live"])
    for truth, model, expected in ((data.parent, 0, "parent_only"), (data.child, 1, "child_only")):
        latents, cosine = _best_latents(crosscoder, truth, model)
        recovered = cosine > 0.9
        assert recovered.mean() >= 0.75, cosine
        # every recovered feature on its model's side, and nearly all inside Minder et al.'s exclusive band
        side = relative[latents[recovered]]
        assert ((side < 0.25) if model == 0 else (side > 0.75)).all(), side
        assert (classes[latents[recovered]] == expected).mean() >= 0.9, side
    counts = class_counts(classes)
    assert counts["parent_only"] >= 9 and counts["child_only"] >= 9 and counts["shared"] >= N_SHARED * 0.75
    # a child-only latent's direction is absent from the parent; a shared one is present in both at the same scale
    exclusive = np.flatnonzero(classes == "child_only")
    scaled = latent_scaling(crosscoder, data.held_out(), exclusive, present=1)
    assert np.abs(scaled["nu_reconstruction"]).max() < 0.2 and np.abs(scaled["nu_error"]).max() < 0.2
    shared = np.flatnonzero(classes == "shared")
    scaled = latent_scaling(crosscoder, data.held_out(), shared, present=1)
    assert np.median(scaled["nu_reconstruction"]) == pytest.approx(1.0, abs=0.1)


def test_one_model_against_itself_has_only_shared_latents():
    data = Constructed(same=True)
    crosscoder = _trained(data)
    found = evaluate(crosscoder, data.held_out())
    classes = latent_classes(relative_norms(crosscoder), found["live"])
    live = classes != "dead"
    assert live.sum() >= N_SHARED + N_PARENT
    assert (classes[live] == "shared").mean() >= 0.95
    assert found["explained_variance"][0] == pytest.approx(found["explained_variance"][1], abs=1e-3)


def test_batch_topk_keeps_k_per_token_in_training_and_the_threshold_after():
    crosscoder = BatchTopKCrosscoder(D, 64, k=3, seed=0)
    x = next(Constructed().batches(seed=5, batch=50))
    acts = crosscoder.encode(x, batch_topk=True)
    assert int((acts > 0).sum()) == 3 * 50
    with pytest.raises(RuntimeError, match="no inference threshold"):
        crosscoder.eval()(x)
    crosscoder.threshold.fill_(0.0)
    assert torch.equal(crosscoder.encode(x, batch_topk=False), crosscoder.pre_activations(x))
    again = BatchTopKCrosscoder.from_state(crosscoder.config(), crosscoder.state_dict())
    assert torch.equal(again(x), crosscoder.eval()(x))


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="k <= d_latents"):
        BatchTopKCrosscoder(D, 8, k=9)
    crosscoder = BatchTopKCrosscoder(D, 16, k=2)
    with pytest.raises(ValueError, match=r"\[batch, 2, 32\]"):
        crosscoder.encode(torch.zeros(4, D))
    with pytest.raises(ValueError, match="n_steps"):
        train_crosscoder(crosscoder, Constructed().batches(seed=0), n_steps=1)


def test_a_registry_pair_crosscoder_on_smoke(smoke_cfg):
    """The cached step of a registry pair: trained once, every latent classed, latent scaling for the exclusive ones,
    and the weights reload to the same reconstructions."""
    from paper_lib.core.artifacts import manifest
    from paper_lib.crosscoder import crosscoder_dir, latent_table, load_crosscoder, paired_activations
    from paper_lib.matching.pairs import sample_blocks
    from paper_lib.models import load_hooked_lm

    path = crosscoder_dir(smoke_cfg, "babypython", "lua")
    assert crosscoder_dir(smoke_cfg, "babypython", "lua") == path  # cached
    meta = manifest(path)["meta"]
    assert meta["d_latents"] == 128 * smoke_cfg.sae.expansion_factor and meta["domains"] == ["babylm", "python", "lua"]
    assert sum(meta["classes"].values()) == meta["d_latents"]
    assert all(0 < v <= 1 for v in meta["explained_variance"].values()), meta["explained_variance"]
    table = latent_table(smoke_cfg, "babypython", "lua")
    assert ((table["relative_norm"] >= 0) & (table["relative_norm"] <= 1)).all()
    assert ((table["classes"] == "dead") == ~table["live"]).all()
    for label in ("child_only", "parent_only"):
        if (table["classes"] == label).any():
            assert np.isfinite(table[f"{label}_nu_reconstruction"]).all()
    crosscoder, config = load_crosscoder(smoke_cfg, "babypython", "lua")
    models = [load_hooked_lm(smoke_cfg, name) for name in ("babypython", "lua")]
    x = next(paired_activations(models, sample_blocks(smoke_cfg, tuple(meta["domains"]))[:4], smoke_cfg.sae.hook_name,
                                config["scales"]))
    assert x.shape == (4 * smoke_cfg.matching.context_size, 2, 128)
    assert torch.isfinite(crosscoder(x)).all()
    with pytest.raises(Exception, match="unknown model .python."):
        crosscoder_dir(smoke_cfg, "babypython", "python")


def test_one_registry_model_against_itself_calls_its_live_latents_shared(smoke_cfg):
    """The control at smoke size: one model's activations twice. (At smoke size 50 steps leave every latent near its
    initial relative norm of 0.5, so this mostly checks the plumbing; the constructed test above checks the method.)"""
    from paper_lib.core.artifacts import manifest
    from paper_lib.crosscoder import crosscoder_dir, latent_table

    control = smoke_cfg.crosscoder.control  # the one notebook 11 trains: built once per test session
    meta = manifest(crosscoder_dir(smoke_cfg, control, control))["meta"]
    table = latent_table(smoke_cfg, control, control)
    live = table["live"]
    shared = float((table["classes"][live] == "shared").mean())
    print(f"{control} against itself: {shared:.3f} of {int(live.sum())} live latents shared")
    assert shared >= 0.95
    assert meta["scales"][0] == meta["scales"][1]  # the same activations on both sides


def test_the_crosscoder_beside_correlation_matching_on_smoke(smoke_cfg):
    """Every live latent gets exactly one correlation verdict; mapped partners really reach the threshold; the
    case-study features are looked up in both BabyPython pairs."""
    from paper_lib.crosscoder import agreement_table, case_study_verdicts, latent_verdicts, pair_table

    # one pair (the one the test above trained; the pairs are not part of a crosscoder's key), to keep the test short
    smoke_cfg = smoke_cfg.model_copy(update={"crosscoder": smoke_cfg.crosscoder.model_copy(
        update={"pairs": [["babypython", "lua"]]})})
    verdicts = latent_verdicts(smoke_cfg, "babypython", "lua")
    threshold = smoke_cfg.matching.threshold
    assert (verdicts.loc[verdicts["child_feature"] >= 0, "child_r"] >= threshold).all()
    assert (verdicts.loc[verdicts["verdict"] == "unmapped", ["parent_feature", "child_feature"]] == -1).all().all()
    agreement = agreement_table(smoke_cfg)
    assert len(agreement) == len(smoke_cfg.crosscoder.pairs) * 4
    live = agreement.groupby(["parent", "child"])["latents"].sum()
    for (parent, child), n in live.items():
        assert n == int((latent_verdicts(smoke_cfg, parent, child)["class"] != "dead").sum())
    shares = agreement["agreement_share"].dropna()
    assert shares.between(0, 1).all()
    pairs = pair_table(smoke_cfg)
    assert pairs[["parent_explained_variance", "child_explained_variance"]].le(1).all().all()
    cases = case_study_verdicts(smoke_cfg)
    assert len(cases) == 2 and set(cases["child"]) == {"lua"} and set(cases["concept"]) == {"variable_assignment",
                                                                                         "python_exception"}
    assert cases.loc[cases["mapped"], "r"].ge(threshold).all()


def test_disagreements_are_mapped_latents_whose_verdict_is_not_their_class_prediction():
    import pandas as pd

    from paper_lib.crosscoder import disagreements

    verdicts = pd.DataFrame({"latent": range(6),
                             "class": ["shared", "shared", "child_only", "parent_only", "between", "shared"],
                             "verdict": ["persisting", "emerging", "persisting", "disappearing", "emerging", "unmapped"]})
    assert disagreements(verdicts)["latent"].tolist() == [1, 2]  # "between" predicts nothing; unmapped is no verdict


def test_disagreement_examples_show_each_latent_where_it_fires_most(smoke_cfg):
    """Each example disagrees, sits on the block holding the latent's largest activation on the pair's sample, and
    carries the latent's and both best partners' activations on that block's tokens, read from the stored samples."""
    import scipy.sparse as sp

    from paper_lib.crosscoder import EXPECTED, crosscoder_dir, disagreement_examples, disagreements, latent_verdicts
    from paper_lib.crosscoder.store import SAMPLE_CODES
    from paper_lib.plots.crosscoder import disagreement_figure

    examples = disagreement_examples(smoke_cfg, "babypython", "lua", per_kind=2)
    found = disagreements(latent_verdicts(smoke_cfg, "babypython", "lua"))
    kinds = found.groupby(["class", "verdict"]).size()
    assert len(examples) == int(kinds.clip(upper=2).sum())
    codes = sp.load_npz(crosscoder_dir(smoke_cfg, "babypython", "lua") / SAMPLE_CODES).tocsc()
    width = smoke_cfg.matching.context_size
    for example in examples:
        assert EXPECTED[example["class"]] != example["verdict"] != "unmapped"
        column = codes[:, example["latent"]].toarray().ravel()
        assert max(example["acts"]["latent"]) == pytest.approx(column.max())
        assert example["block"] == int(column.argmax()) // width
        assert len(example["tokens"]) == width and all(len(a) == width for a in example["acts"].values())
    figure = disagreement_figure(examples, {}, "babypython", "lua")
    assert len(figure.axes) == max(3 * len(examples), 1)


def test_sparse_decode_is_the_dense_product_with_its_gradients():
    """``decode`` reads only the active latents' decoder rows (``embedding_bag``): the same reconstruction and the
    same gradients for the decoder and the activations as the dense product, empty rows included."""
    crosscoder = BatchTopKCrosscoder(D, 64, 4, seed=3)
    generator = torch.Generator().manual_seed(5)
    pre = torch.randn(20, 64, generator=generator).requires_grad_()  # before the ReLU, as in the encoder
    keep = torch.rand(20, 64, generator=generator) < 0.1
    keep[7] = False  # a token where no latent fires
    grad = torch.randn(20, 2, D, generator=generator)
    results = []
    for decode in (crosscoder.decode,
                   lambda a: torch.einsum("bf,fmd->bmd", a, crosscoder.W_dec_FMD) + crosscoder.b_dec_MD):
        crosscoder.zero_grad(set_to_none=True)
        pre.grad = None
        out = decode(torch.relu(pre) * keep)
        out.backward(grad)
        results.append((out.detach(), crosscoder.W_dec_FMD.grad.clone(), pre.grad.clone()))
    for sparse, dense in zip(*results):
        torch.testing.assert_close(sparse, dense, rtol=1e-5, atol=1e-6)
    assert torch.equal(results[0][0][7], crosscoder.b_dec_MD.detach())


def test_notebook_11_cost_counts_its_crosscoder_steps(smoke_cfg):
    """The cost of notebook 11 is the build seconds of the crosscoder steps (the control's included), beside
    notebook 01's, and lands in the benchmark file."""
    from paper_lib.core.artifacts import manifest, read_json, run_dir
    from paper_lib.crosscoder import crosscoder_dir, crosscoder_folders, crosscoder_cost

    smoke_cfg = smoke_cfg.model_copy(update={"crosscoder": smoke_cfg.crosscoder.model_copy(
        update={"pairs": [["babypython", "lua"]]})})  # the pair and control the tests above trained
    folders = crosscoder_folders(smoke_cfg)
    control = smoke_cfg.crosscoder.control
    expected = {crosscoder_dir(smoke_cfg, "babypython", "lua"), crosscoder_dir(smoke_cfg, control, control)}
    assert expected <= folders
    assert all(f.name.startswith("crosscoder-") for f in folders)
    cost = crosscoder_cost(smoke_cfg)
    assert cost["crosscoder_steps"] == len(folders)
    assert cost["crosscoder_seconds"] == pytest.approx(sum(manifest(f)["seconds"] for f in folders), abs=0.1)
    assert read_json(run_dir(smoke_cfg.profile) / "benchmarks.json")["crosscoder"]["crosscoder_steps"] == len(folders)
