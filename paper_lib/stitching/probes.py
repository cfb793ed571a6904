"""Linear probes on the residual stream, trained on the small model and carried to the large one through ``down``,
against probes trained on the large model itself.

Properties the corpora label without a model:

- ``domain``: which corpus a token comes from (Python, Lua, BabyLM English, TinyStories; 4 classes);
- ``literal``: a Python token inside a string literal or a comment (Python's own ``tokenize`` finds them, docstrings
  included, on the validation stream before it is cut into blocks; a stretch it cannot parse keeps the spans found
  before it);
- ``assignment``: the ``=`` of a statement-level variable assignment in Python (the case studies' labeller).

Probes are scikit-learn's ``LogisticRegression`` on standardised activations (class-balanced, since the last two
properties are rare); the scaling is folded into the weights, so a probe is ``h W + c`` on the raw stream and
carries to the large model as ``down(h_B) W + c``. Scored by balanced accuracy (chance: 1 / classes).
"""

from __future__ import annotations

import io
import tokenize
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..case_studies.labels import assignment_spans, label_tokens
from ..core.artifacts import write_json_atomic
from ..core.config import Config
from ..data import token_strings
from ..data import corpora_fingerprints
from .family import keep_mask, large, small, train_blocks, validation_blocks
from .maps import StitchMaps
from .steering import steering_rows
from .steps import load_models, run_step, step_inputs, stitch_setup
from .store import load_maps, paired_activations

TASKS = ("domain", "literal", "assignment")
PROBE_DOMAINS = ("python", "lua", "babylm", "tinystories")


def literal_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the string literals and comments of Python source, by Python's tokenizer."""
    starts = np.cumsum([0] + [len(line) for line in text.splitlines(keepends=True)])
    spans = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type in (tokenize.STRING, tokenize.COMMENT):
                (r0, c0), (r1, c1) = tok.start, tok.end
                spans.append((int(starts[r0 - 1] + c0), int(starts[r1 - 1] + c1)))
    except (tokenize.TokenError, SyntaxError):
        pass  # an unparsable stretch (a cut document): keep the spans found before it
    return spans


def stream_labels(cfg: Config, blocks: torch.Tensor, spans_fn) -> np.ndarray:
    """Labels of consecutive blocks of one stream ``[n_blocks, ctx]``, labelled as one stream (documents cut only
    where the stream's own separators are)."""
    strings = token_strings(cfg)
    tokens = [strings[int(t)] for t in blocks.reshape(-1)]
    return label_tokens(tokens, spans_fn).reshape(blocks.shape)


def task_data(cfg: Config, task: str, split: str) -> tuple[torch.Tensor, np.ndarray, torch.Tensor]:
    """``(blocks, labels [n_blocks, ctx], keep [n_blocks, ctx])`` of one task: training blocks
    (``stitching.probe_blocks`` per domain) or validation ones (``stitching.eval_blocks``)."""
    take = (lambda d: train_blocks(cfg, d, cfg.stitching.probe_blocks)) if split == "train" else \
        (lambda d: validation_blocks(cfg, d))
    if task == "domain":
        parts = [take(d) for d in PROBE_DOMAINS]
        blocks = torch.cat(parts)
        labels = np.concatenate([np.full(p.shape, k) for k, p in enumerate(parts)])
    elif task in ("literal", "assignment"):
        blocks = take("python")
        labels = stream_labels(cfg, blocks, literal_spans if task == "literal" else assignment_spans).astype(int)
    else:
        raise ValueError(f"unknown probe task '{task}'; tasks are {', '.join(TASKS)}")
    return blocks, labels, keep_mask(cfg, blocks)


