"""Which layer of the large model a layer of the small one corresponds to: linear CKA between every pair of depths.

The stitching paper pairs layers by SVCCA. We use linear CKA (notebook 09's measure, ``layerwise.similarity``):
like SVCCA it compares representations of different widths and ignores rotation and isotropic scale, it needs no
choice of the number of canonical directions, and its streamed form over blocks is already tested. The pair used
is read from the grid: for the small model's ``stitching.small_layer``, the large model's layer with the highest
CKA (the paper's rule).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..core.artifacts import cached_step, read_json, write_json_atomic
from ..core.config import Config
from ..data import DATA_CODE, corpora_fingerprints
from ..layerwise.similarity import CKA_KEYS, block_sums, cka_from_sums, residual_streams
from ..models import load_hooked_lm, model_dir
from .family import domains, keep_mask, large, n_layers, small, validation_blocks

def pairing_dir(cfg: Config) -> Path:
    """Cached step ``stitch-pairing``: CKA between every depth of the small and the large model (depth 0 is the
    embedding, depth d the residual stream after layer d - 1), on ``stitching.pairing_blocks`` validation blocks
    of each of their domains."""
    a, b = small(), large()
    n_blocks = cfg.stitching.pairing_blocks
    text = domains(a, b)
    inputs = {"small": model_dir(cfg, a).name, "large": model_dir(cfg, b).name, "n_blocks": n_blocks,
              "eval_tokens": cfg.data.eval_tokens, "corpora": corpora_fingerprints(cfg, text, "validation")}

    def build(out: Path) -> dict:
        models = {who: load_hooked_lm(cfg, who) for who in (a, b)}
        sums: dict[tuple[int, int], dict[str, list]] = {}
        for domain in text:
            blocks = validation_blocks(cfg, domain, n_blocks)
            keep = keep_mask(cfg, blocks).numpy()
            x, y = (residual_streams(models[who], blocks) for who in (a, b))
            for i in range(x.shape[0]):
                for j in range(y.shape[0]):
                    part = block_sums(x[i], y[j], keep)
                    for key in CKA_KEYS:
                        sums.setdefault((i, j), {k: [] for k in CKA_KEYS})[key].append(part[key])
        grid = np.zeros((n_layers(cfg, a) + 1, n_layers(cfg, b) + 1))
        for (i, j), parts in sums.items():
            grid[i, j] = cka_from_sums(*(np.concatenate(parts[k]) for k in CKA_KEYS))
        write_json_atomic(out / "pairing.json", {"small": a, "large": b, "domains": list(text),
                                                 "cka": grid.tolist(), "n_blocks_per_domain": n_blocks})
        return {"shape": list(grid.shape)}

    code = [*DATA_CODE, "paper_lib.layerwise.similarity", "paper_lib.stitching.family", "paper_lib.models.build"]
    return cached_step(cfg.profile, "stitch-pairing", inputs, build, code=code)


def pairing(cfg: Config) -> dict[str, Any]:
    """The CKA grid (rows: the small model's depths, columns: the large model's) and the pair read from it:
    ``small_layer`` and ``large_layer`` (layer indices, the residual stream after them)."""
    record = read_json(pairing_dir(cfg) / "pairing.json")
    grid = np.asarray(record["cka"])
    i = cfg.stitching.small_layer
    row = grid[i + 1, 1:]  # the small layer's residual stream against every layer's of the large model
    return {**record, "small_layer": i, "large_layer": int(np.argmax(row)), "cka_of_pair": float(row.max())}