def fit_probe(x_ND: np.ndarray, y_N: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """A logistic-regression probe ``{W [d, classes or 1], c}`` on the raw activations (the scaler folded in)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    if len(np.unique(y_N)) < 2:
        raise ValueError("a probe needs both classes in its training tokens: raise stitching.probe_blocks")
    scaler = StandardScaler().fit(x_ND)
    model = LogisticRegression(max_iter=2000, class_weight="balanced", random_state=seed)
    model.fit(scaler.transform(x_ND), y_N)
    W = (model.coef_ / scaler.scale_).T
    c = model.intercept_ - scaler.mean_ @ W
    return {"W": W, "c": c, "classes": model.classes_}


def predict(probe: dict[str, np.ndarray], x_ND: np.ndarray) -> np.ndarray:
    logits = x_ND @ probe["W"] + probe["c"]
    index = (logits[:, 0] > 0).astype(int) if logits.shape[1] == 1 else logits.argmax(1)
    return probe["classes"][index]


def carry_down(probe: dict[str, np.ndarray], maps: StitchMaps) -> dict[str, np.ndarray]:
    """The small model's probe on the large model's stream: ``down(h_B) W + c = h_B (P_down W) + (b_down W + c)``."""
    P, b = maps.P_down.detach().double().numpy(), maps.b_down.detach().double().numpy()
    return {"W": P @ probe["W"], "c": b @ probe["W"] + probe["c"], "classes": probe["classes"]}


def balanced_accuracy(probe: dict[str, np.ndarray], x_ND: np.ndarray, y_N: np.ndarray) -> float:
    from sklearn.metrics import balanced_accuracy_score

    return float(balanced_accuracy_score(y_N, predict(probe, x_ND)))


def probe_rows(activations: dict, labels: dict, maps: StitchMaps, seed: int) -> list[dict[str, Any]]:
    """Per task: balanced accuracy of the small model's probe on the small model, of the large model's own probe,
    and of the small model's probe carried down, on held-out tokens; chance beside them.

    ``activations[(who, split)]`` are ``[n, d]`` float arrays of ``who`` in ``("small", "large")``, ``labels[split]``
    the matching ``[n]`` labels, each dict keyed by task first."""
    rows = []
    for task in labels:
        lab, acts = labels[task], activations[task]
        small_probe = fit_probe(acts[("small", "train")], lab["train"], seed)
        large_probe = fit_probe(acts[("large", "train")], lab["train"], seed)
        rows.append({
            "task": task, "classes": len(small_probe["classes"]), "chance": 1 / len(small_probe["classes"]),
            "n_train": len(lab["train"]), "n_test": len(lab["test"]),
            "positive_share": float(np.mean(lab["test"] > 0)),
            "small_native": balanced_accuracy(small_probe, acts[("small", "test")], lab["test"]),
            "large_native": balanced_accuracy(large_probe, acts[("large", "test")], lab["test"]),
            "large_transferred": balanced_accuracy(carry_down(small_probe, maps), acts[("large", "test")], lab["test"]),
        })
    return rows


def probes_step(cfg: Config) -> dict[str, Any]:
    """Cached step ``stitch-probes``: each probe task's balanced accuracy (small native, large native, carried
    down), and steering between the two domains both models know, each way."""
    setup = stitch_setup(cfg)
    s = cfg.stitching
    inputs = step_inputs(cfg, probe_blocks=s.probe_blocks, steering_tokens=s.steering_tokens, seed=cfg.seed,
                     train=corpora_fingerprints(cfg, ("python", "lua", "babylm", "tinystories"), "train"))

    def build(out: Path) -> dict:
        models, maps = load_models(cfg), load_maps(cfg, small(), large(), *setup["layers"].values())
        acts, labels = {}, {}
        for task in TASKS:
            acts[task], labels[task] = {}, {}
            for split, name in (("train", "train"), ("validation", "test")):
                blocks, lab, keep = task_data(cfg, task, split)
                labels[task][name] = lab[keep.numpy()]
                pair_acts = paired_activations(cfg, "small", "large", (setup["hooks"]["small"], setup["hooks"]["large"]),
                                               blocks, models)
                for who, a in zip(("small", "large"), pair_acts):
                    acts[task][(who, name)] = a.double().numpy()
        rows = probe_rows(acts, labels, maps, cfg.seed)
        pairs = [tuple(d) for d in (("python", "babylm"), ("babylm", "python"))]
        steer = steering_rows(cfg, models, setup["hooks"], lambda v: v @ maps.P_up.detach(), pairs,
                              models["large"].cfg.d_vocab, cfg.seed)
        write_json_atomic(out / "probes.json", {"probes": rows, "steering": steer})
        return {"tasks": list(TASKS)}

    return run_step(cfg, "stitch-probes", inputs, build, "probes.json",
                 ["paper_lib.stitching.steering", "paper_lib.case_studies.labels", "paper_lib.core.intervals"])
